"""The train and eval step functions: per-example forward, matching and losses; clipped updates.

One training step (spec §5.4): every example of the batch gets its own stochastic-depth RNG and
its own forward pass, Hungarian matching and detection loss (each normalised per example, as
`owl.train.losses.detection_losses` does). The gradient is then

* "per_example": each example's gradient is clipped to L2 norm `clip_norm`, then they are averaged
  (the official recipe; memory grows with the per-device batch, one gradient per example);
* "global" / "none": the gradient of the batch-mean loss (clipped by the optimiser for "global").

The per-example RNG is ``fold_in(fold_in(run_key, step), position)`` where ``position`` is the
example's place in the global data stream, so a run gives the same numbers on 1 device, on 8, or
on 2 processes: the data loaders put global stream position ``j * P + p`` in row j of process p.
Frozen parameters are split off before differentiation, so their gradients are never formed.
Each device differentiates its own shard of the batch (`jax.shard_map`) and the gradients are
averaged across devices with `pmean`.

Steps are plain functions of (state, batch); `owl.train.trainer` jits them with shardings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

from owl.models.owl_vit import OwlViT
from owl.ops.boxes import box_iou, cxcywh_to_xyxy
from owl.train.losses import detection_losses
from owl.train.matching import hungarian_matcher
from owl.train.optim import clip_per_example, global_norm

Batch = Mapping[str, jax.Array]
LOSS_KEYS = ("loss", "loss_class", "loss_bbox", "loss_giou")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Matching costs and loss weights (spec §5.1: all 1, focal alpha 0.3, gamma 2)."""

    focal_alpha: float = 0.3
    focal_gamma: float = 2.0
    cost_class: float = 1.0
    cost_bbox: float = 1.0
    cost_giou: float = 1.0
    weight_class: float = 1.0
    weight_bbox: float = 1.0
    weight_giou: float = 1.0


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position.

    Attributes:
      step: int32 scalar, number of updates done.
      params: the model parameters.
      opt_state: the optax state.
      rng: uint32 [2], the run's base PRNG key (per-step keys are folded in from it).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def split_params(params: Any, mask: Any) -> tuple[Any, Any]:
    """(trainable, frozen): two trees like ``params`` with None where the other one holds a leaf."""
    trainable = jax.tree_util.tree_map(lambda m, x: x if m else None, mask, params)
    frozen = jax.tree_util.tree_map(lambda m, x: None if m else x, mask, params)
    return trainable, frozen


def merge_params(mask: Any, trainable: Any, frozen: Any) -> Any:
    """Inverse of `split_params`."""
    flat_mask, treedef = jax.tree_util.tree_flatten(mask)
    flat_t = treedef.flatten_up_to(trainable)
    flat_f = treedef.flatten_up_to(frozen)
    leaves = [t if m else f for m, t, f in zip(flat_mask, flat_t, flat_f, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def example_losses(
    module: OwlViT,
    params: Any,
    example: Batch,
    rng: jax.Array | None,
    loss_config: LossConfig,
    query_embeddings: jax.Array | None = None,
    query_mask: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Forward pass, matching and losses of one example (arrays without a batch axis).

    Args:
      module: the detector (its drop-path rates apply when ``rng`` is given).
      params: parameters.
      example: one example of the training batch contract.
      rng: stochastic-depth key (training), or None for a deterministic pass.
      loss_config: costs and weights.
      query_embeddings: [Q, E] embeddings of the example's queries when the text tower ran
        elsewhere (`dedup_queries`); None: encode ``example["queries"]`` here.
      query_mask: [Q] bools with ``query_embeddings``, False for padding queries.

    Returns:
      Scalars "loss" (weighted total), "loss_class", "loss_bbox", "loss_giou", and "matched_iou"
      (mean IoU of matched real targets; 0 without targets).
    """
    b = jax.tree_util.tree_map(lambda x: x[None], dict(example))
    train = rng is not None
    rngs = {"dropout": rng} if train else {}
    if query_embeddings is None:
        out = module.apply({"params": params}, b["image"], b["queries"], train=train, rngs=rngs)
    else:
        out = module.apply(
            {"params": params}, b["image"], query_embeddings[None], query_mask[None],
            train=train, rngs=rngs, method=OwlViT.detect,
        )  # fmt: skip
    c = loss_config
    targets = dict(
        target_labels=b["labels"], target_boxes=b["boxes"], target_mask=b["instance_mask"]
    )
    matches = jax.vmap(
        lambda logits, boxes, labels, tboxes, mask: hungarian_matcher(
            pred_logits=logits,
            pred_boxes=boxes,
            target_labels=labels,
            target_boxes=tboxes,
            target_mask=mask,
            focal_alpha=c.focal_alpha,
            focal_gamma=c.focal_gamma,
            cost_class=c.cost_class,
            cost_bbox=c.cost_bbox,
            cost_giou=c.cost_giou,
        )
    )(out["pred_logits"], out["pred_boxes"], b["labels"], b["boxes"], b["instance_mask"])
    losses = detection_losses(
        pred_logits=out["pred_logits"],
        pred_boxes=out["pred_boxes"],
        matches=matches,
        focal_alpha=c.focal_alpha,
        focal_gamma=c.focal_gamma,
        weight_class=c.weight_class,
        weight_bbox=c.weight_bbox,
        weight_giou=c.weight_giou,
        **targets,
    )
    return {
        "loss": losses["total"],
        "loss_class": losses["loss_class"],
        "loss_bbox": losses["loss_bbox"],
        "loss_giou": losses["loss_giou"],
        "matched_iou": jax.lax.stop_gradient(_matched_iou(out["pred_boxes"][0], b, matches)),
    }


def _matched_iou(pred_boxes: jax.Array, b: Batch, matches: Any) -> jax.Array:
    """Mean IoU of the matched (prediction, real target) pairs of one example; 0 without any."""
    pred_idx, target_idx, valid = (x[0] for x in matches)
    src = cxcywh_to_xyxy(pred_boxes[pred_idx])
    tgt = cxcywh_to_xyxy(b["boxes"][0][target_idx])
    iou = jnp.diagonal(box_iou(src, tgt)[0])
    n = jnp.sum(valid)
    return jnp.where(n > 0, jnp.sum(jnp.where(valid, iou, 0)) / jnp.maximum(n, 1), 0.0)


def stream_positions(global_batch: int, process_count: int) -> np.ndarray:
    """Global stream position of each global-batch row (row j of process p holds j * P + p)."""
    local = global_batch // process_count
    rows = np.arange(global_batch)
    return ((rows % local) * process_count + rows // local).astype(np.int32)


def dedup_queries(queries: np.ndarray, num_shards: int) -> tuple[np.ndarray, np.ndarray]:
    """Each device's distinct query rows, so the text tower encodes each text once per step.

    A training batch names the same few texts many times (every image of a ShapesWorld or LVIS
    batch draws its negatives from one vocabulary): B x Q rows, often only tens of them
    distinct. The rows of each device's share of the batch are replaced by indices into a
    table of its distinct rows; the table is padded with empty rows to a power of two (at
    least 8) so that shapes, and with them the compiled step, rarely change.

    Args:
      queries: int32 [B, Q, L] token ids of this process's batch (rows of zeros are padding).
      num_shards: the devices this batch is split over (B divisible by it).

    Returns:
      (table int32 [num_shards * U, L], index int32 [B, Q]): shard s owns table rows
      [s * U, (s + 1) * U) and its ``index`` values point into them (0 .. U - 1).
    """
    b, q, length = queries.shape
    if b % num_shards:
        raise ValueError(f"batch of {b} does not split into {num_shards} shards")
    per = b // num_shards
    tables, indices = [], []
    for s in range(num_shards):
        rows = queries[s * per : (s + 1) * per].reshape(per * q, length)
        table, inverse = np.unique(rows, axis=0, return_inverse=True)
        tables.append(table)
        indices.append(inverse.reshape(per, q))
    size = max(8, 1 << (max(len(t) for t in tables) - 1).bit_length())
    padded = np.zeros((num_shards * size, length), np.int32)
    for s, table in enumerate(tables):
        padded[s * size : s * size + len(table)] = table
    return padded, np.concatenate(indices).astype(np.int32)


def make_train_step(
    module: OwlViT,
    optimizer: optax.GradientTransformation,
    *,
    loss_config: LossConfig,
    mask: Any,
    clip: str,
    clip_norm: float,
    process_count: int,
    mesh: Mesh,
    axis: str = "data",
    schedules: Mapping[str, Callable[[jax.Array], jax.Array]] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """Builds ``train_step(state, batch) -> (state, metrics)`` (not jitted).

    The gradient is computed per device on its shard of the batch (`jax.shard_map` over
    ``axis`` of ``mesh``) and averaged across devices with `jax.lax.pmean`: explicit data
    parallelism. (Letting the SPMD partitioner split a vmapped per-example gradient instead
    loses the convolution kernel's gradient of all but the first shard on XLA:CPU.)

    Args:
      module: the detector with its training drop-path rates.
      optimizer: from `owl.train.optim.make_optimizer` (same ``clip`` mode).
      loss_config: matching costs and loss weights.
      mask: tree of bools like the params, False for frozen leaves.
      clip: "per_example", "global" or "none".
      clip_norm: bound for per-example clipping.
      process_count: P, to map batch rows to stream positions (see module docstring).
      mesh: the device mesh; the batch is sharded over ``axis``.
      axis: the data-parallel mesh axis.
      schedules: name -> lr(step), logged as metrics.

    Returns:
      The step function; metrics are batch means of the `example_losses` outputs, "grad_norm"
      (mean per-example norm before clipping, or the norm of the mean gradient) and the
      learning rates at this step.
    """

    def per_example(trainable, frozen, example, rng, query_embeddings=None, query_mask=None):
        params = merge_params(mask, trainable, frozen)
        out = example_losses(
            module, params, example, rng, loss_config, query_embeddings, query_mask
        )
        return out["loss"], out

    def local_gradient(trainable, frozen, batch, keys):
        """One device: the mean (clipped) gradient of its examples, averaged over devices."""
        if clip == "per_example":
            if "query_table" in batch:
                raise ValueError("dedup_queries needs clip 'global' or 'none', not 'per_example'")
            grad_fn = jax.grad(per_example, has_aux=True)
            grads, aux = jax.vmap(grad_fn, in_axes=(None, None, 0, 0))(
                trainable, frozen, batch, keys
            )
            grads, norms = clip_per_example(grads, clip_norm)
            extra = {"grad_norm": jnp.mean(norms)}
        elif "query_table" in batch:
            # Text tower once per device on the distinct queries (see `dedup_queries`).
            batch = dict(batch)
            table, index = batch.pop("query_table"), batch.pop("query_index")

            def batch_loss(t):
                params = merge_params(mask, t, frozen)
                embeddings = module.apply({"params": params}, table, method=OwlViT.text_embedder)
                valid = table[:, 0] > 0
                _, aux = jax.vmap(per_example, in_axes=(None, None, 0, 0, 0, 0))(
                    t, frozen, batch, keys, embeddings[index], valid[index]
                )
                return jnp.mean(aux["loss"]), aux

            grads, aux = jax.grad(batch_loss, has_aux=True)(trainable)
            extra = {}
        else:

            def batch_loss(t):
                _, aux = jax.vmap(per_example, in_axes=(None, None, 0, 0))(t, frozen, batch, keys)
                return jnp.mean(aux["loss"]), aux

            grads, aux = jax.grad(batch_loss, has_aux=True)(trainable)
            extra = {}
        metrics = {k: jnp.mean(v) for k, v in aux.items()} | extra
        return jax.lax.pmean((grads, metrics), axis)

    sharded_gradient = jax.shard_map(
        local_gradient,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(axis), PartitionSpec(axis)),
        out_specs=PartitionSpec(),
        check_vma=False,  # the matcher's while loops start from unvarying constants
    )

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        size = batch["image"].shape[0]
        positions = jnp.asarray(stream_positions(size, process_count))
        step_key = jax.random.fold_in(state.rng, state.step)
        keys = jax.vmap(lambda i: jax.random.fold_in(step_key, i))(positions)
        trainable, frozen = split_params(state.params, mask)
        grads, metrics = sharded_gradient(trainable, frozen, dict(batch), keys)
        if clip != "per_example":
            metrics["grad_norm"] = global_norm(grads)
        grads = merge_params(mask, grads, jax.tree_util.tree_map(jnp.zeros_like, frozen))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        for name, fn in (schedules or {}).items():
            metrics[name] = fn(state.step)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(
    module: OwlViT, *, loss_config: LossConfig
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """Builds ``eval_step(params, batch) -> metrics`` (batch means, no stochastic depth)."""

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        out = jax.vmap(lambda ex: example_losses(module, params, ex, None, loss_config))(
            dict(batch)
        )
        return {k: jnp.mean(v) for k, v in out.items()}

    return eval_step
