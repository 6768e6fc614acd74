"""`export_model`: write an export folder (graphs, tokenizer, manifest), verified against owl.

The folder gets `image_encoder`, `text_encoder` and `score` graphs in one format, the tokenizer
files copied from owl's assets, then — only after the graphs have been run and compared with
owl on the verification inputs — `manifest.json`. A folder without a manifest is therefore an
unfinished export, and `owl.export.backend.open_export` refuses it.

Precision "int8" writes the float32 graphs, then quantizes the image encoder
(`owl.export.quantize`); it passes verification when the text encoder is within the tolerance and
the image encoder's class embeddings agree with owl's (cosine median and 1st percentile >=
`INT8_MIN_COSINE`); the manifest's `calibration` records how it was quantized and the agreement.

Precision "bf16" stores the weights (arrays of 1024 values or more) in bfloat16, which halves
the files; the graphs cast them to float32 and compute in float32. Verification then compares
against owl running the same rounded weights, to the same tolerance, and also records the
difference from the original float32 weights.
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import ml_dtypes
import numpy as np

import owl
from owl.checkpoints.tree import params_sha256
from owl.export.backend import load_graphs
from owl.export.manifest import FORMATS, MANIFEST_NAME, PRECISIONS, ExportDirError, Manifest
from owl.export.verify import (
    INT8_MIN_COSINE,
    TOLERANCE,
    VerificationError,
    compare,
    image_agreement,
)
from owl.files import atomic_write
from owl.models.model import OwlModel
from owl.ops.image import CLIP_MEAN, CLIP_STD
from owl.text.tokenizer import EOT_ID, PAD_ID, SOT_ID

TOKENIZER_FILES = ("bpe_simple_vocab_16e6.txt.gz", "LICENSE-clip-bpe.txt")
BF16_MIN_SIZE = 1024  # smaller arrays (biases, LayerNorms, the class token) stay float32


def export_model(
    model: OwlModel,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    batch: int | None = None,
    precision: str = "f32",
    tolerance: float = TOLERANCE,
    overwrite: bool = False,
) -> Manifest:
    """Exports `model` into the folder `out` and verifies it; returns the written manifest.

    Args:
      model: the detector to export.
      out: the folder; created if needed. An existing folder must be empty, or an owl export
        and `overwrite` set (as `owl convert` needs --overwrite to replace its file).
      format: "onnx" or "stablehlo".
      batch: a fixed image batch, or None for a dynamic one.
      precision: "f32", "bf16" for bfloat16-stored weights computed in float32, or "int8" (ONNX
        only) for an int8 image encoder.
      tolerance: largest max |diff| against owl that passes (int8: of the text encoder).
      overwrite: replace an earlier export in `out`.
    Raises:
      ValueError: a bad format, precision or batch; ExportDirError: `out` is not usable.
      VerificationError: the graphs differ from owl by more than `tolerance` (no manifest).
    """
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if batch is not None and batch < 1:
        raise ValueError(f"batch must be a positive integer or dynamic, got {batch}")
    if precision == "int8" and format != "onnx":
        raise ValueError("precision int8 is for ONNX exports (ONNX Runtime's quantized kernels)")
    directory = _prepare_folder(Path(out), overwrite)
    params = jax.device_get(model.params)
    calibration = None
    reference = model
    stored = params
    if precision == "bf16":
        stored = jax.tree_util.tree_map(_to_bf16, params)
        reference = OwlModel(
            model.config, jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), stored)
        )
    if format == "onnx":
        from owl.export.onnx_files import write_onnx

        as_f32 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), stored)
        weight_dtype = ml_dtypes.bfloat16 if precision == "bf16" else np.float32
        graphs = write_onnx(model.config, as_f32, directory, batch, weight_dtype)
        if precision == "int8":
            calibration = _quantize(directory, model.config)
    else:
        from owl.export.stablehlo import write_stablehlo

        graphs = write_stablehlo(model, stored, directory, batch)
    tokenizer = _copy_tokenizer(directory / "tokenizer", model.config.context_length)
    manifest = Manifest(
        format=format,
        config=model.config,
        batch=batch,
        precision=precision,
        graphs=graphs,
        preprocessing=preprocessing_contract(model),
        tokenizer=tokenizer,
        verification={},
        owl_version=owl.__version__,
        source=model.source,
        weights_sha256=params_sha256(params),
    )
    exported = load_graphs(directory, manifest)
    result = compare(reference, exported, batch)
    result["tolerance"] = tolerance
    worst = max(result["max_abs_diff"].values())
    if precision == "bf16":
        result["max_abs_diff_vs_f32_weights"] = compare(model, exported, batch)["max_abs_diff"]
    if calibration is not None:
        agree = image_agreement(model, exported, batch)
        calibration["agreement"] = agree
        calibration["agreement_inputs"] = result["inputs"]
        result["agreement"] = agree
        worst = result["max_abs_diff"]["text_encoder"]
        low = min(agree["class_embedding_cosine_median"], agree["class_embedding_cosine_p1"])
        if not low >= INT8_MIN_COSINE:
            raise VerificationError(
                f"{directory}: the int8 image encoder's class embeddings agree with owl's only to "
                f"cosine {low:.4f} (< {INT8_MIN_COSINE}); no manifest written; use --precision f32"
            )
    if not worst <= tolerance:
        per_graph = ", ".join(f"{k} {v:.2e}" for k, v in result["max_abs_diff"].items())
        raise VerificationError(
            f"{directory}: the exported graphs differ from owl by up to {worst:.2e} (> "
            f"{tolerance:g}: {per_graph}); no manifest written"
        )
    manifest = Manifest(**{**manifest.__dict__, "verification": result, "calibration": calibration})
    with atomic_write(directory / MANIFEST_NAME) as f:
        f.write(manifest.to_json())
    return manifest


def _quantize(directory: Path, config: Any) -> dict[str, Any]:
    """Replaces the float32 image encoder by its int8 version; returns the calibration record."""
    from owl.export.quantize import quantize_image_encoder

    final = directory / "image_encoder.onnx"
    f32 = directory / "image_encoder.f32.onnx"
    os.replace(final, f32)  # its weights, if external, stay in image_encoder.onnx.data
    try:
        return quantize_image_encoder(f32, final, config)  # one file: int8 weights inline
    finally:
        f32.unlink(missing_ok=True)
        (directory / "image_encoder.onnx.data").unlink(missing_ok=True)


def preprocessing_contract(model: OwlModel) -> dict[str, Any]:
    """What a runtime must do to an image before the image encoder (owl.ops.image.preprocess)."""
    c = model.config
    return {
        "image_size": c.image_size,
        "pad_value": c.pad_value,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "layout": "NHWC float32, RGB",
        "resize": (
            "scale RGB to [0, 1]; pad at the bottom and right to a square filled with pad_value; "
            "resize to image_size x image_size (antialiased bilinear); then (x - mean) / std"
        ),
        "boxes": "pred_boxes are (cx, cy, w, h) in [0, 1] of the padded square",
    }


def _to_bf16(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.float32 and x.size >= BF16_MIN_SIZE:
        return x.astype(ml_dtypes.bfloat16)
    return x


def check_out_folder(directory: Path, overwrite: bool) -> None:
    """Raises `ExportDirError` unless `directory` may receive an export; changes nothing.

    It may be missing, an empty folder, or (with `overwrite`) an earlier owl export. A folder
    holding anything else is never written into.
    """
    if directory.exists() and not directory.is_dir():
        raise ExportDirError(f"--out {directory}: is a file; give a folder for the export")
    if not directory.is_dir():
        return
    present = list(directory.iterdir())
    others = [p.name for p in present if not _is_export_file(p)]
    if others:
        raise ExportDirError(
            f"--out {directory}: the folder holds files that are not an owl export "
            f"({others[0]}); give an empty or new folder"
        )
    if present and not overwrite:
        raise ExportDirError(
            f"--out {directory}: holds an owl export already; pass --overwrite to replace it, "
            "or give an empty or new folder"
        )


def _prepare_folder(directory: Path, overwrite: bool) -> Path:
    """Creates `directory`, or reuses an empty one or (`overwrite`) an earlier export."""
    check_out_folder(directory, overwrite)
    if directory.is_dir():
        (directory / MANIFEST_NAME).unlink(missing_ok=True)  # unfinished until verified again
        for old in directory.iterdir():
            if old.is_file():
                old.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _is_export_file(path: Path) -> bool:
    if path.name == "tokenizer":
        return path.is_dir()
    return path.is_file() and (
        path.name == MANIFEST_NAME or path.name.endswith((".onnx", ".onnx.data", ".stablehlo"))
    )


def _copy_tokenizer(folder: Path, context_length: int) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        resource = importlib.resources.files("owl").joinpath("assets", name)
        with importlib.resources.as_file(resource) as src:
            shutil.copyfile(src, folder / name)
    return {
        "kind": "CLIP byte-level BPE (lower-cased, ftfy-fixed, whitespace-collapsed)",
        "files": [f"tokenizer/{name}" for name in TOKENIZER_FILES],
        "context_length": context_length,
        "pad_id": PAD_ID,
        "start_id": SOT_ID,
        "end_id": EOT_ID,
        "layout": "[start, tokens..., end, 0, 0, ...] per query, int64 for ONNX, int32 for StableHLO",
    }


__all__ = ["VerificationError", "check_out_folder", "export_model", "preprocessing_contract"]
