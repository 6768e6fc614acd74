"""The two parallel head instances that CDC watches (`owl.train.stopping` holds the rule).

Each instance is a copy of the detector's last linear maps, reading the trained model's current
features with their gradient stopped:

* ``class``: ``Dense_0`` (patch features -> query space), ``logit_shift`` and ``logit_scale``,
  combined exactly as `owl.models.owl_vit.ClassPredictor` combines them;
* ``box``: the box head's output layer, on the box MLP's last hidden activations; its output plus
  the box bias, through a sigmoid, is the box (as `OwlViT.box_predictor`).

The instances start from two random seeds (LeCun-normal kernels, the class prior on the shift's
bias), are trained with Adam on the same detection loss as the model (Hungarian matching, focal
class loss, L1 and GIoU box losses) and each on its own fixed half of the images
(`owl.train.stopping.instance_of`). The jitted `make_cdc_step` returns both updated instances and
their cosine distance; the model itself is untouched, so CDC changes nothing of what it watches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from owl.models.configs import ModelConfig
from owl.models.owl_vit import PRIOR_PROB, OwlViT, compute_box_bias, score_queries
from owl.models.owl_vit import normalize as l2_normalize
from owl.train.losses import detection_losses
from owl.train.matching import hungarian_matcher
from owl.train.step import LossConfig
from owl.train.stopping import cosine_distance, instance_of


@flax.struct.dataclass
class CDCState:
    """The two head instances, their optimiser state, and the model parameters CDC picked.

    Attributes:
      heads: (instance 0, instance 1), each {"class": {...}, "box": {"kernel", "bias"}}.
      opt_state: (Adam state of instance 0, of instance 1).
      best_params: the model parameters at the step of the smallest smoothed distance so far.
    """

    heads: Any
    opt_state: Any
    best_params: Any


def _dense(rng: jax.Array, fan_in: int, fan_out: int, bias: float = 0.0) -> dict[str, jax.Array]:
    kernel = jax.random.normal(rng, (fan_in, fan_out), jnp.float32) / np.sqrt(fan_in)
    return {"kernel": kernel, "bias": jnp.full((fan_out,), bias, jnp.float32)}


def init_heads(model_config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """One instance's fresh last linear maps (LeCun normal; shift bias at the class prior)."""
    width, embed = model_config.vision_width, model_config.embed_dim
    k = jax.random.split(rng, 4)
    prior = float(np.log(PRIOR_PROB / (1 - PRIOR_PROB)))
    return {
        "class": {
            "Dense_0": _dense(k[0], width, embed),
            "logit_shift": _dense(k[1], width, 1, prior),
            "logit_scale": _dense(k[2], width, 1),
        },
        "box": _dense(k[3], width, 4),
    }


def make_optimizer(lr: float) -> optax.GradientTransformation:
    """Adam at a constant rate for the instances (CDC watches their drift, not a schedule)."""
    return optax.adam(lr)


def init_state(model_config: ModelConfig, params: Any, seed: int, lr: float) -> CDCState:
    """Two instances from seeds ``seed`` and ``seed + 1`` (host arrays), and the start as the pick."""
    heads = tuple(init_heads(model_config, jax.random.PRNGKey(seed + i)) for i in range(2))
    opt = make_optimizer(lr)
    opt_state = tuple(opt.init(h) for h in heads)
    to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)  # noqa: E731
    return CDCState(heads=to_np(heads), opt_state=to_np(opt_state), best_params=to_np(params))


def instance_masks(images: np.ndarray, seed: int) -> np.ndarray:
    """float32 [2, B]: which instance learns from each row (a hash of its pixels, fixed per image).

    Training examples are rebuilt from the same file every epoch, so without random crops,
    flips or mosaics the pixels, and with them the assignment, are the same each time.
    """
    rows = np.asarray(images)
    which = np.asarray([instance_of(r.tobytes(), seed) for r in rows])
    return np.stack([which == 0, which == 1]).astype(np.float32)


def distance(heads: Any) -> jax.Array:
    """The CDC signal: the cosine distance between the two instances' weights."""
    return cosine_distance(heads[0], heads[1])


def _instance_outputs(
    heads: Mapping[str, Any], feats: jax.Array, hidden: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    c = heads["class"]
    emb = feats @ c["Dense_0"]["kernel"] + c["Dense_0"]["bias"]
    shift = (feats @ c["logit_shift"]["kernel"] + c["logit_shift"]["bias"])[..., 0]
    scale = jax.nn.elu((feats @ c["logit_scale"]["kernel"] + c["logit_scale"]["bias"])[..., 0])
    boxes = jax.nn.sigmoid(hidden @ heads["box"]["kernel"] + heads["box"]["bias"] + bias)
    return l2_normalize(emb), shift, scale + 1.0, boxes


def make_cdc_step(module: OwlViT, loss_config: LossConfig, lr: float) -> Any:
    """``cdc_step(params, cdc_state, batch, masks) -> (cdc_state, distance)`` (not jitted).

    ``batch`` is the training batch contract with its ``queries`` token ids (before
    `owl.train.step.dedup_queries`); ``masks`` comes from `instance_masks`. The model's forward runs once, without gradients, for both instances.
    """
    optimizer = make_optimizer(lr)
    c = loss_config

    def features(params, batch):
        p = jax.lax.stop_gradient(params)
        fmap = module.apply({"params": p}, batch["image"], method=OwlViT.image_embedder)
        b, h, w, d = fmap.shape
        feats = fmap.reshape(b, h * w, d)
        box_params = p["obj_box_head"]
        hidden = feats
        n = len(box_params) - 1
        for i in range(n):
            layer = box_params[f"Dense_{i}"]
            hidden = jax.nn.gelu(hidden @ layer["kernel"] + layer["bias"], approximate=True)
        queries = module.apply({"params": p}, batch["queries"], method=OwlViT.text_embedder)
        qmask = batch["queries"][..., 0] > 0
        return feats, hidden, queries, qmask, jnp.asarray(compute_box_bias(h, w))

    def instance_loss(heads, feats, hidden, queries, qmask, bias, batch, weight):
        emb, shift, scale, boxes = _instance_outputs(heads, feats, hidden, bias)
        logits = score_queries(emb, shift, scale, queries, qmask)

        def one(lg, bx, labels, tboxes, tmask):
            m = hungarian_matcher(
                pred_logits=lg, pred_boxes=bx, target_labels=labels, target_boxes=tboxes,
                target_mask=tmask, focal_alpha=c.focal_alpha, focal_gamma=c.focal_gamma,
                cost_class=c.cost_class, cost_bbox=c.cost_bbox, cost_giou=c.cost_giou,
            )  # fmt: skip
            m = jax.tree_util.tree_map(lambda x: x[None], m)
            out = detection_losses(
                pred_logits=lg[None], pred_boxes=bx[None], target_labels=labels[None],
                target_boxes=tboxes[None], target_mask=tmask[None], matches=m,
                focal_alpha=c.focal_alpha, focal_gamma=c.focal_gamma,
                weight_class=c.weight_class, weight_bbox=c.weight_bbox,
                weight_giou=c.weight_giou,
            )  # fmt: skip
            return out["total"]

        per = jax.vmap(one)(logits, boxes, batch["labels"], batch["boxes"], batch["instance_mask"])
        return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1.0)

    def cdc_step(params, state: CDCState, batch, masks):
        feats, hidden, queries, qmask, bias = features(params, batch)
        new_heads, new_opt = [], []
        for i in range(2):
            grads = jax.grad(instance_loss)(
                state.heads[i], feats, hidden, queries, qmask, bias, batch, masks[i]
            )
            updates, opt_state = optimizer.update(grads, state.opt_state[i], state.heads[i])
            new_heads.append(optax.apply_updates(state.heads[i], updates))
            new_opt.append(opt_state)
        heads = tuple(new_heads)
        return state.replace(heads=heads, opt_state=tuple(new_opt)), distance(heads)

    return cdc_step


class CDCMonitor:
    """CDC during a run: trains the two instances each step, feeds the rule, keeps the pick.

    Args:
      config: the training config (``cdc.*``).
      module: the detector module; ``loss_config``: the model's matching and loss settings.
      model_config: the architecture.
      params: the starting parameters (replicated global arrays or host arrays).
      replicated: the sharding of replicated arrays.
    """

    def __init__(
        self,
        config: Any,
        module: OwlViT,
        loss_config: LossConfig,
        model_config: ModelConfig,
        params: Any,
        replicated: Any,
    ) -> None:
        from owl.train.stopping import CDCRule

        c = config.cdc
        self.seed = int(c.seed)
        self.rule = CDCRule(
            patience=int(c.patience),
            tol=float(c.tol),
            smoothing=float(c.smoothing),
            min_steps=int(c.min_steps),
        )
        self._replicated = replicated
        host = init_state(model_config, jax.device_get(params), self.seed, float(c.lr))
        self.state = jax.device_put(host, replicated)
        self._step = jax.jit(
            make_cdc_step(module, loss_config, float(c.lr)),
            out_shardings=(replicated, replicated),
        )

    def abstract(self) -> Any:
        """Shapes and shardings of `state` (the restore target)."""
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self._replicated),
            self.state,
        )

    def restore(self, state: Any, rule_state: Mapping[str, Any]) -> None:
        """Continues from a checkpoint's instances and rule."""
        from owl.train.stopping import CDCRule

        self.state = state
        self.rule = CDCRule.from_state(rule_state)

    def update(self, step: int, params: Any, local: Mapping[str, np.ndarray], put: Any) -> float:
        """One instance step on this batch after model step ``step``; returns the distance.

        ``put`` turns host rows into global arrays (`owl.train.loaders.global_batch`).
        """
        keys = ("image", "queries", "labels", "boxes", "instance_mask")
        batch = put({k: local[k] for k in keys})
        masks = put({"m": instance_masks(local["image"], self.seed).T})["m"].T
        self.state, d = self._step(params, self.state, batch, masks)
        d = float(jax.device_get(d))
        self.rule.update(step, d)
        if self.rule.is_best:
            self.state = self.state.replace(best_params=jax.tree_util.tree_map(jnp.copy, params))
        return d
