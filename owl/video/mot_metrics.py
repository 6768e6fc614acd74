"""Scoring tracks against MOT ground truth with py-motmetrics (an independent evaluator).

Used by tests/video and benchmarks/video.py; py-motmetrics is in the `test` extra, not in
`[video]`. Its 1.4.0 still calls ``np.asfarray``, which numpy 2 removed: `_motmetrics` puts an
equivalent back on numpy before importing it.

Ground-truth rows with conf 0 (mostly hidden objects, see `owl.data.shapes_video`) are ignored
the MOT17 way: the rows are dropped, and so are predicted boxes matched to them (IoU >= 0.5), so
neither counts as a miss nor as a false positive.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from owl.video.outputs import read_mot


def _motmetrics() -> Any:
    if not hasattr(np, "asfarray"):  # numpy 2 removed it; motmetrics 1.4.0 still calls it
        np.asfarray = lambda a, dtype=np.float64: np.asarray(a, dtype=dtype)  # type: ignore[attr-defined]
    import motmetrics

    return motmetrics


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes, [len(a), len(b)]."""
    ax1, ay1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx1, by1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(
        np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    h = np.clip(
        np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-9)


def mot_scores(
    gt: str | os.PathLike | np.ndarray, results: str | os.PathLike | np.ndarray
) -> dict[str, float]:
    """IDF1, MOTA, ID switches and more of MOT results against gt (IoU 0.5 to match).

    Args:
      gt: MOT gt file or rows (frame, id, x, y, w, h, conf, class, visibility).
      results: MOT results file or rows (frame, id, x, y, w, h, score, ...).

    Returns:
      {"idf1", "mota", "motp", "num_switches", "num_false_positives", "num_misses",
       "num_objects", "num_unique_objects", "mostly_tracked", "num_frames"}.
    """
    mm = _motmetrics()
    gt = read_mot(gt) if not isinstance(gt, np.ndarray) else gt
    res = read_mot(results) if not isinstance(results, np.ndarray) else results
    acc = mm.MOTAccumulator(auto_id=False)
    frames = sorted(set(gt[:, 0].astype(int)) | set(res[:, 0].astype(int)))
    for f in frames:
        g = gt[gt[:, 0] == f]
        r = res[res[:, 0] == f]
        ignored = g[g[:, 6] == 0]
        g = g[g[:, 6] != 0]
        if len(ignored) and len(r):
            hit = (_iou(r[:, 2:6], ignored[:, 2:6]) >= 0.5).any(axis=1)
            r = r[~hit]
        dist = mm.distances.iou_matrix(g[:, 2:6], r[:, 2:6], max_iou=0.5)
        acc.update(g[:, 1].astype(int).tolist(), r[:, 1].astype(int).tolist(), dist, frameid=f)
    names = [
        "idf1", "mota", "motp", "num_switches", "num_false_positives", "num_misses",
        "num_objects", "num_unique_objects", "mostly_tracked", "num_frames",
    ]  # fmt: skip
    summary = mm.metrics.create().compute(acc, metrics=names, name="all")
    return {n: float(summary[n].iloc[0]) for n in names}


__all__ = ["mot_scores"]
