"""Load on a real `owl serve` process on 127.0.0.1: 200 POST /v1/detect from 8 concurrent
clients, all answered without errors (the model lock serialises them); bounded by the request count
and httpx's per-request timeout, never by a timing assertion; p50/p95
latency and the server's peak RSS are printed (visible with -s). The driver is
benchmarks/serve_load.py's `run_load`, so the benchmark measures what this test checks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from click.testing import CliRunner

from owl.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


def load_benchmark():
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "benchmarks/serve_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["serve_load"] = module
    spec.loader.exec_module(module)
    return module


def test_200_detects_from_8_clients_without_errors(owl_server):
    bench = load_benchmark()
    result = bench.run_load(owl_server.url, bench.EXAMPLE, requests=200, clients=8)
    rss = bench.peak_rss_bytes(owl_server.process.pid)
    print("\n" + bench.report(result, 200, 8, rss), file=sys.stderr)
    assert result.errors == []
    assert len(result.latencies) == 200
    assert 0 < rss < 4 * 2**30
    code, err = owl_server.stop()  # Ctrl-C after the load: a clean stop, exit 130
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"


def test_index_that_does_not_exist_is_one_line_and_exit_2(tmp_path):
    result = CliRunner().invoke(
        cli, ["serve", "--model", "shapes-tiny", "--index", str(tmp_path / "none.owlindex")]
    )
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .endswith(f"--index {tmp_path / 'none.owlindex'}: no such index; build it with `owl index`")
    )
