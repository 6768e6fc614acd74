"""The FastAPI app of `owl serve`: the JSON API (docs/serve.md, /openapi.json) and the page.

Routes only: detection is `Detector.encode_images` / `prepare_queries` / `detect_encoded` /
`embed_image_query`, search is `owl.Index.search`, files are `owl.inference.outputs.write_detections`, image decoding and the
decompression-bomb guard are `owl.ops.image` (through the Detector). Every model call holds one
lock, so concurrent requests are served one after another on the model without errors.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from owl.inference.detections import Detections, float32_list
from owl.inference.detector import Detector, QuerySet
from owl.inference.outputs import JSON_VERSION, write_detections
from owl.ops.image import ImageLoadError
from owl.serve.guard import Guard
from owl.serve.requests import (
    DetectOptions,
    EmbedQueryRequest,
    RescoreRequest,
    SearchRequest,
    image_queries,
    postprocess_options,
    to_queries,
)
from owl.serve.store import ImageStore, StoredImage, safe_name

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv", "coco": "application/json"}
SUFFIXES = {"json": ".json", "csv": ".csv", "coco": ".coco.json"}


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

    def query_set(self, options: DetectOptions) -> QuerySet | None:
        """The Detector's query set, or None for no queries (then nothing is detected)."""
        try:
            queries = to_queries(options, self.path_of)
            return self.detector.prepare_queries(queries) if queries else None
        except ApiError:
            raise
        except ValueError as e:  # empty or over-long text, bad box, bad threshold, bad size
            raise ApiError(400, self.store.public(str(e))) from None

    def detections(self, item: StoredImage, qs: QuerySet | None, options: DetectOptions) -> Any:
        if qs is None:
            meta = item.encoding.meta
            return Detections.empty({"path": item.name, "width": meta.width, "height": meta.height})
        return self.detector.detect_encoded(item.encoding, qs, **postprocess_options(options))


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
) -> Any:
    """The ASGI app (FastAPI inside the Host/Origin/size `Guard`); `app.state.server` holds the
    `Server`. `index`: an `owl.Index` opened with this `detector`, for POST /v1/search. Call
    `app.state.server.store.close()` when done (the CLI does)."""
    server = Server(detector, model_name, ImageStore(cache_images), index=index)
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
        return JSONResponse({"error": _first_error(exc.errors())}, status_code=422)

    @api.get("/healthz")
    def healthz() -> dict:
        """Liveness, and how many images the server holds."""
        return {"ok": True, "images_cached": len(server.store), "detect_calls": server.detect_calls}

    @api.get("/v1/models")
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

    @api.post("/v1/detect")
    def detect(
        images: list[UploadFile] = File(..., description="one or more image files"),  # noqa: B008
        query: list[str] = Form([], description='text queries, "TEXT" or "TEXT@T"'),  # noqa: B008
        options: str = Form("{}", description="DetectOptions as JSON"),
    ) -> dict:
        """Encodes the images (kept for /v1/rescore by the returned ids) and detects."""
        try:
            parsed = DetectOptions.model_validate_json(options)
        except ValidationError as e:
            raise ApiError(422, "options: " + _first_error(e.errors())) from None
        parsed.queries = [*query, *parsed.queries]
        with server.lock:
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

    @api.post("/v1/rescore", response_model=None)
    def rescore(body: RescoreRequest) -> dict | Response:
        """New queries or thresholds on images sent before: class head only, no re-encoding."""
        with server.lock:
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

    @api.post("/v1/search")
    def search(body: SearchRequest) -> dict:
        """The `top` images of the --index collection that hold what the queries describe: the
        records `owl search -o x.json` writes (paths as the index holds them), best image first."""
        if server.index is None:
            raise ApiError(404, "no index: start owl serve with --index PATH (built by owl index)")
        with server.lock:
            qs = server.query_set(body)
            if qs is None:
                raise ApiError(422, "queries: give at least one query to search for")
            try:
                results = server.index.search(
                    qs, top=body.top, negatives=body.negatives, threshold=body.threshold,
                    nms=body.nms, nms_iou=body.nms_iou, max_detections=body.max_detections or None,
                )  # fmt: skip
            except ValueError as e:  # an over-long negative query
                raise ApiError(400, str(e)) from None
        return answer([], results, qs, [])

    @api.post("/v1/embed-query")
    def embed_query(body: EmbedQueryRequest) -> dict:
        """Exemplar boxes -> one query embedding (for the `embeddings` field, or to save)."""
        if not body.exemplars:
            raise ApiError(422, "exemplars: give at least one {image_id, box}")
        for e in body.exemplars:
            e.label = body.label
        with server.lock:
            [query] = image_queries(body.exemplars, body.method, server.path_of)
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

    @api.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    app = Guard(api, allowed_hosts=allowed_hosts, max_body_bytes=max_upload_bytes)
    app.state = api.state  # type: ignore[attr-defined]
    return app


def _receive(server: Server, upload: UploadFile, fallback: str) -> tuple[Any, str | None]:
    """Saves one upload privately and encodes it: (StoredImage, None) or (None, message)."""
    name = safe_name(upload.filename, fallback)
    image_id, path = server.store.new_file(name)
    with open(path, "wb") as f:
        while chunk := upload.file.read(1 << 20):
            f.write(chunk)
    [enc] = server.detector.encode_images([str(path)])
    if isinstance(enc, ImageLoadError):
        server.store.discard(image_id)
        return None, server.store.public(str(enc))
    enc = dataclasses.replace(enc, meta=dataclasses.replace(enc.meta, path=name))
    item = StoredImage(image_id, name, path, enc)
    server.store.put(item)
    return item, None


def _first_error(errors: list[dict]) -> str:
    """Pydantic's first validation error as one line: "field.sub: message"."""
    if not errors:
        return "invalid request"
    e = errors[0]
    where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
    return f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid"))
