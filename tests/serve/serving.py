"""Helpers for the serve tests: requests through httpx's ASGI transport (in process), a uvicorn
server in a thread on 127.0.0.1 (for raw sockets and real HTTP), and raw-socket requests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples/shapes/images/000000.png"
BASE = "http://127.0.0.1:8000"


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    """One request to the ASGI app, in process."""

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def threaded_server(app, *, quiet: bool = True) -> Iterator[int]:
    """Runs `app` under uvicorn, configured as `owl serve` configures it, in a thread on
    127.0.0.1; yields the port and stops the server on exit."""
    import uvicorn

    from owl.cli.serve import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, quiet=quiet))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def raw_exchange(port: int, head: bytes, body_chunks: Iterable[bytes] = ()) -> bytes:
    """Sends `head` then as many `body_chunks` as the server takes before it answers or closes;
    returns everything the server sent until it closed the connection (10 s at most)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 10
        for chunk in body_chunks:
            try:
                s.sendall(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break  # the server stopped reading
            try:
                if data := s.recv(1 << 16):
                    answer += data
                    break
            except BlockingIOError:
                pass
            if time.monotonic() > deadline:
                break
        s.setblocking(True)
        s.settimeout(10)
        try:
            while data := s.recv(1 << 16):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def status_and_body(answer: bytes) -> tuple[int, bytes]:
    """(status code, body) of a raw HTTP/1.1 answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
