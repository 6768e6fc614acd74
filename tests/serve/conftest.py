"""The serve tests' fixtures: a real `owl serve --model shapes-tiny` process (serve_process.py),
started once per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serve_process import RunningServer, start_server, stop_server


@pytest.fixture(scope="module")
def owl_server() -> Iterator[RunningServer]:
    server = start_server()
    yield server
    stop_server(server)
