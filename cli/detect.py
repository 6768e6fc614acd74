"""`owl detect`: find objects described by text, example boxes or saved embeddings in images.

Argument handling and printing only. Input expansion and query parsing live in
`owl.inference.inputs`, detection in `owl.inference.detector.Detector`, writers in
`owl.inference.outputs` and drawing in `owl.inference.draw`. Usage errors (exit 2) are found
before any image is processed; a bad target image is reported and the batch goes on (exit 1).
Documentation for users: docs/detect.md.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from owl.cli.detect_video import (
    VideoRun,
    check_video_run,
    query_video_frames,
    run_videos,
    split_videos,
    video_options,
)
from owl.cli.options import (
    EXIT_CODES_HELP,
    backend_option,
    calibration_options,
    check_embeddings,
    collect_queries,
    draw_image,
    exemplar_query_options,
    expand_image_args,
    format_image,
    load_detector,
    max_pixels_option,
    max_pixels_value,
    model_option,
    precision_option,
    progress_bar,
    query_error,
    report_failures,
    resolve_calibration,
    threshold_option_value,
    truncate_option,
    verbose_option,
    write_line,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from owl.inference.detections import Detections

OUTPUT_SUFFIXES = (".json", ".csv", ".coco.json")

EPILOG = """\b
Examples:
  owl detect street.jpg --query "red car" --query "bicycle@0.3"
  owl detect photos/ --recursive --queries-file queries.txt --output dets.json
  owl detect "shots/*.png" -q cat -q dog --output dets.coco.json --save-dir drawn/
  owl detect scene.jpg --query-image dog.jpg --query-box 10,20,110,220 --query-label dog
  owl detect scene.jpg --query-image a.jpg --query-image b.jpg --query-box 5,5,60,80 \\
      --query-box 30,10,90,70 --query-label cat --query-method iou --no-nms
  owl embed-query --query-image dog.jpg --query-box 10,20,110,220 -o dog.npz
  owl detect photos/ --query-embedding dog.npz@0.2 --nms-iou 0.5 --class-agnostic-nms
  owl detect a.jpg -q person --model owlvit-b32 --threshold 0.2 --multi-label --quiet
  owl detect big.tif -q ship --max-image-pixels 0 --batch-size 8 --max-detections 20 \\
      --output ships.csv
  owl detect clip.mp4 -q "red car" --track --fps 5 -o tracks.jsonl --save-dir drawn/
  owl detect clip.mp4 --query-video clip.mp4 --query-frame 2.5 --query-box 10,20,60,80 --track
  owl detect a.jpg -q "a very long description of a small red vintage car parked by a \\
      fence" --truncate-long-queries

"""


@click.command("detect", epilog=EPILOG + EXIT_CODES_HELP)
@click.argument("images", nargs=-1, metavar="IMAGES...")
@click.option(
    "-q", "--query", "queries", multiple=True, metavar="TEXT",
    help='Text query, repeatable; "TEXT@T" gives it its own threshold T, e.g. "red car@0.3".',
)  # fmt: skip
@click.option(
    "--queries-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="UTF-8 file with one text query per line, written as for --query (\"red car@0.3\"); "
    "blank lines and lines starting with # are ignored.",
)  # fmt: skip
@exemplar_query_options
@model_option
@backend_option
@click.option(
    "-t", "--threshold", type=click.FloatRange(0.0, 1.0), default=None,
    help="Minimum score for queries without a threshold of their own [default: 0.1; 0.5 "
    "with --calibrated].",
)  # fmt: skip
@calibration_options
@click.option(
    "--multi-label", is_flag=True,
    help="Keep every (box, query) pair above threshold, not only each box's best query.",
)  # fmt: skip
@click.option(
    "--nms/--no-nms", default=None,
    help="Non-maximum suppression. Default: on when image or embedding queries are used (as "
    "in the official image-query demo), off for text only (as in the official pipeline).",
)  # fmt: skip
@click.option(
    "--nms-iou", type=click.FloatRange(0.0, 1.0), default=None,
    help="NMS drops a box whose IoU with a better-scoring box is above this [default: 0.3; "
    "with --calibrated, the calibration's own, 0.5].",
)  # fmt: skip
@click.option(
    "--class-agnostic-nms", is_flag=True,
    help="Let NMS suppress across queries (default: only within the same query).",
)  # fmt: skip
@click.option(
    "--max-detections", type=click.IntRange(min=0), default=100, show_default=True,
    help="Keep at most this many detections per image, best first; 0 means no limit.",
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
    help="Images encoded per forward pass.",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="FILE",
    help="Write detections to FILE: *.json (owl schema, see docs/detect.md), *.csv (one row "
    "per detection) or *.coco.json (COCO results; image_id = position in the image list and "
    "category_id = query index, unless --annotations gives the dataset's own). '-' writes to "
    "stdout, in --output-format. Without it, detections are printed.",
)  # fmt: skip
@click.option(
    "--output-format", type=click.Choice(["json", "csv", "coco"]), default=None,
    help="Format for -o - (stdout) [default: json]; for a file, the name's suffix decides.",
)  # fmt: skip
@click.option(
    "--annotations", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="COCO/LVIS dataset JSON: write COCO results with its own ids, so `owl eval "
    "--detections` reads them. An image's id is found by file name, a query's by category "
    "name; without queries, every category is a query. Needs COCO output (*.coco.json).",
)  # fmt: skip
@click.option(
    "--save-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
    help="Write each image with its boxes drawn to DIR/<image stem>.png (same-named images "
    "from different folders get their folder names prepended).",
)  # fmt: skip
@click.option(
    "-r", "--recursive", is_flag=True,
    help="Also take images from subfolders of the folders given.",
)  # fmt: skip
@click.option(
    "--quiet", is_flag=True,
    help="No progress bar, summary table or 'wrote' lines (notes and failures still show).",
)  # fmt: skip
@max_pixels_option
@truncate_option
@precision_option
@video_options
@verbose_option
def detect(
    images: tuple[str, ...],
    queries: tuple[str, ...],
    queries_file: str | None,
    query_images: tuple[str, ...],
    query_boxes: tuple[str, ...],
    query_labels: tuple[str, ...],
    query_method: str,
    query_embeddings: tuple[str, ...],
    model: str,
    threshold: float | None,
    calibrated: bool,
    calibration_file: Path | None,
    multi_label: bool,
    nms: bool | None,
    nms_iou: float | None,
    class_agnostic_nms: bool,
    max_detections: int,
    batch_size: int,
    output: Path | None,
    output_format: str | None,
    annotations: Path | None,
    save_dir: Path | None,
    recursive: bool,
    quiet: bool,
    max_image_pixels: int,
    truncate_long_queries: bool,
    precision: str,
    backend: str,
    stride: int | None,
    sample_fps: float | None,
    start: float,
    end: float | None,
    track: bool,
    tracker: str,
    query_videos: tuple[str, ...],
    query_frames: tuple[float, ...],
    save_frames: bool,
    verbose: bool,
) -> None:
    """Detect objects in images with text queries, example boxes or saved query embeddings.

    IMAGES are files, folders (add --recursive for subfolders), glob patterns ("**" crosses
    folders) and http(s) URLs (fetched first: at most 64 MiB, 30 s without an answer).
    Video files (mp4, mov, mkv, webm, avi) are detected frame by frame (docs/video.md).
    Queries: --query / --queries-file (text), --query-image with --query-box (exemplars),
    --query-embedding (from `owl embed-query`); they can be mixed. Each query is
    scored on its own (sigmoid), so scores of different queries are not a distribution.

    Detections go to --output, or are printed per image; a summary table goes to stderr.
    Images that cannot be read are listed at the end, after all others were processed.
    """
    from owl.inference.inputs import drawn_image_names

    # -- cheap checks first: nothing heavy is loaded for a usage error ---------------------------
    to_stdout = output is not None and str(output) == "-"
    fmt = _output_format(output, output_format, to_stdout)
    if output is not None and not to_stdout:
        if output.parent.exists() and not output.parent.is_dir():
            raise click.UsageError(f"--output {output}: {output.parent} is not a folder")
    if annotations is not None and fmt != "coco":
        raise click.UsageError(
            "--annotations gives COCO results the dataset's ids; write them with "
            "--output FILE.coco.json (or -o - --output-format coco)"
        )
    dataset = _load_dataset(annotations) if annotations is not None else None
    paths = expand_image_args(images, recursive)
    if not paths:
        raise click.UsageError("no images given; pass image files, folders or glob patterns")
    total = len(paths)
    videos, paths = split_videos(paths)  # videos go to owl.cli.detect_video, after the images
    video_run = VideoRun(stride, sample_fps, start, end, track, tracker, save_frames)
    check_video_run(video_run, videos, paths, fmt, save_dir)

    calibration = resolve_calibration(calibrated, calibration_file, model)
    threshold = threshold_option_value(threshold, calibration, 0.1)
    query_images += tuple(query_video_frames(query_videos, query_frames))  # exemplars from videos
    request, embedding_files = collect_queries(
        queries, queries_file, query_images, query_boxes, query_labels, query_method,
        query_embeddings,
    )  # fmt: skip
    if not request and dataset is not None:
        from owl.inference.queries import TextQuery

        categories = sorted(dataset["categories"], key=lambda c: c["id"])
        request = [TextQuery(str(c["name"])) for c in categories]
    if not request:
        raise click.UsageError(
            "no queries given; pass --query TEXT, --queries-file FILE, --query-image IMG "
            "(with --query-box) or --query-embedding FILE"
        )

    # -- model and queries ---------------------------------------------------------------------
    detector = load_detector(
        model, batch_size=batch_size, max_pixels=max_pixels_value(max_image_pixels), quiet=quiet,
        precision=precision, backend=backend, verbose=verbose,
    )  # fmt: skip
    notes = check_embeddings(request, embedding_files, detector.model.config.embed_dim, model)
    try:
        query_set = detector.prepare_queries(request, truncate=truncate_long_queries)
    except ValueError as e:  # empty or over-long text, bad box, unreadable query image
        raise query_error(e) from None
    for note in (*notes, *query_set.notes):
        write_line(f"note: {note}", err=True)

    # -- the dataset's ids (--annotations): a query must be a category, an image a record -------
    failures: list[str] = []
    image_ids: list[int] | None = None
    category_ids: list[int] | None = None
    if dataset is not None:
        category_ids = _category_ids(query_set.labels, dataset, annotations)
        paths, image_ids, unmatched = _image_ids(paths, dataset)
        failures += [f"{p}: no image with that file name in {annotations}" for p in unmatched]

    # -- detection -----------------------------------------------------------------------------
    drawn_names = drawn_image_names(paths) if save_dir is not None else []
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
    if output is not None and not to_stdout:
        output.parent.mkdir(parents=True, exist_ok=True)  # like --save-dir
    local, url_errors = _fetch_urls(paths)
    done: list[tuple[int, Detections]] = []  # (position in paths, Detections)
    counts = [0] * len(query_set)
    bar = progress_bar(len(paths), quiet=quiet)
    results = detector.detect_each(
        local, query_set, threshold=threshold, multi_label=multi_label, nms=nms, nms_iou=nms_iou,
        class_agnostic_nms=class_agnostic_nms, max_detections=max_detections or None,
        calibration=calibration,
    )  # fmt: skip
    for position, result in enumerate(results):
        bar.update(1)
        if position in url_errors:
            failures.append(url_errors[position])
            continue
        if result.error is not None:
            failures.append(result.error)
            continue
        detections, source = result.detections, result.source
        if local[position] != paths[position]:  # a fetched URL: outputs name the URL
            source = paths[position]
            detections = dataclasses.replace(
                detections, metadata={**detections.metadata, "path": source}
            )
        done.append((position, detections))
        for query_index in detections.class_id:
            counts[int(query_index)] += 1
        if output is None:
            write_line(format_image(source, detections))
        if save_dir is not None:
            error = draw_image(local[position], detections, save_dir / drawn_names[position])
            if error is not None:
                failures.append(error)
    bar.close()
    if videos:
        failures += run_videos(
            detector, query_set, videos, video_run, output=output, save_dir=save_dir,
            quiet=quiet, detect_options=dict(
                threshold=threshold, multi_label=multi_label, nms=nms, nms_iou=nms_iou,
                class_agnostic_nms=class_agnostic_nms, max_detections=max_detections or None,
                calibration=calibration,
            ), counts=counts,
        )  # fmt: skip

    # -- outputs, summary, failures ------------------------------------------------------------
    if output is not None and not videos and not to_stdout and paths and not done:
        write_line(f"{output} not written: no image could be read", err=True)
    elif output is not None and not videos:
        from owl.inference.outputs import write_coco, write_csv, write_json

        results = [d for _, d in done]
        ids = [position if image_ids is None else image_ids[position] for position, _ in done]
        try:
            if fmt == "coco":
                write_coco(output, results, ids, category_ids)
            elif fmt == "csv":
                write_csv(output, results)
            else:
                write_json(output, results)
        except OSError as e:
            raise click.ClickException(f"{output}: cannot write the output file ({e})") from None
        if not quiet and not to_stdout:
            write_line(f"wrote {output} ({_count(len(done), 'image')})", err=True)
    if save_dir is not None and not quiet:
        write_line(f"wrote drawn images to {save_dir}", err=True)
    if not quiet:
        thresholds = [threshold if t is None else t for t in query_set.thresholds]
        summary = _summary(len(done), len(paths) - len(done), query_set.labels,
                           thresholds, counts)  # fmt: skip
        if videos and not paths:  # the images line is about no image; the per-query counts stay
            summary = summary.split("\n", 1)[1]
        write_line(
            summary,
            err=True,
        )
    report_failures(failures, total, noun="input" if videos else "image")


def _fetch_urls(paths: Sequence[str]) -> tuple[list[str], dict[int, str]]:
    """Downloads the http(s) images into a temporary folder (removed when the command ends).

    Returns:
      (what to read for each image: the local copy for a URL, else the path itself; the error
      line of each URL that could not be fetched, by position).
    """
    from owl.inference.inputs import InputError, fetch_image_url, is_url, url_file_name

    local, errors = list(paths), {}
    positions = [i for i, p in enumerate(paths) if is_url(p)]
    if not positions:
        return local, errors
    folder = tempfile.TemporaryDirectory(prefix="owl-detect-")
    click.get_current_context().call_on_close(folder.cleanup)
    for i in positions:
        try:
            dest = Path(folder.name) / str(i) / url_file_name(paths[i])
            local[i] = str(fetch_image_url(paths[i], dest))
        except InputError as e:
            errors[i] = str(e)
    return local, errors


def _count(n: int, noun: str) -> str:
    """ "1 image", "2 images"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _output_format(output: Path | None, output_format: str | None, to_stdout: bool) -> str | None:
    """The output format: --output-format for stdout, else the file name's suffix."""
    if output is None:
        if output_format is not None:
            raise click.UsageError("--output-format applies with --output - (stdout)")
        return None
    if to_stdout:
        return output_format or "json"
    name = output.name.lower()
    if name.endswith((".jsonl", ".mot.txt")):  # video outputs (owl.video.outputs)
        return "jsonl" if name.endswith(".jsonl") else "mot"
    if not name.endswith(OUTPUT_SUFFIXES):
        raise click.UsageError(
            f"--output {output}: unknown format; name the file *.json, *.csv or *.coco.json "
            "(videos: *.jsonl, *.mot.txt, *.csv), or pass - for stdout"
        )
    fmt = "coco" if name.endswith(".coco.json") else "csv" if name.endswith(".csv") else "json"
    if output_format is not None and output_format != fmt:
        raise click.UsageError(
            f"--output-format {output_format} contradicts the file name {output.name} ({fmt}); "
            "drop one"
        )
    return fmt


def _load_dataset(path: Path) -> dict:
    """--annotations FILE, validated; an unusable file is a usage error (exit 2)."""
    from owl.cli.options import UsageFailure
    from owl.data.annotations import EvalDataError, load_annotations

    try:
        return load_annotations(path)
    except EvalDataError as e:
        raise UsageFailure(f"--annotations {e}") from None


def _category_ids(labels: Sequence[str], dataset: dict, path: Path) -> list[int]:
    """The dataset's category id of each query; a query that is no category is exit 2."""
    from owl.inference.inputs import match_categories

    ids = match_categories(labels, dataset["categories"])
    unknown = [label for label, i in zip(labels, ids, strict=True) if i is None]
    if unknown:
        names = ", ".join(repr(u) for u in unknown[:10])
        raise click.UsageError(
            f"--annotations {path}: no category named {names}; name each query after a "
            "category of the dataset (or give no query to use them all)"
        )
    return [int(i) for i in ids]  # type: ignore[arg-type]


def _image_ids(paths: Sequence[str], dataset: dict) -> tuple[list[str], list[int], list[str]]:
    """(paths found in the dataset, their image ids, paths not found) by file name."""
    from owl.inference.inputs import match_dataset_images

    ids = match_dataset_images(paths, dataset["images"])
    kept = [(p, i) for p, i in zip(paths, ids, strict=True) if i is not None]
    unmatched = [p for p, i in zip(paths, ids, strict=True) if i is None]
    return [p for p, _ in kept], [int(i) for _, i in kept], unmatched


def _summary(
    ok: int,
    failed: int,
    labels: Sequence[str],
    thresholds: Sequence[float],
    counts: Sequence[int],
) -> str:
    """The table printed at the end: images ok/failed, then detections per query."""
    width = max([len("query"), *(len(label) for label in labels)])
    lines = [
        f"images: {ok} ok, {failed} failed",
        f"{'query':<{width}}  threshold  detections",
    ]
    for label, thr, count in zip(labels, thresholds, counts, strict=True):
        lines.append(f"{label:<{width}}  {thr:>9.2f}  {count:>10d}")
    return "\n".join(lines)
