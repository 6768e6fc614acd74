"""Tests for owl.train.matching: the JAX assignment solver against scipy, and the OWL matcher."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from owl.train.matching import Matches, hungarian_matcher, linear_sum_assignment, matching_cost

SHAPES = [(1, 1), (1, 6), (6, 1), (4, 4), (7, 7), (3, 9), (9, 3), (12, 30), (30, 12)]


def _random_costs(rng, shape):
    """A continuous matrix (unique optimum), a small-integer one (many ties), a padded one."""
    n, m = shape
    continuous = rng.normal(size=shape).astype(np.float32)
    ties = rng.integers(0, 3, size=shape).astype(np.float32)
    padded = rng.uniform(size=shape).astype(np.float32)
    padded[:, m // 2 :] = 1.1 * padded[:, : m // 2].max(initial=0.0) + 10  # constant columns
    return [("continuous", continuous), ("ties", ties), ("padded", padded)]


@pytest.mark.parametrize("shape", SHAPES)
def test_lsa_matches_scipy_total_cost(shape):
    rng = np.random.default_rng(sum(shape))
    solve = jax.jit(linear_sum_assignment)
    for trial in range(8):
        for kind, cost in _random_costs(rng, shape):
            rows, cols = (np.asarray(x) for x in solve(jnp.asarray(cost)))
            ref_rows, ref_cols = scipy_lsa(cost)
            k = min(shape)
            assert rows.shape == cols.shape == (k,)
            # a valid assignment: distinct rows, distinct columns, rows sorted as scipy does
            assert len(set(rows)) == k and len(set(cols)) == k
            np.testing.assert_array_equal(rows, np.sort(rows))
            total, ref_total = cost[rows, cols].sum(), cost[ref_rows, ref_cols].sum()
            assert math.isclose(total, ref_total, rel_tol=1e-5, abs_tol=1e-4), (kind, trial)
            if kind == "continuous":  # unique optimum almost surely: same assignment
                np.testing.assert_array_equal(rows, ref_rows)
                np.testing.assert_array_equal(cols, ref_cols)


def test_lsa_brute_force_on_small_matrices():
    rng = np.random.default_rng(1)
    for _ in range(20):
        cost = rng.integers(-5, 6, size=(4, 5)).astype(np.float32)
        best = min(
            sum(cost[i, p[i]] for i in range(4)) for p in itertools.permutations(range(5), 4)
        )
        rows, cols = linear_sum_assignment(jnp.asarray(cost))
        assert cost[np.asarray(rows), np.asarray(cols)].sum() == best


def test_lsa_vmap_and_adversarial_structure():
    # cost[i, j] = i * j: every row prefers column 0, forcing long augmenting paths.
    n, m = 10, 14
    structured = np.outer(np.arange(n), np.arange(m)).astype(np.float32)
    batch = np.stack([structured, -structured])
    rows, cols = jax.jit(jax.vmap(linear_sum_assignment))(jnp.asarray(batch))
    for b in range(2):
        r, c = scipy_lsa(batch[b])
        got = batch[b][np.asarray(rows[b]), np.asarray(cols[b])].sum()
        assert got == batch[b][r, c].sum()


def test_lsa_inside_grad_gives_assignment_indicator():
    cost = jnp.array([[4.0, 1.0, 3.5], [2.0, 0.0, 5.0]])

    def matched_total(c):
        rows, cols = linear_sum_assignment(c)
        return c[rows, cols].sum()

    # (0->1, 1->0) = 1 + 2 = 3 is the minimum; others: 4+0, 4+5, 1+5, 3.5+2, 3.5+0
    np.testing.assert_allclose(matched_total(cost), 3.0)
    grad = jax.jit(jax.grad(matched_total))(cost)
    np.testing.assert_array_equal(np.asarray(grad), [[0, 1, 0], [1, 0, 0]])


def test_lsa_rejects_non_matrix_and_handles_empty():
    with pytest.raises(ValueError, match=r"2-D matrix \[N, M\]; got shape \(3,\)"):
        linear_sum_assignment(jnp.zeros(3))
    rows, cols = linear_sum_assignment(jnp.zeros((0, 4)))
    assert rows.shape == cols.shape == (0,)


def _obvious_case():
    """3 predictions, 2 real targets + 1 padding target; prediction 2 <-> target 0, 0 <-> 1."""
    num_queries = 4
    pred_boxes = np.array(
        [[0.25, 0.25, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.75, 0.75, 0.3, 0.3]], np.float32
    )
    target_boxes = np.array(
        [[0.75, 0.75, 0.3, 0.3], [0.25, 0.25, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]], np.float32
    )
    pred_logits = np.full((3, num_queries), -5.0, np.float32)
    pred_logits[2, 1] = 5.0  # prediction 2 is confident about query 1
    pred_logits[0, 3] = 5.0  # prediction 0 is confident about query 3
    target_labels = np.zeros((3, num_queries), np.float32)
    target_labels[0, 1] = 1.0
    target_labels[1, 3] = 1.0
    target_labels[2, 0] = 1.0  # padding row: column 0
    target_mask = np.array([True, True, False])
    return dict(
        pred_logits=jnp.asarray(pred_logits),
        pred_boxes=jnp.asarray(pred_boxes),
        target_labels=jnp.asarray(target_labels),
        target_boxes=jnp.asarray(target_boxes),
        target_mask=jnp.asarray(target_mask),
    )


def test_hungarian_matcher_obvious_case_under_jit():
    matches = jax.jit(hungarian_matcher)(**_obvious_case())
    assert isinstance(matches, Matches)
    np.testing.assert_array_equal(matches.target_idx, [0, 1, 2])
    np.testing.assert_array_equal(matches.valid, [True, True, False])
    np.testing.assert_array_equal(matches.pred_idx, [2, 0, 0])


def test_hungarian_matcher_boxes_decide_when_classes_agree():
    # Same logits everywhere: the class cost is equal for all pairs, boxes decide.
    case = _obvious_case()
    case["pred_logits"] = jnp.zeros_like(case["pred_logits"])
    matches = hungarian_matcher(**case)
    np.testing.assert_array_equal(matches.pred_idx[:2], [2, 0])


def test_hungarian_matcher_more_targets_than_predictions_and_vmap():
    case = _obvious_case()
    one_pred = {
        **case,
        "pred_logits": case["pred_logits"][:1],
        "pred_boxes": case["pred_boxes"][:1],
    }
    matches = hungarian_matcher(**one_pred)
    # the single prediction (box == target 1's box, confident for target 1's query) takes target 1
    np.testing.assert_array_equal(matches.valid, [False, True, False])
    np.testing.assert_array_equal(matches.pred_idx, [0, 0, 0])
    batched = {k: jnp.stack([v, v]) for k, v in case.items()}
    out = jax.vmap(hungarian_matcher)(**batched)
    np.testing.assert_array_equal(out.pred_idx, [[2, 0, 0], [2, 0, 0]])


def test_matching_cost_terms_by_hand():
    # one prediction, two targets: a valid one and a padding one
    logit = 1.0
    pred_logits = jnp.array([[0.0, logit]])
    pred_boxes = jnp.array([[0.5, 0.5, 0.2, 0.2]])  # xyxy [0.4, 0.4, 0.6, 0.6]
    target_boxes = jnp.array([[0.6, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]])  # xyxy [0.5,0.4,0.7,0.6]
    target_labels = jnp.array([[0.0, 1.0], [1.0, 0.0]])
    cost = matching_cost(
        pred_logits=pred_logits,
        pred_boxes=pred_boxes,
        target_labels=target_labels,
        target_boxes=target_boxes,
        target_mask=jnp.array([True, False]),
    )
    p = 1 / (1 + math.exp(-logit))
    pos = 0.3 * (1 - p) ** 2 * -math.log(p)
    neg = 0.7 * p**2 * -math.log(1 - p)
    l1 = 0.1  # only cx differs
    iou = 0.02 / 0.06  # inter 0.1 x 0.2; union 0.04 + 0.04 - 0.02; enclosing 0.3 x 0.2 = union
    expected = (pos - neg) + l1 - iou
    np.testing.assert_allclose(cost[0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(cost[0, 1], 1.1 * expected + 10, rtol=1e-5)


def test_matching_cost_replaces_non_finite():
    case = _obvious_case()
    case["pred_boxes"] = case["pred_boxes"].at[1, 0].set(jnp.nan)
    cost = matching_cost(**case)
    assert np.all(np.isfinite(np.asarray(cost)))
    finite_valid = np.asarray(cost[jnp.array([0, 2])][:, :2])
    np.testing.assert_allclose(cost[1, 0], 1.1 * finite_valid.max() + 10, rtol=1e-6)
    np.testing.assert_allclose(cost[:, 2], 1.1 * finite_valid.max() + 10, rtol=1e-6)
