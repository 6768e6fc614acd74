"""`owl export`: write a model's image encoder, text encoder and score graphs, verified.

Argument handling and printing only; the graphs, the manifest and the verification live in
`owl.export` (writer.py). Documentation for users: docs/export.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import (
    EXIT_CODES_HELP,
    UsageFailure,
    check_export_extra,
    load_model,
    write_line,
)

EPILOG = """\b
Examples:
  owl export owlv2-b16 --format onnx --out owlv2-onnx/
  owl export shapes-tiny --format stablehlo --out shapes-hlo/ --batch 4
  owl export owlvit-b32 --format onnx --out b32-bf16/ --precision bf16
  owl export owlv2-b16 --out owlv2-int8/ --precision int8
  owl detect --backend onnx --model owlv2-onnx/ -q "red car" photo.jpg

"""


def _batch(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise click.BadParameter(f"{value!r} is neither a positive integer nor 'dynamic'")
    return n


@click.command("export", epilog=EPILOG + EXIT_CODES_HELP)
@click.argument("model", metavar="MODEL")
@click.option(
    "--format", "fmt", type=click.Choice(["onnx", "stablehlo"]), default="onnx",
    show_default=True, help="Graph format: ONNX (run with ONNX Runtime; needs owl[export]) or "
    "serialised StableHLO (jax.export; run with jax.export.deserialize).",
)  # fmt: skip
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), metavar="DIR",
    help="Folder to write: new or empty (an earlier export needs --overwrite).",
)  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in DIR.")
@click.option(
    "--batch", default="dynamic", show_default=True, metavar="N|dynamic",
    help="Image batch of the image encoder and score graphs: a fixed N, or dynamic.",
)  # fmt: skip
@click.option(
    "--precision", type=click.Choice(["f32", "bf16", "int8"]), default="f32", show_default=True,
    help="bf16 stores the weights in bfloat16 (half the size) and computes in float32. int8 "
    "(ONNX) quantizes the image encoder's weight products for ONNX Runtime's int8 kernels; "
    "it passes when its class embeddings agree with owl's (cosine >= 0.99), and the manifest's "
    "calibration record says what was quantized and the agreement measured.",
)  # fmt: skip
@click.option(
    "--tolerance", type=float, default=1e-4, show_default=True,
    help="Largest max |diff| against owl that verification accepts.",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="Print only the final line.")
def export(
    model: str,
    fmt: str,
    out: Path,
    overwrite: bool,
    batch: str,
    precision: str,
    tolerance: float,
    quiet: bool,
) -> None:
    """Export MODEL as graphs that keep the vocabulary open: image_encoder, text_encoder, score.

    MODEL is a registry name or a checkpoint path (as for --model elsewhere). The image encoder
    turns normalised pixels into boxes, class embeddings, the logit shift and scale, and (OWLv2)
    objectness; the text encoder turns token ids into query embeddings; score is their dot
    product with shift and scale. DIR/manifest.json records the config, preprocessing,
    tokenizer files (copied into DIR/tokenizer/) and the max |diff| against owl, measured on a
    random input and a shipped example image: the export fails (exit 1, no manifest) if it is
    over --tolerance.
    """
    fixed = _batch(batch)
    if precision == "int8" and fmt != "onnx":
        raise click.UsageError(
            "--precision int8 is for --format onnx (ONNX Runtime's int8 kernels)"
        )
    if fmt == "onnx":
        check_export_extra("`owl export --format onnx`")
    from owl.export.manifest import ExportDirError
    from owl.export.writer import VerificationError, check_out_folder, export_model

    try:
        check_out_folder(out, overwrite)  # before the model is loaded or downloaded
    except ExportDirError as e:
        raise UsageFailure(str(e)) from None
    loaded = load_model(model, quiet=quiet)
    try:
        manifest = export_model(
            loaded, out, format=fmt, batch=fixed, precision=precision, tolerance=tolerance,
            overwrite=overwrite,
        )  # fmt: skip
    except ExportDirError as e:
        raise UsageFailure(str(e)) from None
    except VerificationError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"--out {out}: cannot write the export ({e})") from None
    v = manifest.verification
    if not quiet:
        for name, graph in manifest.graphs.items():
            size = (out / graph["file"]).stat().st_size
            data = out / (graph["file"] + ".data")
            size += data.stat().st_size if data.exists() else 0
            write_line(
                f"  {name:<14} {graph['file']:<24} {size / 2**20:8.1f} MiB   "
                f"max |diff| vs owl {v['max_abs_diff'][name]:.2e}"
            )
    if manifest.calibration is not None and not quiet:
        a = manifest.calibration["agreement"]
        write_line(
            f"  int8 image encoder vs owl: class-embedding cosine median "
            f"{a['class_embedding_cosine_median']:.4f}, 1st percentile "
            f"{a['class_embedding_cosine_p1']:.4f}; box L1 {a['box_l1_mean']:.2e}"
            + (
                f"; objectness r {a['objectness_correlation']:.4f}"
                if "objectness_correlation" in a
                else ""
            )
        )
    batch_text = "dynamic batch" if fixed is None else f"batch {fixed}"
    checked = (
        f"verified: text encoder max |diff| {v['max_abs_diff']['text_encoder']:.2e} <= "
        f"{tolerance:g}, image encoder by agreement"
        if precision == "int8"
        else f"verified: max |diff| {max(v['max_abs_diff'].values()):.2e} <= {tolerance:g}"
    )
    write_line(f"wrote {fmt} export of {model} to {out} ({batch_text}, {precision}; {checked})")
