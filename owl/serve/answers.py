"""The answers of `owl serve`'s JSON API as pydantic models: what /openapi.json publishes for
every status of every route. The routes build plain dicts (the same records `owl detect -o
x.json` writes, through `Detections.to_dict`); these models only document them, and
tests/serve/test_schemathesis.py checks every answer the routes give against them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Box = Annotated[list[float], Field(min_length=4, max_length=4)]


class ErrorBody(BaseModel):
    """Every error answer (each 4xx of every route, whoever raises it): one line saying what was
    wrong and what to do."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"error": "..."}]})

    error: str


class ImageInfo(BaseModel):
    """An image's metadata: its name (an upload's plain file name, or the path the index holds)
    and size in pixels; other keys may follow (a video frame's time)."""

    model_config = ConfigDict(extra="allow")

    path: str
    width: int
    height: int


class Detection(BaseModel):
    """One box: pixels of the original image (x right, y down), the score in [0, 1], the query's
    label and its index in the answer's `queries`."""

    model_config = ConfigDict(extra="forbid")

    box: Box = Field(description="x0, y0, x1, y1 in pixels")
    score: float
    label: str
    query_index: int = Field(ge=0)
    data: dict[str, Any] = Field(
        default_factory=dict, description="per-box extras (absent when there are none)"
    )


class ImageRecord(BaseModel):
    """One image's detections: a record of the file `owl detect -o x.json` writes."""

    model_config = ConfigDict(extra="forbid")

    image: ImageInfo
    detections: list[Detection]


class Failure(BaseModel):
    """An upload that could not be used, with the CLI's one-line message."""

    model_config = ConfigDict(extra="forbid")

    name: str
    error: str


class DetectAnswer(BaseModel):
    """The answer of /v1/detect, /v1/rescore (format api) and /v1/search."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    image_ids: list[str] = Field(
        description="the server's id of each image in `results` (for /v1/rescore and exemplars); "
        "empty for /v1/search"
    )
    results: list[ImageRecord]
    queries: list[str] = Field(description="the query labels, in query_index order")
    notes: list[str]
    failed: list[Failure] = Field(description="uploads that could not be used (/v1/detect)")


class DetectionsFile(BaseModel):
    """/v1/rescore with format json: the file `owl detect -o x.json` writes."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1]
    results: list[ImageRecord]


class CocoRow(BaseModel):
    """/v1/rescore with format coco, one row per box: what `owl detect -o x.coco.json` writes.
    image_id: the image's position in the request's `image_ids`; category_id: the query index."""

    model_config = ConfigDict(extra="forbid")

    image_id: int = Field(ge=0)
    category_id: int = Field(ge=0)
    bbox: Box = Field(description="x, y, width, height in pixels")
    score: float


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: Literal[True]
    images_cached: int = Field(ge=0)
    detect_calls: int = Field(ge=0)


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    family: str
    image_size: int
    embed_dim: int
    objectness: bool


class Models(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelInfo] = Field(min_length=1, max_length=1)


class QueryEmbedding(BaseModel):
    """/v1/embed-query: one query embedding (the model's embed_dim values), for the `embeddings`
    field of the other routes."""

    model_config = ConfigDict(extra="forbid")

    label: str
    kind: Literal["image"]
    model: str
    embedding: list[float]


class VideoDetection(Detection):
    """One box of a video frame: a `Detection` with its track id (null: no track yet)."""

    model_config = ConfigDict(extra="forbid")

    track_id: int | None = Field(default=None, ge=1)


class VideoFrame(BaseModel):
    """One detected frame: a record of the file `owl detect clip.mp4 -o x.jsonl` writes."""

    model_config = ConfigDict(extra="forbid")

    video: str
    frame: int = Field(ge=0, description="the frame's position in the video, from 0")
    timestamp: float = Field(ge=0, description="seconds from the video's start")
    width: int
    height: int
    detections: list[VideoDetection]


class VideoAnswer(BaseModel):
    """/v1/detect-video: every detected frame with its tracks, and where the drawn video is."""

    model_config = ConfigDict(extra="forbid")

    video_id: str
    drawn: str = Field(description="GET this path for the drawn video (mp4), while the server "
                       "holds it (the latest few)")  # fmt: skip
    video: str = Field(description="the upload's plain file name")
    width: int
    height: int
    fps: float = Field(description="frames per second of the detected frames (and drawn video)")
    frames_read: int = Field(ge=0)
    frames_detected: int = Field(ge=0)
    truncated: bool = Field(description="more frames were selected than the server detects")
    tracks: int = Field(ge=0)
    queries: list[str]
    frames: list[VideoFrame]
