"""bf16 against f32: how far the scores move, how many top boxes survive, and the speed.

    python benchmarks/precision.py                      # shapes-tiny on the shipped examples
    python benchmarks/precision.py --full owlvit-b32,owlv2-b16   # + full-size, random weights

For each model: max |logit diff| between `--precision bf16` and f32 over all boxes and queries;
the share of f32's top-100 boxes (ranked by their best score) that have a bf16 top-100 box at
IoU >= 0.9; and the median forward time of each precision. shapes-tiny runs on the shipped
ShapesWorld examples with all 64 category names as queries; full-size variants run on random
pixels with random weights (the parity setting, `owl.testing`). f32 and bf16 run in the same
process here (one library, one thread pool), so their speed ratio is fair; for owl against
transformers use benchmarks/forward.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of cxcywh boxes a [N, 4] against b [M, 4]."""

    def corners(x):
        return np.concatenate([x[:, :2] - x[:, 2:] / 2, x[:, :2] + x[:, 2:] / 2], axis=1)

    a, b = corners(a), corners(b)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-12)


def agreement(f32: dict, bf16: dict, top: int = 100) -> tuple[float, float]:
    """(max |logit diff|, share of f32's top boxes matched by a bf16 top box at IoU >= 0.9)."""
    diff = float(np.abs(f32["logits"] - bf16["logits"]).max())
    shares = []
    for i in range(f32["logits"].shape[0]):
        k = min(top, f32["logits"].shape[1])
        best_f = np.argsort(-f32["logits"][i].max(-1))[:k]
        best_b = np.argsort(-bf16["logits"][i].max(-1))[:k]
        iou = _iou(f32["pred_boxes"][i][best_f], bf16["pred_boxes"][i][best_b])
        shares.append(float((iou.max(1) >= 0.9).mean()))
    return diff, float(np.mean(shares))


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", default="", help="comma-separated full-size variants")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    import owl
    from owl.data.shapes import CATEGORIES
    from owl.ops.image import preprocess
    from owl.testing import build_transformers_detector, random_queries, save_transformers_detector
    from owl.text.tokenizer import tokenize

    print(f"machine: {machine()}; jax {jax.__version__} ({jax.default_backend()}); {load_report()}")
    print("| model | inputs | max abs logit diff | top-100 matched at IoU>=0.9 | f32 s | bf16 s |")
    print("|---|---|---|---|---|---|")
    cases = [("shapes-tiny", None)] + [(v, "random") for v in filter(None, args.full.split(","))]
    for name, kind in cases:
        if kind is None:
            models = {p: owl.load(name, precision=p) for p in ("f32", "bf16")}
            cfg = models["f32"].config
            images = sorted((REPO / "examples/shapes/images").glob("*.png"))
            pixels = np.stack(
                [preprocess(p, image_size=cfg.image_size, pad_value=0.5)[0] for p in images]
            )
            ids = tokenize(CATEGORIES)
            inputs = f"{len(images)} examples x {len(ids)} names"
        else:
            from owl.models.configs import get_variant

            cfg = get_variant(name)
            tmp = Path(tempfile.mkdtemp())
            save_transformers_detector(build_transformers_detector(cfg), tmp / "m")
            models = {p: owl.load(tmp / "m", precision=p) for p in ("f32", "bf16")}
            rng = np.random.default_rng(0)
            pixels = rng.normal(size=(1, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
            ids = random_queries(5, rng)
            inputs = "random pixels x 5 queries"
        out = {p: m.predict_raw(pixels, ids) for p, m in models.items()}
        diff, share = agreement(out["f32"], out["bf16"])
        seconds = {
            p: _time(lambda m=m, x=pixels, q=ids: m.predict_raw(x, q), args.repeats)
            for p, m in models.items()
        }
        print(f"| {name} | {inputs} | {diff:.3g} | {share:.1%} | {seconds['f32']:.2f} | "
              f"{seconds['bf16']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
