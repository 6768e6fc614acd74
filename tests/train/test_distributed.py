"""Data parallelism of owl/train/trainer.py: 8 host devices and 2 processes match 1 device.

Four `owl train` subprocesses run at once on the tiny config with per-example clipping and
stochastic depth (so per-example RNG keys must follow the examples, not the devices): one process
with one CPU device, one process with 8 forced host devices, and two processes joined by
`jax.distributed` on 127.0.0.1 (process 0 configured by flags, process 1 by OWL_* variables).
The global batch (8) and the data are the same in every run, so the losses must agree to float
rounding of the cross-device mean.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from owl.train.checkpointing import Checkpointer, CheckpointRestoreError
from owl.train.logging import read_jsonl

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "owl" / "configs" / "train_tiny.py"
SETTINGS = [
    "train.progress_bar=false",
    "eval.every=0",
    "train.num_steps=4",
    "optim.warmup_steps=2",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.batch_size=8",
    "optim.clip=per_example",
    "model.vision_drop_path=0.2",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(workdir: Path, *extra: str) -> list[str]:
    sets = [arg for s in SETTINGS for arg in ("--set", s)]
    return [
        sys.executable,
        "-m",
        "owl",
        "train",
        "--config",
        str(TINY),
        "--workdir",
        str(workdir),
        *sets,
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    # Fewer XLA optimisations: 2-3x faster compiles; the same setting in every run.
    base_env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    base_env.pop("XLA_FLAGS", None)
    for name in ("OWL_COORDINATOR", "OWL_NUM_PROCESSES", "OWL_PROCESS_ID"):
        base_env.pop(name, None)
    address = f"127.0.0.1:{_free_port()}"
    jobs = {
        "one_device": (_command(root / "one"), base_env),
        "eight_devices": (
            _command(root / "eight"),
            dict(base_env, XLA_FLAGS="--xla_force_host_platform_device_count=8"),
        ),
        "process_0": (
            _command(
                root / "two", "--coordinator", address, "--num-processes", "2", "--process-id", "0"
            ),
            base_env,
        ),
        "process_1": (
            _command(root / "two"),
            dict(base_env, OWL_COORDINATOR=address, OWL_NUM_PROCESSES="2", OWL_PROCESS_ID="1"),
        ),
    }
    procs = {}
    for name, (cmd, env) in jobs.items():
        log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        procs[name] = (subprocess.Popen(cmd, env=env, stderr=log, stdout=log), log)
    try:
        for name, (proc, log) in procs.items():
            code = proc.wait(timeout=500)
            log.close()
            assert code == 0, f"{name}: " + (root / f"{name}.log").read_text()[-3000:]
    finally:
        for proc, log in procs.values():
            if proc.poll() is None:
                proc.kill()
            log.close()
    return {"one": root / "one", "eight": root / "eight", "two": root / "two"}


def _losses(workdir: Path) -> np.ndarray:
    records = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    keys = ("loss", "loss_class", "loss_bbox", "loss_giou", "grad_norm")
    return np.array([[r[k] for k in keys] for r in records])


@pytest.mark.parametrize("other", ["eight", "two"])
def test_losses_match_a_single_device(runs, other):
    np.testing.assert_allclose(_losses(runs[other]), _losses(runs["one"]), rtol=2e-5, atol=1e-6)


def test_two_processes_write_one_log_and_both_data_positions(runs):
    two = runs["two"]
    assert (two / "model.safetensors").is_file()
    assert len(read_jsonl(two / "metrics.jsonl")) == 4  # process 0 alone writes the log
    checkpoints = Checkpointer(two / "checkpoints", max_to_keep=2)
    assert checkpoints.all_steps() == [2, 4]
    # Each process's loader position is stored; one process cannot take over a 2-process run.
    with pytest.raises(CheckpointRestoreError, match="saved by 2 process.es., but 1 are running"):
        checkpoints.restore(4, abstract_state=None)
    checkpoints.close()
