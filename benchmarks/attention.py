"""Attention forms on this machine: one CLIP transformer layer, plain against blocked attention.

    python benchmarks/attention.py [--lengths 577,1025,2305,3601] [--blocks 128x1024,256x512]

Each (form, length, blocks) runs in its own fresh subprocess, one after another, so that no two
share XLA's thread pool; a layer of width 768 with 12 heads (B/16, B/32) is jitted, warmed up and
timed five times, and the median wall and CPU seconds are printed. The CPU time shows whether
XLA:CPU spread the work over the cores (about cores x wall) or ran it on one (about wall): loop
bodies that are too small are not split, which is what decides the block sizes in
owl/models/attention.py. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

_CHILD = r"""
import os, statistics, sys, time
import jax, jax.numpy as jnp, numpy as np
from owl.models import attention
from owl.models.clip import ResidualAttentionBlock

length, q_block, k_block = (int(v) for v in sys.argv[1:4])
attention.Q_BLOCK, attention.K_BLOCK = q_block, k_block
block = ResidualAttentionBlock(12)
x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, 768)), jnp.float32)
params = block.init(jax.random.key(0), x)
fn = jax.jit(block.apply)
fn(params, x).block_until_ready()
wall, cpu = [], []
for _ in range(5):
    t0, c0 = time.perf_counter(), time.process_time()
    fn(params, x).block_until_ready()
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
print(f"{statistics.median(wall) * 1e3:.0f} {statistics.median(cpu) * 1e3:.0f}")
"""


def _run(form: str, length: int, q_block: int, k_block: int) -> tuple[str, str]:
    env = dict(os.environ, OWL_ATTENTION=form)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(length), str(q_block), str(k_block)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    wall, cpu = out.stdout.split()
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="577,1025,2305,3601")
    parser.add_argument("--blocks", default="128x1024,256x512,256x1024")
    args = parser.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    blocks = [tuple(int(v) for v in b.split("x")) for b in args.blocks.split(",")]
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    print(f"machine: {machine()}; {load_report()}")
    print(f"{'tokens':>7} {'form':>16} {'wall ms':>8} {'cpu ms':>7}")
    for length in lengths:
        wall, cpu = _run("plain", length, 0, 0)
        print(f"{length:>7} {'plain':>16} {wall:>8} {cpu:>7}", flush=True)
        for q_block, k_block in blocks:
            wall, cpu = _run("blocked", length, q_block, k_block)
            name = f"blocked {q_block}x{k_block}"
            print(f"{length:>7} {name:>16} {wall:>8} {cpu:>7}", flush=True)


if __name__ == "__main__":
    main()
