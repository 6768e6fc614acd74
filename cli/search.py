"""`owl search`: rank the images of an index by text, example boxes or saved embeddings.

Argument handling and printing only: queries are parsed as `owl detect` parses them
(`owl.cli.options.collect_queries`), searching is `owl.search.index.Index.search`, and the
outputs reuse owl's writers (`owl.inference.outputs`), drawing (`owl.inference.draw`) and the
gallery page (`owl.search.gallery`). Documentation for users: docs/search.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.index import open_index
from owl.cli.options import (
    EXIT_CODES_HELP,
    MODEL_HELP,
    SEARCH_EXTRA_MODULES,
    calibration_options,
    check_embeddings,
    check_extra,
    check_model_spec,
    collect_queries,
    draw_image,
    format_image,
    query_error,
    query_image_options,
    report_failures,
    resolve_calibration,
    truncate_option,
    write_line,
)

EPILOG = """\b
Examples:
  owl search --index photos.owlindex -q forklift
  owl search --index photos.owlindex -q "red car@0.3" --top 50 -o cars.json --html cars.html
  owl search --index photos.owlindex --query-image part.jpg --query-box 10,20,110,220
  owl search --index photos.owlindex --query-embedding part.npz --save-dir found/
  owl search --index photos.owlindex -q "a dog" --negative-query "a wolf" -o dogs.csv

"""


@click.command("search", epilog=EPILOG + EXIT_CODES_HELP)
@click.option(
    "--index", "index_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH", help="An index built by `owl index`.",
)  # fmt: skip
@click.option(
    "-q", "--query", "queries", multiple=True, metavar="TEXT",
    help='Text query, repeatable; "TEXT@T" gives it its own threshold T, e.g. "red car@0.3".',
)  # fmt: skip
@click.option(
    "--queries-file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="UTF-8 file with one text query per line, as for --query.",
)  # fmt: skip
@query_image_options
@click.option(
    "--query-label", "query_labels", multiple=True, metavar="NAME",
    help="Name for the image-query results (as for `owl detect`).",
)  # fmt: skip
@click.option(
    "--query-method", type=click.Choice(["auto", "iou", "objectness"]), default="auto",
    show_default=True, help="How an exemplar box picks its embedding (as for `owl detect`).",
)  # fmt: skip
@click.option(
    "--query-embedding", "query_embeddings", multiple=True, metavar="FILE[@T]",
    help="Query embedding saved by `owl embed-query` (repeatable).",
)  # fmt: skip
@click.option(
    "--negative-query", "negative_queries", multiple=True, metavar="TEXT",
    help="Text of what is NOT wanted (repeatable): a box closer to a negative than to a query "
    "is dropped for that query (docs/search.md).",
)  # fmt: skip
@click.option(
    "--negative-embedding", "negative_embeddings", multiple=True, metavar="FILE",
    help="A negative example, saved by `owl embed-query` (repeatable).",
)  # fmt: skip
@click.option(
    "-m", "--model", default=None, metavar="NAME|PATH",
    help=f"{MODEL_HELP} Default: the index's own model; another one is refused.",
)  # fmt: skip
@click.option(
    "--top", type=click.IntRange(min=1), default=10, show_default=True,
    help="How many images to return, best first (ranked by their best box).",
)  # fmt: skip
@click.option(
    "-t", "--threshold", type=click.FloatRange(0.0, 1.0), default=None,
    help="Minimum score for queries without a threshold of their own [default: 0.1; 0.5 with "
    "--calibrated].",
)  # fmt: skip
@calibration_options
@click.option(
    "--nms/--no-nms", default=None,
    help="Non-maximum suppression per image [default: on for image or embedding queries].",
)  # fmt: skip
@click.option(
    "--nms-iou", type=click.FloatRange(0.0, 1.0), default=None,
    help="NMS IoU [default: 0.3; the calibration's own, 0.5, with --calibrated].",
)  # fmt: skip
@click.option(
    "--max-detections", type=click.IntRange(min=0), default=100, show_default=True,
    help="Boxes kept per image, best first; 0 means no limit.",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    metavar="FILE",
    help="Write the results to FILE: *.json (owl schema, docs/detect.md) or *.csv; '-' writes "
    "JSON to stdout. Without it, results are printed.",
)  # fmt: skip
@click.option(
    "--save-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
    help="Write each result image with its boxes drawn to DIR/<rank>_<image stem>.png.",
)  # fmt: skip
@click.option(
    "--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
    help="Write a gallery page (thumbnails with boxes) to open in a browser.",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No 'wrote' lines (notes and failures still show).")
@truncate_option
def search(
    index_path: Path,
    queries: tuple[str, ...],
    queries_file: str | None,
    query_images: tuple[str, ...],
    query_boxes: tuple[str, ...],
    query_labels: tuple[str, ...],
    query_method: str,
    query_embeddings: tuple[str, ...],
    negative_queries: tuple[str, ...],
    negative_embeddings: tuple[str, ...],
    model: str | None,
    top: int,
    threshold: float | None,
    calibrated: bool,
    calibration_file: Path | None,
    nms: bool | None,
    nms_iou: float | None,
    max_detections: int,
    output: Path | None,
    save_dir: Path | None,
    html_path: Path | None,
    quiet: bool,
    truncate_long_queries: bool,
) -> None:
    """Find the images of an index that hold what the queries describe.

    Images are ranked by their best box; each comes with its boxes above the threshold. A box's
    score is the one `owl detect` gives it with the same model and queries.
    """
    check_extra("search", "search", SEARCH_EXTRA_MODULES, "search")
    to_stdout = output is not None and str(output) == "-"
    if output is not None and not to_stdout and not output.name.lower().endswith((".json", ".csv")):
        raise click.UsageError(f"--output {output}: name the file *.json or *.csv, or pass -")
    if output is not None and output.name.lower().endswith(".coco.json"):
        raise click.UsageError("--output: COCO results need dataset ids; use *.json or *.csv")
    request, embedding_files = collect_queries(
        queries, queries_file, query_images, query_boxes, query_labels, query_method,
        query_embeddings,
    )  # fmt: skip
    if not request:
        raise click.UsageError(
            "no queries given; pass --query TEXT, --queries-file FILE, --query-image IMG "
            "(with --query-box) or --query-embedding FILE"
        )
    negatives, negative_files = collect_queries(
        negative_queries, None, (), (), (), "auto", negative_embeddings
    )
    if model is not None:
        check_model_spec(model)
    idx = open_index(index_path, model, create=False)
    with idx:
        spec = idx.settings["model"]
        calibration = resolve_calibration(calibrated, calibration_file, spec)
        dim = idx.detector.model.config.embed_dim
        notes = check_embeddings(request, embedding_files, dim, spec)
        notes += check_embeddings(negatives, negative_files, dim, spec)
        try:
            query_set = idx.prepare_queries(request, truncate=truncate_long_queries)
            negative_set = (
                idx.prepare_queries(negatives, truncate=truncate_long_queries) if negatives else ()
            )
        except ValueError as e:
            raise query_error(e) from None
        for note in (*notes, *query_set.notes):
            write_line(f"note: {note}", err=True)
        results = idx.search(
            query_set, top=top, negatives=negative_set, threshold=threshold, nms=nms,
            nms_iou=nms_iou, max_detections=max_detections or None, calibration=calibration,
        )  # fmt: skip
        searched = len(idx)
    failures: list[str] = []
    if output is None:
        for rank, dets in enumerate(results, 1):
            write_line(f"#{rank} {format_image(str(dets.metadata['path']), dets)}")
    else:
        from owl.inference.outputs import write_csv, write_json

        try:
            (write_csv if output.name.lower().endswith(".csv") else write_json)(output, results)
        except OSError as e:
            raise click.ClickException(f"{output}: cannot write the output file ({e})") from None
        if not quiet and not to_stdout:
            write_line(f"wrote {output} ({len(results)} image(s))", err=True)
    if save_dir is not None:
        from owl.inference.inputs import drawn_image_names

        save_dir.mkdir(parents=True, exist_ok=True)
        names = drawn_image_names([str(d.metadata["path"]) for d in results])
        for rank, (dets, name) in enumerate(zip(results, names, strict=True), 1):
            error = draw_image(str(dets.metadata["path"]), dets, save_dir / f"{rank:03d}_{name}")
            if error is not None:
                failures.append(error)
        if not quiet:
            write_line(f"wrote drawn images to {save_dir}", err=True)
    if html_path is not None:
        from owl.search.gallery import write_gallery

        labels = ", ".join(query_set.labels)
        try:
            write_gallery(html_path, results, title=f"owl search: {labels}")
        except OSError as e:
            raise click.ClickException(f"{html_path}: cannot write the page ({e})") from None
        if not quiet:
            write_line(f"wrote {html_path}", err=True)
    if not quiet:
        write_line(
            f"{len(results)} image(s) above the threshold shown (--top {top}) of {searched} indexed",
            err=True,
        )
    report_failures(failures, len(results))
