"""Full-size parity and forward time: owl (JAX) against transformers (PyTorch) on identical weights.

For each model (default: owlvit-b32 at 768 px and owlv2-b16 at 960 px) it builds the transformers
detector offline with re-drawn weights (`owl.testing`), saves it, loads that directory with
`owl.load`, runs both on the same random pixels and token ids, and prints the largest absolute
differences and the forward times (median after warm-up; owl's first call, which compiles, is
reported separately).

    python benchmarks/parity_full.py [--models owlvit-b32,owlv2-b16] [--repeats 3] [--queries 4]

Expected: logits <= 1e-3, boxes <= 2e-3 (the heads' tanh GELU versus transformers' exact GELU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import numpy as np


def _machine() -> str:
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    return f"{machine()}; jax {jax.__version__} on {jax.default_backend()}; {load_report()}"


def run_model(name: str, repeats: int, num_queries: int) -> dict:
    import torch

    import owl
    from owl.models.configs import get_variant
    from owl.testing import (
        build_transformers_detector,
        random_queries,
        save_transformers_detector,
        transformers_outputs,
    )

    cfg = get_variant(name)
    t0 = time.perf_counter()
    hf_model = build_transformers_detector(cfg, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        save_transformers_detector(hf_model, tmp)
        model = owl.load(tmp)
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    pixels = rng.normal(size=(1, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
    ids = random_queries(num_queries, rng)

    t0 = time.perf_counter()
    ours = model.predict_raw(pixels, ids)
    first_call_s = time.perf_counter() - t0
    owl_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_raw(pixels, ids)
        owl_times.append(time.perf_counter() - t0)

    torch.set_num_threads(os.cpu_count() or 1)
    theirs = transformers_outputs(hf_model, pixels, ids)  # warm-up
    hf_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        transformers_outputs(hf_model, pixels, ids)
        hf_times.append(time.perf_counter() - t0)

    diffs = {
        k: float(np.abs(ours[k] - theirs[k]).max())
        for k in ("logits", "pred_boxes", "class_embeds", "image_embeds", "objectness_logits")
        if k in theirs
    }
    return {
        "model": name,
        "image_size": cfg.image_size,
        "build_s": build_s,
        "diffs": diffs,
        "owl_first_call_s": first_call_s,
        "owl_median_s": statistics.median(owl_times),
        "hf_median_s": statistics.median(hf_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="owlvit-b32,owlv2-b16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=4)
    args = parser.parse_args()
    print(f"machine: {_machine()}")
    for name in args.models.split(","):
        r = run_model(name.strip(), args.repeats, args.queries)
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in r["diffs"].items())
        print(f"\n{r['model']} @ {r['image_size']} px (built and loaded in {r['build_s']:.1f} s)")
        print(f"  max |owl - transformers|: {diffs}")
        print(
            f"  forward, median of {args.repeats}: owl {r['owl_median_s']:.3f} s, "
            f"transformers {r['hf_median_s']:.3f} s, ratio owl/transformers "
            f"{r['owl_median_s'] / r['hf_median_s']:.2f}; owl first call (compile) "
            f"{r['owl_first_call_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
