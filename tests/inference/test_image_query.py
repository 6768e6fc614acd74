"""Tests for owl/inference/image_query.py: choosing an exemplar's query token.

Every expected index below is worked out by hand from crafted boxes and embeddings (spec §4):
candidates are the boxes with IoU >= 0.8 x max IoU (GIoU >= 1.2 x min(max GIoU, 0) when nothing
overlaps); among them the embedding with the lowest dot product with the mean of ALL embeddings
wins (v1), or the highest objectness (v2).
"""

from __future__ import annotations

import numpy as np
import pytest

from owl.inference.image_query import (
    candidate_mask,
    resolve_method,
    select_by_iou,
    select_by_objectness,
)

# Query box (cx, cy, w, h) = xyxy (0.25, 0.25, 0.75, 0.75), area 0.25.
QUERY = np.array([0.5, 0.5, 0.5, 0.5])

# Predicted boxes and their IoU with QUERY (each nested inside the query: IoU = area / 0.25).
BOXES = np.array(
    [
        [0.5, 0.5, 0.5, 0.5],  # 0: identical, IoU 1.0 -> candidate
        [0.5, 0.5, 0.5, 0.45],  # 1: area 0.225, IoU 0.9 -> candidate
        [0.5, 0.5, 0.5, 0.375],  # 2: area 0.1875, IoU 0.75 < 0.8 -> not a candidate
        [0.05, 0.05, 0.1, 0.1],  # 3: xyxy (0, 0, 0.1, 0.1), no overlap -> not a candidate
        [0.5, 0.5, 0.5, 0.41],  # 4: area 0.205, IoU 0.82 >= 0.8 -> candidate
    ]
)


def test_candidate_mask_is_iou_within_80_percent_of_the_best():
    np.testing.assert_array_equal(candidate_mask(QUERY, BOXES), [True, True, False, False, True])
    # Without the perfect box the best IoU is 0.9, so the cut is 0.72: box 2 (0.75) joins.
    np.testing.assert_array_equal(candidate_mask(QUERY, BOXES[1:]), [True, True, False, True])


def test_select_by_iou_picks_candidate_least_similar_to_the_mean_of_all_tokens():
    emb = np.array(
        [
            [1.0, 0.0],  # 0 candidate
            [-1.0, 0.0],  # 1 candidate
            [-10.0, 0.0],  # 2 not a candidate (lowest overall, must be ignored)
            [0.0, 5.0],  # 3 not a candidate
            [0.5, 0.0],  # 4 candidate
        ]
    )
    # Mean of all five = (-9.5 / 5, 5 / 5) = (-1.9, 1.0); dots with it: 0 -> -1.9, 1 -> 1.9,
    # 4 -> -0.95. Lowest among the candidates {0, 1, 4}: index 0. (The mean of the candidates
    # only, (0.17, 0), would pick index 1 instead.)
    assert select_by_iou(QUERY, BOXES, emb) == 0


def test_select_by_iou_ties_go_to_the_first_candidate():
    emb = np.array([[-1.0, 0.0], [-1.0, 0.0], [-9.0, 0.0], [9.0, 0.0], [-1.0, 0.0]])
    # Mean (-0.6, 0): candidates 0, 1 and 4 all have dot 0.6 -> the first, 0.
    assert select_by_iou(QUERY, BOXES, emb) == 0
    emb[0] = [-2.0, 0.0]  # mean (-0.8, 0): 0 -> 1.6, 1 and 4 -> 0.8 (tie) -> the first of them, 1
    assert select_by_iou(QUERY, BOXES, emb) == 1


def test_giou_fallback_when_no_predicted_box_overlaps():
    query = np.array([0.2, 0.2, 0.2, 0.2])  # xyxy (0.1, 0.1, 0.3, 0.3), area 0.04
    boxes = np.array(
        [
            [
                0.85,
                0.85,
                0.1,
                0.1,
            ],  # 0: xyxy (0.8,0.8,0.9,0.9): union 0.05, hull 0.64 -> GIoU -0.922
            [0.5, 0.2, 0.2, 0.2],  # 1: (0.4,0.1,0.6,0.3): union 0.08, hull 0.1 -> GIoU -0.2
            [0.55, 0.2, 0.2, 0.2],  # 2: (0.45,..,0.65,..): union 0.08, hull 0.11 -> GIoU -0.273
            [0.52, 0.2, 0.2, 0.2],  # 3: (0.42,..,0.62,..): union 0.08, hull 0.104 -> GIoU -0.231
        ]
    )
    # Max GIoU -0.2 -> threshold 1.2 x -0.2 = -0.24: candidates 1 and 3 only.
    np.testing.assert_array_equal(candidate_mask(query, boxes), [False, True, False, True])
    emb = np.array([[-5.0, 0.0], [1.0, 0.0], [-2.0, 0.0], [7.0, 0.0]])
    # Mean (0.25, 0): dots 0 -> -1.25, 1 -> 0.25, 2 -> -0.5, 3 -> 1.75; among {1, 3}: 1.
    assert select_by_iou(query, boxes, emb) == 1
    emb[1] = [9.0, 0.0]  # mean (2.25, 0): 1 -> 20.25, 3 -> 15.75 -> 3
    assert select_by_iou(query, boxes, emb) == 3


def test_giou_fallback_keeps_boxes_that_only_touch_the_query():
    query = np.array([0.2, 0.2, 0.2, 0.2])  # xyxy (0.1, 0.1, 0.3, 0.3)
    boxes = np.array([[0.4, 0.2, 0.2, 0.2], [0.8, 0.8, 0.2, 0.2]])
    # Box 0 touches the query's right edge: IoU 0, hull = union, GIoU 0 -> threshold 0.
    np.testing.assert_array_equal(candidate_mask(query, boxes), [True, False])


def test_select_by_iou_without_a_box_uses_the_whole_square():
    boxes = np.array(
        [
            [0.5, 0.5, 0.5, 0.5],  # IoU with the whole square 0.25
            [0.5, 0.5, 1.0, 1.0],  # IoU 1.0
            [0.5, 0.5, 0.9, 0.95],  # IoU 0.855 -> candidate
            [0.25, 0.25, 0.5, 0.5],  # IoU 0.25
        ]
    )
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 0.0], [-8.0, 0.0]])
    # Mean (-1, 0): dots 1 -> -2, 2 -> -1 among candidates {1, 2}: index 1.
    assert select_by_iou(None, boxes, emb) == 1
    assert select_by_iou(np.array([0.5, 0.5, 1.0, 1.0]), boxes, emb) == 1
    emb[1] = [-3.0, 0.0]  # mean (-2.25, 0): 1 -> 6.75, 2 -> -2.25 -> index 2
    assert select_by_iou(None, boxes, emb) == 2


def test_select_by_objectness_with_a_box_restricts_to_candidates():
    objectness = np.array([0.1, 2.0, 9.0, 8.0, 3.0])
    # Candidates {0, 1, 4}; 2 and 3 score higher but are not candidates.
    assert select_by_objectness(QUERY, BOXES, objectness) == 4
    objectness[1] = 3.0  # tie between 1 and 4 -> first
    assert select_by_objectness(QUERY, BOXES, objectness) == 1


def test_select_by_objectness_without_a_box_is_the_global_argmax():
    objectness = np.array([0.1, 2.0, 9.0, 8.0, 3.0])
    assert select_by_objectness(None, BOXES, objectness) == 2
    objectness[4] = 9.0  # tie -> first
    assert select_by_objectness(None, BOXES, objectness) == 2


def test_resolve_method():
    assert resolve_method("auto", has_objectness=True) == "objectness"
    assert resolve_method("auto", has_objectness=False) == "iou"
    assert resolve_method("iou", has_objectness=True) == "iou"
    assert resolve_method("objectness", has_objectness=True) == "objectness"
    with pytest.raises(
        ValueError, match="objectness selection needs an OWLv2 model.*use method 'iou'"
    ):
        resolve_method("objectness", has_objectness=False)
