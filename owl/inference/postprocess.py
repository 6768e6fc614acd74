"""From one image's logits to `Detections`: scores, thresholds, NMS and a detection budget.

Each query is an independent binary classifier (sigmoid, no softmax across queries). Two ways
to turn the [P, Q] score matrix into detections:
  * per-box best query (default, the official notebooks' `get_scores`): each predicted box keeps
    its highest-scoring query;
  * multi-label: every (box, query) pair above its threshold is a detection (the evaluation
    protocol's view, where a box may carry several classes).
A detection survives when its score reaches its query's threshold (the query's own, else the
global one). NMS is optional, class-wise or class-agnostic; the official text pipeline has none,
the official image-query demo uses it.

With a calibration (`owl.inference.calibration.Calibration`, `PostprocessOptions.calibration`)
the scores are calibrated probabilities instead of sigmoids: each query's logit goes through
its own fitted map (docs/calibration.md), a box's best query is the one with the highest
probability, and thresholds apply to probabilities. The raw sigmoid is kept in
``Detections.data["raw_score"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from owl.inference.detections import Detections
from owl.ops.boxes import batched_nms, nms
from owl.ops.scores import sigmoid

if TYPE_CHECKING:
    from owl.inference.calibration import Calibration


@dataclasses.dataclass(frozen=True)
class PostprocessOptions:
    """How scores become detections.

    Attributes:
      threshold: global minimum score.
      multi_label: keep every (box, query) pair above threshold instead of each box's best.
      nms: apply non-maximum suppression.
      nms_iou: IoU above which a lower-scoring box is suppressed.
      class_agnostic_nms: suppress across queries instead of within each query.
      max_detections: keep at most this many (highest scores first); None: no limit.
      calibration: turn logits into calibrated probabilities (None: raw sigmoids).
    """

    threshold: float = 0.1
    multi_label: bool = False
    nms: bool = False
    nms_iou: float = 0.3
    class_agnostic_nms: bool = False
    max_detections: int | None = 100
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1], got {self.nms_iou}")
        if self.max_detections is not None and self.max_detections < 0:
            raise ValueError(f"max_detections must be >= 0, got {self.max_detections}")


def detections_from_scores(
    logits: np.ndarray,
    boxes_xyxy: np.ndarray,
    labels: Sequence[str],
    thresholds: Sequence[float | None],
    options: PostprocessOptions,
    *,
    extra: Mapping[str, np.ndarray] | None = None,
    metadata: Mapping[str, Any] | None = None,
    contrast_logits: np.ndarray | None = None,
) -> Detections:
    """Builds the detections of one image.

    Args:
      logits: [P, Q] class logits of the real queries (padding columns removed).
      boxes_xyxy: [P, 4] boxes in original-image pixels.
      labels: [Q] names of the queries.
      thresholds: [Q] per-query thresholds; None uses `options.threshold`.
      options: see `PostprocessOptions`.
      extra: per-box arrays [P] carried into `Detections.data` (e.g. objectness).
      metadata: about the image (path, width, height).
      contrast_logits: [P, V] logits of the calibration's contrast vocabulary (needed when
        ``options.calibration`` has one).
    Returns:
      Detections sorted by descending score.
    """
    logits = np.asarray(logits)
    num_boxes, num_queries = logits.shape
    if len(labels) != num_queries or len(thresholds) != num_queries:
        raise ValueError(
            f"{num_queries} queries but {len(labels)} labels, {len(thresholds)} thresholds"
        )
    thr = np.array([options.threshold if t is None else t for t in thresholds], np.float64)
    raw = sigmoid(logits)
    cal = options.calibration
    scores = raw if cal is None else cal.probabilities(logits, labels, contrast_logits)
    if options.multi_label:
        box_idx, query_idx = np.nonzero(scores >= thr[None, :])
    else:
        ranked = logits if cal is None else scores
        best = np.argmax(ranked, axis=1) if num_queries else np.zeros(num_boxes, int)
        keep = scores[np.arange(num_boxes), best] >= thr[best] if num_queries else np.zeros(0, bool)
        box_idx = np.flatnonzero(keep)
        query_idx = best[box_idx]
    score = scores[box_idx, query_idx]
    order = np.argsort(-score, kind="stable")
    box_idx, query_idx, score = box_idx[order], query_idx[order], score[order]

    if options.nms and len(box_idx):
        boxes = np.asarray(boxes_xyxy, np.float64)[box_idx]
        if options.class_agnostic_nms:
            kept = nms(boxes, score, options.nms_iou)
        else:
            kept = batched_nms(boxes, score, query_idx, options.nms_iou)
        kept = np.sort(kept)  # back to descending-score order
        box_idx, query_idx, score = box_idx[kept], query_idx[kept], score[kept]
    if options.max_detections is not None:
        box_idx = box_idx[: options.max_detections]
        query_idx = query_idx[: options.max_detections]
        score = score[: options.max_detections]

    data = {"box_index": box_idx.astype(np.int64)}
    if cal is not None:
        data["raw_score"] = raw[box_idx, query_idx].astype(np.float32)
    for key, value in (extra or {}).items():
        data[key] = np.asarray(value)[box_idx]
    return Detections(
        xyxy=np.asarray(boxes_xyxy, np.float32)[box_idx].reshape(-1, 4),
        confidence=score.astype(np.float32),
        class_id=query_idx.astype(np.int64),
        labels=np.array([labels[q] for q in query_idx], dtype=np.str_),
        data=data,
        metadata=dict(metadata or {}),
    )
