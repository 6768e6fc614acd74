"""Writing a batch of `Detections` (one per image) to JSON, CSV or COCO results files.

The CLI picks the writer from the output file name with `write_detections`:

- ``*.coco.json`` -> `write_coco`: a COCO results list (what ``COCO.loadRes`` reads), one
  ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection.
- ``*.json`` -> `write_json`: ``{"version": 1, "results": [Detections.to_dict(), ...]}``, one
  entry per image (schema in `owl.inference.detections`); `read_json` reads it back.
- ``*.csv`` -> `write_csv`: a header, then one row per detection:
  ``image, x0, y0, x1, y1, score, label, query_index``.

Coordinates are pixels of the original image. Floats are written with the shortest text that reads
back to the same float32, so files round-trip exactly. Files are written atomically (a temporary
file in the same folder, then a rename).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.data.annotations import write_results
from owl.files import atomic_write
from owl.inference.detections import Detections, float32_list

JSON_VERSION = 1
CSV_HEADER = ("image", "x0", "y0", "x1", "y1", "score", "label", "query_index")
CategoryIds = Sequence[int] | Mapping[int, int] | None


def image_name(detections: Detections, position: int) -> str:
    """How an image is named in CSV rows: metadata "path", else "name", else its position."""
    for key in ("path", "name"):
        if detections.metadata.get(key) is not None:
            return str(detections.metadata[key])
    return str(position)


def to_csv_rows(detections: Detections, image: str) -> list[list[Any]]:
    """Rows ``[image, x0, y0, x1, y1, score, label, query_index]``, one per detection."""
    boxes = [float32_list(box) for box in detections.xyxy]
    scores = float32_list(detections.confidence)
    return [
        [image, *box, score, str(label), int(query)]
        for box, score, label, query in zip(
            boxes, scores, detections.labels, detections.class_id, strict=True
        )
    ]


def to_coco_rows(
    detections: Detections, image_id: int, category_ids: CategoryIds = None
) -> list[dict[str, Any]]:
    """COCO results rows: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

    Args:
        detections: one image's detections.
        image_id: the COCO id of that image.
        category_ids: maps a query index to a category id (a list indexed by query, or a dict);
            None uses the query index itself.

    Raises:
        ValueError: a query index has no category id.
    """
    rows = []
    for box, score, query in zip(
        detections.xyxy, float32_list(detections.confidence), detections.class_id, strict=True
    ):
        x0, y0, x1, y1 = (float(v) for v in box)
        rows.append(
            {
                "image_id": int(image_id),
                "category_id": _category_id(int(query), category_ids),
                "bbox": float32_list(np.array([x0, y0, x1 - x0, y1 - y0])),
                "score": score,
            }
        )
    return rows


def _category_id(query: int, category_ids: CategoryIds) -> int:
    if category_ids is None:
        return query
    try:
        return int(category_ids[query])
    except (IndexError, KeyError):
        raise ValueError(
            f"query index {query} has no category id ({len(category_ids)} given); pass one "
            "category id per query."
        ) from None


def write_json(path: str | os.PathLike, results: Sequence[Detections]) -> None:
    """Writes ``{"version": 1, "results": [one Detections.to_dict() per image]}``."""
    payload = {"version": JSON_VERSION, "results": [d.to_dict() for d in results]}
    _write_text(path, json.dumps(payload, indent=1) + "\n")


def read_json(path: str | os.PathLike) -> list[Detections]:
    """Reads a file written by `write_json` back into one Detections per image."""
    with open(path, encoding="utf-8") as f:
        payload = json.load(f)
    if not isinstance(payload, dict) or payload.get("version") != JSON_VERSION:
        raise ValueError(f"{path}: not an owl detections file (expected version {JSON_VERSION}).")
    return [Detections.from_dict(record) for record in payload["results"]]


def write_csv(path: str | os.PathLike, results: Sequence[Detections]) -> None:
    """Writes a header and one row per detection (see `CSV_HEADER`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for position, detections in enumerate(results):
        writer.writerows(to_csv_rows(detections, image_name(detections, position)))
    _write_text(path, buffer.getvalue())


def write_coco(
    path: str | os.PathLike,
    results: Sequence[Detections],
    image_ids: Sequence[int] | None = None,
    category_ids: CategoryIds = None,
) -> None:
    """Writes a COCO results list (what ``COCO.loadRes`` reads).

    Args:
        path: output file.
        results: one Detections per image.
        image_ids: the COCO id of each image; None takes ``metadata["image_id"]`` when every image
            has one, else the position in ``results``.
        category_ids: query index -> category id, see `to_coco_rows`.
    """
    if image_ids is None:
        if results and all("image_id" in d.metadata for d in results):
            image_ids = [int(d.metadata["image_id"]) for d in results]
        else:
            image_ids = list(range(len(results)))
    if len(image_ids) != len(results):
        raise ValueError(
            f"got {len(image_ids)} image ids for {len(results)} images; pass one each."
        )
    rows = [
        row
        for detections, image_id in zip(results, image_ids, strict=True)
        for row in to_coco_rows(detections, image_id, category_ids)
    ]
    write_results(path, rows)


def write_detections(
    path: str | os.PathLike,
    results: Sequence[Detections],
    *,
    image_ids: Sequence[int] | None = None,
    category_ids: CategoryIds = None,
) -> None:
    """Writes ``results`` in the format named by the file's suffix: .coco.json, .json or .csv.

    Raises:
        ValueError: any other suffix.
    """
    name = Path(path).name.lower()
    if name.endswith(".coco.json"):
        write_coco(path, results, image_ids, category_ids)
    elif name.endswith(".json"):
        write_json(path, results)
    elif name.endswith(".csv"):
        write_csv(path, results)
    else:
        raise ValueError(
            f"{path}: unknown output format; name the file *.json, *.csv or *.coco.json."
        )


def _write_text(path: str | os.PathLike, text: str) -> None:
    """Writes atomically: readers never see a half-written file. "-" is stdout."""
    if os.fspath(path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with atomic_write(path, newline="") as f:
        f.write(text)
