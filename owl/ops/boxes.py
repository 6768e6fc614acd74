"""Pure box operations shared by inference, training and evaluation.

Boxes are arrays whose last axis holds 4 coordinates, in one of three layouts:

- ``cxcywh``: centre x, centre y, width, height (what the OWL-ViT box head predicts);
- ``xyxy``: left, top, right, bottom corners (what IoU, NMS and drawing use);
- ``xywh``: left, top, width, height (COCO's json layout).

The conversions, areas, IoU/GIoU and clipping work on numpy arrays and on JAX arrays, inside or
outside ``jax.jit``: numpy in gives numpy out (computed on the host, dtype kept), anything else
(JAX arrays, tracers) is computed with ``jax.numpy``; JAX is imported only then, so numpy-only
callers stay light. ``nms`` and ``batched_nms`` are host-side numpy only: their output size
depends on the data, so they cannot be jitted.

IoU and GIoU follow DETR (``util/box_ops.py``). Degenerate boxes (zero area, so a zero union or a
zero enclosing box) use a safe division that yields 0 instead of NaN: IoU is 0 when the union is 0
and the GIoU enclosing-area penalty is 0 when the enclosing area is 0. No epsilon is added
elsewhere, so values for ordinary boxes are exact, and gradients stay finite under ``jax.grad``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # np.ndarray or jax.Array


def _xp(*arrays: Array) -> Any:
    """Returns numpy when every input is a numpy array or scalar, else jax.numpy."""
    if all(isinstance(a, (np.ndarray, np.generic, int, float)) for a in arrays):
        return np
    import jax.numpy as jnp  # only needed for JAX inputs, so numpy-only callers never import JAX

    return jnp


def _safe_divide(num: Array, den: Array, xp: Any) -> Array:
    """num / den where den > 0, else 0; NaN-free in value and gradient."""
    positive = den > 0
    return xp.where(positive, num / xp.where(positive, den, 1), 0)


def _check_last_axis(b: Array, name: str = "boxes") -> None:
    if b.ndim < 1 or b.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4]; got {tuple(b.shape)}.")


def _as_array(b: Array) -> Array:
    return b if hasattr(b, "shape") and hasattr(b, "ndim") else np.asarray(b, dtype=np.float64)


def cxcywh_to_xyxy(b: Array) -> Array:
    """Converts boxes from (cx, cy, w, h) to (x0, y0, x1, y1).

    Args:
        b: boxes [..., 4] in cxcywh.

    Returns:
        Boxes [..., 4] in xyxy, same array type as the input.
    """
    b = _as_array(b)
    _check_last_axis(b)
    xp = _xp(b)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def xyxy_to_cxcywh(b: Array) -> Array:
    """Converts boxes from (x0, y0, x1, y1) to (cx, cy, w, h).

    Args:
        b: boxes [..., 4] in xyxy.

    Returns:
        Boxes [..., 4] in cxcywh.
    """
    b = _as_array(b)
    _check_last_axis(b)
    xp = _xp(b)
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1)


def xywh_to_xyxy(b: Array) -> Array:
    """Converts boxes from (x0, y0, w, h) (COCO) to (x0, y0, x1, y1).

    Args:
        b: boxes [..., 4] in xywh.

    Returns:
        Boxes [..., 4] in xyxy.
    """
    b = _as_array(b)
    _check_last_axis(b)
    xp = _xp(b)
    x0, y0, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([x0, y0, x0 + w, y0 + h], axis=-1)


def xyxy_to_xywh(b: Array) -> Array:
    """Converts boxes from (x0, y0, x1, y1) to (x0, y0, w, h) (COCO).

    Args:
        b: boxes [..., 4] in xyxy.

    Returns:
        Boxes [..., 4] in xywh.
    """
    b = _as_array(b)
    _check_last_axis(b)
    xp = _xp(b)
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return xp.stack([x0, y0, x1 - x0, y1 - y0], axis=-1)


def box_area(b: Array) -> Array:
    """Area of xyxy boxes, (x1 - x0) * (y1 - y0).

    Inverted boxes (x1 < x0 or y1 < y0) are not clamped, as in DETR; callers that may produce
    them should check validity first.

    Args:
        b: boxes [..., 4] in xyxy.

    Returns:
        Areas [...].
    """
    b = _as_array(b)
    _check_last_axis(b)
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _iou_broadcast(a: Array, b: Array, xp: Any) -> tuple[Array, Array]:
    """IoU and union of broadcast-compatible xyxy boxes a [..., 4], b [..., 4]."""
    area_a = box_area(a)
    area_b = box_area(b)
    lt = xp.maximum(a[..., :2], b[..., :2])
    rb = xp.minimum(a[..., 2:], b[..., 2:])
    wh = xp.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a + area_b - inter
    return _safe_divide(inter, union, xp), union


def _giou_broadcast(a: Array, b: Array, xp: Any) -> Array:
    """GIoU of broadcast-compatible xyxy boxes a [..., 4], b [..., 4]."""
    iou, union = _iou_broadcast(a, b, xp)
    lt = xp.minimum(a[..., :2], b[..., :2])
    rb = xp.maximum(a[..., 2:], b[..., 2:])
    wh = xp.clip(rb - lt, 0, None)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - _safe_divide(enclosing - union, enclosing, xp)


def _check_pair(a: Array, b: Array) -> tuple[Array, Array]:
    a, b = _as_array(a), _as_array(b)
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 2 or x.shape[-1] != 4:
            raise ValueError(f"boxes {name} must have shape [N, 4]; got {tuple(x.shape)}.")
    return a, b


def box_iou(a: Array, b: Array) -> tuple[Array, Array]:
    """Pairwise IoU of two sets of xyxy boxes (DETR ``box_iou``).

    Args:
        a: boxes [N, 4] in xyxy.
        b: boxes [M, 4] in xyxy.

    Returns:
        (iou [N, M], union [N, M]). IoU is 0 where the union is 0 (two empty boxes).
    """
    a, b = _check_pair(a, b)
    return _iou_broadcast(a[:, None, :], b[None, :, :], _xp(a, b))


def generalized_box_iou(a: Array, b: Array) -> Array:
    """Pairwise generalized IoU of two sets of xyxy boxes (DETR definition).

    GIoU = IoU - (C - U) / C, with U the union and C the area of the smallest enclosing box. It lies
    in [-1, 1]. Where C is 0 (both boxes are the same point or line) the penalty term is taken as 0.

    Args:
        a: boxes [N, 4] in xyxy.
        b: boxes [M, 4] in xyxy.

    Returns:
        GIoU [N, M].
    """
    a, b = _check_pair(a, b)
    return _giou_broadcast(a[:, None, :], b[None, :, :], _xp(a, b))


def elementwise_generalized_box_iou(a: Array, b: Array) -> Array:
    """Generalized IoU of matched xyxy boxes, one value per pair (no all-pairs matrix).

    Args:
        a: boxes [..., 4] in xyxy.
        b: boxes [..., 4] in xyxy, broadcast-compatible with ``a``.

    Returns:
        GIoU [...] (broadcast leading shape), same safe-division rules as ``generalized_box_iou``.
    """
    a, b = _as_array(a), _as_array(b)
    _check_last_axis(a, "a")
    _check_last_axis(b, "b")
    return _giou_broadcast(a, b, _xp(a, b))


def clip_boxes_xyxy(b: Array, width: float | Array, height: float | Array) -> Array:
    """Clips xyxy boxes to the image rectangle [0, width] x [0, height].

    Args:
        b: boxes [..., 4] in xyxy (pixels, or normalised with width = height = 1).
        width: image width, same units as the boxes.
        height: image height, same units as the boxes.

    Returns:
        Clipped boxes [..., 4].
    """
    b = _as_array(b)
    _check_last_axis(b)
    xp = _xp(b, width, height)
    x = xp.clip(b[..., 0::2], 0, width)
    y = xp.clip(b[..., 1::2], 0, height)
    return xp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def _check_nms_inputs(boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"nms: boxes must have shape [N, 4]; got {boxes.shape}.")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(
            f"nms: scores must have shape [{boxes.shape[0]}] like the boxes; got {scores.shape}."
        )
    if np.isnan(scores).any():
        raise ValueError("nms: scores contain NaN; filter or replace them before NMS.")
    return boxes, scores


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression (numpy, host side; not jittable).

    Boxes are visited by descending score, ties broken by lower index first; a box is kept unless
    its IoU with an already kept box is strictly greater than ``iou_threshold``.

    Args:
        boxes_xyxy: boxes [N, 4] in xyxy.
        scores: scores [N]; must not contain NaN.
        iou_threshold: suppression threshold in [0, 1].

    Returns:
        Indices (int64) [K] of kept boxes, in descending score order (ties: lower index first).
    """
    boxes, scores = _check_nms_inputs(boxes_xyxy, scores)
    order = np.argsort(-scores, kind="stable")
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for pos, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size:
            iou, _ = box_iou(boxes[i : i + 1], boxes[rest])
            suppressed[rest[iou[0] > iou_threshold]] = True
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Class-wise greedy NMS (numpy, host side): boxes only suppress boxes of the same class.

    Args:
        boxes: boxes [N, 4] in xyxy.
        scores: scores [N].
        class_ids: integer class ids [N].
        iou_threshold: suppression threshold, as in ``nms``.

    Returns:
        Indices (int64) [K] of kept boxes over all classes, in descending score order
        (ties: lower index first).
    """
    boxes, scores = _check_nms_inputs(boxes, scores)
    class_ids = np.asarray(class_ids)
    if class_ids.shape != scores.shape:
        raise ValueError(
            f"batched_nms: class_ids must have the same shape as scores {scores.shape}; "
            f"got {class_ids.shape}."
        )
    kept = [np.zeros((0,), dtype=np.int64)]
    for c in np.unique(class_ids):
        members = np.flatnonzero(class_ids == c)
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    # Ascending index first, so the stable sort by score breaks ties by lower index.
    kept = np.sort(np.concatenate(kept))
    return kept[np.argsort(-scores[kept], kind="stable")].astype(np.int64)
