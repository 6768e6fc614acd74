"""Tests for owl/train/optim.py: LR schedule, parameter groups, freezing, clipping modes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from owl.train import optim


def _tree() -> dict:
    """A small tree with a text-tower leaf, a vision leaf and a head leaf."""
    return {
        "backbone": {
            "clip": {
                "text": {"token_embedding": {"embedding": jnp.zeros((4, 2))}},
                "visual": {"conv1": {"kernel": jnp.zeros((3,))}},
            },
        },
        "class_head": {"Dense_0": {"bias": jnp.zeros((2,))}},
    }


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),  # warmup starts at 0
        (5, 0.5e-3),  # half-way through the warmup
        (10, 1e-3),  # peak
        (35, 1e-3 * 0.5 * (1 + math.cos(math.pi * 0.25))),  # a quarter of the cosine
        (60, 0.5e-3),  # cosine midpoint
        (110, 0.0),  # end of schedule
        (500, 0.0),  # stays at 0 afterwards
    ],
)
def test_warmup_cosine_schedule_by_hand(step, expected):
    schedule = optim.warmup_cosine_schedule(1e-3, warmup_steps=10, total_steps=110)
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_schedule_without_warmup_starts_at_base():
    schedule = optim.warmup_cosine_schedule(2e-6, warmup_steps=0, total_steps=100)
    assert float(schedule(0)) == pytest.approx(2e-6, rel=1e-6)
    assert float(schedule(50)) == pytest.approx(1e-6, rel=1e-6)


def test_schedule_rejects_warmup_past_the_end():
    with pytest.raises(ValueError, match="warmup_steps .10. must be smaller than total_steps .10."):
        optim.warmup_cosine_schedule(1e-3, warmup_steps=10, total_steps=10)


def test_param_groups_follow_the_text_regex():
    groups = optim.param_groups(_tree())
    assert groups["backbone"]["clip"]["text"]["token_embedding"]["embedding"] == "text"
    assert groups["backbone"]["clip"]["visual"]["conv1"]["kernel"] == "rest"
    assert groups["class_head"]["Dense_0"]["bias"] == "rest"


def _first_update(**kw) -> tuple[dict, dict, optax.OptState]:
    """Updates of one step with gradient 1 everywhere (Adam's first step moves by lr * sign)."""
    params = _tree()
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    opt = optim.make_optimizer(total_steps=100, warmup_steps=0, clip="none", **kw)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    return updates, params, state


def test_parameter_groups_get_their_learning_rates():
    updates, _, _ = _first_update(lr=5e-5, text_lr=2e-6)
    text = updates["backbone"]["clip"]["text"]["token_embedding"]["embedding"]
    vision = updates["backbone"]["clip"]["visual"]["conv1"]["kernel"]
    head = updates["class_head"]["Dense_0"]["bias"]
    # Adam's bias-corrected first step is g / (|g| + eps) ~ 1 (float32 bias correction), times -lr.
    np.testing.assert_allclose(text, -2e-6, rtol=1e-4)
    np.testing.assert_allclose(vision, -5e-5, rtol=1e-4)
    np.testing.assert_allclose(head, -5e-5, rtol=1e-4)


def test_frozen_text_gets_zero_updates_and_no_adam_state():
    updates, params, state = _first_update(lr=5e-5, text_lr=2e-6, freeze_text=True)
    text = updates["backbone"]["clip"]["text"]["token_embedding"]["embedding"]
    assert np.all(np.asarray(text) == 0.0)
    np.testing.assert_allclose(updates["class_head"]["Dense_0"]["bias"], -5e-5, rtol=1e-4)
    # Adam keeps two moments per trainable scalar (3 + 2 = 5) plus step counters; none for text.
    float_sizes = [x.size for x in jax.tree_util.tree_leaves(state) if x.dtype == jnp.float32]
    assert sum(float_sizes) == 2 * 5


def test_trainable_mask():
    mask = optim.trainable_mask(_tree(), freeze_text=True)
    assert mask["backbone"]["clip"]["text"]["token_embedding"]["embedding"] is False
    assert mask["class_head"]["Dense_0"]["bias"] is True
    assert all(jax.tree_util.tree_leaves(optim.trainable_mask(_tree(), freeze_text=False)))


def test_clip_per_example_on_a_constructed_gradient():
    # Example 0 has norm 5 (clipped to 1), example 1 has norm 0.5 (kept).
    grads = {"a": jnp.array([[3.0], [0.3]]), "b": jnp.array([[4.0], [0.4]])}
    mean, norms = optim.clip_per_example(grads, max_norm=1.0)
    np.testing.assert_allclose(norms, [5.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(mean["a"], [(0.6 + 0.3) / 2], rtol=1e-6)
    np.testing.assert_allclose(mean["b"], [(0.8 + 0.4) / 2], rtol=1e-6)


def _numpy_adam(grads: list[np.ndarray], lr: float, b1=0.9, b2=0.999, eps=1e-8) -> np.ndarray:
    """Parameter change after Adam steps with a constant lr (independent reference)."""
    m = v = np.zeros_like(grads[0])
    delta = np.zeros_like(grads[0])
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        delta -= lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return delta


def test_global_clipping_clips_the_mean_gradient_before_adam():
    # Gradient 1 has global norm 50 (clipped to [0.6, 0.8]); gradient 2 has norm 0.5 (kept).
    steps = [np.array([30.0, 40.0], np.float32), np.array([0.3, 0.4], np.float32)]
    params = {"class_head": jnp.zeros(2)}
    results = {}
    for clip in ("global", "none"):
        opt = optim.make_optimizer(
            lr=0.1, text_lr=0.1, total_steps=1000, warmup_steps=0, clip=clip, clip_norm=1.0
        )
        state, delta = opt.init(params), np.zeros(2)
        for g in steps:
            updates, state = opt.update({"class_head": jnp.asarray(g)}, state, params)
            delta += np.asarray(updates["class_head"])
        results[clip] = delta
    # lr(0) and lr(1) of a 1000-step cosine are 0.1 to 6 digits.
    clipped = [np.array([0.6, 0.8]), steps[1]]
    np.testing.assert_allclose(results["global"], _numpy_adam(clipped, 0.1), rtol=1e-4)
    np.testing.assert_allclose(results["none"], _numpy_adam(steps, 0.1), rtol=1e-4)
    assert not np.allclose(results["global"], results["none"], rtol=1e-2)


def test_make_optimizer_rejects_unknown_clip_mode():
    with pytest.raises(ValueError, match="clip must be one of per_example, global, none"):
        optim.make_optimizer(lr=1.0, text_lr=1.0, total_steps=10, warmup_steps=0, clip="norm")


def test_weight_decay_is_decoupled_and_spares_vectors():
    # Zero gradients: Adam's step is 0, so the update is -lr * wd * w on matrices only.
    params = {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}
    opt = optim.make_optimizer(
        lr=0.5, text_lr=0.5, total_steps=10, warmup_steps=0, clip="none", weight_decay=0.1
    )
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = opt.update(zeros, opt.init(params), params)
    np.testing.assert_allclose(updates["kernel"], -0.5 * 0.1 * 3.0, rtol=1e-6)
    np.testing.assert_array_equal(updates["bias"], 0.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        optim.make_optimizer(lr=1, text_lr=1, total_steps=2, warmup_steps=0, weight_decay=-1)
