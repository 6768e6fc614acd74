"""Load on a real `owl serve` process: N POST /v1/detect requests from C concurrent clients.

Starts `owl serve --model M` on 127.0.0.1 and a free port (or uses --url), sends the example
image with one text query from C client threads (each its own httpx.Client), and prints the
machine, the command, errors, throughput, p50/p95/max latency and the server's peak RSS (VmHWM
of its /proc/<pid>/status). tests/serve/test_load.py drives the same `run_load`.

    python benchmarks/serve_load.py                          # 200 requests, 8 clients, shapes-tiny
    python benchmarks/serve_load.py --requests 500 --clients 16 --model shapes-tiny
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples/shapes/images/000000.png"
START = "import sys; from owl.cli.main import cli; sys.exit(cli())"


@dataclass
class LoadResult:
    latencies: list[float]  # seconds, one per successful request
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) of a process, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def run_load(
    url: str, image: Path, requests: int, clients: int, query: str = "red circle"
) -> LoadResult:
    """Sends `requests` detects from `clients` threads; a non-200 or a wrong answer is an error."""
    data = image.read_bytes()
    todo = iter(range(requests))
    take = threading.Lock()
    result = LoadResult([])

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                with take:
                    if next(todo, None) is None:
                        return
                t0 = time.perf_counter()
                try:
                    r = http.post(
                        "/v1/detect", files={"images": (image.name, data)}, data={"query": query}
                    )
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                    problem = None if ok else f"{r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                elapsed = time.perf_counter() - t0
                with take:
                    if problem is None:
                        result.latencies.append(elapsed)
                    else:
                        result.errors.append(problem)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall = time.perf_counter() - t0
    return result


def start_server(model: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """`owl serve --model M --quiet` on 127.0.0.1 and a free port, once /healthz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-c", START, "serve", "--model", model, "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"owl serve exited with {process.returncode}: {process.stderr.read()}"
            )
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"owl serve did not answer on {url} within {timeout:.0f} s")


def report(result: LoadResult, requests: int, clients: int, rss: int | None) -> str:
    lines = [
        f"{requests} POST /v1/detect from {clients} clients: {len(result.latencies)} ok, "
        f"{len(result.errors)} errors, {result.wall:.1f} s, {requests / result.wall:.1f} req/s",
    ]
    if result.latencies:
        lines.append(
            f"latency p50 {result.percentile(0.5) * 1e3:.0f} ms, p95 {result.percentile(0.95) * 1e3:.0f} ms, "
            f"max {max(result.latencies) * 1e3:.0f} ms, mean {statistics.fmean(result.latencies) * 1e3:.0f} ms"
        )
    if rss is not None:
        lines.append(f"server peak RSS (VmHWM) {rss / 2**20:.0f} MiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--image", type=Path, default=EXAMPLE)
    parser.add_argument("--url", help="an already running server (then no RSS is reported)")
    args = parser.parse_args()
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    print(f"machine: {machine()}; {load_report()}")
    print("command: python " + " ".join(sys.argv))
    process = None
    url = args.url
    if url is None:
        process, url = start_server(args.model)
    try:
        result = run_load(url, args.image, args.requests, args.clients)
        rss = peak_rss_bytes(process.pid) if process is not None else None
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
    print(report(result, args.requests, args.clients, rss))
    for e in result.errors[:5]:
        print("error:", e)


if __name__ == "__main__":
    main()
