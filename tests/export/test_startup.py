"""Start-up on the default path: a second fresh `owl detect` neither imports JAX nor compiles.

The first use of a model exports it to ONNX into the cache (owl.export.auto); after that a fresh
process loads the verified export and runs ONNX Runtime, so JAX's import (~2 s) and tracing
(~1 s) are gone from every later run (benchmarks/startup.py measures the wall times). The
JAX backend's own second run compiles nothing: tests/test_compilation_cache.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")

from owl.examples import example_image  # noqa: E402

_SECOND = r"""
import json, sys
from owl.cli.main import cli
try:
    cli(sys.argv[1:], standalone_mode=False)
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"jax", "jaxlib", "flax", "torch"})
    print(json.dumps({"heavy": heavy, "onnxruntime": "onnxruntime" in sys.modules}))
"""


def test_second_default_process_runs_without_jax_and_gives_the_same_file(tmp_path):
    env = dict(os.environ, OWL_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("OWL_BACKEND", None)  # the suite pins JAX; this is the user's default
    args = ["detect", str(example_image()), "-q", "red circle", "--model", "shapes-tiny"]
    first = subprocess.run(
        [sys.executable, "-m", "owl.cli.main", *args, "-o", str(tmp_path / "first.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "exporting shapes-tiny to ONNX" in first.stderr
    second = subprocess.run(
        [sys.executable, "-c", _SECOND, *args, "-o", str(tmp_path / "second.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "exporting" not in second.stderr  # the verified export is reused
    modules = json.loads(second.stdout.strip().splitlines()[-1])
    assert modules == {"heavy": [], "onnxruntime": True}
    a = json.loads((tmp_path / "first.json").read_text())
    b = json.loads((tmp_path / "second.json").read_text())
    assert a == b and a["results"][0]["detections"]
