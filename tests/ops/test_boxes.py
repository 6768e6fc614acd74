"""Tests for owl.ops.boxes: conversions, IoU/GIoU against hand-computed values, NMS keep lists."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from owl.ops import boxes as B


def test_conversions_hand_values_and_round_trips():
    cxcywh = np.array([[0.5, 0.5, 1.0, 2.0], [3.0, 4.0, 2.0, 4.0]])
    xyxy = np.array([[0.0, -0.5, 1.0, 1.5], [2.0, 2.0, 4.0, 6.0]])
    xywh = np.array([[0.0, -0.5, 1.0, 2.0], [2.0, 2.0, 2.0, 4.0]])
    np.testing.assert_allclose(B.cxcywh_to_xyxy(cxcywh), xyxy)
    np.testing.assert_allclose(B.xyxy_to_cxcywh(xyxy), cxcywh)
    np.testing.assert_allclose(B.xyxy_to_xywh(xyxy), xywh)
    np.testing.assert_allclose(B.xywh_to_xyxy(xywh), xyxy)
    np.testing.assert_allclose(B.box_area(xyxy), [2.0, 8.0])


def test_numpy_in_numpy_out_and_jax_under_jit():
    b = np.array([[[0.5, 0.5, 1.0, 1.0]]])  # extra leading axis: [..., 4] works
    out = B.cxcywh_to_xyxy(b)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == (1, 1, 4)
    jitted = jax.jit(B.cxcywh_to_xyxy)(jnp.asarray(b, jnp.float32))
    assert isinstance(jitted, jax.Array)
    np.testing.assert_allclose(np.asarray(jitted), [[[0.0, 0.0, 1.0, 1.0]]])


def test_bad_shape_error_names_the_shape():
    with pytest.raises(ValueError, match=r"\[\.\.\., 4\]; got \(2, 3\)"):
        B.cxcywh_to_xyxy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"boxes b must have shape \[N, 4\]"):
        B.box_iou(np.zeros((2, 4)), np.zeros((4,)))


def test_iou_unit_squares_overlapping_by_half():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[0.5, 0.0, 1.5, 1.0]])
    iou, union = B.box_iou(a, b)
    # intersection 0.5, union 1 + 1 - 0.5 = 1.5
    np.testing.assert_allclose(iou, [[1.0 / 3.0]])
    np.testing.assert_allclose(union, [[1.5]])
    # enclosing box [0, 1.5] x [0, 1] has area 1.5 = union, so GIoU = IoU
    np.testing.assert_allclose(B.generalized_box_iou(a, b), [[1.0 / 3.0]])


def test_giou_disjoint_boxes_exact_value():
    a = np.array([[0.0, 0.0, 1.0, 1.0]])
    b = np.array([[2.0, 0.0, 3.0, 2.0]])
    # IoU 0; union 1 + 2 = 3; enclosing [0, 3] x [0, 2] = 6; GIoU = 0 - (6 - 3) / 6 = -0.5
    np.testing.assert_allclose(B.generalized_box_iou(a, b), [[-0.5]])
    # far apart boxes approach -1: [0,1]^2 vs [99,100]x[0,1]: union 2, enclosing 100
    c = np.array([[99.0, 0.0, 100.0, 1.0]])
    np.testing.assert_allclose(B.generalized_box_iou(a, c), [[-(100.0 - 2.0) / 100.0]])


def test_pairwise_shapes_and_elementwise_matches_diagonal():
    rng = np.random.default_rng(0)
    a = B.cxcywh_to_xyxy(rng.uniform(0.2, 0.8, (5, 4)))
    b = B.cxcywh_to_xyxy(rng.uniform(0.2, 0.8, (3, 4)))
    iou, union = B.box_iou(a, b)
    giou = B.generalized_box_iou(a, b)
    assert iou.shape == union.shape == giou.shape == (5, 3)
    assert np.all(giou <= iou + 1e-12) and np.all(giou >= -1) and np.all(iou <= 1)
    np.testing.assert_allclose(
        B.elementwise_generalized_box_iou(a[:3], b), np.diag(B.generalized_box_iou(a[:3], b))
    )
    # same values from jax under jit in float32
    giou_jax = jax.jit(B.generalized_box_iou)(
        jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(giou_jax), giou, atol=1e-6)


def test_degenerate_boxes_no_nan_in_value_or_gradient():
    point = np.array([[0.3, 0.3, 0.3, 0.3]])
    unit = np.array([[0.0, 0.0, 1.0, 1.0]])
    iou, union = B.box_iou(point, point)
    assert iou[0, 0] == 0.0 and union[0, 0] == 0.0
    assert B.generalized_box_iou(point, point)[0, 0] == 0.0
    # point inside the unit square: IoU 0, enclosing = union = 1 -> GIoU 0
    assert B.generalized_box_iou(point, unit)[0, 0] == 0.0
    grad = jax.grad(lambda x: B.generalized_box_iou(x, jnp.asarray(point)).sum())(
        jnp.asarray(point)
    )
    assert np.all(np.isfinite(np.asarray(grad)))


def test_clip_boxes():
    b = np.array([[-1.0, -2.0, 5.0, 7.0], [1.0, 1.0, 2.0, 2.0]])
    np.testing.assert_allclose(B.clip_boxes_xyxy(b, 4, 6), [[0, 0, 4, 6], [1, 1, 2, 2]])
    out = jax.jit(B.clip_boxes_xyxy, static_argnums=(1, 2))(jnp.asarray(b), 4, 6)
    np.testing.assert_allclose(np.asarray(out), [[0, 0, 4, 6], [1, 1, 2, 2]])


def _nms_boxes():
    return np.array(
        [
            [0.0, 0.0, 10.0, 10.0],  # 0
            [1.0, 0.0, 11.0, 10.0],  # 1: IoU with 0 = 90 / 110 = 0.818
            [0.0, 5.0, 10.0, 15.0],  # 2: IoU with 0 = 50 / 150 = 1/3; with 1 = 45 / 155
            [20.0, 20.0, 30.0, 30.0],  # 3: disjoint
            [20.0, 20.0, 30.0, 30.0],  # 4: identical to 3
        ]
    )


def test_nms_known_keep_list():
    boxes = _nms_boxes()
    scores = np.array([0.9, 0.95, 0.8, 0.5, 0.6])
    # 1 (0.95) suppresses 0 (IoU 0.818); 2 survives (0.29); 4 (0.6) suppresses 3.
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.5), [1, 2, 4])
    # threshold 0.3: IoU(1, 2) = 45/155 = 0.290 < 0.3, still kept
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.3), [1, 2, 4])
    # threshold 0.25: 2 is suppressed by 1
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.25), [1, 4])
    # IoU must be strictly greater than the threshold: 1.0 keeps identical boxes
    np.testing.assert_array_equal(B.nms(boxes, scores, 1.0), [1, 0, 2, 4, 3])


def test_nms_ties_lower_index_first_and_empty():
    boxes = _nms_boxes()
    scores = np.array([0.5, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(B.nms(boxes, scores, 0.5), [0, 2, 3])
    empty = B.nms(np.zeros((0, 4)), np.zeros((0,)), 0.5)
    assert empty.shape == (0,) and empty.dtype == np.int64


def test_nms_input_errors():
    with pytest.raises(ValueError, match="scores must have shape \\[5\\]"):
        B.nms(_nms_boxes(), np.zeros(4), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        B.nms(_nms_boxes(), np.array([0.1, np.nan, 0.2, 0.3, 0.4]), 0.5)


def test_batched_nms_classwise():
    boxes = _nms_boxes()
    scores = np.array([0.9, 0.95, 0.8, 0.5, 0.6])
    # 0 and 1 in different classes: no longer suppress each other; 3 and 4 in the same class.
    class_ids = np.array([0, 1, 1, 2, 2])
    np.testing.assert_array_equal(B.batched_nms(boxes, scores, class_ids, 0.5), [1, 0, 2, 4])
    # all in one class == plain nms
    np.testing.assert_array_equal(
        B.batched_nms(boxes, scores, np.zeros(5, int), 0.5), B.nms(boxes, scores, 0.5)
    )
    # ties across classes: lower index first
    tied = B.batched_nms(boxes, np.full(5, 0.5), np.array([3, 2, 1, 0, 0]), 0.5)
    np.testing.assert_array_equal(tied, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="class_ids must have the same shape"):
        B.batched_nms(boxes, scores, np.zeros(3, int), 0.5)
