"""Image-encoder forward on CPU: ONNX Runtime (an `owl export` folder) against owl's JAX.

    python benchmarks/onnx_forward.py [--variants owlvit-b32,owlv2-b16] [--threads 2]
        [--rounds 2] [--repeats 3] [--workdir DIR]

For each variant, random weights are drawn once (NumPy, seed 0), saved in owl's format and
exported with `owl.export.writer.export_model(format="onnx", batch=1)` (whose verification
against owl is printed). Then each side runs in its own fresh subprocess, the two alternating for
`--rounds` rounds, both pinned to the same `--threads` CPUs (ONNX Runtime also gets that many
intra-op threads): one warm-up forward (JAX compiles here), then `--repeats` timed forwards of
one preprocessed image, batch 1, through the image encoder (boxes, class embeddings, shift,
scale, objectness: what the Detector caches). The table gives the median of all timed forwards
per side, and the machine and load it ran on. The same protocol as benchmarks/forward.py (owl
against transformers), which can fold this in.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def random_params(config):
    import jax

    from owl.models.owl_vit import param_shapes

    rng = np.random.default_rng(0)

    def draw(path, shape):
        keys = [str(getattr(k, "key", k)) for k in path]
        last = keys[-1]
        x = rng.standard_normal(shape).astype(np.float32)
        if last == "kernel":  # N(0, 1/fan_in); attention kernels are [W, H, D] and [H, D, W]
            if len(shape) == 3:
                fan_in = shape[0] * shape[1] if "out" in keys else shape[0]
            else:
                fan_in = int(np.prod(shape[:-1]))
            return x / np.sqrt(fan_in)
        if last == "scale":
            return 1 + 0.1 * x
        return 0.02 * x

    shapes = param_shapes(config)
    return jax.tree_util.tree_map_with_path(draw, shapes, is_leaf=lambda s: isinstance(s, tuple))


def _worker(side: str, path: str, size: int, repeats: int, threads: int) -> None:
    os.sched_setaffinity(0, set(range(threads)))
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((1, size, size, 3)).astype(np.float32)
    if side == "jax":
        import jax

        from owl.checkpoints.load import load

        model = load(path)

        def forward():
            jax.block_until_ready(model.embed_image(pixels, features=False))
    else:
        from owl.export.backend import open_export

        exported = open_export(path, "onnx", threads=threads)

        def forward():
            exported.embed_image(pixels)

    t0 = time.perf_counter()
    forward()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"side": side, "warmup_s": warm, "times_s": times}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="owlvit-b32,owlv2-b16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--worker", choices=["jax", "onnx"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.path, args.size, args.repeats, args.threads)
        return

    from owl.checkpoints.owl_format import save_owl
    from owl.export.writer import export_model
    from owl.models.configs import get_variant
    from owl.models.model import OwlModel

    work = Path(args.workdir or tempfile.mkdtemp(prefix="owl-onnx-bench-"))
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    print(f"machine: {machine()}")
    print(f"before: {load_report()}")
    print(f"command: python {' '.join(sys.argv)}")
    rows = []
    for name in args.variants.split(","):
        config = get_variant(name)
        model_file = work / f"{name}.safetensors"
        export_dir = work / f"{name}-onnx"
        params = random_params(config)
        save_owl(model_file, config, params)
        t0 = time.perf_counter()
        manifest = export_model(
            OwlModel(config, params, source=name), export_dir, format="onnx", batch=1,
            tolerance=float("inf"),
        )  # fmt: skip
        v = manifest.verification
        print(f"{name}: exported in {time.perf_counter() - t0:.0f} s; max |diff| vs owl "
              f"{v['max_abs_diff']} (largest |value| {v['max_abs_value']})")  # fmt: skip
        times: dict[str, list[float]] = {"jax": [], "onnx": []}
        warm: dict[str, list[float]] = {"jax": [], "onnx": []}
        for r in range(args.rounds):
            for side in ("jax", "onnx") if r % 2 == 0 else ("onnx", "jax"):
                path = model_file if side == "jax" else export_dir
                cmd = [sys.executable, __file__, "--worker", side, "--path", str(path),
                       "--size", str(config.image_size), "--repeats", str(args.repeats),
                       "--threads", str(args.threads)]  # fmt: skip
                env = {**os.environ, "OWL_COMPILATION_CACHE": "0"}
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                times[side] += result["times_s"]
                warm[side].append(result["warmup_s"])
                print(f"  round {r + 1} {side}: {[round(t, 3) for t in result['times_s']]} s")
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((name, config.image_size, med["jax"], med["onnx"], len(times["jax"])))
    print(f"after: {load_report()}")
    print(f"\nimage encoder, batch 1, {args.threads} threads, median of n forwards (s)")
    print("| model | input | owl (JAX) | ONNX Runtime | ORT / JAX | n |")
    print("|---|---|---|---|---|---|")
    for name, size, jax_s, ort_s, n in rows:
        print(f"| {name} | {size} | {jax_s:.3f} | {ort_s:.3f} | {ort_s / jax_s:.2f} | {n} |")


if __name__ == "__main__":
    main()
