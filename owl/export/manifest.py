"""`manifest.json` of an export folder: what a runtime needs to use the graphs without owl.

The manifest names the format and the graph files, the model config, the input contract (size,
pad value, CLIP normalisation, layout), the tokenizer files copied beside the graphs, the owl
version that wrote it and the max |diff| measured against owl when it was written. Reading it
checks every field it relies on and fails with one line (`ExportDirError`) naming the folder and
what to do, so a corrupt or mismatched export folder never gets as far as a runtime error.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from owl.models.configs import ModelConfig

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
FORMATS = ("onnx", "stablehlo")
PRECISIONS = ("f32", "bf16", "int8")
GRAPHS = ("image_encoder", "text_encoder", "score")
SUFFIX = {"onnx": ".onnx", "stablehlo": ".stablehlo"}


class ExportDirError(ValueError):
    """An export folder that cannot be used; the message is one line naming it and the fix."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The parsed `manifest.json`.

    Attributes:
      format: "onnx" or "stablehlo".
      config: the architecture the graphs were built from.
      batch: the fixed image batch of the image encoder and score graphs, or None (dynamic).
      precision: "f32", "bf16" (weights stored in bfloat16, computed in float32) or "int8"
        (an int8 image encoder, `owl.export.quantize`).
      graphs: graph name -> {"file": ..., "inputs": {...}, "outputs": {...}}.
      preprocessing: image_size, pad_value, mean, std, layout, resize.
      tokenizer: files (relative paths), context_length, pad/start/end ids.
      verification: tolerance and max |diff| per graph against owl.
      owl_version: the owl that wrote the folder.
      source: the model the export came from (a path or registry name), for messages.
      weights_sha256: `owl.checkpoints.tree.params_sha256` of the exported weights (the search
        index checks it), or None in folders written before it was recorded.
      calibration: for int8, what was quantized and how, and the agreement measured (else None).
    """

    format: str
    config: ModelConfig
    batch: int | None
    precision: str
    graphs: dict[str, dict[str, Any]]
    preprocessing: dict[str, Any]
    tokenizer: dict[str, Any]
    verification: dict[str, Any]
    owl_version: str
    source: str | None = None
    weights_sha256: str | None = None
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "owl_export": MANIFEST_VERSION,
            "format": self.format,
            "owl_version": self.owl_version,
            "source": self.source,
            "model_config": self.config.to_dict(),
            "batch": self.batch,
            "precision": self.precision,
            "preprocessing": self.preprocessing,
            "tokenizer": self.tokenizer,
            "graphs": self.graphs,
            "verification": self.verification,
            **({"weights_sha256": self.weights_sha256} if self.weights_sha256 else {}),
            **({"calibration": self.calibration} if self.calibration is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: Any, where: str = "manifest") -> Manifest:
        """Parses and checks a manifest dict; raises `ExportDirError` naming `where`."""

        def bad(what: str) -> ExportDirError:
            return ExportDirError(f"{where}: {what}; write the folder again with `owl export`")

        if not isinstance(d, dict):
            raise bad("is not a JSON object")
        version = d.get("owl_export")
        if version != MANIFEST_VERSION:
            raise bad(f"owl_export version {version!r}, this owl reads version {MANIFEST_VERSION}")
        fmt = d.get("format")
        if fmt not in FORMATS:
            raise bad(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
        try:
            config = ModelConfig.from_dict(d["model_config"])
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"model_config is missing or invalid ({e})") from None
        batch = d.get("batch")
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise bad(f"batch {batch!r} is neither null nor a positive integer")
        precision = d.get("precision")
        if precision not in PRECISIONS:
            raise bad(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        graphs = d.get("graphs")
        if not isinstance(graphs, dict) or not all(
            isinstance(graphs.get(g), dict) and isinstance(graphs[g].get("file"), str)
            for g in ("image_encoder", "text_encoder")
        ):
            raise bad("graphs must name the files of image_encoder and text_encoder")
        unknown = sorted(set(graphs) - set(GRAPHS))
        if unknown:
            raise bad(f"unknown graphs {', '.join(unknown)}")
        for name, graph in graphs.items():
            if not isinstance(graph, dict) or not is_plain_name(graph.get("file")):
                file = graph.get("file") if isinstance(graph, dict) else graph
                raise bad(
                    f"graphs.{name}.file {file!r} is not a plain file name inside the folder "
                    "(no folders, no absolute paths)"
                )
        for key in ("preprocessing", "tokenizer", "verification"):
            if not isinstance(d.get(key), dict):
                raise bad(f"{key} is missing")
        pre = d["preprocessing"]
        if pre.get("image_size") != config.image_size:
            raise bad(
                f"preprocessing.image_size {pre.get('image_size')!r} differs from the model's "
                f"{config.image_size}"
            )
        _check_owl_constants(d, config, bad)
        return cls(
            format=fmt,
            config=config,
            batch=batch,
            precision=precision,
            graphs=graphs,
            preprocessing=pre,
            tokenizer=d["tokenizer"],
            verification=d["verification"],
            owl_version=str(d.get("owl_version")),
            source=d.get("source"),
            weights_sha256=d.get("weights_sha256")
            if isinstance(d.get("weights_sha256"), str)
            else None,
            calibration=d.get("calibration") if isinstance(d.get("calibration"), dict) else None,
        )

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> Manifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ExportDirError(
                f"{where}: not valid JSON ({e.msg} at line {e.lineno}); write the folder again "
                "with `owl export`"
            ) from None
        return cls.from_dict(d, where)


def is_plain_name(name: Any) -> bool:
    """Whether `name` is a file name that stays inside its folder: no separators, not `..`.

    Manifests are untrusted input (an export folder may come from anywhere): a graph file named
    `../../etc/passwd` or `/etc/passwd` must never be opened.
    """
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
        and not os.path.isabs(name)
        and Path(name).name == name
    )


def _check_owl_constants(d: dict, config: ModelConfig, bad: Any) -> None:
    """Manifest values owl does not read, but computes itself, must be owl's own.

    owl preprocesses with its CLIP mean/std and the model's pad value, and tokenizes with its
    bundled tokenizer to the model's context length. A manifest stating other values describes
    graphs owl would feed wrongly, so it is refused rather than silently ignored.
    """
    from owl.ops.image import CLIP_MEAN, CLIP_STD
    from owl.text.tokenizer import EOT_ID, PAD_ID, SOT_ID

    pre, tok = d["preprocessing"], d["tokenizer"]
    for key, want in (("mean", CLIP_MEAN), ("std", CLIP_STD)):
        got = pre.get(key)
        if not (
            isinstance(got, list)
            and len(got) == len(want)
            and all(
                isinstance(v, int | float) and abs(v - w) <= 1e-6
                for v, w in zip(got, want, strict=True)
            )
        ):
            raise bad(f"preprocessing.{key} {got!r} is not owl's CLIP {key} {list(want)!r}")
    if pre.get("pad_value") != config.pad_value:
        raise bad(
            f"preprocessing.pad_value {pre.get('pad_value')!r} differs from the model's "
            f"{config.pad_value}"
        )
    if tok.get("context_length") != config.context_length:
        raise bad(
            f"tokenizer.context_length {tok.get('context_length')!r} differs from the model's "
            f"{config.context_length}"
        )
    for key, want in (("pad_id", PAD_ID), ("start_id", SOT_ID), ("end_id", EOT_ID)):
        if tok.get(key) != want:
            raise bad(f"tokenizer.{key} {tok.get(key)!r} is not owl's tokenizer's {want}")


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """Reads `DIR/manifest.json` and checks that the graph files it names exist.

    Raises:
      ExportDirError: not a folder, no manifest, an invalid manifest, or a missing graph file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ExportDirError(
            f"{directory}: not an export folder (no such directory); make one with "
            "`owl export MODEL --format onnx --out DIR`"
        )
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExportDirError(
            f"{directory}: no {MANIFEST_NAME}, so not a finished owl export; make one with "
            "`owl export MODEL --format onnx --out DIR`"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ExportDirError(f"{path}: cannot be read ({e})") from None
    manifest = Manifest.from_json(text, str(path))
    for name, graph in manifest.graphs.items():
        if not (directory / graph["file"]).is_file():
            raise ExportDirError(
                f"{directory}: the {name} graph {graph['file']} named in {MANIFEST_NAME} is "
                "missing; write the folder again with `owl export`"
            )
    return manifest


__all__ = [
    "FORMATS",
    "GRAPHS",
    "MANIFEST_NAME",
    "PRECISIONS",
    "ExportDirError",
    "Manifest",
    "is_plain_name",
    "read_manifest",
]
