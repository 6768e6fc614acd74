"""`OwlModel`: a loaded detector, its config and parameters, with jitted stages.

This is what `owl.load` returns. It owns one jitted function per stage of `OwlViT` so that the
Detector can cache image and text embeddings separately, and exposes `predict_raw`, the stable
low-level contract that parity with transformers is checked on.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from owl.models.configs import ModelConfig
from owl.models.owl_vit import OwlViT

# Outputs of `OwlViT.embed_image` that only training and feature extraction need.
FEATURE_KEYS = ("feature_map", "image_features")

# Compute precisions of the image tower. "bf16" runs the vision transformer (its weights and
# activations) in bfloat16, with float32 accumulation in the attention and LayerNorm statistics;
# the text tower and the heads (class, box, objectness) stay float32, so logits are scored in f32.
PRECISIONS = ("f32", "bf16")


class OwlModel:
    """A detector with parameters; every method takes and returns arrays with a batch axis.

    Attributes:
      config: the architecture.
      params: the parameter tree (nested dict of arrays, official names).
      source: where the parameters came from (a path or registry name), for messages.
    """

    def __init__(
        self,
        config: ModelConfig,
        params: Any,
        source: str | None = None,
        *,
        precision: str = "f32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
        self.config = config
        self.params = jax.device_put(params)
        self.source = source
        self.precision = precision
        self.module = OwlViT(config)

    def __repr__(self) -> str:
        n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))
        extra = "" if self.precision == "f32" else f", {self.precision}"
        return (
            f"OwlModel({self.config.family}, {self.config.image_size}px, {n:,} params, "
            f"{self.source!r}{extra})"
        )

    @functools.cached_property
    def _image_params(self) -> Any:
        """The parameters the image stages run with: the vision tower cast for bf16."""
        if self.precision == "f32":
            return self.params
        clip = dict(self.params["backbone"]["clip"])
        clip["visual"] = jax.tree.map(lambda a: a.astype(jnp.bfloat16), clip["visual"])
        return {**self.params, "backbone": {**self.params["backbone"], "clip": clip}}

    @property
    def _pixel_dtype(self) -> Any:
        return jnp.bfloat16 if self.precision == "bf16" else jnp.float32

    # -- jitted stages (compiled once per input shape) ------------------------------------------

    @functools.cached_property
    def _embed_image(self):
        return jax.jit(lambda p, x: _image_by_image(self.module, p, x, keep_features=True))

    @functools.cached_property
    def _embed_image_heads(self):
        return jax.jit(lambda p, x: _image_by_image(self.module, p, x, keep_features=False))

    @functools.cached_property
    def _embed_text(self):
        return jax.jit(lambda p, t: self.module.apply({"params": p}, t, method="text_embedder"))

    @functools.cached_property
    def _class_head(self):
        def fn(p, feats, queries, mask):
            return self.module.apply({"params": p}, feats, queries, mask, method="class_predictor")

        return jax.jit(fn)

    def embed_image(
        self, pixel_values: np.ndarray | jax.Array, *, features: bool = True
    ) -> dict[str, jax.Array]:
        """[B, S, S, 3] normalised pixels -> image-only outputs (see `OwlViT.embed_image`).

        With features=False the large feature map and image features are left out (they are
        still computed, but not returned): what detection caches needs only the head outputs.
        """
        fn = self._embed_image if features else self._embed_image_heads
        out = fn(self._image_params, jnp.asarray(pixel_values, self._pixel_dtype))
        if self.precision == "f32":
            return out
        return {k: v.astype(jnp.float32) for k, v in out.items()}

    def embed_text(self, input_ids: np.ndarray | jax.Array) -> jax.Array:
        """[..., 16] token ids -> unnormalised query embeddings [..., E]."""
        return self._embed_text(self.params, jnp.asarray(input_ids, jnp.int32))

    def class_head(
        self,
        image_features: jax.Array,
        query_embeddings: jax.Array,
        query_mask: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Image features [B, P, W] x query embeddings [B, Q, E] -> logits [B, P, Q]."""
        if query_mask is None:
            query_mask = jnp.ones(query_embeddings.shape[:-1], jnp.bool_)
        return self._class_head(self.params, image_features, query_embeddings, query_mask)

    # -- the low-level contract -----------------------------------------------------------------

    def predict_raw(self, pixel_values: np.ndarray, input_ids: np.ndarray) -> dict[str, np.ndarray]:
        """Runs the detector on preprocessed inputs and returns numpy arrays.

        Args:
          pixel_values: float32 [B, S, S, 3], already padded, resized and CLIP-normalised.
          input_ids: int [Q, 16] (the same queries for every image) or [B, Q, 16].
        Returns:
          logits [B, P, Q]; pred_boxes [B, P, 4] (cx, cy, w, h in [0, 1] of the padded square);
          class_embeds [B, P, E] (normalised, as scored); image_embeds [B, g, g, W];
          query_embeds [B, Q, E] (unnormalised); objectness_logits [B, P] for OWLv2.
        """
        pixel_values = np.asarray(pixel_values, np.float32)
        input_ids = np.asarray(input_ids)
        if pixel_values.ndim != 4 or pixel_values.shape[-1] != 3:
            raise ValueError(f"pixel_values must be [B, H, W, 3], got {pixel_values.shape}")
        batch = pixel_values.shape[0]
        if input_ids.ndim == 2:
            queries = self.embed_text(input_ids)[None]
            queries = jnp.broadcast_to(queries, (batch, *queries.shape[1:]))
            input_ids = np.broadcast_to(input_ids[None], (batch, *input_ids.shape))
        elif input_ids.ndim == 3 and input_ids.shape[0] == batch:
            queries = self.embed_text(input_ids)
        else:
            raise ValueError(
                f"input_ids must be [Q, 16] or [B={batch}, Q, 16], got {input_ids.shape}"
            )
        image = self.embed_image(pixel_values)
        cls = self.class_head(image["image_features"], queries, jnp.asarray(input_ids[..., 0] > 0))
        out = {
            "logits": cls["pred_logits"],
            "pred_boxes": image["pred_boxes"],
            "class_embeds": cls["class_embeddings"],
            "image_embeds": image["feature_map"],
            "query_embeds": queries,
        }
        if "objectness_logits" in image:
            out["objectness_logits"] = image["objectness_logits"]
        return {k: np.asarray(v) for k, v in out.items()}


def _image_by_image(module: OwlViT, params: Any, pixels: jax.Array, *, keep_features: bool):
    """`OwlViT.embed_image` over a batch; on CPU one image at a time, inside the one program.

    On XLA:CPU a batch of B images costs more than B single images (measured with
    benchmarks/forward.py, B/16 at 768: 4.0 s per image at batch 4 against 2.5 s at batch 1; the
    working set of a batched layer no longer fits the caches) and holds B times the activations.
    `lax.map` runs the single-image program B times, so a batch costs B single images and the
    activations of one. Accelerators keep the batched program, which is what they are fast at.
    """

    def one(x: jax.Array) -> dict[str, jax.Array]:
        out = module.apply({"params": params}, x, method="embed_image")
        return {k: v for k, v in out.items() if keep_features or k not in FEATURE_KEYS}

    if jax.default_backend() != "cpu" or pixels.shape[0] == 1:
        return one(pixels)
    out = jax.lax.map(lambda x: one(x[None]), pixels)  # [B, 1, ...]
    return {k: v[:, 0] for k, v in out.items()}
