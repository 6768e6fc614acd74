"""Request bodies of the JSON API (pydantic, so /openapi.json documents them) and their
translation into the Detector's own queries and options. No scoring happens here.

The models are strict (no bool for an int, no string for a number), refuse unknown fields, and
check text and numbers at the boundary, before anything is tokenised or run: text is at most
`MAX_TEXT_CHARS` characters of valid Unicode (no lone surrogates), numbers are finite, and
embedding values fit a float32. An integer field takes what JSON Schema calls an integer: `100`
and `100.0` alike (JSON has one number type), never `true` or `"100"`. A text query holds
something other than white space (`NOT_BLANK`, the same pattern in the schema). The error types
of the boundary checks are `BAD_VALUE_ERRORS` (the app answers them with 400, other schema
violations with 422).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from owl.inference.queries import EmbeddingQuery, ImageQuery, Query, TextQuery, parse_text_query

# A query is at most 16 tokens (SOT + 14 + EOT), far under 1000 characters: longer text is
# refused before the tokenizer sees it.
MAX_TEXT_CHARS = 1000
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_DETECTIONS = 10_000
MAX_TOP = 10_000
# Error types answered with 400 (the body cannot be used as text or numbers), not 422.
BAD_VALUE_ERRORS = frozenset(
    {
        "json_invalid",
        "finite_number",
        "string_too_long",
        "string_unicode",
        "unicode_surrogate",
        "float32_range",
    }
)


def _unicode_scalars(text: str) -> str:
    """Text must be Unicode scalar values: a lone UTF-16 surrogate ("\\ud800") cannot be
    tokenised or echoed back as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise PydanticCustomError(
            "unicode_surrogate",
            "text holds a lone UTF-16 surrogate at character {at}; send valid Unicode text",
            {"at": e.start},
        ) from None
    return text


def _float32(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise PydanticCustomError(
            "float32_range", "{value} does not fit a float32 (|x| <= 3.4e38)", {"value": value}
        )
    return value


def _integral(value: object) -> object:
    """A JSON number with no fractional part (`100.0`) as the int it is; anything else is left
    to the strict int check (which refuses bools, strings and fractions)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("finite_number", "Input should be a finite number")
        if value.is_integer():
            return int(value)
    return value


Text = Annotated[
    str, StringConstraints(max_length=MAX_TEXT_CHARS), AfterValidator(_unicode_scalars)
]
# A query holds a character other than ASCII white space: the same regular expression in the
# schema (ECMA-262) and here, so the two agree on every string.
NOT_BLANK = r"[^\t\n\v\f\r ]"


def _not_blank(text: str) -> str:
    if re.search(NOT_BLANK, text) is None:
        raise PydanticCustomError(
            "blank_text", "text is empty or only spaces; give some text such as 'a red car'"
        )
    return text


QueryText = Annotated[
    Text, AfterValidator(_not_blank), Field(json_schema_extra={"pattern": NOT_BLANK})
]
Threshold = Annotated[float, Field(ge=0.0, le=1.0)]
Integer = Annotated[int, BeforeValidator(_integral)]
Float32 = Annotated[
    float,
    AfterValidator(_float32),
    Field(json_schema_extra={"minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}),
]


class Strict(BaseModel):
    """Strict types (no bool for an int, no string for a number), finite numbers, and no
    unknown fields (a misspelt option is an error, not silently ignored)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")


class TextSpec(Strict):
    """A text query; "red car@0.3" as a plain string means the same."""

    text: QueryText
    threshold: Threshold | None = None


class ExemplarSpec(Strict):
    """A box drawn on an image the server holds. Exemplars sharing a label are averaged."""

    image_id: Text
    box: Annotated[list[float], Field(min_length=4, max_length=4)] = Field(
        description="x0, y0, x1, y1 in pixels"
    )
    label: Text = "example"
    threshold: Threshold | None = None


class EmbeddingSpec(Strict):
    """A query embedding from /v1/embed-query (or `owl embed-query`): the model's embed_dim
    values."""

    embedding: Annotated[list[Float32], Field(min_length=1)]
    label: Text
    threshold: Threshold | None = None
    kind: Literal["image", "text"] = "image"


class DetectOptions(Strict):
    """Queries and post-processing, as `owl detect` takes them."""

    queries: list[QueryText | TextSpec] = []
    exemplars: list[ExemplarSpec] = []
    embeddings: list[EmbeddingSpec] = []
    method: Literal["auto", "iou", "objectness"] = "auto"
    threshold: float = Field(0.1, ge=0.0, le=1.0)
    multi_label: bool = False
    nms: bool | None = Field(None, description="null: on with image queries, off for text only")
    nms_iou: float = Field(0.3, ge=0.0, le=1.0)
    class_agnostic_nms: bool = False
    max_detections: Integer = Field(100, ge=0, le=MAX_DETECTIONS, description="0: no limit")
    calibrated: bool = Field(
        False,
        description="scores as calibrated probabilities of a true match (the server's "
        "calibration, `owl serve --calibrated`); threshold and nms_iou then default to 0.5 and "
        "the calibration's own IoU unless given (docs/calibration.md)",
    )


class RescoreRequest(DetectOptions):
    """New queries or thresholds for images sent before, by the ids the server returned."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image_ids": ["3f2a9c0d1e4b5a67"],
                    "queries": ["red circle", {"text": "red star", "threshold": 0.3}],
                    "threshold": 0.1,
                }
            ]
        }
    )

    image_ids: list[Text]
    format: Literal["api", "json", "csv", "coco"] = Field(
        "api", description="api: the API answer; json, csv, coco: the file `owl detect -o` writes"
    )


class SearchRequest(DetectOptions):
    """Queries over the server's `owl index` collection (`owl serve --index PATH`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"queries": ["red circle@0.3"], "top": 2, "negatives": ["red square"]}],
            # At least one query of some kind: a search for nothing is refused (400).
            "anyOf": [
                {"required": [field], "properties": {field: {"minItems": 1}}}
                for field in ("queries", "exemplars", "embeddings")
            ],
        }
    )

    top: Integer = Field(10, ge=1, le=MAX_TOP, description="how many images to return, best first")
    negatives: list[QueryText] = Field(
        [], description="text queries whose look-alikes are dropped (as `owl search`)"
    )


class EmbedQueryRequest(Strict):
    """Exemplar boxes on images the server holds, averaged into one query embedding."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exemplars": [{"image_id": "3f2a9c0d1e4b5a67", "box": [84, 12, 124, 46]}],
                    "label": "red star",
                }
            ]
        }
    )

    exemplars: Annotated[list[ExemplarSpec], Field(min_length=1)]
    label: Text = "example"
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


def postprocess_options(options: DetectOptions, calibration: Any = None) -> dict:
    """Keyword options of `Detector.detect_encoded`; ``calibration`` applies when the request
    asks for calibrated scores (threshold and nms_iou not given are then the Detector's
    calibrated defaults)."""
    calibrated = options.calibrated and calibration is not None
    given = options.model_fields_set
    return {
        "threshold": None if calibrated and "threshold" not in given else options.threshold,
        "multi_label": options.multi_label,
        "nms": options.nms,
        "nms_iou": None if calibrated and "nms_iou" not in given else options.nms_iou,
        "class_agnostic_nms": options.class_agnostic_nms,
        "max_detections": options.max_detections or None,
        "calibration": calibration if calibrated else None,
    }
