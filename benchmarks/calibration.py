"""Calibrated scores (issue 26): ECE before and after, precision and recall at 0.5, "no match".

shapes-tiny on a held-out ShapesWorld world with all 64 categories annotated (--eval-seed,
default 101), calibrations fitted on another world (--calib-seed, default 103). Which boxes
count (owl.eval.calibration): per image and category query, the query's best 5 boxes after
per-query NMS at IoU 0.5 on the scores measured, each a true match when it takes a
ground-truth box of that category at IoU >= 0.5 (greedy, one-to-one, best score first). ECE:
15 equal-width bins over those boxes ("top-5"), and over the best box of each (image, query)
pair ("top-1"), and over the counted boxes scoring >= 0.1 (">=.1": the boxes `owl detect`
shows at its raw default threshold; this set depends on the scores measured). Precision and recall per category at threshold 0.5, averaged over the 64
categories (precision of a category with no detection counts as 1, and the count is shown);
raw scores are also shown at the best single global threshold (the one with the highest mean
F1). "No match": of the (image, category) pairs without that category in the image, the
fraction with no box at or above 0.5.

Methods (docs/calibration.md): raw sigmoid; (a) a background query ("shape") as the contrast;
(b) per-query standardisation by the query's own score distribution over the calibration
images (no labels) plus one global Platt map; (c) global Platt, per-query Platt and per-query
isotonic from labels; the default, per-query Platt with the 64 categories as the contrast
vocabulary.

    python benchmarks/calibration.py                       # table + benchmarks/results/calibration.json
    python benchmarks/calibration.py --write-asset         # also refits owl/assets/shapes-tiny.calibration.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from owl.data.shapes import CATEGORIES, is_novel, sample_scene
from owl.eval.calibration import (
    ScoredSet,
    calibrated_scores,
    ece,
    fit_calibration,
    no_match_accuracy,
    raw_scores,
    score_images,
    select,
    threshold_metrics,
)
from owl.inference.calibration import fit_platt
from owl.inference.detector import Detector

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "owl" / "assets" / "shapes-tiny.calibration.json"
BACKGROUND_QUERY = "shape"


def world(seed: int, n: int) -> tuple[list[np.ndarray], list[tuple[np.ndarray, list[str]]]]:
    scenes = [sample_scene(seed, i) for i in range(n)]
    truths = [
        (np.array([o.box_xyxy for o in s.objects], np.float64), [o.name for o in s.objects])
        for s in scenes
    ]
    return [s.image for s in scenes], truths


def top1(sel) -> np.ndarray:
    """Mask of the first (best) counted box of each (image, query) list."""
    key = sel.image * 10_000 + sel.query
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    return first


def measure(sel, threshold: float = 0.5) -> dict:
    from owl.inference.calibration import expected_calibration_error

    m = threshold_metrics(sel, threshold)
    first = top1(sel)
    seen = sel.scores >= 0.1
    return {
        "ece_top5": ece(sel),
        "ece_top1": expected_calibration_error(sel.scores[first], sel.matched[first]),
        "ece_seen": expected_calibration_error(sel.scores[seen], sel.matched[seen]),
        "boxes_seen": int(seen.sum()),
        "threshold": threshold,
        "mean_precision": float(np.mean(np.nan_to_num(m["precision"], nan=1.0))),
        "categories_without_detection": int(np.isnan(m["precision"]).sum()),
        "mean_recall": float(np.nanmean(m["recall"])),
        "no_match": no_match_accuracy(sel, threshold),
        "per_category": {
            "precision": [None if np.isnan(v) else float(v) for v in m["precision"]],
            "recall": [None if np.isnan(v) else float(v) for v in m["recall"]],
        },
    }


def best_global_threshold(sel) -> float:
    best, best_f1 = 0.5, -1.0
    for t in np.round(np.arange(0.02, 0.99, 0.01), 2):
        m = threshold_metrics(sel, float(t))
        p, r = np.nan_to_num(m["precision"], nan=1.0), np.nan_to_num(m["recall"], nan=0.0)
        f1 = float(np.mean(np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)))
        if f1 > best_f1:
            best, best_f1 = float(t), f1
    return best


def ceiling(sel, recall: float = 0.70) -> dict | None:
    """The best mean precision at any single threshold with mean recall >= ``recall``."""
    best = None
    for t in np.round(np.arange(0.01, 1.0, 0.01), 2):
        m = threshold_metrics(sel, float(t))
        p = float(np.mean(np.nan_to_num(m["precision"], nan=1.0)))
        r = float(np.nanmean(m["recall"]))
        if r >= recall and (best is None or p > best["precision"]):
            best = {"threshold": float(t), "precision": p, "recall": r}
    return best


def standardised(scored: ScoredSet, reference: ScoredSet) -> ScoredSet:
    """(b): each query's logits as z-scores of its best-box logit over the reference images."""
    best = np.stack([im.logits.max(axis=0) for im in reference.images])  # [I, Q]
    mu, sd = best.mean(axis=0), best.std(axis=0) + 1e-6
    images = tuple(
        dataclasses.replace(im, logits=(im.logits - mu) / sd, margins=None) for im in scored.images
    )
    return dataclasses.replace(scored, images=images, contrast=())


def without_contrast(scored: ScoredSet) -> ScoredSet:
    images = tuple(dataclasses.replace(im, margins=None) for im in scored.images)
    return dataclasses.replace(scored, images=images, contrast=())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-seed", type=int, default=101)
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--calib-seed", type=int, default=103)
    parser.add_argument("--calib-images", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/calibration.json")
    parser.add_argument("--write-asset", action="store_true", help=f"refit {ASSET.name}")
    args = parser.parse_args()
    print(f"command: python {' '.join(sys.argv)}")
    start = time.time()
    detector = Detector("shapes-tiny", batch_size=8)
    scored = {}
    for role, seed, n in (
        ("calib", args.calib_seed, args.calib_images),
        ("eval", args.eval_seed, args.eval_images),
    ):
        images, truths = world(seed, n)
        scored[role] = {
            "vocab": score_images(detector, images, truths, CATEGORIES, contrast=CATEGORIES),
            "null": score_images(detector, images, truths, CATEGORIES, contrast=[BACKGROUND_QUERY]),
        }
    cal, ev = scored["calib"]["vocab"], scored["eval"]["vocab"]
    plain_cal, plain_ev = without_contrast(cal), without_contrast(ev)

    rows: dict[str, dict] = {}
    raw_sel = select(ev, raw_scores)
    rows["raw sigmoid"] = measure(raw_sel)
    t_best = best_global_threshold(raw_sel)
    rows[f"raw sigmoid @ best global {t_best:.2f}"] = measure(raw_sel, t_best)

    def add(name: str, fit_set: ScoredSet, eval_set: ScoredSet, **kw) -> object:
        calibration = fit_calibration(fit_set, **kw)
        sel = select(eval_set, calibrated_scores(calibration))
        rows[name] = measure(sel)
        rows[name]["ceiling_at_recall_0.70"] = ceiling(sel)
        return calibration

    add("(a) background query 'shape', global Platt", scored["calib"]["null"],
        scored["eval"]["null"], per_query=False)  # fmt: skip
    add("(a) background query 'shape', per-query Platt", scored["calib"]["null"],
        scored["eval"]["null"])  # fmt: skip
    add("(b) own score distribution (no labels) + global Platt",
        standardised(plain_cal, plain_cal), standardised(plain_ev, plain_cal), per_query=False)  # fmt: skip
    add("(c) global Platt", plain_cal, plain_ev, per_query=False)
    add("(c) per-query Platt", plain_cal, plain_ev)
    add("(c) per-query isotonic", plain_cal, plain_ev, method="isotonic")
    add("(c) contrast vocabulary, global Platt", cal, ev, per_query=False)
    default = add("(c) contrast vocabulary, per-query Platt [default]", cal, ev)
    rows["raw sigmoid"]["ceiling_at_recall_0.70"] = ceiling(raw_sel)

    # A check on the Platt fit itself: the global raw fit's slope and offset.
    a, b = fit_platt(select(plain_cal).logits, select(plain_cal).matched)
    elapsed = time.time() - start

    print(
        f"\nshapes-tiny, eval world {args.eval_seed} ({len(ev.images)} images, "
        f"{int(ev.num_truth.sum())} boxes), calibration world {args.calib_seed} "
        f"({len(cal.images)} images); 64 category queries per image; threshold 0.5 unless named\n"
    )
    head = (
        f"{'method':<58} {'ECE top5':>8} {'ECE top1':>8} {'ECE>=.1':>8} {'mean P':>7} {'mean R':>7} "
        f"{'no-match':>8} {'P@R>=.70':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        c = r.get("ceiling_at_recall_0.70")
        print(
            f"{name:<58} {r['ece_top5']:>8.4f} {r['ece_top1']:>8.4f} {r['ece_seen']:>8.4f} "
            f"{r['mean_precision']:>7.3f} "
            f"{r['mean_recall']:>7.3f} {r['no_match']:>8.4f} "
            f"{'-' if c is None else format(c['precision'], '.3f'):>9}"
        )
    d = rows["(c) contrast vocabulary, per-query Platt [default]"]
    raw_best = rows[f"raw sigmoid @ best global {t_best:.2f}"]
    print(
        f"\nper category: calibrated @0.5 (default) vs raw @{t_best:.2f} "
        "(precision/recall; * novel)"
    )

    def fmt(v: float | None) -> str:
        return "  -  " if v is None else f"{v:.3f}"

    for q, name in enumerate(CATEGORIES):
        print(
            f"  {name + (' *' if is_novel(q) else ''):<20} "
            f"{fmt(d['per_category']['precision'][q])} / {fmt(d['per_category']['recall'][q])}"
            f"    {fmt(raw_best['per_category']['precision'][q])} / "
            f"{fmt(raw_best['per_category']['recall'][q])}"
        )
    targets = {
        "ece": d["ece_top5"] <= 0.05,
        "precision_0.85_at_recall_0.70": d["mean_precision"] >= 0.85 and d["mean_recall"] >= 0.70,
        "no_match_0.95": d["no_match"] >= 0.95,
    }
    print(f"\ntargets (default): {targets}; {elapsed:.0f} s")
    result = {
        "command": "python " + " ".join(sys.argv),
        "model": "shapes-tiny",
        "eval": {"seed": args.eval_seed, "images": len(ev.images)},
        "calibration": {"seed": args.calib_seed, "images": len(cal.images)},
        "boxes": "per image and query: best 5 after per-query NMS IoU 0.5; true match = greedy "
        "one-to-one IoU >= 0.5 with a ground-truth box of that category",
        "ece_bins": "15 equal-width on [0, 1]",
        "categories": CATEGORIES,
        "raw_best_global_threshold": t_best,
        "global_platt_raw": {"a": a, "b": b},
        "methods": rows,
        "targets_default": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.write_asset:
        asset = dataclasses.replace(
            default, model="shapes-tiny",
            fit={**default.fit, "data": f"ShapesWorld world {args.calib_seed}, images 0-"
                 f"{args.calib_images - 1} (benchmarks/calibration.py --write-asset)"},
        )  # fmt: skip
        asset.save(ASSET)
        print(f"wrote {ASSET}")


if __name__ == "__main__":
    main()
