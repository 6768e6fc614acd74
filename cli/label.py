"""`owl label`: turn a folder of images into a training set (COCO, YOLO, Pascal VOC).

Argument handling and printing only; the work is `owl.label.run.label_images`. Queries are parsed
by the same helpers as `owl detect` (`collect_queries`, the shared exemplar options).
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import (
    EXIT_CODES_HELP,
    UsageFailure,
    calibration_options,
    check_embeddings,
    collect_queries,
    exemplar_query_options,
    expand_image_args,
    load_detector,
    max_pixels_option,
    max_pixels_value,
    model_id,
    model_option,
    progress_bar,
    query_error,
    report_failures,
    resolve_calibration,
    threshold_option_value,
    truncate_option,
    write_line,
)

EPILOG = """\b
Examples:
  owl label photos/ --classes "forklift,pallet@0.2" --out data/warehouse --format yolo
  owl label photos/ --classes-file classes.txt --out ds --format coco,yolo,voc --split val=0.1
  owl label shots/ --captions captions.json --out ds --html
  owl label shots/ --query-image dog.jpg --query-box 10,20,110,220 --query-label dog --out ds
  owl train --config shapes_detect --workdir runs/x --set data.train_annotations=ds/data.yaml

"""


def _split(spec: str | None) -> dict[str, float]:
    if not spec:
        return {}
    name, sep, value = spec.partition("=")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not sep or name.strip() in ("", "train") or not 0.0 < fraction < 1.0:
        raise click.UsageError(
            f"--split {spec!r}: expected NAME=FRACTION with 0 < FRACTION < 1, e.g. val=0.1"
        )
    return {name.strip(): fraction}


def _ngrams(spec: str) -> tuple[int, int]:
    low, _, high = spec.partition("-")
    try:
        lo, hi = int(low), int(high or low)
    except ValueError:
        lo, hi = 0, 0
    if not 1 <= lo <= hi:
        raise click.UsageError(f"--caption-ngrams {spec!r}: expected MIN-MAX words, e.g. 1-10")
    return lo, hi


@click.command("label", epilog=EPILOG + EXIT_CODES_HELP)
@click.argument("images", nargs=-1, metavar="IMAGES...")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR", help="The data set folder (images/, annotations.json, data.yaml, ...).",
)  # fmt: skip
@click.option(
    "--classes", metavar="NAMES",
    help='Comma-separated class names, each optionally "name@T" with its own threshold.',
)  # fmt: skip
@click.option(
    "--classes-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="One class per line, as for --classes (\"pallet@0.2\"); # starts a comment.",
)  # fmt: skip
@click.option(
    "--captions", "captions_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="JSON or CSV: image -> caption (its word n-grams are the image's queries, as in "
    "OWL-ST; see docs/label.md) or -> a list of class names.",
)  # fmt: skip
@click.option(
    "--caption-ngrams", default="1-10", show_default=True, metavar="MIN-MAX",
    help="Lengths of the caption n-grams used as queries.",
)  # fmt: skip
@exemplar_query_options
@model_option
@click.option(
    "--format", "formats", default="coco", show_default=True, metavar="coco,yolo,voc",
    help="Output formats, comma-separated.",
)  # fmt: skip
@click.option(
    "-t", "--threshold", type=click.FloatRange(0.0, 1.0), default=None,
    help="Minimum score for classes without their own [default: 0.3, OWL-ST's pseudo-label "
    "choice; 0.5 with --calibrated].",
)  # fmt: skip
@calibration_options
@click.option(
    "--max-per-image", type=click.IntRange(min=0), default=100, show_default=True,
    help="Keep at most this many boxes per image, best first; 0 means no limit.",
)  # fmt: skip
@click.option(
    "--min-size", type=click.FloatRange(min=0.0), default=0.0, show_default=True, metavar="PX",
    help="Drop boxes whose shorter side is below this many pixels.",
)  # fmt: skip
@click.option(
    "--class-agnostic-nms/--per-class-nms", default=True, show_default=True,
    help="NMS across classes, so each object gets one label (overlapping queries such as "
    "'car' and 'red car' would otherwise both label it).",
)  # fmt: skip
@click.option(
    "--nms-iou", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
    help="NMS drops a box whose IoU with a better-scoring box is above this.",
)  # fmt: skip
@click.option(
    "--split", "split_spec", metavar="NAME=FRACTION",
    help="Hold out a random fraction (drawn with --seed), e.g. val=0.1: images/train, images/val.",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --split.")
@click.option("--copy", is_flag=True, help="Copy the images into DIR/images (default: link).")
@click.option("--html", is_flag=True, help="Also write DIR/review.html, a page to review labels.")
@click.option(
    "--overwrite", is_flag=True,
    help="Discard a resume log in DIR made with other settings (default: refuse).",
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
    help="Images encoded per forward pass.",
)  # fmt: skip
@click.option("-r", "--recursive", is_flag=True, help="Also take images from subfolders.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@max_pixels_option
@truncate_option
def label(
    images: tuple[str, ...],
    out_dir: Path,
    classes: str | None,
    classes_file: str | None,
    captions_file: str | None,
    caption_ngrams: str,
    query_images: tuple[str, ...],
    query_boxes: tuple[str, ...],
    query_labels: tuple[str, ...],
    query_method: str,
    query_embeddings: tuple[str, ...],
    model: str,
    formats: str,
    threshold: float | None,
    calibrated: bool,
    calibration_file: Path | None,
    max_per_image: int,
    min_size: float,
    class_agnostic_nms: bool,
    nms_iou: float,
    split_spec: str | None,
    seed: int,
    copy: bool,
    html: bool,
    overwrite: bool,
    batch_size: int,
    recursive: bool,
    quiet: bool,
    max_image_pixels: int,
    truncate_long_queries: bool,
) -> None:
    """Label IMAGES with a detector and write them as a training set in DIR.

    The vocabulary is --classes / --classes-file, exemplars (--query-image, as in `owl detect`),
    or --captions (per-image queries). Each box keeps its best class; a re-run after an
    interruption (even kill -9) resumes and gives the same data set as an uninterrupted run.
    Images that cannot be read are listed at the end (exit 1); the others are written.
    """
    from owl.data.formats import FORMATS

    fmts = [f.strip().lower() for f in formats.split(",") if f.strip()]
    unknown = [f for f in fmts if f not in FORMATS]
    if not fmts or unknown:
        raise click.UsageError(f"--format {formats!r}: use one or more of {', '.join(FORMATS)}")
    split = _split(split_spec)
    calibration = resolve_calibration(calibrated, calibration_file, model)
    threshold = threshold_option_value(threshold, calibration, 0.3)
    min_words, max_words = _ngrams(caption_ngrams)
    names = tuple(c for c in (classes or "").split(",") if c.strip())
    request, embedding_files = collect_queries(
        names, classes_file, query_images, query_boxes, query_labels, query_method,
        query_embeddings,
    )  # fmt: skip
    if bool(request) == bool(captions_file):
        raise click.UsageError(
            "give the vocabulary: --classes, --classes-file or --query-image (one set for all "
            "images), or --captions FILE (per image), not both"
        )
    paths = expand_image_args(images, recursive)
    if not paths:
        raise click.UsageError("no images given; pass image files, folders or glob patterns")
    entries = None
    if captions_file:
        from owl.label.captions import CaptionsError, match_captions, read_captions

        try:
            entries = match_captions(paths, read_captions(captions_file))
        except CaptionsError as e:
            raise UsageFailure(str(e)) from None
        if all(e is None for e in entries):
            raise UsageFailure(f"{captions_file}: names none of the {len(paths)} images")

    detector = load_detector(
        model, batch_size=batch_size, max_pixels=max_pixels_value(max_image_pixels), quiet=quiet
    )
    query_set = None
    if request:
        notes = check_embeddings(request, embedding_files, detector.model.config.embed_dim, model)
        try:
            query_set = detector.prepare_queries(request, truncate=truncate_long_queries)
        except ValueError as e:
            raise query_error(e) from None
        for note in (*notes, *query_set.notes):
            write_line(f"note: {note}", err=True)

    from owl.eval.runlog import SettingsMismatchError
    from owl.label.run import LabelOptions, label_images

    options = LabelOptions(
        threshold=threshold, nms_iou=nms_iou, class_agnostic_nms=class_agnostic_nms,
        max_per_image=max_per_image, min_size=min_size, min_words=min_words, max_words=max_words,
        calibration=calibration,
    )  # fmt: skip
    bar = progress_bar(len(paths), quiet=quiet)
    try:
        run = label_images(
            detector, paths, out_dir, model=model_id(model), queries=query_set, captions=entries,
            options=options, formats=fmts, split=split, seed=seed, copy=copy, html=html,
            overwrite=overwrite, truncate=truncate_long_queries,
            on_result=lambda _i, _e: bar.update(1),
        )  # fmt: skip
    except SettingsMismatchError as e:
        raise UsageFailure(str(e)) from None
    except ValueError as e:  # an over-long caption n-gram
        raise query_error(e) from None
    finally:
        bar.close()
    if not quiet:
        splits = ", ".join(f"{k or 'all'} {v}" for k, v in run.splits.items())
        write_line(
            f"labelled {run.num_images} images ({run.resumed} from the resume log, {run.new} "
            f"new; {splits}): {run.num_boxes} box{'es' * (run.num_boxes != 1)}, "
            f"{len(run.class_names)} class{'es' * (len(run.class_names) != 1)}",
            err=True,
        )
        for path in run.written:
            write_line(f"wrote {path}", err=True)
        if "yolo" in fmts:
            write_line(
                f"train on it: owl train --config CONFIG --workdir RUN "
                f"--set data.train_annotations={out_dir / 'data.yaml'}",
                err=True,
            )
    report_failures(list(run.failures), len(paths))
