"""Which backend encodes images and texts, and the export cache that makes ONNX the default.

The Detector asks `open_backend` once (DESIGN.md: "a backend is chosen once, in the Detector").
`--backend auto` (the default) picks:
  * ONNX Runtime when the [export] extra (onnx + onnxruntime) is installed, JAX runs on the CPU,
    and the model comes from a file or registry name: on CPU ONNX Runtime runs owl's graphs
    faster than XLA (docs/export.md, benchmarks/onnx_forward.py), and a process that finds the
    export cached never imports JAX;
  * JAX otherwise, with the reason (no extra, a GPU, an in-memory model, bf16).
`--precision int8` always runs on ONNX Runtime (quantized graphs, `owl.export.quantize`);
`--precision bf16` always on JAX: ONNX Runtime's CPU provider has no bfloat16 matrix product.

The first use of a model exports it into `<owl cache>/exports/` with `export_model`, verified as
`owl export` verifies, then reuses it. The folder name holds the SHA-256 of the model file's
content, so a changed file (retrained, converted again) gets a new export; the export of the old
content is removed. Hashing a large checkpoint on every start would cost a second, so the hash is
kept beside the exports with the file's size and mtime, and computed again only when they change
(downloads carry their hash in their download record already).

`OWL_BACKEND=jax|onnx` replaces what `auto` would choose at f32 (the test suite pins jax so that
it does not export in every test); an explicit `--backend` is always obeyed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ENV = "OWL_BACKEND"
BACKEND_CHOICES = ("auto", "jax", "onnx", "stablehlo")
PRECISIONS = ("f32", "bf16", "int8")
EXPORT_MODULES = ("onnx", "onnxruntime")
# JAX plugins that move computation off the CPU, where ONNX Runtime's CPU provider would lose.
JAX_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "libtpu")
HASHES_FILE = "file-hashes.json"
CACHE_VERSION = 1  # part of every cached folder's name: a new graph layout gets new folders


class BackendError(ValueError):
    """A backend or precision that cannot be used here; the message is one line with the fix."""


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """What encodes images and texts, and why.

    Attributes:
      name: "jax", "onnx" or "stablehlo".
      precision: "f32", "bf16" or "int8".
      reason: one sentence for `--verbose` and `owl models --info`.
      export_dir: the export folder the graphs come from (None for JAX).
      cached: for a cached export, whether it was already there (False: written now).
    """

    name: str
    precision: str
    reason: str
    export_dir: Path | None = None
    cached: bool | None = None

    def describe(self) -> str:
        where = ""
        if self.export_dir is not None:
            state = {True: "reused", False: "exported now", None: "given"}[self.cached]
            where = f"; graphs: {self.export_dir} ({state})"
        return f"backend {self.name} ({self.precision}): {self.reason}{where}"


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def export_extra_installed() -> bool:
    """Whether onnx and onnxruntime (the [export] extra) can be imported."""
    return all(has_module(m) for m in EXPORT_MODULES)


def jax_off_cpu() -> bool:
    """Whether JAX would run on an accelerator (judged without importing JAX, which is slow)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return platforms.split(",")[0] not in ("cpu", "")
    return any(has_module(m) for m in JAX_GPU_PLUGINS)


def decide(
    requested: str = "auto", precision: str = "f32", *, in_memory: bool = False
) -> BackendChoice:
    """The backend for a model file or registry name (no work done: nothing loaded or exported).

    Args:
      requested: "auto", "jax", "onnx" or "stablehlo" (--backend).
      precision: "f32", "bf16" or "int8" (--precision).
      in_memory: the model is an `OwlModel` object, not a file (auto then keeps JAX).
    Raises:
      BackendError: a combination that cannot run (int8 on JAX, bf16 on ONNX Runtime, a
        missing extra).
    """
    if requested not in BACKEND_CHOICES:
        raise BackendError(f"backend {requested!r}: use one of {', '.join(BACKEND_CHOICES)}")
    if precision not in PRECISIONS:
        raise BackendError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    reason = "asked for (--backend)"
    env = os.environ.get(ENV, "auto").strip().lower()
    if requested == "auto" and precision == "f32" and env != "auto":  # int8, bf16 fix the backend
        requested = os.environ[ENV].strip().lower()
        reason = f"set by ${ENV}"
        if requested not in BACKEND_CHOICES:
            raise BackendError(f"${ENV}={requested!r}: use one of {', '.join(BACKEND_CHOICES)}")
    if requested != "auto":
        if requested == "jax" and precision == "int8":
            raise BackendError(
                "--precision int8 runs on ONNX Runtime, not JAX; use --backend onnx or auto "
                '(needs: pip install "owl[export]")'
            )
        if requested != "jax" and precision == "bf16":
            raise BackendError(
                f"--precision bf16 runs on JAX (ONNX Runtime's CPU provider has no bfloat16 "
                f"matrix product), not {requested}; use --backend jax or auto"
            )
        return BackendChoice(requested, precision, reason)
    if precision == "bf16":
        return BackendChoice(
            "jax", precision, "bf16 runs on JAX: ONNX Runtime's CPU provider has no bfloat16 "
            "matrix product",
        )  # fmt: skip
    if precision == "int8":
        if not export_extra_installed():
            raise BackendError(
                '--precision int8 runs on ONNX Runtime; install it with: pip install "owl[export]"'
            )
        return BackendChoice("onnx", precision, "int8 runs on ONNX Runtime (quantized graphs)")
    if in_memory:
        return BackendChoice(
            "jax", precision, "an in-memory model has no file to key the export cache on; pass "
            "its file, or --backend onnx, for ONNX Runtime",
        )  # fmt: skip
    if jax_off_cpu():
        return BackendChoice("jax", precision, "JAX runs on an accelerator here")
    if not export_extra_installed():
        return BackendChoice(
            "jax", precision, "ONNX Runtime is not installed; pip install \"owl[export]\" for "
            "the faster CPU path",
        )  # fmt: skip
    return BackendChoice(
        "onnx", precision, "ONNX Runtime is installed (owl[export]) and runs owl's graphs "
        "faster than XLA on CPU (docs/export.md)",
    )  # fmt: skip


def open_backend(
    model: Any,
    requested: str = "auto",
    precision: str = "f32",
    *,
    progress: bool = False,
    threads: int | None = None,
) -> tuple[Any, BackendChoice]:
    """The encoder for the Detector (`OwlModel` or `ExportedModel`) and the choice behind it.

    Args:
      model: an `OwlModel`, an `owl export` folder, a checkpoint path or a registry name.
      requested: --backend ("auto", "jax", "onnx", "stablehlo").
      precision: --precision ("f32", "bf16", "int8").
      progress: show download progress and say when an export into the cache starts.
      threads: ONNX Runtime intra-op threads (None: its default, one per core).
    Raises:
      BackendError: see `decide`; ExportDirError: an unusable export folder;
      the loader's errors (CheckpointError, UnknownModelError, DownloadError).
    """
    from owl.export.manifest import MANIFEST_NAME

    if not isinstance(model, (str, os.PathLike)):  # an OwlModel
        choice = decide(requested, precision, in_memory=True)
        if choice.name == "jax":
            if precision != "f32" and precision != getattr(model, "precision", "f32"):
                raise BackendError(
                    f"precision {precision!r} applies when owl loads the model; load it with "
                    f"owl.load(..., precision={precision!r})"
                )
            return model, choice
        folder, cached = cached_export(
            model, precision, key=_params_key(model), label=_label(model.source), progress=progress
        )
        return _open(folder, choice, cached, model.source, threads)

    path = Path(model)
    export_folder = path.is_dir() and (path / MANIFEST_NAME).exists()
    if export_folder or (requested in ("onnx", "stablehlo") and _meant_as_export(path)):
        # a folder written by `owl export` (a broken one: ExportDirError, naming the fix)
        from owl.export.backend import open_export
        from owl.export.manifest import read_manifest

        fmt = read_manifest(path).format
        wanted = None if requested == "auto" else requested
        if wanted == "jax":
            raise BackendError(
                f"{path} is an `owl export` folder, which JAX cannot load; use --backend "
                f"{fmt} (or auto), or give a checkpoint"
            )
        exported = open_export(path, wanted, threads=threads)
        return exported, BackendChoice(
            exported.manifest.format, exported.manifest.precision, "--model is an `owl export` "
            "folder", path, None,
        )  # fmt: skip

    choice = decide(requested, precision)
    if choice.name == "jax":
        from owl.checkpoints.load import load

        return load(model, progress=progress, precision=precision), choice
    if choice.name == "stablehlo":
        raise BackendError(
            "--backend stablehlo needs a folder written by `owl export --format stablehlo` as "
            "--model; use --backend onnx or auto for an export made on the fly"
        )
    file = model_file(model, progress=progress)
    folder, cached = cached_export(
        str(model), precision, key=file_digest(file), label=_label(model, file), progress=progress
    )
    return _open(folder, choice, cached, str(model), threads)


def _meant_as_export(path: Path) -> bool:
    """With --backend onnx/stablehlo: a folder that is no transformers checkpoint, or a path that
    is neither a file nor a registry name, is read as an export folder (so its problem is told)."""
    if path.is_dir():
        return not (path / "config.json").exists()
    if path.exists():
        return False
    from owl.checkpoints.registry import UnknownModelError, get_entry

    try:
        get_entry(str(path))
    except UnknownModelError:
        return True
    return False


def _open(folder: Path, choice: BackendChoice, cached: bool, source: Any, threads: int | None):
    from owl.export.backend import open_export

    exported = open_export(folder, "onnx", threads=threads)
    exported.source = str(source) if source is not None else exported.source
    return exported, dataclasses.replace(choice, export_dir=folder, cached=cached)


# -- the export cache ----------------------------------------------------------------------------


def exports_dir() -> Path:
    """`<owl cache>/exports`: the ONNX exports made on first use."""
    from owl.checkpoints.registry import cache_dir

    return cache_dir() / "exports"


def model_file(spec: str | os.PathLike, *, progress: bool = False) -> Path:
    """The file (or transformers folder) behind --model: the path, or the registry's download."""
    path = Path(spec)
    if path.exists():
        return path
    from owl.checkpoints import registry

    return registry.resolve(str(spec), progress=progress)


def cache_folder(label: str, key: str, precision: str) -> Path:
    return exports_dir() / f"{label}-{key[:16]}-onnx-{precision}-v{CACHE_VERSION}"


def cached_export(
    model: Any, precision: str, *, key: str, label: str, progress: bool = False
) -> tuple[Path, bool]:
    """The cached ONNX export for (model content `key`, precision): reused, or written now.

    Returns (folder, whether it was already there). A new export is written into a temporary
    folder beside the cache and renamed into place once verified, so a crash or a concurrent
    process never leaves a half-written folder under the final name; exports of earlier
    content of the same model (same label, another key) are then removed.

    Args:
      model: what to export when there is no cached folder: an `OwlModel`, or a --model spec.
      key: the content hash of the model (`file_digest` or the weights' hash).
      label: the folder name's readable part (`_label`).
    """
    import owl
    from owl.export.manifest import ExportDirError, read_manifest

    folder = cache_folder(label, key, precision)
    try:
        manifest = read_manifest(folder)
        if manifest.owl_version == owl.__version__ and manifest.precision == precision:
            return folder, True
    except ExportDirError:
        pass
    from owl.export.writer import export_model

    if isinstance(model, (str, os.PathLike)):
        from owl.checkpoints.load import load

        model = load(model, progress=progress)
    if progress:
        print(
            f"note: exporting {label} to ONNX ({precision}) for ONNX Runtime, once: {folder}",
            file=sys.stderr,
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        export_model(model, tmp, format="onnx", precision=precision)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "manifest.json").exists():  # not another process's finished export
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.parent.glob(f"{label}-*-onnx-{precision}-v*"):
        if old != folder and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return folder, False


def _label(spec: Any, file: Path | None = None) -> str:
    """A readable, collision-free folder name part: a registry name, or stem + path hash."""
    if spec is None:
        return "in-memory"
    spec = str(spec)
    if file is None or not Path(spec).exists():
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)[:64]
    resolved = str(Path(spec).resolve())
    return f"{Path(spec).stem[:48]}-{hashlib.sha256(resolved.encode()).hexdigest()[:8]}"


def _params_key(model: Any) -> str:
    import jax

    from owl.checkpoints.tree import params_sha256

    return params_sha256(jax.device_get(model.params))


def file_digest(path: Path) -> str:
    """SHA-256 of a model file's content (a folder: of its files' names and contents).

    Kept in `<exports>/file-hashes.json` with each file's size and mtime and computed again only
    when they change; a registry download's own record (size + hash) is used as it is.
    """
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{child.relative_to(path).as_posix()}:{file_digest(child)};".encode())
        return h.hexdigest()
    from owl.checkpoints.download import file_sha256, read_record

    stat = path.stat()
    record = read_record(path)
    if record is not None and record["size"] == stat.st_size:
        return record["sha256"]
    memo_path = exports_dir() / HASHES_FILE
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    key = str(path.resolve())
    seen = memo.get(key)
    stamp = [stat.st_size, stat.st_mtime_ns]
    if isinstance(seen, dict) and seen.get("stat") == stamp and isinstance(seen.get("sha256"), str):
        return seen["sha256"]
    digest = file_sha256(path)
    memo[key] = {"stat": stamp, "sha256": digest}
    try:
        from owl.files import atomic_write

        with atomic_write(memo_path) as f:
            json.dump(memo, f, indent=1)
    except OSError:
        pass  # an unwritable cache folder only costs hashing again next time
    return digest


def describe_default(name: str) -> str:
    """One line for `owl models --info NAME`: what `owl detect -m NAME` would run on, and why."""
    try:
        choice = decide("auto", "f32")
    except BackendError as e:
        return str(e)
    line = f"{choice.name}: {choice.reason}"
    if choice.name == "onnx":
        from owl.checkpoints import registry

        path = registry.cached_path(name)
        if path.is_file():
            folder = cache_folder(_label(name), file_digest(path), "f32")
            state = "cached" if (folder / "manifest.json").exists() else "exported on first use"
            line += f" ({state}: {folder})"
        else:
            line += " (exported into the cache on first use)"
    return line


__all__ = [
    "BACKEND_CHOICES",
    "ENV",
    "PRECISIONS",
    "BackendChoice",
    "BackendError",
    "cached_export",
    "decide",
    "describe_default",
    "export_extra_installed",
    "exports_dir",
    "file_digest",
    "open_backend",
]
