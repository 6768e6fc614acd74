"""The OWL-ViT optimiser: Adam, two parameter groups, warmup + cosine learning rates, clipping.

The public recipe (spec §5.1, §5.4): per-example gradients clipped to L2 norm 1 and averaged,
then Adam (b1 0.9, b2 0.999, no weight decay), then a learning rate per parameter group — the
text tower (`backbone/clip/text/.*`) at 2e-6, everything else at 5e-5 — each following

    lr(t) = base * min(1, t / warmup) * 0.5 * (1 + cos(pi * max(0, t - warmup) / (T - warmup)))

(scenic's `constant*linear_warmup*cosine_decay`). Here the cosine stays at 0 after step T.

`make_optimizer` builds the optax chain; per-example clipping cannot be an optax transformation
(it needs the per-example gradients), so it is `clip_per_example`, called by the train step. A
frozen group gets `optax.set_to_zero` (no Adam moments are kept for it) and the train step stops
its gradients (`trainable_mask`), so frozen weights never move and do not count in gradient norms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

TEXT_TOWER_REGEX = r"backbone/clip/text/.*"
TEXT_GROUP, REST_GROUP = "text", "rest"
CLIP_MODES = ("per_example", "global", "none")


def warmup_cosine_schedule(base_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """lr(t) = base * min(1, t / warmup) * 0.5 * (1 + cos(pi * max(0, t - warmup) / (T - warmup))).

    Args:
      base_lr: peak learning rate.
      warmup_steps: linear warmup length (0: none).
      total_steps: T; the cosine reaches 0 at step T and stays there.

    Raises:
      ValueError: negative sizes, or warmup_steps >= total_steps (when warmup is used).
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}"
        )
    if warmup_steps and warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})"
        )
    decay_steps = float(total_steps - warmup_steps)

    def schedule(step: jax.Array | int) -> jax.Array:
        t = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, t / warmup_steps) if warmup_steps else jnp.float32(1.0)
        progress = jnp.clip((t - warmup_steps) / decay_steps, 0.0, 1.0)
        return base_lr * warm * 0.5 * (1.0 + jnp.cos(math.pi * progress))

    return schedule


def param_path(path: tuple[Any, ...]) -> str:
    """A pytree key path as the "/"-joined name used by group regexes ("backbone/clip/text/...")."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def param_groups(params: Any, text_regex: str = TEXT_TOWER_REGEX) -> Any:
    """A tree like ``params`` whose leaves are "text" (path fully matches the regex) or "rest"."""
    pattern = re.compile(text_regex)
    return jax.tree_util.tree_map_with_path(
        lambda path, _: TEXT_GROUP if pattern.fullmatch(param_path(path)) else REST_GROUP, params
    )


def trainable_mask(
    params: Any, *, freeze_text: bool, text_regex: str = TEXT_TOWER_REGEX, freeze_regex: str = ""
) -> Any:
    """A tree of bools like ``params``: False for frozen leaves.

    Frozen: the text tower when ``freeze_text``, and every leaf whose path fully matches
    ``freeze_regex`` ("backbone/.*" trains the heads only). The train step forms no gradient for
    them, so they get zero updates and Adam leaves them where they are.
    """
    groups = param_groups(params, text_regex)
    frozen = re.compile(freeze_regex) if freeze_regex else None

    def keep(path: tuple[Any, ...], group: str) -> bool:
        if freeze_text and group == TEXT_GROUP:
            return False
        return not (frozen and frozen.fullmatch(param_path(path)))

    return jax.tree_util.tree_map_with_path(keep, groups)


def make_optimizer(
    *,
    lr: float,
    text_lr: float,
    total_steps: int,
    warmup_steps: int,
    freeze_text: bool = False,
    clip: str = "per_example",
    clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    text_regex: str = TEXT_TOWER_REGEX,
    freeze_regex: str = "",
) -> optax.GradientTransformation:
    """The optax chain: [global clipping] -> per group: Adam [-> + wd * w] -> -lr(t).

    A frozen group gets zero updates.

    Args:
      lr: peak learning rate of everything outside the text tower.
      text_lr: peak learning rate of the text tower.
      total_steps, warmup_steps: the schedule (`warmup_cosine_schedule`), shared by both groups.
      freeze_text: zero updates for the text tower (no Adam state for it).
      clip: "per_example" (done by the train step, see `clip_per_example`; nothing here),
        "global" (clip the averaged gradient's global norm) or "none".
      clip_norm: the L2 norm bound.
      b1, b2, eps: Adam.
      weight_decay: decoupled weight decay (AdamW, as `optax.adamw` places it) on matrices and
        kernels only (leaves with 2 or more axes), never on biases, scales and scalars. The
        detector recipe uses none; contrastive pretraining does.
      text_regex: which parameter paths form the text group.
      freeze_regex: accepted so that one set of settings builds both this and
        `trainable_mask`; those leaves get no gradient from the train step, so Adam's update
        for them is exactly zero.

    Raises:
      ValueError: an unknown clip mode or a negative learning rate.
    """
    if clip not in CLIP_MODES:
        raise ValueError(f"clip must be one of {', '.join(CLIP_MODES)}; got {clip!r}")
    if lr < 0 or text_lr < 0:
        raise ValueError(f"learning rates must be >= 0, got lr={lr}, text_lr={text_lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")

    def group(base_lr: float) -> optax.GradientTransformation:
        schedule = warmup_cosine_schedule(base_lr, warmup_steps, total_steps)
        decay = []
        if weight_decay:
            decay = [optax.add_decayed_weights(weight_decay, mask=_matrices)]
        return optax.chain(
            optax.scale_by_adam(b1=b1, b2=b2, eps=eps), *decay,
            optax.scale_by_learning_rate(schedule),
        )  # fmt: skip

    text = optax.set_to_zero() if freeze_text else group(text_lr)
    groups = optax.multi_transform(
        {REST_GROUP: group(lr), TEXT_GROUP: text},
        lambda params: param_groups(params, text_regex),
    )
    if clip == "global":
        return optax.chain(optax.clip_by_global_norm(clip_norm), groups)
    return groups


def _matrices(params: Any) -> Any:
    """True for leaves with 2 or more axes (kernels, embeddings): the weight-decayed ones."""
    return jax.tree_util.tree_map(lambda x: jnp.ndim(x) >= 2, params)


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves together (square root of the sum of squares)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def clip_per_example(grads: Any, max_norm: float) -> tuple[Any, jax.Array]:
    """Clips each example's gradient to L2 norm ``max_norm`` and averages them.

    Each example's gradient g_i is scaled by min(1, max_norm / |g_i|) (DP-SGD aggregation with
    zero noise, as scenic's `make` does), then the mean over examples is taken.

    Args:
      grads: a tree whose leaves have a leading example axis [B, ...].
      max_norm: the bound.

    Returns:
      (mean clipped gradient tree without the example axis, per-example norms [B] before clipping).
    """
    leaves = jax.tree_util.tree_leaves(grads)
    squares = [jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1) for x in leaves]
    norms = jnp.sqrt(sum(squares))
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(norms, 1e-30))

    def average(x: jax.Array) -> jax.Array:
        return jnp.tensordot(scale.astype(x.dtype), x, axes=1) / x.shape[0]

    return jax.tree_util.tree_map(average, grads), norms


def learning_rates(
    *, lr: float, text_lr: float, total_steps: int, warmup_steps: int, freeze_text: bool = False
) -> Mapping[str, Callable[[jax.Array], jax.Array]]:
    """Per-group schedules for logging: {"lr": ..., "text_lr": ...} (text 0 when frozen)."""
    text = 0.0 if freeze_text else text_lr
    return {
        "lr": warmup_cosine_schedule(lr, warmup_steps, total_steps),
        "text_lr": warmup_cosine_schedule(text, warmup_steps, total_steps),
    }
