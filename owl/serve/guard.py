"""The server's front door: refuse requests a web page from another site could make.

A page on another site open in the same browser can send requests to 127.0.0.1. Two checks, as
Jupyter does: the ``Host`` header must name this server (stops DNS rebinding, where evil.example
resolves to 127.0.0.1), and a state-changing request (anything but GET/HEAD) that carries an
``Origin`` must come from this server's own origin. No CORS headers are ever sent, so browsers
keep other sites from reading any answer. Bodies over the upload cap are refused from their
``Content-Length`` before they are read.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
SAFE_METHODS = ("GET", "HEAD")


def host_name(value: str) -> str:
    """ "127.0.0.1:8000" -> "127.0.0.1", "[::1]:80" -> "::1"; lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class Guard:
    """ASGI middleware: Host and Origin checks and the body-size cap, before the app runs.

    Args:
      app: the wrapped ASGI app.
      allowed_hosts: host names (no port) this server answers to, besides the local ones.
      max_body_bytes: the largest request body accepted (uploads included).
    """

    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str], max_body_bytes: int):
        self.app = app
        self.allowed = {h.lower().strip("[]") for h in (*LOCAL_HOSTS, *allowed_hosts)}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self.check(scope["method"], headers)
        if problem is not None:
            status, message = problem
            body = json.dumps({"error": message}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def check(self, method: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """(status, one-line message) for a refused request, or None to let it through."""
        host = headers.get("host", "")
        if host_name(host) not in self.allowed:
            return 403, (
                f"Host {host!r} is not this server; open it as http://127.0.0.1 (or start "
                "owl serve with --allow-host NAME)"
            )
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return (
                403,
                f"cross-origin request from {origin!r} refused; use the page this server serves",
            )
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site request refused; use the page this server serves"
        length = headers.get("content-length")
        if length is None:
            if headers.get("transfer-encoding"):
                return 411, "send a Content-Length header (chunked uploads are not accepted)"
            return None
        if not length.isdigit():
            return 400, f"bad Content-Length {length!r}"
        if int(length) > self.max_body_bytes:
            mib = self.max_body_bytes / 2**20
            return 413, (
                f"request body of {int(length)} bytes is over the upload limit of {mib:g} MiB; "
                "send smaller or fewer images, or start owl serve with a larger --max-upload-mb"
            )
        return None
