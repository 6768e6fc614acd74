"""`owl calibrate`: fit calibrated scores on a few labelled images, write the calibration file.

Argument handling and printing only; the fit is `owl.eval.calibration.fit_calibration`, the
file `owl.inference.calibration.Calibration`. Documentation: docs/calibration.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import (
    EXIT_CODES_HELP,
    UsageFailure,
    backend_option,
    load_detector,
    max_pixels_option,
    max_pixels_value,
    model_id,
    model_option,
    write_line,
)

EPILOG = """\b
Examples:
  owl calibrate --data labelled/annotations.json --model owlv2-b16 --out calib.json
  owl calibrate --data ds/data.yaml --split val --out calib.json --method isotonic
  owl detect photos/ -q forklift --model owlv2-b16 --calibration calib.json

"""


@click.command("calibrate", epilog=EPILOG + EXIT_CODES_HELP)
@click.option(
    "--data", required=True, metavar="PATH",
    help="Labelled images: a COCO JSON (or a folder with annotations.json), a YOLO data.yaml "
    "or folder, or a Pascal VOC folder. Every class of it is a query; its boxes are the truth.",
)  # fmt: skip
@click.option(
    "--images", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR",
    help="The image folder (COCO: default images/ beside the JSON; VOC: optional).",
)  # fmt: skip
@click.option(
    "--split", default="train", show_default=True, metavar="NAME",
    help="YOLO data.yaml key, or the split of a folder written by `owl label --split`.",
)  # fmt: skip
@model_option
@backend_option
@click.option(
    "--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE", help="The calibration file to write (JSON).",
)  # fmt: skip
@click.option(
    "--method", type=click.Choice(["platt", "isotonic"]), default="platt", show_default=True,
    help="platt: per-query Platt scaling on the logit and the margin over the contrast "
    "classes, pulled towards one global fit (the default, docs/calibration.md); isotonic: "
    "per-query isotonic regression on the logit alone.",
)  # fmt: skip
@click.option(
    "--contrast/--no-contrast", default=True, show_default=True,
    help="Score the data set's classes on every box as background queries, and use the "
    "margin of a query over the best other class (Platt only). Detection then also scores "
    "those classes (class head only).",
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
    help="Images encoded per forward pass.",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No summary.")
@max_pixels_option
def calibrate(
    data: str,
    images: Path | None,
    split: str,
    model: str,
    backend: str,
    out_file: Path,
    method: str,
    contrast: bool,
    batch_size: int,
    quiet: bool,
    max_image_pixels: int,
) -> None:
    """Fit calibrated scores on labelled images and write them to a calibration file.

    For every image and class: the class's best 5 boxes after per-class NMS at IoU 0.5, each
    a true match when it takes a ground-truth box of that class at IoU >= 0.5 (one-to-one).
    The fit maps each class's raw logit to the probability of a true match; classes the file
    does not name get the global fit. `owl detect --calibration FILE` (and `owl label`) use it.
    """
    from owl.data.coco import DatasetError
    from owl.data.formats import load_dataset

    try:
        dataset, line = load_dataset(data, images, split=split, log=False)
    except DatasetError as e:
        raise UsageFailure(f"--data {e}") from None
    if not len(dataset) or not dataset.class_names:
        raise UsageFailure(f"--data {data}: no labelled images to calibrate on")
    if not quiet:
        write_line(line, err=True)
    detector = load_detector(
        model, batch_size=batch_size, max_pixels=max_pixels_value(max_image_pixels), quiet=quiet,
        backend=backend,
    )  # fmt: skip

    from owl.eval.calibration import (
        calibrated_scores,
        ece,
        fit_calibration,
        raw_scores,
        score_images,
        select,
    )

    names = list(dataset.class_names)
    examples = list(dataset.examples)
    scored = score_images(
        detector, [ex.image_path for ex in examples], [(ex.boxes, ex.labels) for ex in examples],
        names, contrast=names if contrast and method == "platt" else (),
    )  # fmt: skip
    for failure in scored.failures:
        write_line(f"skipped: {failure}", err=True)
    try:
        calibration = fit_calibration(
            scored, method=method, model=model_id(model),
            fit_info={"data": str(Path(data).resolve()), "images": len(scored.images)},
        )  # fmt: skip
    except ValueError as e:
        raise UsageFailure(f"--data {data}: {e}") from None
    try:
        calibration.save(out_file)
    except OSError as e:
        raise click.ClickException(f"{out_file}: cannot write the calibration file ({e})") from None
    if not quiet:
        before = ece(select(scored, raw_scores))
        after = ece(select(scored, calibrated_scores(calibration)))
        write_line(
            f"fitted {method} on {len(scored.images)} images, {len(names)} classes, "
            f"{calibration.fit['positives']} true matches among {calibration.fit['boxes']} "
            f"boxes; ECE on these images (in-sample) {before:.4f} raw -> {after:.4f} calibrated",
            err=True,
        )
        write_line(f"wrote {out_file}", err=True)
