"""The ASGI app of `owl serve --review DATASET`: the review page and its small JSON API.

Routes only; the rules live in `owl.serve.review.ReviewSession` (docs/review.md):

* ``GET /`` — the page (static/review.html, review.js, review.css).
* ``GET /healthz`` — liveness.
* ``GET /review/v1/dataset`` — classes, images (review order) with boxes and versions.
* ``GET /review/v1/images/{key}`` — image ``key`` (a position in the data set; no request
  field is ever taken as a path).
* ``POST /review/v1/save`` — ``{"who", "images": [{"key", "version", "boxes"}]}``; 200, or
  ``{"error": "one line"}`` with 400 (bad input), 409 (stale: also ``"conflicts"``, the images
  as they are now), 413 (too big), 507 (cannot write).

The same front door as `owl serve` (`owl.serve.guard.Guard`): Host and Origin checks, body cap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from owl.serve.guard import Guard
from owl.serve.review import Conflict, ReviewError, ReviewSession

STATIC = Path(__file__).parent / "static"


def create_review_app(
    session: ReviewSession,
    *,
    allowed_hosts: Iterable[str] = (),
    max_body_bytes: int = 32 * 2**20,
) -> Any:
    """The review app inside the Host/Origin/size `Guard`; ``app.state.session`` is `session`."""
    api = FastAPI(title="owl serve --review", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.session = session

    @api.exception_handler(ReviewError)
    async def _review_error(request: Request, exc: ReviewError) -> JSONResponse:
        body: dict[str, Any] = {"error": str(exc)}
        if isinstance(exc, Conflict):
            body["conflicts"] = exc.images
        return JSONResponse(body, status_code=exc.status)

    @api.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @api.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "review": session.name, "saves": session.saves}

    @api.get("/")
    def page() -> FileResponse:
        return FileResponse(STATIC / "review.html")

    @api.get("/review/v1/dataset")
    def dataset() -> dict:
        return session.describe()

    @api.get("/review/v1/images/{key}")
    def image(key: int) -> FileResponse:
        return FileResponse(session.image_path(key), headers={"cache-control": "no-store"})

    @api.post("/review/v1/save")
    async def save(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReviewError(f"the body is not UTF-8 JSON ({e})") from None
        if not isinstance(body, dict):
            raise ReviewError('send {"who": NAME, "images": [...]}')
        return await run_in_threadpool(session.save, body.get("images"), body.get("who"))

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    app = Guard(api, allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes)
    app.state = api.state  # type: ignore[attr-defined]
    return app
