"""A real `owl serve` process on 127.0.0.1 and a free port, waited for on /healthz, stopped with
SIGINT. A module of its own (not conftest): `from conftest import ...` would find whichever
test folder's conftest was imported first in a worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

from serving import free_port

START = "import sys; from owl.cli.main import cli; sys.exit(cli())"


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen

    def stop(self) -> tuple[int, str]:
        """Ctrl-C, as a user would; returns the exit code and stderr (again: the same)."""
        return stop_server(self)


def start_server(*extra: str, timeout: float = 120.0) -> RunningServer:
    """Starts `owl serve` and returns once GET /healthz answers (or fails with its stderr)."""
    port = free_port()
    command = [sys.executable, "-c", START, "serve", "--model", "shapes-tiny", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"owl serve exited with {process.returncode}: {process.stderr.read()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as r:
                if r.status == 200:
                    return RunningServer(url, process)
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"owl serve did not answer on {url} within {timeout:.0f} s")


def stop_server(server: RunningServer) -> tuple[int, str]:
    """Ctrl-C, as a user would; returns the exit code and stderr (again: the same)."""
    if server.process.returncode is not None:
        return server.process.returncode, ""
    server.process.send_signal(signal.SIGINT)
    try:
        _, err = server.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        _, err = server.process.communicate()
    return server.process.returncode, err
