"""Request bodies of the JSON API (pydantic, so /openapi.json documents them) and their
translation into the Detector's own queries and options. No scoring happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from owl.inference.queries import EmbeddingQuery, ImageQuery, Query, TextQuery, parse_text_query


class TextSpec(BaseModel):
    """A text query; "red car@0.3" as a plain string means the same."""

    text: str
    threshold: float | None = Field(None, ge=0.0, le=1.0)


class ExemplarSpec(BaseModel):
    """A box drawn on an image the server holds. Exemplars sharing a label are averaged."""

    image_id: str
    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in pixels")
    label: str = "example"
    threshold: float | None = Field(None, ge=0.0, le=1.0)


class EmbeddingSpec(BaseModel):
    """A query embedding from /v1/embed-query (or `owl embed-query`)."""

    embedding: list[float]
    label: str
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    kind: Literal["image", "text"] = "image"


class DetectOptions(BaseModel):
    """Queries and post-processing, as `owl detect` takes them."""

    queries: list[str | TextSpec] = []
    exemplars: list[ExemplarSpec] = []
    embeddings: list[EmbeddingSpec] = []
    method: Literal["auto", "iou", "objectness"] = "auto"
    threshold: float = Field(0.1, ge=0.0, le=1.0)
    multi_label: bool = False
    nms: bool | None = Field(None, description="null: on with image queries, off for text only")
    nms_iou: float = Field(0.3, ge=0.0, le=1.0)
    class_agnostic_nms: bool = False
    max_detections: int = Field(100, ge=0, description="0: no limit")


class RescoreRequest(DetectOptions):
    """New queries or thresholds for images sent before, by the ids the server returned."""

    image_ids: list[str]
    format: Literal["api", "json", "csv", "coco"] = Field(
        "api", description="api: the API answer; json, csv, coco: the file `owl detect -o` writes"
    )


class SearchRequest(DetectOptions):
    """Queries over the server's `owl index` collection (`owl serve --index PATH`)."""

    top: int = Field(10, ge=1, description="how many images to return, best first")
    negatives: list[str] = Field(
        [], description="text queries whose look-alikes are dropped (as `owl search`)"
    )


class EmbedQueryRequest(BaseModel):
    """Exemplar boxes on images the server holds, averaged into one query embedding."""

    exemplars: list[ExemplarSpec]
    label: str = "example"
    method: Literal["auto", "iou", "objectness"] = "auto"


def to_queries(options: DetectOptions, exemplar_path: Callable[[str], str]) -> list[Query]:
    """The Detector's queries, in order: text, then one image query per exemplar label, then
    embeddings. `exemplar_path(image_id)` gives the server's copy of an image (or raises).
    """
    out: list[Query] = []
    for spec in options.queries:
        if isinstance(spec, str):
            out.append(parse_text_query(spec))
        else:
            out.append(TextQuery(spec.text.strip(), threshold=spec.threshold))
    out.extend(image_queries(options.exemplars, options.method, exemplar_path))
    for e in options.embeddings:
        out.append(
            EmbeddingQuery(np.asarray(e.embedding, np.float32), e.label, e.threshold, e.kind)
        )
    return out


def image_queries(
    exemplars: list[ExemplarSpec], method: str, exemplar_path: Callable[[str], str]
) -> list[ImageQuery]:
    """Exemplars grouped by label (first appearance order), one `ImageQuery` per label; a
    label's threshold is the first one given."""
    groups: dict[str, list[ExemplarSpec]] = {}
    for e in exemplars:
        groups.setdefault(e.label, []).append(e)
    return [
        ImageQuery(
            exemplars=tuple((exemplar_path(e.image_id), tuple(e.box)) for e in items),
            label=label,
            threshold=next((e.threshold for e in items if e.threshold is not None), None),
            method=method,
        )
        for label, items in groups.items()
    ]


def postprocess_options(options: DetectOptions) -> dict:
    """Keyword options of `Detector.detect_encoded`."""
    return {
        "threshold": options.threshold,
        "multi_label": options.multi_label,
        "nms": options.nms,
        "nms_iou": options.nms_iou,
        "class_agnostic_nms": options.class_agnostic_nms,
        "max_detections": options.max_detections or None,
    }
