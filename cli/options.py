"""Options, exit codes and small helpers shared by the `owl` commands.

Each reusable option is defined once here as a decorator, so every command spells, defaults and
documents it the same way. Only click is imported at module level: `owl --help` imports the
command modules to list them, and must not pay for JAX, NumPy or Pillow.

Exit codes, the same for every command (`EXIT_CODES_HELP` is shown in each command's help):
0 success; 1 some inputs failed while the others were still processed, or the work itself
failed (a download, a write); 2 usage error: nothing was done because of what was asked (an
option, an unknown model, an input file named on the command line that cannot be used, a
missing extra); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from owl.inference.detections import Detections

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_CODES_HELP = """\b
Exit codes: 0 success; 1 some inputs failed (the others are still processed and written)
or the work failed (download, write); 2 usage error, nothing done: a bad option or argument,
an unknown model, a model, config, query, annotations or detections file that cannot be
used, a missing extra; 130 interrupted (Ctrl-C)."""

# Modules of the [train] extra (pyproject.toml); `owl train` and `owl pretrain` need them.
TRAIN_EXTRA_MODULES = ("clu", "orbax.checkpoint", "grain", "tensorboardX", "matplotlib")
# Modules of the [export] extra: `owl export --format onnx` builds graphs with onnx, and
# `--backend onnx` runs them with onnxruntime.
EXPORT_EXTRA_MODULES = ("onnx", "onnxruntime")
# Modules of the [search] extra; `owl index` and `owl search` need them.
SEARCH_EXTRA_MODULES = ("faiss",)


class UsageFailure(click.ClickException):
    """A usage error printed as one "Error: ..." line, without the usage text (exit 2)."""

    exit_code = EXIT_USAGE


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or a half-imported module
        return False


def check_export_extra(what: str, modules: Sequence[str] = EXPORT_EXTRA_MODULES) -> None:
    """Stops with one line naming `pip install "owl[export]"` when a module of it is missing.

    Raises:
      UsageFailure: a module of `modules` cannot be found (exit 2).
    """
    for name in modules:
        if not _has_module(name):
            raise UsageFailure(
                f"{what} needs the export extra (module {name!r} is not installed); "
                'install it with: pip install "owl[export]"'
            )


def check_extra(command: str, extra: str, modules: Sequence[str], label: str) -> None:
    """Stops with one line naming `pip install "owl[EXTRA]"` when a module of an extra is missing.

    Raises:
      UsageFailure: one of `modules` cannot be found (exit 2).
    """
    for name in modules:
        if not _has_module(name):
            raise UsageFailure(
                f"`owl {command}` needs the {label} extra (module {name!r} is not installed); "
                f'install it with: pip install "owl[{extra}]"'
            )


def check_train_extra(command: str) -> None:
    """Stops with one line naming `pip install "owl[train]"` when the [train] extra is missing.

    Checked before training starts (after --print-config, which needs no extra), so a plain
    install says what to install instead of showing a traceback.

    Raises:
      UsageFailure: a module of `TRAIN_EXTRA_MODULES` cannot be found (exit 2).
    """
    check_extra(command, "train", TRAIN_EXTRA_MODULES, "training")


def check_plots_extra(option: str) -> None:
    """Stops with one line naming `pip install "owl[plots]"` when matplotlib is missing.

    Raises:
      UsageFailure: matplotlib cannot be found (exit 2), before any work is done.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageFailure(f'{option} needs matplotlib; install it with: pip install "owl[plots]"')


def config_option(f: F | None = None, *, required: bool = True) -> Any:
    """--config NAME|FILE: a recipe shipped in owl/configs/ or a Python config file.

    `@config_option` makes it required; `@config_option(required=False)` for commands with
    another way in (`owl train --data`).
    """
    if f is None:
        return lambda g: config_option(g, required=required)
    from owl.train.config import recipe_names

    return click.option(
        "--config", "config_spec", required=required, default=None, metavar="NAME|FILE",
        help="Training config: a recipe name (" + ", ".join(recipe_names()) + ") or a Python "
        "file with get_config(). The recipes ship inside the package (owl/configs/)."
        + ("" if required else " Required unless --data is given."),
    )(f)  # fmt: skip


# The offline default: a tiny detector trained on ShapesWorld that ships inside the package
# (issue 6), so `owl detect` works on a fresh machine without network. Real images need a real
# model such as owlv2-b16-ensemble (a 590 MiB download on first use).
DEFAULT_MODEL = "shapes-tiny"

# Pillow's own decompression-bomb limit, the same number as
# owl.ops.image.DEFAULT_MAX_PIXELS (a test keeps them equal; not imported here so
# that `owl --help` stays light).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

MODEL_HELP = (
    "A registry name (see `owl models`; downloaded once into the cache) or a checkpoint path "
    "(owl .safetensors, official Flax msgpack, or a transformers folder). The default, "
    f"{DEFAULT_MODEL}, ships with owl and works offline but only knows ShapesWorld's coloured "
    "shapes; for real images use owlv2-b16-ensemble (best B/16, LVIS AP 43.9) or owlvit-b32 "
    "(faster, weaker)."
)


def model_option(f: F) -> F:
    """--model NAME|PATH."""
    return click.option(
        "-m", "--model", default=DEFAULT_MODEL, show_default=True, metavar="NAME|PATH",
        help=MODEL_HELP,
    )(f)  # fmt: skip


def query_image_options(f: F) -> F:
    """--query-image IMG and --query-box X0,Y0,X1,Y1, both repeatable."""
    f = click.option(
        "--query-box", "query_boxes", multiple=True, metavar="X0,Y0,X1,Y1",
        help="Exemplar box in --query-image pixels (x right, y down; repeatable). With one "
        "--query-image every box is on that image; otherwise give one box per image. Without "
        "boxes, the most object-like token (OWLv2) or the whole image (OWL-ViT) is used.",
    )(f)  # fmt: skip
    return click.option(
        "--query-image", "query_images", multiple=True, metavar="IMG",
        type=click.Path(exists=True, dir_okay=False),
        help="Example image showing what to find (one-shot detection; repeatable).",
    )(f)  # fmt: skip


def exemplar_query_options(f: F) -> F:
    """Image and embedding queries, as `owl detect` takes them: --query-image/--query-box,
    --query-label, --query-method and --query-embedding (`owl label` takes the same)."""
    f = click.option(
        "--query-embedding", "query_embeddings", multiple=True, metavar="FILE[@T]",
        help="Query embedding saved by `owl embed-query` (repeatable); FILE@T sets its threshold.",
    )(f)  # fmt: skip
    f = click.option(
        "--query-method", type=click.Choice(["auto", "iou", "objectness"]), default="auto",
        show_default=True,
        help="How an exemplar box picks its embedding: objectness (OWLv2), iou (the official "
        "OWL-ViT heuristic), auto = objectness when the model has the head.",
    )(f)  # fmt: skip
    f = click.option(
        "--query-label", "query_labels", multiple=True, metavar="NAME",
        help="Name for the image-query detections (repeatable: one for all exemplars, or one per "
        "exemplar; default: the query image's file stem). Exemplars sharing a name are averaged "
        'into one query; "NAME@T" sets its threshold.',
    )(f)  # fmt: skip
    return query_image_options(f)


def max_pixels_option(f: F) -> F:
    """--max-image-pixels N (0 = no limit)."""
    return click.option(
        "--max-image-pixels", type=click.IntRange(min=0), default=DEFAULT_MAX_IMAGE_PIXELS,
        show_default=True, metavar="N",
        help="Refuse image files with more pixels than this before decoding them (a guard "
        "against decompression bombs); 0 means no limit.",
    )(f)  # fmt: skip


def precision_option(f: F) -> F:
    """--precision f32|bf16|int8."""
    return click.option(
        "--precision", type=click.Choice(["f32", "bf16", "int8"]), default="f32",
        show_default=True,
        help="Compute precision of the image tower. int8 runs an int8-quantized image encoder "
        "on ONNX Runtime (needs owl[export]; about 2.5x faster than f32 on CPUs with VNNI); "
        "bf16 runs the vision transformer in bfloat16 on JAX (faster on GPUs, not on XLA:CPU). "
        "Scores move slightly: docs/detect.md gives the measured agreement.",
    )(f)  # fmt: skip


def backend_option(f: F) -> F:
    """--backend auto|jax|onnx|stablehlo."""
    return click.option(
        "--backend", type=click.Choice(["auto", "jax", "onnx", "stablehlo"]), default="auto",
        show_default=True,
        help="What encodes images and queries. auto: ONNX Runtime when owl[export] is installed "
        "(the model is exported into the cache on first use, verified, then reused), else "
        "JAX; jax: owl's JAX model; onnx: ONNX Runtime (--model may also be a folder written "
        "by `owl export`); stablehlo: an `owl export --format stablehlo` folder. --verbose "
        "prints the choice and why.",
    )(f)  # fmt: skip


def verbose_option(f: F) -> F:
    """-v/--verbose: say which backend encodes images, and why."""
    return click.option(
        "-v", "--verbose", is_flag=True,
        help="Print which backend encodes images (JAX or ONNX Runtime) and why.",
    )(f)  # fmt: skip


def truncate_option(f: F) -> F:
    """--truncate-long-queries."""
    return click.option(
        "--truncate-long-queries", is_flag=True,
        help="Cut text queries longer than the 16-token text context to their first 14 tokens "
        "instead of stopping with an error.",
    )(f)  # fmt: skip


def calibration_options(f: F) -> F:
    """--calibrated and --calibration FILE: calibrated scores (`owl detect`, `owl label`)."""
    f = click.option(
        "--calibration", "calibration_file", metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A calibration file written by `owl calibrate` (JSON); implies --calibrated.",
    )(f)  # fmt: skip
    return click.option(
        "--calibrated", is_flag=True,
        help="Report each box's probability of being a true match instead of the raw score, "
        "so one threshold (default 0.5) means the same for every query and an image where "
        "nothing matches gives nothing. Uses --calibration FILE, else the calibration that "
        "ships with the model (shapes-tiny only). Turns per-query NMS on. docs/calibration.md.",
    )(f)  # fmt: skip


def resolve_calibration(calibrated: bool, calibration_file: Path | None, model: str):
    """--calibrated / --calibration -> an `owl.inference.calibration.Calibration` or None.

    Raises:
      UsageFailure: an unusable file (one line naming it), or --calibrated for a model that
        ships no calibration and no --calibration FILE (exit 2).
    """
    if not calibrated and calibration_file is None:
        return None
    from owl.inference.calibration import Calibration, CalibrationError

    if calibration_file is not None:
        try:
            calibration = Calibration.load(calibration_file)
        except CalibrationError as e:
            raise UsageFailure(f"--calibration {e}") from None
        if calibration.model and calibration.model != model_id(model):
            write_line(
                f"note: {calibration_file} was fitted for model {calibration.model!r}, not "
                f"{model_id(model)!r}; its probabilities may not hold for this model",
                err=True,
            )
        return calibration
    calibration = Calibration.for_model(model)
    if calibration is None:
        raise UsageFailure(
            f"--calibrated: model {model!r} ships no calibration; fit one on a few labelled "
            "images with `owl calibrate --data D --model M --out calib.json` and pass "
            "--calibration calib.json"
        )
    return calibration


def threshold_option_value(threshold: float | None, calibration: Any, default: float) -> float:
    """--threshold: as given, else 0.5 with calibrated scores, else the command's default."""
    if threshold is not None:
        return threshold
    return 0.5 if calibration is not None else default


def max_pixels_value(max_image_pixels: int) -> int | None:
    """--max-image-pixels as the Detector takes it: 0 -> None (no limit)."""
    return None if max_image_pixels == 0 else max_image_pixels


def model_id(spec: str) -> str:
    """How a --model value is recorded in embedding files: an absolute path, or the name."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec.strip()


def check_model_spec(spec: str) -> None:
    """An unknown --model name is a usage error (exit 2) before any other work is done.

    Raises:
      click.UsageError: `spec` is neither an existing path nor a registry name.
    """
    from owl.checkpoints.registry import UnknownModelError, get_entry

    if Path(spec).exists():
        return
    try:
        get_entry(spec)
    except UnknownModelError as e:
        raise click.UsageError(f"--model {spec}: {e}") from None


def load_model(spec: str, *, quiet: bool, precision: str = "f32"):
    """Loads --model (a registry name or a checkpoint path); a bad one is a usage error (exit 2).

    Returns:
      An `owl.models.model.OwlModel`.
    """
    from owl.checkpoints.download import DownloadError
    from owl.checkpoints.load import load
    from owl.checkpoints.registry import UnknownModelError
    from owl.checkpoints.tree import CheckpointError

    try:
        return load(spec, progress=not quiet, precision=precision)
    except UnknownModelError as e:
        raise click.UsageError(f"--model: {e}") from None
    except CheckpointError as e:
        raise click.UsageError(f"--model {spec}: {e}") from None
    except DownloadError as e:
        raise click.ClickException(str(e)) from None


def load_detector(
    spec: str,
    *,
    batch_size: int = 4,
    max_pixels: int | None,
    quiet: bool,
    resize_method: str = "official",
    precision: str = "f32",
    backend: str = "auto",
    verbose: bool = False,
):
    """Loads --model into a `Detector` on --backend; a bad name or file is a usage error (exit 2).

    --model may be an `owl export` folder (then its graphs run); a missing, corrupt or
    mismatched one, or a backend/precision that cannot run here, is a one-line usage error.
    With `verbose` the backend chosen and its reason are printed once, on stderr.

    Returns:
      An `owl.inference.detector.Detector`.
    """
    if backend == "onnx" or precision == "int8":
        what = "--precision int8" if precision == "int8" else "--backend onnx"
        check_export_extra(what, ("onnxruntime",))
    from owl.checkpoints.download import DownloadError
    from owl.checkpoints.registry import UnknownModelError
    from owl.checkpoints.tree import CheckpointError
    from owl.export.auto import BackendError
    from owl.export.manifest import ExportDirError
    from owl.inference.detector import Detector

    try:
        detector = Detector(
            spec, batch_size=batch_size, max_pixels=max_pixels, resize_method=resize_method,
            backend=backend, precision=precision, progress=not quiet,
        )  # fmt: skip
    except ExportDirError as e:
        raise UsageFailure(f"--model {e}") from None
    except BackendError as e:
        raise UsageFailure(str(e)) from None
    except UnknownModelError as e:
        raise click.UsageError(f"--model: {e}") from None
    except CheckpointError as e:
        raise click.UsageError(f"--model {spec}: {e}") from None
    except DownloadError as e:
        raise click.ClickException(str(e)) from None
    if verbose:
        write_line(detector.backend.describe(), err=True)
    return detector


def expand_image_args(specs: Sequence[str], recursive: bool) -> list[str]:
    """IMAGES arguments -> image paths; a folder or pattern without images is a usage error."""
    from owl.inference.inputs import InputError, expand_images

    try:
        return expand_images(specs, recursive=recursive)
    except InputError as e:
        raise click.UsageError(str(e)) from None


def parse_boxes(specs: Sequence[str]) -> list[tuple[float, float, float, float]]:
    """--query-box values -> (x0, y0, x1, y1) tuples; bad syntax is a usage error."""
    from owl.inference.inputs import InputError, parse_box

    try:
        return [parse_box(s) for s in specs]
    except InputError as e:
        raise click.UsageError(str(e)) from None


def query_error(error: Exception) -> click.UsageError:
    """A query that cannot be used (empty, over-long, bad box, unreadable image) -> exit 2."""
    from owl.ops.image import ImageLoadError
    from owl.text.tokenizer import QueryTooLongError

    if isinstance(error, QueryTooLongError):
        return click.UsageError(
            f"query {error.text!r} has {error.count} tokens but at most {error.limit} fit; "
            "shorten it or pass --truncate-long-queries"
        )
    if isinstance(error, ImageLoadError):
        return click.UsageError(f"query image {error}")
    return click.UsageError(str(error))


def progress_bar(total: int, *, quiet: bool, unit: str = "image"):
    """A tqdm bar on stderr with rate and ETA; off with --quiet or for a single item."""
    from tqdm import tqdm

    return tqdm(
        total=total, unit=unit, file=sys.stderr, disable=quiet or total <= 1, dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]",
    )  # fmt: skip


def write_line(text: str, *, err: bool = False) -> None:
    """Prints a line without breaking a progress bar that may be showing on stderr."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr if err else sys.stdout)


def collect_queries(
    queries: tuple[str, ...],
    queries_file: str | None,
    query_images: tuple[str, ...],
    query_boxes: tuple[str, ...],
    query_labels: tuple[str, ...],
    query_method: str,
    query_embeddings: tuple[str, ...],
) -> tuple[list, list[str]]:
    """All query options -> (queries in order, embedding file paths); problems are exit 2."""
    from owl.inference import inputs
    from owl.inference.queries import load_query_embedding, parse_text_query

    request: list = []
    embedding_files: list[str] = []
    try:
        for spec in queries:
            text_query = parse_text_query(spec)
            if not text_query.text:
                raise click.UsageError(f"--query {spec!r} is empty; give some text, e.g. 'red car'")
            request.append(text_query)
        if queries_file is not None:
            request.extend(inputs.read_queries_file(queries_file))
        boxes = parse_boxes(query_boxes)
        request.extend(
            inputs.group_exemplars(query_images, boxes, query_labels, method=query_method)
        )
        for spec in query_embeddings:
            path, own_threshold = inputs.split_threshold_suffix(spec)
            request.append(load_query_embedding(path, own_threshold))
            embedding_files.append(path)
    except ValueError as e:  # InputError, bad thresholds, unreadable embedding files
        raise click.UsageError(str(e)) from None
    return request, embedding_files


def check_embeddings(request: list, files: list[str], dim: int, model: str) -> list[str]:
    """Embedding size must fit the model (usage error); another model's embedding is a note."""
    from owl.inference.queries import EmbeddingQuery

    notes = []
    embeddings = [q for q in request if isinstance(q, EmbeddingQuery)]
    current = model_id(model)
    for query, path in zip(embeddings, files, strict=True):
        size = query.embedding.shape[0]
        made_with = query.model
        if size != dim:
            raise click.UsageError(
                f"{path}: embedding has {size} values but model {model!r} needs {dim}; make it "
                f"again with `owl embed-query --model {model}` (it was made with {made_with!r})"
            )
        if made_with is not None and made_with != current:
            notes.append(
                f"{path} was made with model {made_with!r}, not {current!r}; its scores may "
                "not mean much with this model"
            )
    return notes


def format_image(source: str, detections: Detections) -> str:
    """One image's detections as readable lines: a header, then score, label and box."""
    meta = detections.metadata
    size = f"{meta.get('width')}x{meta.get('height')}"
    n = len(detections)
    head = f"{source} ({size}): " + (
        f"{n} detection{'s' if n != 1 else ''}" if n else "nothing found"
    )
    lines = [head]
    for det in detections:
        box = ", ".join(f"{float(v):.1f}" for v in det.xyxy)
        lines.append(f"  {det.confidence:.3f}  {det.label}  [{box}]")
    return "\n".join(lines)


def draw_image(source: str, detections: Detections, path: Path) -> str | None:
    """Writes the drawn image; returns an error line instead of raising."""
    from owl.inference.draw import draw_detections

    try:
        draw_detections(source, detections, out_path=path)
    except (OSError, ValueError) as e:
        return f"{source}: cannot write the drawn image {path} ({e})"
    return None


def report_failures(failures: Sequence[str], total: int, noun: str = "image") -> None:
    """Lists the inputs that failed, after all others were processed, and exits 1 if any did.

    Every command that goes on past bad images (`owl detect`, `owl index`) reports them so:
    "N of M images failed:", then one "  failed: <file>: <problem>" line each.
    """
    if not failures:
        return
    plural = "" if total == 1 else "s"
    write_line(f"{len(failures)} of {total} {noun}{plural} failed:", err=True)
    for message in failures:
        write_line(f"  failed: {message}", err=True)
    click.get_current_context().exit(EXIT_FAILED)
