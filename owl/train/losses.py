"""Training losses: sigmoid focal loss, OWL-ViT detection losses, and CLIP's contrastive loss.

All functions are pure and keyword-only, and jit/vmap cleanly. ``detection_losses`` follows the
public OWL-ViT recipe (spec §5.3): focal classification loss over query columns 1..Q-1, L1 and
(1 - GIoU) box losses on matched targets, each normalised per example and averaged over the batch.
``contrastive_loss`` is the symmetric InfoNCE of CLIP, for image-text pretraining.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from owl.ops.boxes import cxcywh_to_xyxy, elementwise_generalized_box_iou

# CLIP clamps its learnable log-temperature at ln(100), so logits are scaled by at most 100.
MAX_LOGIT_SCALE = math.log(100.0)


def sigmoid_focal_loss(
    *, logits: jax.Array, labels: jax.Array, alpha: float = 0.3, gamma: float = 2.0
) -> jax.Array:
    """Elementwise sigmoid focal loss (Lin et al. 2017), as in OWL-ViT's training.

    loss = BCE(logits, labels) * (1 - p_t)^gamma * (alpha * y + (1 - alpha) * (1 - y)), with
    p = sigmoid(logits) and p_t = p * y + (1 - p) * (1 - y).

    Args:
        logits: logits [...].
        labels: targets in [0, 1], same shape as ``logits``.
        alpha: weight of positives (1 - alpha for negatives).
        gamma: focusing exponent.

    Returns:
        Loss [...], same shape as ``logits``; not reduced.
    """
    labels = labels.astype(logits.dtype)
    log_p = jax.nn.log_sigmoid(logits)
    log_not_p = jax.nn.log_sigmoid(-logits)
    bce = -(labels * log_p + (1 - labels) * log_not_p)
    p = jnp.exp(log_p)
    p_t = p * labels + (1 - p) * (1 - labels)
    alpha_t = alpha * labels + (1 - alpha) * (1 - labels)
    return bce * (1 - p_t) ** gamma * alpha_t


def detection_losses(
    *,
    pred_logits: jax.Array,
    pred_boxes: jax.Array,
    target_labels: jax.Array,
    target_boxes: jax.Array,
    target_mask: jax.Array,
    matches: Any,
    focal_alpha: float = 0.3,
    focal_gamma: float = 2.0,
    weight_class: float = 1.0,
    weight_bbox: float = 1.0,
    weight_giou: float = 1.0,
) -> dict[str, jax.Array]:
    """OWL-ViT detection losses for a batch, given Hungarian matches (spec §5.3).

    Predictions not matched to a valid target get the background target (all-zero labels in the
    real query columns). Column 0 (the padding column) is excluded from the class loss.

    Args:
        pred_logits: class logits [B, P, Q].
        pred_boxes: predicted boxes [B, P, 4], cxcywh.
        target_labels: multi-hot labels [B, M, Q]; column 0 marks padding instances.
        target_boxes: target boxes [B, M, 4], cxcywh.
        target_mask: bool [B, M], True for real targets.
        matches: ``owl.train.matching.Matches`` (or a tuple (pred_idx, target_idx, valid)) with
            arrays [B, M], e.g. ``jax.vmap(hungarian_matcher)`` output.
        focal_alpha: focal alpha of the class loss.
        focal_gamma: focal gamma of the class loss.
        weight_class: weight of ``loss_class`` in ``total``.
        weight_bbox: weight of ``loss_bbox`` in ``total``.
        weight_giou: weight of ``loss_giou`` in ``total``.

    Returns:
        Dict of scalars: ``loss_class`` (focal loss summed over predictions x columns 1..Q-1,
        divided per example by its number of positive (instance, query) labels, at least 1),
        ``loss_bbox`` (L1 on xyxy corners summed over 4 coordinates, matched valid targets only)
        and ``loss_giou`` (1 - GIoU, same pairs), both divided per example by its number of
        targets (at least 1); each averaged over the batch; and ``total``, their weighted sum.
    """
    pred_idx, target_idx, valid = matches
    num_preds = pred_logits.shape[1]
    valid = valid.astype(bool)
    target_mask = target_mask.astype(bool)
    dtype = pred_logits.dtype

    # Class targets per prediction [B, P, Q]: the matched target's labels, else all zero.
    matched_labels = jnp.take_along_axis(target_labels, target_idx[..., None], axis=1)
    assign = jax.nn.one_hot(pred_idx, num_preds, dtype=dtype) * valid[..., None]  # [B, M, P]
    pred_targets = jnp.einsum("bmp,bmq->bpq", assign, matched_labels.astype(dtype))
    focal = sigmoid_focal_loss(
        logits=pred_logits[..., 1:],
        labels=pred_targets[..., 1:],
        alpha=focal_alpha,
        gamma=focal_gamma,
    )
    num_pos = jnp.sum(target_labels[..., 1:].astype(dtype) * target_mask[..., None], axis=(1, 2))
    loss_class = jnp.mean(jnp.sum(focal, axis=(1, 2)) / jnp.maximum(num_pos, 1))

    # Box losses on matched pairs [B, M].
    src = cxcywh_to_xyxy(jnp.take_along_axis(pred_boxes, pred_idx[..., None], axis=1))
    tgt = cxcywh_to_xyxy(jnp.take_along_axis(target_boxes, target_idx[..., None], axis=1))
    l1 = jnp.where(valid, jnp.sum(jnp.abs(src - tgt), axis=-1), 0)
    giou = jnp.where(valid, 1 - elementwise_generalized_box_iou(src, tgt), 0)
    num_boxes = jnp.maximum(jnp.sum(target_mask, axis=1).astype(dtype), 1)
    loss_bbox = jnp.mean(jnp.sum(l1, axis=1) / num_boxes)
    loss_giou = jnp.mean(jnp.sum(giou, axis=1) / num_boxes)

    total = weight_class * loss_class + weight_bbox * loss_bbox + weight_giou * loss_giou
    return {
        "loss_class": loss_class,
        "loss_bbox": loss_bbox,
        "loss_giou": loss_giou,
        "total": total,
    }


def _l2_normalize(x: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


def contrastive_loss(
    *, image_embeds: jax.Array, text_embeds: jax.Array, logit_scale: jax.Array | float
) -> jax.Array:
    """Symmetric InfoNCE loss of CLIP; pair i (image i, text i) is the positive for row/column i.

    Inputs are L2-normalised; logits = exp(min(logit_scale, ln 100)) * image @ text.T. CLIP clamps
    its learnable log-temperature at ln(100); here the clamp is applied inside the loss, so the
    gradient with respect to ``logit_scale`` is zero above ln(100).

    Args:
        image_embeds: image embeddings [N, E].
        text_embeds: text embeddings [N, E].
        logit_scale: scalar log-temperature (CLIP initialises it to ln(1 / 0.07)).

    Returns:
        Scalar: mean of the image-to-text and text-to-image cross-entropies.
    """
    if image_embeds.shape != text_embeds.shape or image_embeds.ndim != 2:
        raise ValueError(
            "contrastive_loss: image_embeds and text_embeds must both be [N, E]; got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}."
        )
    scale = jnp.exp(jnp.minimum(logit_scale, MAX_LOGIT_SCALE))
    logits = scale * _l2_normalize(image_embeds) @ _l2_normalize(text_embeds).T  # [N, N]
    image_to_text = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=1)))
    text_to_image = -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=0)))
    return (image_to_text + text_to_image) / 2
