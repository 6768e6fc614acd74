"""`owl embed-query`: save one query embedding (from example boxes or a text) for later detection.

Argument handling and printing only; the embedding is computed by
`owl.inference.detector.Detector.prepare_queries` and written by
`owl.inference.queries.save_query_embedding` (a plain .npz: embedding, label, model).
`owl detect --query-embedding FILE` reads it back.
"""

from __future__ import annotations

from pathlib import Path

import click

from owl.cli.options import (
    EXIT_CODES_HELP,
    load_detector,
    max_pixels_option,
    max_pixels_value,
    model_id,
    model_option,
    parse_boxes,
    query_error,
    query_image_options,
    truncate_option,
)

EPILOG = """\b
Examples:
  owl embed-query --query-image dog.jpg --query-box 10,20,110,220 -o dog.npz
  owl embed-query --query-image dogs.jpg --query-box 10,20,110,220 --query-box 300,40,420,200 \\
      --label dog --method objectness -o dog.npz
  owl embed-query --model owlvit-b32 --query-image a.jpg --query-image b.jpg \\
      --query-box 5,5,60,80 --query-box 30,10,90,70 --label cat --method iou -o cat.npz
  owl embed-query --query "a red fire hydrant" --label hydrant -o hydrant.npz
  owl detect photos/ --query-embedding dog.npz@0.2 --output dogs.json

"""


@click.command("embed-query", epilog=EPILOG + EXIT_CODES_HELP)
@model_option
@query_image_options
@click.option(
    "--query", "text", metavar="TEXT", default=None,
    help="Embed this text instead of example boxes.",
)  # fmt: skip
@click.option(
    "--label", default=None, metavar="NAME",
    help="Name of the detections this query makes (default: the query image's file stem, or "
    "the text).",
)  # fmt: skip
@click.option(
    "--method", type=click.Choice(["auto", "iou", "objectness"]), default="auto",
    show_default=True,
    help="How an exemplar box picks its embedding: objectness (OWLv2), iou (the official "
    "OWL-ViT heuristic), auto = objectness when the model has the head.",
)  # fmt: skip
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
    metavar="FILE.npz", help="Where to write the embedding (.npz is added when missing).",
)  # fmt: skip
@max_pixels_option
@truncate_option
def embed_query(
    model: str,
    query_images: tuple[str, ...],
    query_boxes: tuple[str, ...],
    text: str | None,
    label: str | None,
    method: str,
    output: Path,
    max_image_pixels: int,
    truncate_long_queries: bool,
) -> None:
    """Save a query embedding from example boxes (averaged into one) or from a text.

    With several boxes, each box is one exemplar and all are averaged into one query: give one
    --query-image with several --query-box, or one box per --query-image. The file records the
    label and the model, so `owl detect --query-embedding` can name detections and warn when
    another model is used.
    """
    from owl.inference.inputs import InputError, group_exemplars
    from owl.inference.queries import TextQuery, save_query_embedding

    if (text is None) == (not query_images):
        raise click.UsageError("give either --query-image (with --query-box) or --query TEXT")
    if text is not None and query_boxes:
        raise click.UsageError("--query-box needs --query-image, not --query")
    if label is not None and not label.strip():
        raise click.UsageError("--label is empty; give a name such as 'dog'")
    if output.suffix.lower() != ".npz":
        output = output.with_name(output.name + ".npz")
    if not output.parent.is_dir():
        raise click.UsageError(f"--output {output}: folder {output.parent} does not exist")

    if text is not None:
        if not text.strip():
            raise click.UsageError("--query is empty; give some text, e.g. 'red car'")
        query = TextQuery(text.strip(), label=label)
    else:
        boxes = parse_boxes(query_boxes)
        name = label.strip() if label else Path(query_images[0]).stem
        try:
            [query] = group_exemplars(query_images, boxes, [name], method=method)
        except InputError as e:
            raise click.UsageError(str(e)) from None

    detector = load_detector(model, max_pixels=max_pixels_value(max_image_pixels), quiet=False)
    try:
        query_set = detector.prepare_queries([query], truncate=truncate_long_queries)
    except ValueError as e:  # bad box, unreadable query image, over-long text
        raise query_error(e) from None
    embedding, name = query_set.embeddings[0], query_set.labels[0]
    recorded = model_id(model)
    try:
        kind = "text" if isinstance(query, TextQuery) else "image"
        save_query_embedding(output, embedding, name, recorded, kind=kind)
    except OSError as e:
        raise click.ClickException(f"{output}: cannot write the embedding ({e})") from None
    click.echo(f"wrote {output}: label {name!r}, {embedding.shape[0]} values, model {recorded!r}")
