"""The FastAPI app of `owl serve`: the JSON API (docs/serve.md, /openapi.json) and the page.

Routes only: detection is `Detector.encode_images` / `prepare_queries` / `detect_encoded` /
`embed_image_query`, search is `owl.Index.search`, files are `owl.inference.outputs.write_detections`, image decoding and the
decompression-bomb guard are `owl.ops.image` (through the Detector). Every model call holds one
lock, so concurrent requests are served one after another on the model without errors; parsing,
the text-length checks and writing uploads happen outside it.

The schema (/openapi.json) is the contract: every route lists each status it can answer, each
with its model (request bodies: `owl.serve.requests`; answers: `owl.serve.answers`), and every
error, whoever raises it (a route, request validation, routing, the Guard), has the one shape
`{"error": "one line"}`. 400: the body cannot be used (not JSON or empty, not valid Unicode, a
number that is not finite, text over the length cap, a query over the token limit, a box outside
its image, no readable image, a search with no query); 422: a field is missing, of the wrong type
or out of its range.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException

from owl.inference.detections import Detections, float32_list
from owl.inference.detector import Detector, QuerySet
from owl.inference.outputs import JSON_VERSION, write_detections
from owl.inference.queries import TextQuery
from owl.ops.image import ImageLoadError
from owl.serve.answers import (
    CocoRow,
    DetectAnswer,
    DetectionsFile,
    ErrorBody,
    Health,
    Models,
    QueryEmbedding,
    VideoAnswer,
)
from owl.serve.guard import Guard
from owl.serve.requests import (
    BAD_VALUE_ERRORS,
    MAX_TEXT_CHARS,
    NOT_BLANK,
    DetectOptions,
    EmbedQueryRequest,
    QueryText,
    RescoreRequest,
    SearchRequest,
    image_queries,
    postprocess_options,
    to_queries,
)
from owl.serve.store import ImageStore, StoredImage, safe_name
from owl.serve.video import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAMES,
    DrawnVideos,
    VideoRequest,
    detect_uploaded_video,
)
from owl.text.tokenizer import get_tokenizer

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "coco": "application/json"}
SUFFIXES = {"json": ".json", "csv": ".csv", "coco": ".coco.json"}


FORM_QUERIES = TypeAdapter(list[QueryText])


def _responses(ok: type[BaseModel] | None, *statuses: int) -> dict:
    """OpenAPI `responses` entries: 200 with the `ok` model (None: given by the route), each
    error status with the one error model."""
    out: dict = {s: {"model": ErrorBody, "description": STATUS_MEANING[s]} for s in statuses}
    if ok is not None:
        out[200] = {"model": ok, "description": "OK"}
    return out


STATUS_MEANING = {
    400: "the body cannot be used: not JSON (or empty), not valid Unicode, a non-finite number, "
    "text over 1000 characters or 16 tokens, a box outside its image, no readable image, a "
    "search with no query, or a Content-Length that is bad or comes with Transfer-Encoding",
    403: "a foreign Host or Origin header (see --allow-host)",
    404: "an image id (or a video id) the server does not hold (or, for /v1/search, no --index)",
    411: "a body without Content-Length (chunked uploads are not accepted)",
    503: 'videos need the video extra on the server: pip install "owl[video]"',
    413: "a body over --max-upload-mb",
    422: "a field is missing, of the wrong type or out of its range",
}
GET_ERRORS = (400, 403, 411, 413)
POST_ERRORS = (400, 403, 404, 411, 413, 422)


class ApiError(Exception):
    """An answer with a status code and one line saying what was wrong and what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclasses.dataclass
class Server:
    """The state behind the routes: one Detector, its lock and the uploaded images."""

    detector: Detector
    model_name: str
    store: ImageStore
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    detect_calls: int = 0
    index: Any = None  # an owl.search.index.Index (owl serve --index), or None
    videos: DrawnVideos = dataclasses.field(default_factory=DrawnVideos)
    calibration: Any = None  # an owl.inference.calibration.Calibration (--calibrated), or None

    def close(self) -> None:
        """Removes the uploaded images and drawn videos the server holds."""
        self.store.close()
        self.videos.close()

    def path_of(self, image_id: str) -> str:
        return str(self.stored(image_id).path)

    def stored(self, image_id: str) -> StoredImage:
        item = self.store.get(image_id)
        if item is None:
            raise ApiError(
                404,
                f"unknown image id {image_id!r} (never sent, or dropped from the server's cache "
                "of recent images); send the image again with POST /v1/detect",
            )
        return item

    def query_set(self, options: DetectOptions, negatives: Iterable[str] = ()) -> QuerySet | None:
        """The Detector's query set, or None for no queries (then nothing is detected). Text is
        checked against the token limit before the model lock is taken."""
        if options.calibrated and self.calibration is None:
            raise ApiError(
                400,
                "calibrated: this server has no calibration; start it with owl serve "
                "--calibrated (or --calibration FILE from owl calibrate)",
            )
        try:
            queries = to_queries(options, self.path_of)
            texts = [q.text for q in queries if isinstance(q, TextQuery)]
            get_tokenizer().tokenize([*texts, *negatives])  # raises QueryTooLongError
            if not queries:
                return None
            with self.lock:
                return self.detector.prepare_queries(queries)
        except ApiError:
            raise
        except ValueError as e:  # empty or over-long text, bad box, bad threshold, bad size
            raise ApiError(400, self.store.public(str(e))) from None

    def detections(self, item: StoredImage, qs: QuerySet | None, options: DetectOptions) -> Any:
        if qs is None:
            meta = item.encoding.meta
            return Detections.empty({"path": item.name, "width": meta.width, "height": meta.height})
        with self.lock:
            return self.detector.detect_encoded(
                item.encoding, qs, **postprocess_options(options, self.calibration)
            )


def answer(ids: list[str], results: list[Detections], qs: QuerySet | None, failed: list) -> dict:
    """The API's answer: what `owl detect -o x.json` writes, plus the ids and failures."""
    return {
        "version": JSON_VERSION,
        "image_ids": ids,
        "results": [d.to_dict() for d in results],
        "queries": [] if qs is None else list(qs.labels),
        "notes": [] if qs is None else list(qs.notes),
        "failed": failed,
    }


def create_app(
    detector: Detector,
    *,
    model_name: str,
    max_upload_bytes: int = 32 * 2**20,
    cache_images: int = 64,
    allowed_hosts: Iterable[str] = (),
    index: Any = None,
    calibration: Any = None,
) -> Any:
    """The ASGI app (FastAPI inside the Host/Origin/size `Guard`); `app.state.server` holds the
    `Server`. `index`: an `owl.Index` opened with this `detector`, for POST /v1/search. Call
    `app.state.server.store.close()` when done (the CLI does). `calibration`: the
    `owl.inference.calibration.Calibration` that requests with "calibrated": true use."""
    server = Server(
        detector, model_name, ImageStore(cache_images), index=index, calibration=calibration
    )
    api = FastAPI(
        title="owl serve",
        version=str(JSON_VERSION),
        description="Open-vocabulary detection over a local owl.Detector; see docs/serve.md.",
        docs_url=None,
        redoc_url=None,
    )
    api.state.server = server

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            return JSONResponse(  # no body at all: not JSON either
                {"error": "the body is empty: send a JSON object (its schema: /openapi.json)"},
                status_code=400,
            )
        return JSONResponse({"error": _first_error(errors)}, status_code=_status(errors))

    @api.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # Routing (404 unknown path, 405 with its Allow header) and FastAPI's own 400 for a body
        # it cannot read (such as bytes that are not UTF-8), in the API's error shape.
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = (
                "the body cannot be read: send UTF-8 JSON (or a multipart form for /v1/detect)"
            )
        elif exc.status_code == 400:  # Starlette's multipart parser: a form field over 1 MiB...
            message = f"the form cannot be read: {message}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @api.get("/healthz", response_model=None, responses=_responses(Health, *GET_ERRORS))
    def healthz() -> dict:
        """Liveness, and how many images the server holds."""
        return {"ok": True, "images_cached": len(server.store), "detect_calls": server.detect_calls}

    @api.get("/v1/models", response_model=None, responses=_responses(Models, *GET_ERRORS))
    def models() -> dict:
        """The loaded model."""
        c = detector.model.config
        return {
            "models": [
                {
                    "name": model_name,
                    "family": c.family,
                    "image_size": c.image_size,
                    "embed_dim": c.embed_dim,
                    "objectness": c.objectness,
                }
            ]
        }

    @api.post("/v1/detect", response_model=None, responses=_responses(DetectAnswer, *POST_ERRORS))
    def detect(
        images: list[UploadFile] = File(  # noqa: B008
            ..., min_length=1, description="one or more image files"
        ),
        query: list[str] = Form(  # noqa: B008
            [], description='text queries, "TEXT" or "TEXT@T" (at most 1000 characters each)'
        ),
        options: str = Form(
            "{}",
            description="DetectOptions as JSON (the DetectOptions schema; 400 when it is not)",
        ),
    ) -> dict:
        """Encodes the images (kept for /v1/rescore by the returned ids) and detects."""
        parsed = _form_options(query, options)
        server.detect_calls += 1
        qs = server.query_set(parsed)
        ids, results, failed = [], [], []
        for n, upload in enumerate(images):
            item, error = _receive(server, upload, f"image-{n + 1}")
            if error is not None:
                failed.append(
                    {"name": safe_name(upload.filename, f"image-{n + 1}"), "error": error}
                )
                continue
            ids.append(item.id)
            results.append(server.detections(item, qs, parsed))
        if not ids and failed:
            raise ApiError(400, "; ".join(f["error"] for f in failed))
        return answer(ids, results, qs, failed)

    @api.post(
        "/v1/rescore",
        response_model=None,
        responses={
            **_responses(None, *POST_ERRORS),
            200: {
                "description": "format api: the API answer; json, csv, coco: the file `owl detect "
                "-o` writes (as an attachment named detections.json, .csv, .coco.json)",
                "content": {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/DetectAnswer"},
                                {"$ref": "#/components/schemas/DetectionsFile"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/CocoRow"},
                                },
                            ]
                        }
                    },
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
        },
    )
    def rescore(body: RescoreRequest) -> dict | Response:
        """New queries or thresholds on images sent before: class head only, no re-encoding."""
        items = [server.stored(i) for i in body.image_ids]
        qs = server.query_set(body)
        results = [server.detections(item, qs, body) for item in items]
        if body.format == "api":
            return answer(body.image_ids, results, qs, [])
        with tempfile.TemporaryDirectory(prefix="owl-serve-out-") as folder:
            path = Path(folder) / f"detections{SUFFIXES[body.format]}"
            write_detections(path, results)
            content = path.read_bytes()
        name = f"detections{SUFFIXES[body.format]}"
        return Response(
            content,
            media_type=MEDIA_TYPES[body.format],
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    @api.post("/v1/search", response_model=None, responses=_responses(DetectAnswer, *POST_ERRORS))
    def search(body: SearchRequest) -> dict:
        """The `top` images of the --index collection that hold what the queries describe: the
        records `owl search -o x.json` writes (paths as the index holds them), best image first."""
        if server.index is None:
            raise ApiError(404, "no index: start owl serve with --index PATH (built by owl index)")
        qs = server.query_set(body, body.negatives)  # "calibrated" without a calibration: 400
        if qs is None:
            raise ApiError(400, "queries: give at least one query to search for")
        with server.lock:
            try:
                options = postprocess_options(body, server.calibration)
                results = server.index.search(
                    qs, top=body.top, negatives=body.negatives, threshold=options["threshold"],
                    nms=body.nms, nms_iou=options["nms_iou"],
                    max_detections=body.max_detections or None,
                    calibration=options["calibration"],
                )  # fmt: skip
            except ValueError as e:  # an over-long negative query
                raise ApiError(400, str(e)) from None
        return answer([], results, qs, [])

    @api.post(
        "/v1/embed-query", response_model=None, responses=_responses(QueryEmbedding, *POST_ERRORS)
    )
    def embed_query(body: EmbedQueryRequest) -> dict:
        """Exemplar boxes -> one query embedding (for the `embeddings` field, or to save)."""
        for e in body.exemplars:
            e.label = body.label
        [query] = image_queries(body.exemplars, body.method, server.path_of)
        with server.lock:
            try:
                embedding = detector.embed_image_query(query)
            except ValueError as e:
                raise ApiError(400, server.store.public(str(e))) from None
        return {
            "label": body.label,
            "kind": "image",
            "model": model_name,
            "embedding": float32_list(embedding),
        }

    @api.post(
        "/v1/detect-video",
        response_model=None,
        responses=_responses(VideoAnswer, *POST_ERRORS, 503),
    )
    def detect_video(
        video: UploadFile = File(  # noqa: B008
            ..., description="one video file (mp4, mov, mkv, webm, avi), under --max-upload-mb"
        ),
        query: list[str] = Form(  # noqa: B008
            [], description='text queries, "TEXT" or "TEXT@T" (at most 1000 characters each)'
        ),
        options: str = Form(
            "{}",
            description="DetectOptions as JSON (the DetectOptions schema; 400 when it is not)",
        ),
        fps: float = Form(
            DEFAULT_FPS, gt=0, le=60, description="detect in at most this many frames a second"
        ),
        track: bool = Form(True, description="give each detection a track id"),
    ) -> dict:
        """Detects (and tracks) in a short video; keeps the drawn video for GET /v1/videos/ID.
        Holds the model for the whole video: at most the server's frame cap is detected."""
        import importlib.util

        parsed = _form_options(query, options)
        if not all(importlib.util.find_spec(m) for m in ("av", "trackers")):
            raise ApiError(503, STATUS_MEANING[503])
        qs = server.query_set(parsed)
        if qs is None:
            raise ApiError(400, "a video needs at least one query (query, queries or exemplars)")
        from owl.video.reader import VideoError

        name = safe_name(video.filename, "video.mp4")
        video_id, drawn = server.videos.new_path()
        source = drawn.with_suffix(".upload")
        _save_upload(video, source)
        request = VideoRequest(fps=fps, track=track, max_frames=DEFAULT_MAX_FRAMES)
        try:
            result = detect_uploaded_video(
                detector, server.lock, source, name, qs, request, drawn,
                postprocess_options(parsed, server.calibration),
            )  # fmt: skip
        except VideoError as e:
            raise ApiError(400, str(e)) from None
        finally:
            source.unlink(missing_ok=True)
        server.videos.add(video_id, drawn)
        return {
            "video_id": video_id,
            "drawn": f"/v1/videos/{video_id}",
            "queries": list(qs.labels),
            **result,
        }

    @api.get(
        "/v1/videos/{video_id}",
        response_model=None,
        responses={
            **_responses(None, *GET_ERRORS, 404, 422),
            200: {
                "description": "the drawn video of a /v1/detect-video answer",
                "content": {"video/mp4": {"schema": {"type": "string", "format": "binary"}}},
            },
        },
    )
    def drawn_video(
        video_id: str = FastApiPath(pattern="^[0-9a-f]{16}$", description="an answer's video_id"),
    ) -> FileResponse:
        """The drawn video (boxes with track ids), while the server holds it."""
        path = server.videos.get(video_id)
        if path is None:
            raise ApiError(
                404,
                f"unknown video id {video_id!r} (never made, or dropped from the server's few "
                "latest videos); send the video again with POST /v1/detect-video",
            )
        return FileResponse(path, media_type="video/mp4")

    @api.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    api.openapi = _exact_schema(api, detector.model.config.embed_dim)  # type: ignore[method-assign]
    app = Guard(api, allowed_hosts=allowed_hosts, max_body_bytes=max_upload_bytes)
    app.state = api.state  # type: ignore[attr-defined]
    return app


def _form_options(query: list[str], options: str) -> DetectOptions:
    """/v1/detect's form fields as one `DetectOptions` (form queries first); 400 when `options`
    is not a DetectOptions as JSON (the schema can only say "a string") or a query is bad."""
    try:
        form_queries = FORM_QUERIES.validate_python(query)
    except ValidationError as e:
        raise ApiError(400, "query." + _first_error(e.errors())) from None
    try:  # parsed as the JSON routes' bodies are (json.loads, then the model), same messages
        parsed = DetectOptions.model_validate(json.loads(options))
    except json.JSONDecodeError as e:
        raise ApiError(400, f"options: not JSON ({e.msg} at character {e.pos})") from None
    except ValidationError as e:
        raise ApiError(400, "options: " + _first_error(e.errors())) from None
    parsed.queries = [*form_queries, *parsed.queries]
    return parsed


def _save_upload(upload: UploadFile, path: Path) -> None:
    """Copies an upload to the server's private `path`, a MiB at a time."""
    with open(path, "wb") as f:
        while chunk := upload.file.read(1 << 20):
            f.write(chunk)


def _receive(server: Server, upload: UploadFile, fallback: str) -> tuple[Any, str | None]:
    """Saves one upload privately and encodes it: (StoredImage, None) or (None, message)."""
    name = safe_name(upload.filename, fallback)
    image_id, path = server.store.new_file(name)
    _save_upload(upload, path)
    with server.lock:
        [enc] = server.detector.encode_images([str(path)])
    if isinstance(enc, ImageLoadError):
        server.store.discard(image_id)
        return None, server.store.public(str(enc))
    enc = dataclasses.replace(enc, meta=dataclasses.replace(enc.meta, path=name))
    item = StoredImage(image_id, name, path, enc)
    server.store.put(item)
    return item, None


def _status(errors: list[dict]) -> int:
    """400 when a value cannot be used as text or a number (`BAD_VALUE_ERRORS`), else 422."""
    return 400 if any(e.get("type") in BAD_VALUE_ERRORS for e in errors) else 422


def _first_error(errors: list[dict]) -> str:
    """Pydantic's first validation error as one line: "field.sub: message" (the field path
    without pydantic's union-member and validator names)."""
    if not errors:
        return "invalid request"
    # A value error beats a type mismatch, and the deepest field is the most specific: in a
    # `str | TextSpec` union, {"text": "x", "threshold": NaN} fails both branches.
    # A wrong type is the least specific of all (a string is not a TextSpec object).
    e = max(
        errors,
        key=lambda e: (
            e.get("type") in BAD_VALUE_ERRORS,
            not str(e.get("type", "")).endswith("_type"),
            len(e.get("loc", ())),
        ),
    )
    if e.get("type") == "string_unicode":
        e = {**e, "msg": "text is not valid Unicode (a lone UTF-16 surrogate?); send UTF-8 text"}
    if e.get("type") == "json_invalid":
        why = (e.get("ctx") or {}).get("error", "JSON decode error")
        at = next((p for p in e.get("loc", ()) if isinstance(p, int)), None)
        return f"the body is not JSON ({why}{'' if at is None else f' at character {at}'})"
    where = ".".join(
        str(p)
        for p in e.get("loc", ())
        if p != "body" and (isinstance(p, int) or _FIELD.fullmatch(str(p)))
    )
    return f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid"))


_FIELD = re.compile(r"[a-z_][a-z0-9_]*")


def _exact_schema(api: FastAPI, embed_dim: int) -> Callable[[], dict]:
    """`api.openapi` with what pydantic cannot say on its own: an embedding holds exactly this
    model's `embed_dim` values, each form `query` is at most MAX_TEXT_CHARS characters and not
    blank, an uploaded file is not empty, and the `options` form field is a DetectOptions as
    JSON."""
    plain = api.openapi

    def openapi() -> dict:
        if api.openapi_schema is None:
            schema = plain()
            parts = schema["components"]["schemas"]
            embedding = parts["EmbeddingSpec"]["properties"]["embedding"]
            embedding.update(minItems=embed_dim, maxItems=embed_dim)
            for body, files in (
                ("Body_detect_v1_detect_post", "images"),
                ("Body_detect_video_v1_detect_video_post", "video"),
            ):
                form = parts[body]["properties"]
                form["query"]["items"].update(maxLength=MAX_TEXT_CHARS, pattern=NOT_BLANK)
                upload = form[files].get("items", form[files])
                upload["minLength"] = 1  # an empty file is refused (400)
                # The `options` string is a DetectOptions as JSON (OpenAPI 3.1: contentSchema).
                form["options"].update(
                    contentMediaType="application/json",
                    contentSchema={"$ref": "#/components/schemas/DetectOptions"},
                )
            for model in (DetectOptions, DetectionsFile, CocoRow):  # named by $ref only
                _add_component(parts, model)
        return api.openapi_schema

    return openapi


def _add_component(parts: dict, model: type[BaseModel]) -> None:
    """Adds `model`'s JSON schema (and those it refers to) to the schema's components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        parts.setdefault(name, sub)
    parts.setdefault(model.__name__, schema)
