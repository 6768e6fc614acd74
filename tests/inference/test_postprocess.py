"""Tests for owl/inference/postprocess.py on hand-made logits and boxes.

Logits are chosen as logit(p) for round probabilities p, so every expected score, the set of
surviving (box, query) pairs and their order are read off the tables below by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from owl.inference.postprocess import PostprocessOptions, detections_from_scores
from owl.ops.scores import sigmoid


def logit(p) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return np.log(p) - np.log1p(-p)


# Scores of 4 boxes x 2 queries ("cat", "dog").
SCORES = np.array(
    [
        [0.90, 0.20],  # box 0: best cat 0.9
        [0.60, 0.70],  # box 1: best dog 0.7 (cat 0.6 also above 0.5)
        [0.40, 0.10],  # box 2: best cat 0.4
        [0.30, 0.95],  # box 3: best dog 0.95
    ]
)
LOGITS = logit(SCORES)
BOXES = np.array(
    [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], np.float32
)  # disjoint
LABELS = ("cat", "dog")


def run(thresholds=(None, None), logits=LOGITS, boxes=BOXES, **options):
    return detections_from_scores(logits, boxes, LABELS, thresholds, PostprocessOptions(**options))


def pairs(det) -> list[tuple[int, int]]:
    return list(zip(det.data["box_index"].tolist(), det.class_id.tolist(), strict=False))


def test_sigmoid_inverts_logit():
    np.testing.assert_allclose(sigmoid(LOGITS), SCORES, atol=1e-12)
    assert sigmoid(0.0) == 0.5


def test_per_box_best_query_sorted_by_score():
    det = run(threshold=0.5)
    assert pairs(det) == [(3, 1), (0, 0), (1, 1)]  # 0.95, 0.9, 0.7; box 2 (0.4) dropped
    np.testing.assert_allclose(det.confidence, [0.95, 0.9, 0.7], atol=1e-6)
    assert det.labels.tolist() == ["dog", "cat", "dog"]
    np.testing.assert_array_equal(det.xyxy, BOXES[[3, 0, 1]])


def test_multi_label_keeps_every_pair_above_threshold():
    det = run(threshold=0.5, multi_label=True)
    assert pairs(det) == [(3, 1), (0, 0), (1, 1), (1, 0)]  # box 1 twice: dog 0.7, cat 0.6
    np.testing.assert_allclose(det.confidence, [0.95, 0.9, 0.7, 0.6], atol=1e-6)


def test_per_query_threshold_overrides_the_global_one():
    # dog needs 0.8: box 1's dog (0.7) goes; box 3's dog (0.95) stays.
    assert pairs(run((None, 0.8), threshold=0.5)) == [(3, 1), (0, 0)]
    # cat may go down to 0.35: box 2's cat (0.4) joins, although the global threshold is 0.5.
    assert pairs(run((0.35, None), threshold=0.5)) == [(3, 1), (0, 0), (1, 1), (2, 0)]
    # multi-label with dog at 0.8: box 1 keeps only its cat pair (0.6).
    assert pairs(run((None, 0.8), threshold=0.5, multi_label=True)) == [(3, 1), (0, 0), (1, 0)]
    # Per-box mode thresholds each box's best query only: box 1's best is dog (0.7 < 0.8), so the
    # box is dropped although its cat score (0.6) passes cat's threshold.
    assert (1, 0) not in pairs(run((None, 0.8), threshold=0.5))


def test_threshold_is_inclusive():
    # An exactly representable score: logit 0 -> 0.5 passes a threshold of 0.5.
    det = detections_from_scores(np.zeros((1, 1)), BOXES[:1], ["x"], [0.5], PostprocessOptions())
    assert len(det) == 1 and det.confidence[0] == 0.5


def test_max_detections_keeps_the_highest_scores():
    assert pairs(run(threshold=0.0, max_detections=2)) == [(3, 1), (0, 0)]
    assert len(run(threshold=0.0, max_detections=0)) == 0
    assert len(run(threshold=0.0, max_detections=None)) == 4


def test_equal_scores_keep_box_order():
    logits = np.zeros((3, 1))  # all 0.5
    det = detections_from_scores(logits, BOXES[:3], ["x"], [None], PostprocessOptions())
    assert det.data["box_index"].tolist() == [0, 1, 2]


# Overlapping boxes for NMS. IoU(A, B) = IoU(A, C) = 90 / 110 = 0.818; D is far away.
NMS_BOXES = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11], [50, 50, 60, 60]], np.float32)
NMS_SCORES = np.array(
    [
        [0.9, 0.0001],  # A: cat 0.9
        [0.0001, 0.8],  # B: dog 0.8
        [0.7, 0.0001],  # C: cat 0.7
        [0.0001, 0.6],  # D: dog 0.6
    ]
)


def test_classwise_nms_suppresses_only_within_a_query():
    det = run(logits=logit(NMS_SCORES), boxes=NMS_BOXES, threshold=0.5, nms=True, nms_iou=0.5)
    # C overlaps A (same class, 0.818 > 0.5) -> suppressed; B overlaps A but is a dog -> kept.
    assert pairs(det) == [(0, 0), (1, 1), (3, 1)]


def test_class_agnostic_nms_suppresses_across_queries():
    det = run(
        logits=logit(NMS_SCORES),
        boxes=NMS_BOXES,
        threshold=0.5,
        nms=True,
        nms_iou=0.5,
        class_agnostic_nms=True,
    )
    assert pairs(det) == [(0, 0), (3, 1)]  # B and C both overlap A


def test_nms_iou_above_overlap_keeps_everything_and_nms_off_by_default():
    det = run(logits=logit(NMS_SCORES), boxes=NMS_BOXES, threshold=0.5, nms=True, nms_iou=0.85)
    assert pairs(det) == [(0, 0), (1, 1), (2, 0), (3, 1)]
    assert pairs(run(logits=logit(NMS_SCORES), boxes=NMS_BOXES, threshold=0.5)) == pairs(det)


def test_nms_then_max_detections():
    det = run(
        logits=logit(NMS_SCORES),
        boxes=NMS_BOXES,
        threshold=0.5,
        nms=True,
        nms_iou=0.5,
        class_agnostic_nms=True,
        max_detections=1,
    )
    assert pairs(det) == [(0, 0)]


def test_extra_and_metadata_follow_the_detections():
    det = detections_from_scores(
        LOGITS,
        BOXES,
        LABELS,
        (None, None),
        PostprocessOptions(threshold=0.5),
        extra={"objectness": np.array([0.1, 0.2, 0.3, 0.4])},
        metadata={"path": "a.jpg", "width": 70, "height": 10},
    )
    np.testing.assert_allclose(det.data["objectness"], [0.4, 0.1, 0.2])
    assert det.metadata == {"path": "a.jpg", "width": 70, "height": 10}


def test_nothing_above_threshold_gives_empty_detections():
    det = run(threshold=0.99)
    assert len(det) == 0 and det.xyxy.shape == (0, 4) and det.labels.tolist() == []


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="2 queries but 1 labels, 2 thresholds"):
        detections_from_scores(LOGITS, BOXES, ["cat"], (None, None), PostprocessOptions())
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 1.5"):
        PostprocessOptions(threshold=1.5)
    with pytest.raises(ValueError, match=r"nms_iou must be in \[0, 1\], got -0.1"):
        PostprocessOptions(nms_iou=-0.1)
    with pytest.raises(ValueError, match="max_detections must be >= 0, got -1"):
        PostprocessOptions(max_detections=-1)
