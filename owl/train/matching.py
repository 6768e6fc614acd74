"""Exact Hungarian matching of predictions to ground-truth boxes, usable inside jit and vmap.

``linear_sum_assignment`` is a JAX-native exact solver (no host callback): the shortest augmenting
path algorithm of Jonker-Volgenant as described by Crouse (2016), the one scipy uses, written with
``lax.fori_loop``/``lax.while_loop`` over the smaller matrix dimension. Shapes are static, so it
jits and vmaps; cost is O(n^2 m) for an n x m matrix with n <= m.

``hungarian_matcher`` builds the OWL-ViT matching cost (spec §5.3: focal class cost, L1 on cxcywh,
-GIoU on xyxy) and solves it for one example; vmap it over the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from owl.ops.boxes import cxcywh_to_xyxy, generalized_box_iou


class Matches(NamedTuple):
    """Prediction-target pairs for one example, one slot per target (static length M).

    Attributes:
        pred_idx: int32 [M], the prediction matched to target ``target_idx[k]``; 0 where invalid.
        target_idx: int32 [M], always ``arange(M)`` (slot k holds target k).
        valid: bool [M], True where target k is a real (non-padding) target that got a prediction.
            Only valid slots are matches; predictions in no valid slot are background.
    """

    pred_idx: jax.Array
    target_idx: jax.Array
    valid: jax.Array


@jax.jit  # compiled once per shape, also when called eagerly
def _solve_wide(cost: jax.Array) -> jax.Array:
    """Exact min-cost assignment of every row of cost [n, m], n <= m; returns col4row [n]."""
    cost = jax.lax.stop_gradient(cost)  # the assignment is piecewise constant in the cost
    n, m = cost.shape
    dtype = cost.dtype
    inf = jnp.array(jnp.inf, dtype)
    # A per-row constant does not change the optimal assignment (each row is used exactly once);
    # removing it keeps the dual variables small, which helps float32.
    cost = cost - jnp.min(cost, axis=1, keepdims=True)
    rows = jnp.arange(n)

    def add_row(cur_row, state):
        u, v, col4row, row4col = state

        # Dijkstra-like search for the shortest augmenting path starting at cur_row.
        def search_cond(s):
            return s[-1] < 0

        def search_body(s):
            i, _, spc, path, sr, sc, _ = s
            sr = sr.at[i].set(True)
            r = s[1] + cost[i] - u[i] - v
            better = (~sc) & (r < spc)
            path = jnp.where(better, i, path)
            spc = jnp.where(better, r, spc)
            masked = jnp.where(sc, inf, spc)
            lowest = jnp.min(masked)
            candidates = (~sc) & (masked == lowest)
            free = candidates & (row4col < 0)  # among ties, prefer a column that ends the path
            j = jnp.where(jnp.any(free), jnp.argmax(free), jnp.argmax(candidates)).astype(jnp.int32)
            sc = sc.at[j].set(True)
            reached_free = row4col[j] < 0
            sink = jnp.where(reached_free, j, -1)
            i = jnp.where(reached_free, i, row4col[j])
            return i, lowest, spc, path, sr, sc, sink

        init = (
            cur_row,
            jnp.zeros((), dtype),
            jnp.full((m,), inf),
            jnp.full((m,), -1, jnp.int32),
            jnp.zeros((n,), bool),
            jnp.zeros((m,), bool),
            jnp.array(-1, jnp.int32),
        )
        _, min_val, spc, path, sr, sc, sink = jax.lax.while_loop(search_cond, search_body, init)

        # Dual update.
        assigned_col = jnp.where(col4row >= 0, col4row, 0)
        u = u + jnp.where(sr & (rows != cur_row), min_val - spc[assigned_col], 0)
        u = u.at[cur_row].add(min_val)
        v = v - jnp.where(sc, min_val - spc, 0)

        # Augment along the path back to cur_row.
        def aug_cond(s):
            return ~s[-1]

        def aug_body(s):
            j, col4row, row4col, _ = s
            i = path[j]
            row4col = row4col.at[j].set(i)
            next_j = col4row[i]
            col4row = col4row.at[i].set(j)
            return next_j, col4row, row4col, i == cur_row

        _, col4row, row4col, _ = jax.lax.while_loop(
            aug_cond, aug_body, (sink, col4row, row4col, jnp.array(False))
        )
        return u, v, col4row, row4col

    state = (
        jnp.zeros((n,), dtype),
        jnp.zeros((m,), dtype),
        jnp.full((n,), -1, jnp.int32),
        jnp.full((m,), -1, jnp.int32),
    )
    _, _, col4row, _ = jax.lax.fori_loop(0, n, add_row, state)
    return col4row


def _as_float_cost(cost: jax.Array) -> jax.Array:
    cost = jnp.asarray(cost)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix [N, M]; got shape {tuple(cost.shape)}.")
    return cost.astype(jnp.promote_types(cost.dtype, jnp.float32))


def linear_sum_assignment(cost: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Exact minimum-cost assignment, like ``scipy.optimize.linear_sum_assignment``.

    Jittable and vmappable (static shapes). Works in the cost's float dtype (float32 unless x64
    is on), so totals agree with scipy's float64 result to float32 rounding. Every entry must be
    finite: scipy's infeasibility error for ``inf`` entries cannot be raised under jit.

    Args:
        cost: cost matrix [N, M], any N and M.

    Returns:
        (row_ind, col_ind), int32 arrays of length K = min(N, M): row ``row_ind[k]`` is assigned
        to column ``col_ind[k]``; ``row_ind`` is sorted ascending, as in scipy.
    """
    cost = _as_float_cost(cost)
    n, m = cost.shape
    if n == 0 or m == 0:
        empty = jnp.zeros((0,), jnp.int32)
        return empty, empty
    if n <= m:
        return jnp.arange(n, dtype=jnp.int32), _solve_wide(cost)
    row_for_col = _solve_wide(cost.T)
    order = jnp.argsort(row_for_col).astype(jnp.int32)
    return row_for_col[order], order


def _focal_class_cost(logits: jax.Array, alpha: float, gamma: float) -> jax.Array:
    """pos(q) - neg(q) per [P, Q] logit, spec §5.3."""
    prob = jax.nn.sigmoid(logits)
    pos = alpha * (1 - prob) ** gamma * (-jax.nn.log_sigmoid(logits))
    neg = (1 - alpha) * prob**gamma * (-jax.nn.log_sigmoid(-logits))
    return pos - neg


@jax.jit
def matching_cost(
    *,
    pred_logits: jax.Array,
    pred_boxes: jax.Array,
    target_labels: jax.Array,
    target_boxes: jax.Array,
    target_mask: jax.Array,
    focal_alpha: float = 0.3,
    focal_gamma: float = 2.0,
    cost_class: float = 1.0,
    cost_bbox: float = 1.0,
    cost_giou: float = 1.0,
) -> jax.Array:
    """OWL-ViT matching cost for one example (spec §5.3); see ``hungarian_matcher`` for args.

    Returns:
        cost [P, M]; padding target columns and non-finite entries hold the constant
        1.1 * max(finite valid cost) + 10 (10 when there is no valid target).
    """
    labels = target_labels.astype(pred_logits.dtype)
    c_class = _focal_class_cost(pred_logits, focal_alpha, focal_gamma) @ labels.T  # [P, M]
    c_bbox = jnp.sum(jnp.abs(pred_boxes[:, None, :] - target_boxes[None, :, :]), axis=-1)
    c_giou = -generalized_box_iou(cxcywh_to_xyxy(pred_boxes), cxcywh_to_xyxy(target_boxes))
    cost = cost_class * c_class + cost_bbox * c_bbox + cost_giou * c_giou
    usable = target_mask[None, :] & jnp.isfinite(cost)
    max_cost = jnp.max(jnp.where(usable, cost, -jnp.inf), initial=-jnp.inf)
    fill = 1.1 * jnp.where(jnp.isfinite(max_cost), max_cost, 0) + 10
    return jnp.where(usable, cost, fill)


@jax.jit
def hungarian_matcher(
    *,
    pred_logits: jax.Array,
    pred_boxes: jax.Array,
    target_labels: jax.Array,
    target_boxes: jax.Array,
    target_mask: jax.Array,
    focal_alpha: float = 0.3,
    focal_gamma: float = 2.0,
    cost_class: float = 1.0,
    cost_bbox: float = 1.0,
    cost_giou: float = 1.0,
) -> Matches:
    """Matches predictions to targets for one example by exact minimum total cost.

    Cost per (prediction p, target m), spec §5.3: ``cost_class`` times the focal class cost
    sum_q labels[m, q] * (pos(q) - neg(q)) over all query columns (column 0 included), plus
    ``cost_bbox`` times the L1 distance of cxcywh vectors, plus ``cost_giou`` times -GIoU on xyxy.
    Padding targets (``target_mask`` False) and NaN/Inf entries get 1.1 * max(valid cost) + 10.
    Jittable; vmap it over a batch (all arguments get a leading batch axis).

    Args:
        pred_logits: class logits [P, Q].
        pred_boxes: predicted boxes [P, 4], cxcywh.
        target_labels: multi-hot labels [M, Q]; column 0 is the padding/background column.
        target_boxes: target boxes [M, 4], cxcywh.
        target_mask: bool [M], True for real targets.
        focal_alpha: focal alpha of the class cost.
        focal_gamma: focal gamma of the class cost.
        cost_class: weight of the class cost.
        cost_bbox: weight of the L1 box cost.
        cost_giou: weight of the GIoU cost.

    Returns:
        ``Matches(pred_idx [M], target_idx [M], valid [M])``: target_idx is arange(M); slot m
        matches prediction pred_idx[m] to target m when valid[m]. Invalid slots (padding targets,
        or more targets than predictions) have pred_idx 0 and must be masked by ``valid``.
    """
    cost = matching_cost(
        pred_logits=pred_logits,
        pred_boxes=pred_boxes,
        target_labels=target_labels,
        target_boxes=target_boxes,
        target_mask=target_mask,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        cost_class=cost_class,
        cost_bbox=cost_bbox,
        cost_giou=cost_giou,
    )
    num_preds, num_targets = cost.shape
    target_idx = jnp.arange(num_targets, dtype=jnp.int32)
    if num_targets == 0:
        return Matches(target_idx, target_idx, jnp.zeros((0,), bool))
    if num_preds >= num_targets:
        pred_idx = _solve_wide(cost.T)  # every target gets a prediction
        matched = jnp.ones((num_targets,), bool)
    else:
        target_for_pred = _solve_wide(cost)  # every prediction gets a target
        pred_idx = (
            jnp.zeros((num_targets,), jnp.int32)
            .at[target_for_pred]
            .set(jnp.arange(num_preds, dtype=jnp.int32))
        )
        matched = jnp.zeros((num_targets,), bool).at[target_for_pred].set(True)
    valid = matched & target_mask.astype(bool)
    return Matches(jnp.where(valid, pred_idx, 0), target_idx, valid)
