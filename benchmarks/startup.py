"""Start-up: a first and a second fresh-process `owl detect` on one image, per backend.

    python benchmarks/startup.py [--model shapes-tiny] [--rounds 5] [--backends auto,jax]

Each round makes a new, empty cache folder (OWL_CACHE_DIR) and runs, each in its own process,
`owl detect IMG -q "red circle" --backend B` twice: the first run finds nothing cached (the JAX
backend compiles, and the default `auto` backend exports the model to ONNX and verifies it); the
second finds the compilation cache or the verified export. Backends alternate within a round,
so a change in machine load hits both. It prints each run's wall time, the medians, and the
second/first ratio (issue 21's start-up target: <= 0.6), then the CPU and load.

The wall time includes everything a user waits for: interpreter start, imports, loading,
preprocessing, the forward and writing the JSON.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _owl() -> list[str]:
    owl = shutil.which("owl", path=str(Path(sys.executable).parent)) or shutil.which("owl")
    return [owl] if owl else [sys.executable, "-m", "owl.cli.main"]


def run_once(backend: str, model: str, image: str, cache: Path, out: Path) -> float:
    """Wall seconds of one fresh `owl detect` process; raises if it fails."""
    env = dict(os.environ, OWL_CACHE_DIR=str(cache))
    env.pop("OWL_BACKEND", None)
    cmd = _owl() + [
        "detect", image, "-q", "red circle", "--model", model, "--backend", backend, "-o", str(out),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-400:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes-tiny")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="auto,jax")
    parser.add_argument("--image", help="default: `owl example-image`")
    args = parser.parse_args()
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    image = args.image
    if image is None:
        from owl.examples import example_image

        image = str(example_image())
    print(f"machine: {machine()}")
    print(f"before: {load_report()}")
    print(f"command: python {' '.join(sys.argv)}")
    backends = args.backends.split(",")
    times: dict[str, dict[str, list[float]]] = {b: {"first": [], "second": []} for b in backends}
    for r in range(args.rounds):
        for backend in backends if r % 2 == 0 else backends[::-1]:
            with tempfile.TemporaryDirectory(prefix="owl-startup-") as tmp:
                cache = Path(tmp) / "cache"
                for which in ("first", "second"):
                    t = run_once(backend, args.model, image, cache, Path(tmp) / f"{which}.json")
                    times[backend][which].append(t)
            print(
                f"round {r + 1} {backend}: first {times[backend]['first'][-1]:.2f} s, "
                f"second {times[backend]['second'][-1]:.2f} s", flush=True,
            )  # fmt: skip
    print(f"after: {load_report()}")
    print("| backend | first s (median) | second s (median) | second / first |")
    print("|---|---|---|---|")
    for backend in backends:
        first = statistics.median(times[backend]["first"])
        second = statistics.median(times[backend]["second"])
        print(f"| {backend} | {first:.2f} | {second:.2f} | {second / first:.2f} |")


if __name__ == "__main__":
    main()
