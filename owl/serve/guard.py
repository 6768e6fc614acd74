"""The server's front door: refuse requests a web page from another site could make.

A page on another site open in the same browser can send requests to 127.0.0.1. Two checks, as
Jupyter does: the ``Host`` header must name this server (stops DNS rebinding, where evil.example
resolves to 127.0.0.1), and a state-changing request (anything but GET/HEAD) that carries an
``Origin`` must come from this server's own origin. No CORS headers are ever sent, so browsers
keep other sites from reading any answer.

The body-size rule: a POST must carry one ``Content-Length`` (411 without it, 400 for a bad value,
and 400 when it comes with ``Transfer-Encoding``, which RFC 9112 makes an error: the two framings
could disagree), a length over the cap is refused (413) before the body is read, and the bytes the
app actually receives are counted too, so however a body is framed it is never read past the cap.
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
        headers: dict[str, list[str]] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k.decode("latin-1").lower(), []).append(v.decode("latin-1"))
        problem = self.check(scope["method"], headers)
        if problem is not None:
            await refuse(send, *problem)
            return
        await self.app(scope, *self.capped(receive, send))

    def capped(self, receive: Callable, send: Callable) -> tuple[Callable, Callable]:
        """`receive` and `send` for the app that count the body bytes received: past the cap, the
        client gets 413 (connection closed), the app gets `http.disconnect` (it stops reading) and
        whatever the app sends after that is dropped."""
        received = 0
        refused = False
        started = False

        async def capped_receive() -> dict:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    refused = True
                    if not started:
                        await refuse(send, 413, self.too_large(None))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return
            started = True
            await send(message)

        return capped_receive, guarded_send

    def too_large(self, size: int | None) -> str:
        """The 413 message; `size`: the declared length, None when counting found it too long."""
        mib = self.max_body_bytes / 2**20
        what = "request body" if size is None else f"request body of {size} bytes"
        return (
            f"{what} is over the upload limit of {mib:g} MiB; "
            "send smaller or fewer images, or start owl serve with a larger --max-upload-mb"
        )

    def check(self, method: str, headers: dict[str, list[str]]) -> tuple[int, str] | None:
        """(status, one-line message) for a refused request, or None to let it through.
        `headers`: lower-case name -> every value sent under it."""
        host = ",".join(headers.get("host", []))
        if host_name(host) not in self.allowed:
            return 403, (
                f"Host {host!r} is not this server; open it as http://127.0.0.1 (or start "
                "owl serve with --allow-host NAME)"
            )
        framing = self.framing(headers)
        if framing is not None or method in SAFE_METHODS:
            return framing
        origin = ",".join(headers["origin"]) if "origin" in headers else None
        if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
            return (
                403,
                f"cross-origin request from {origin!r} refused; use the page this server serves",
            )
        if "cross-site" in headers.get("sec-fetch-site", []):
            return 403, "cross-site request refused; use the page this server serves"
        return None

    def framing(self, headers: dict[str, list[str]]) -> tuple[int, str] | None:
        """The body-size rule on the headers, for every method (a GET can carry a body too)."""
        lengths = set(headers.get("content-length", []))
        if "transfer-encoding" in headers:
            if lengths:
                return 400, (
                    "a request with both Transfer-Encoding and Content-Length is refused "
                    "(RFC 9112); send Content-Length only"
                )
            return 411, "send a Content-Length header (chunked uploads are not accepted)"
        if not lengths:
            return None  # no body at all: h11 frames such a request as empty
        length = lengths.pop() if len(lengths) == 1 else ",".join(sorted(lengths))
        if not length.isdigit():
            return 400, f"bad Content-Length {length!r}"
        if int(length) > self.max_body_bytes:
            return 413, self.too_large(int(length))
        return None


async def refuse(send: Callable, status: int, message: str) -> None:
    """Answers `{"error": message}` with `status` and asks the server to close the connection
    (the unread rest of a refused body must not be taken for the next request)."""
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
