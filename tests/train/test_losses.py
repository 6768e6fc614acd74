"""Tests for owl.train.losses against hand-computed values and an independent numpy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from owl.train.losses import contrastive_loss, detection_losses, sigmoid_focal_loss
from owl.train.matching import Matches, hungarian_matcher


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_focal_loss_hand_values():
    logits = jnp.array([0.0, 0.0, 2.0, -1.0])
    labels = jnp.array([1.0, 0.0, 0.0, 1.0])
    got = np.asarray(sigmoid_focal_loss(logits=logits, labels=labels))
    # logit 0, label 1: BCE = ln 2, p_t = 0.5, (1 - p_t)^2 = 0.25, alpha_t = 0.3
    # logit 0, label 0: same BCE and p_t, alpha_t = 0.7
    # logit 2, label 0: BCE = ln(1 + e^2), p_t = 1 - sigmoid(2), factor sigmoid(2)^2, alpha_t 0.7
    # logit -1, label 1: BCE = ln(1 + e), p_t = sigmoid(-1), factor (1 - sigmoid(-1))^2, 0.3
    expected = [
        math.log(2) * 0.25 * 0.3,
        math.log(2) * 0.25 * 0.7,
        math.log(1 + math.e**2) * _sigmoid(2) ** 2 * 0.7,
        math.log(1 + math.e) * (1 - _sigmoid(-1)) ** 2 * 0.3,
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # gamma = 0, alpha = 0.5 reduces to half the plain BCE
    half_bce = sigmoid_focal_loss(logits=logits, labels=labels, alpha=0.5, gamma=0.0)
    np.testing.assert_allclose(
        np.asarray(half_bce),
        0.5 * np.array([math.log(2), math.log(2), math.log(1 + math.e**2), math.log(1 + math.e)]),
        rtol=1e-6,
    )


def _batch():
    """B=3, P=2 predictions, M=2 targets, Q=3 query columns (column 0 = padding)."""
    pred_boxes = np.array(
        [
            [[0.9, 0.9, 0.1, 0.1], [0.5, 0.5, 0.2, 0.2]],
            [[0.7, 0.7, 0.2, 0.2], [0.25, 0.25, 0.1, 0.1]],
            [[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]],
        ],
        np.float32,
    )
    target_boxes = np.array(
        [
            [[0.6, 0.5, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]],
            [[0.35, 0.25, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]],
            [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        ],
        np.float32,
    )
    target_labels = np.array(
        [
            [[0, 1, 0], [1, 0, 0]],  # one real target with one positive; one padding row
            [[0, 1, 0], [0, 0, 1]],  # two real targets, two positives
            [[1, 0, 0], [1, 0, 0]],  # no targets
        ],
        np.float32,
    )
    target_mask = np.array([[True, False], [True, True], [False, False]])
    matches = Matches(
        pred_idx=jnp.array([[1, 0], [1, 0], [0, 0]]),
        target_idx=jnp.array([[0, 1], [0, 1], [0, 1]]),
        valid=jnp.array([[True, False], [True, True], [False, False]]),
    )
    return dict(
        pred_logits=jnp.zeros((3, 2, 3)),
        pred_boxes=jnp.asarray(pred_boxes),
        target_labels=jnp.asarray(target_labels),
        target_boxes=jnp.asarray(target_boxes),
        target_mask=jnp.asarray(target_mask),
        matches=matches,
    )


def test_detection_losses_per_example_normalisation_under_jit():
    out = jax.jit(detection_losses)(**_batch())
    pos = math.log(2) * 0.25 * 0.3  # focal loss of logit 0, label 1
    neg = math.log(2) * 0.25 * 0.7  # focal loss of logit 0, label 0
    # example 0: pred 1 -> labels [1, 0] in columns 1..2, pred 0 background: pos + 3 neg, / 1 pos
    # example 1: both predictions matched, one positive each: 2 pos + 2 neg, / 2 positives
    # example 2: all background: 4 neg, / max(0, 1)
    expected_class = ((pos + 3 * neg) / 1 + (2 * pos + 2 * neg) / 2 + 4 * neg / 1) / 3
    # example 0: xyxy [.4,.4,.6,.6] vs [.5,.4,.7,.6]: L1 = 0.2; IoU = 0.02 / 0.06 = GIoU; 1 target
    # example 1: identical pair (0, 0) and touching pair [.2,.2,.3,.3] vs [.3,.2,.4,.3]:
    #   L1 = 0.2, GIoU = 0 (IoU 0, enclosing area = union); 2 targets
    # example 2: no targets -> 0
    expected_bbox = (0.2 / 1 + 0.2 / 2 + 0.0) / 3
    expected_giou = ((1 - 1 / 3) / 1 + (0 + 1) / 2 + 0.0) / 3
    np.testing.assert_allclose(out["loss_class"], expected_class, rtol=1e-5)
    np.testing.assert_allclose(out["loss_bbox"], expected_bbox, rtol=1e-5)
    np.testing.assert_allclose(out["loss_giou"], expected_giou, rtol=1e-5)
    np.testing.assert_allclose(
        out["total"], expected_class + expected_bbox + expected_giou, rtol=1e-5
    )
    weighted = detection_losses(**_batch(), weight_class=2.0, weight_bbox=5.0, weight_giou=0.5)
    np.testing.assert_allclose(
        weighted["total"], 2 * expected_class + 5 * expected_bbox + 0.5 * expected_giou, rtol=1e-5
    )


def test_detection_losses_ignore_padding_column_logits_and_unmatched_boxes():
    base = detection_losses(**_batch())
    changed = _batch()
    # huge logits in column 0 and a different box for the unmatched prediction change nothing
    changed["pred_logits"] = changed["pred_logits"].at[:, :, 0].set(50.0)
    changed["pred_boxes"] = changed["pred_boxes"].at[0, 0].set(jnp.array([0.1, 0.2, 0.3, 0.4]))
    other = detection_losses(**changed)
    for key in base:
        np.testing.assert_allclose(other[key], base[key], rtol=1e-6)


def test_matcher_then_losses_perfect_predictions_give_zero_box_loss():
    batch = _batch()
    # predictions equal to the targets, shuffled: the matcher must find them
    pred_boxes = batch["target_boxes"][:2, ::-1]
    logits = jnp.where(batch["target_labels"][:2, ::-1] > 0, 8.0, -8.0)
    step = jax.jit(lambda kw: detection_losses(**kw, matches=jax.vmap(hungarian_matcher)(**kw)))
    out = step(
        dict(
            pred_logits=logits,
            pred_boxes=pred_boxes,
            target_labels=batch["target_labels"][:2],
            target_boxes=batch["target_boxes"][:2],
            target_mask=batch["target_mask"][:2],
        )
    )
    assert float(out["loss_bbox"]) < 1e-6 and float(out["loss_giou"]) < 1e-6
    assert float(out["loss_class"]) < 1e-3


def test_detection_losses_gradients_finite_with_padding_boxes():
    batch = _batch()

    def total(pred_boxes):
        return detection_losses(**{**batch, "pred_boxes": pred_boxes})["total"]

    grad = jax.grad(total)(batch["pred_boxes"])
    assert np.all(np.isfinite(np.asarray(grad)))
    # unmatched prediction boxes get no gradient
    np.testing.assert_array_equal(np.asarray(grad[2]), 0.0)


def _numpy_clip_loss(img, txt, logit_scale):
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    logits = np.exp(min(logit_scale, math.log(100))) * img @ txt.T
    n = len(img)
    loss_i = [-(logits[i, i] - math.log(np.exp(logits[i]).sum())) for i in range(n)]
    loss_t = [-(logits[i, i] - math.log(np.exp(logits[:, i]).sum())) for i in range(n)]
    return (np.mean(loss_i) + np.mean(loss_t)) / 2


def test_contrastive_loss_matches_numpy_and_prefers_aligned_pairs():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(6, 8))
    txt = img + 0.3 * rng.normal(size=(6, 8))
    loss = jax.jit(contrastive_loss)(
        image_embeds=jnp.asarray(img, jnp.float32),
        text_embeds=jnp.asarray(txt * 3.0, jnp.float32),  # scale must not matter
        logit_scale=math.log(10.0),
    )
    np.testing.assert_allclose(loss, _numpy_clip_loss(img, txt, math.log(10.0)), rtol=1e-5)
    shuffled = contrastive_loss(
        image_embeds=jnp.asarray(img), text_embeds=jnp.asarray(txt[::-1]), logit_scale=2.0
    )
    aligned = contrastive_loss(
        image_embeds=jnp.asarray(img), text_embeds=jnp.asarray(txt), logit_scale=2.0
    )
    assert float(aligned) < float(shuffled)


def test_contrastive_loss_clips_scale_at_ln_100():
    rng = np.random.default_rng(1)
    img, txt = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    at_cap = contrastive_loss(image_embeds=img, text_embeds=txt, logit_scale=math.log(100.0))
    above = contrastive_loss(image_embeds=img, text_embeds=txt, logit_scale=9.0)
    np.testing.assert_allclose(above, at_cap, rtol=1e-6)
    np.testing.assert_allclose(above, _numpy_clip_loss(img, txt, 9.0), rtol=1e-5)


def test_contrastive_loss_shape_error():
    with pytest.raises(ValueError, match=r"both be \[N, E\]; got \(3, 4\) and \(2, 4\)"):
        contrastive_loss(
            image_embeds=jnp.zeros((3, 4)), text_embeds=jnp.zeros((2, 4)), logit_scale=1.0
        )
