"""The OWL-ViT / OWLv2 detector in Flax: CLIP backbone, class-token merge and the detection heads.

Module and parameter names equal the current official scenic tree (`owl_vit/models.py`,
`layers.py`), so an official checkpoint is a valid `params` tree for `OwlViT` after the naming-era
fix-ups in `owl.checkpoints`:

    backbone/clip/{visual,text,logit_scale}, backbone/merged_class_token,
    class_head/{Dense_0,logit_shift,logit_scale}, obj_box_head/Dense_{0,1,2},
    objectness_head/Dense_{0,1,2} (OWLv2 only)

The detector is a set of stages that can be applied (and jitted) on their own, because inference
caches them: `embed_image` (pixels -> features, boxes, class embeddings, objectness),
`embed_text` (tokens -> query embeddings) and `class_predictor` (features x queries -> logits).

We follow the official numerics, not transformers' where the two differ (spec §10; transformers
notes §7). Each difference is small and documented where it occurs:
  * box and objectness MLPs use the tanh-approximate GELU (transformers: exact erf GELU);
  * the merged-class-token LayerNorm has epsilon 1e-6 (transformers: 1e-5);
  * padding queries get logit -1e6 (transformers: float32 min);
  * query embeddings are normalised once, with +1e-6 on the norm (transformers normalises twice).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from owl.models.clip import CLIP
from owl.models.configs import ModelConfig

MERGE_LN_EPSILON = (
    1e-6  # Flax's default LayerNorm epsilon, as in the official `merged_class_token`.
)
QUERY_MASK_VALUE = -1e6  # logit given to padding queries (official value)
NORM_EPSILON = 1e-6  # added to L2 norms in the class head
PRIOR_PROB = 0.01  # initial foreground probability of new class heads (training only)


@functools.lru_cache(maxsize=32)
def compute_box_bias(grid_h: int, grid_w: int) -> np.ndarray:
    """Per-patch box bias (inverse-sigmoid prior box), float32 [grid_h * grid_w, 4] (cx, cy, w, h).

    The location prior of the patch in row i, column j is its bottom-right corner
    ((j + 1) / w, (i + 1) / h), the size prior is 1 / grid width for both sides, each mapped through
    logit(t) = ln(t + 1e-4) - ln(1 - t + 1e-4) (spec §1.6). Computed once in NumPy, so under jit it
    is a constant. Patches are in row-major order, x before y.

    The arithmetic is float32, which reproduces the official reference values (last column 9.2103;
    float64 would give 9.2104) and transformers' float32 buffer.
    """
    f32 = np.float32
    xs = np.arange(1, grid_w + 1, dtype=f32) / f32(grid_w)
    ys = np.arange(1, grid_h + 1, dtype=f32) / f32(grid_h)
    xx, yy = np.meshgrid(xs, ys, indexing="xy")
    xy = np.clip(np.stack([xx, yy], axis=-1).reshape(-1, 2), f32(0), f32(1))
    size = np.full_like(xy, f32(1) / f32(grid_w))

    def logit(t: np.ndarray) -> np.ndarray:
        return np.log(t + f32(1e-4)) - np.log1p(-t + f32(1e-4))

    return np.concatenate([logit(xy), logit(size)], axis=-1).astype(np.float32)


class PredictorMLP(nn.Module):
    """MLP head `Dense_0 .. Dense_{n-1}` with tanh-GELU between layers (box and objectness heads).

    The hidden width equals the input width. The last layer starts at zero (training only), so a
    new box head predicts exactly the box bias.
    """

    out_dim: int
    num_layers: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        for i in range(self.num_layers - 1):
            x = nn.gelu(nn.Dense(width, name=f"Dense_{i}")(x), approximate=True)
        last = f"Dense_{self.num_layers - 1}"
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros, name=last)(x)


def normalize(x: jax.Array) -> jax.Array:
    """x / (|x| + 1e-6) along the last axis: the class head's normalisation (eps on the norm)."""
    return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + NORM_EPSILON)


def score_queries(
    class_embeddings: jax.Array,
    logit_shift: jax.Array,
    logit_scale: jax.Array,
    query_embeddings: jax.Array,
    query_mask: jax.Array | None = None,
) -> jax.Array:
    """Class-head logits from the image-only terms and query embeddings.

    Args:
      class_embeddings: [..., P, E] normalised patch embeddings.
      logit_shift: [..., P] per-patch shift.
      logit_scale: [..., P] per-patch scale (already elu(.) + 1).
      query_embeddings: [..., Q, E], normalised here.
      query_mask: [..., Q], 0 for padding queries (logit -1e6); None: all real.
    Returns:
      logits [..., P, Q] = (cos + shift) * scale.
    """
    logits = jnp.einsum("...pd,...qd->...pq", class_embeddings, normalize(query_embeddings))
    logits = (logits + logit_shift[..., None]) * logit_scale[..., None]
    if query_mask is not None:
        logits = jnp.where(query_mask[..., None, :] == 0, QUERY_MASK_VALUE, logits)
    return logits


class ClassPredictor(nn.Module):
    """Open-vocabulary class head: scores each patch against query embeddings.

    logits = (cos(Dense_0(x), q) + logit_shift(x)) * (elu(logit_scale(x)) + 1), with both
    vectors L2-normalised as v / (|v| + 1e-6). Padding queries (query_mask == 0) get -1e6.
    The image-only terms (`image_terms`) are separable from the queries, so inference caches
    them and scores any number of query sets with `score_queries`.
    """

    embed_dim: int

    def setup(self) -> None:
        prior_bias = float(np.log(PRIOR_PROB / (1 - PRIOR_PROB)))
        self.Dense_0 = nn.Dense(self.embed_dim, kernel_init=nn.initializers.normal(1e-6))
        self.logit_shift = nn.Dense(1, bias_init=nn.initializers.constant(prior_bias))
        self.logit_scale = nn.Dense(1)

    def image_terms(self, image_features: jax.Array) -> dict[str, jax.Array]:
        """[B, P, W] -> unnormalised class_embeddings [B, P, E], logit_shift and logit_scale [B, P]."""
        return {
            "class_embeddings": self.Dense_0(image_features),
            "logit_shift": self.logit_shift(image_features)[..., 0],
            "logit_scale": nn.elu(self.logit_scale(image_features)[..., 0]) + 1.0,
        }

    def __call__(
        self,
        image_features: jax.Array,
        query_embeddings: jax.Array | None = None,
        query_mask: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Scores patches against queries.

        Args:
          image_features: [B, P, W] merged patch features.
          query_embeddings: [B, Q, E] (unnormalised is fine), or None for embeddings only.
          query_mask: [B, Q], nonzero for real queries; None means all real.
        Returns:
          {"class_embeddings": [B, P, E]} without queries (unnormalised), or additionally
          {"pred_logits": [B, P, Q]} with queries, and then class_embeddings are normalised.
        """
        if query_embeddings is None:
            return {"class_embeddings": self.Dense_0(image_features)}
        terms = self.image_terms(image_features)
        emb = normalize(terms["class_embeddings"])
        logits = score_queries(
            emb, terms["logit_shift"], terms["logit_scale"], query_embeddings, query_mask
        )
        return {"pred_logits": logits, "class_embeddings": emb}


class ImageTextEmbedder(nn.Module):
    """The backbone: CLIP towers plus the `merged_class_token` LayerNorm ("mul-ln" merge)."""

    config: ModelConfig
    vision_drop_path: float = 0.0
    text_drop_path: float = 0.0

    def setup(self) -> None:
        self.clip = CLIP(self.config, self.vision_drop_path, self.text_drop_path)
        self.merged_class_token = nn.LayerNorm(epsilon=MERGE_LN_EPSILON)

    def embed_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        """[B, S, S, 3] normalised pixels -> feature map [B, g, g, W].

        Every patch token is multiplied by the class token, then LayerNorm'd (spec §1.3).
        """
        tokens = self.clip.encode_image(images, train)
        merged = self.merged_class_token(tokens[:, 1:] * tokens[:, :1])
        b, n, w = merged.shape
        h, wd = _grid_shape(images.shape[1], images.shape[2], self.config.patch_size)
        assert h * wd == n
        return merged.reshape(b, h, wd, w)

    def embed_text(self, input_ids: jax.Array, train: bool = False) -> jax.Array:
        """[..., L] token ids -> unnormalised query embeddings [..., E]."""
        lead = input_ids.shape[:-1]
        flat = input_ids.reshape(-1, input_ids.shape[-1])
        return self.clip.encode_text(flat, train).reshape(*lead, -1)


def _grid_shape(height: int, width: int, patch: int) -> tuple[int, int]:
    return -(-height // patch), -(-width // patch)


class OwlViT(nn.Module):
    """OWL-ViT (v1) and OWLv2 detector; OWLv2 adds the objectness head (`config.objectness`).

    Attributes:
      config: architecture.
      vision_drop_path, text_drop_path: stochastic depth rates (training only).
    """

    config: ModelConfig
    vision_drop_path: float = 0.0
    text_drop_path: float = 0.0

    def setup(self) -> None:
        c = self.config
        self.backbone = ImageTextEmbedder(c, self.vision_drop_path, self.text_drop_path)
        self.class_head = ClassPredictor(embed_dim=c.embed_dim)
        self.obj_box_head = PredictorMLP(out_dim=4)
        if c.objectness:
            self.objectness_head = PredictorMLP(out_dim=1)

    # -- stages --------------------------------------------------------------------------------

    def image_embedder(self, images: jax.Array, train: bool = False) -> jax.Array:
        """[B, S, S, 3] normalised pixels -> feature map [B, g, g, W]."""
        return self.backbone.embed_image(images, train)

    def text_embedder(self, input_ids: jax.Array, train: bool = False) -> jax.Array:
        """[..., 16] token ids -> unnormalised query embeddings [..., E]."""
        return self.backbone.embed_text(input_ids, train)

    def class_predictor(
        self,
        image_features: jax.Array,
        query_embeddings: jax.Array | None = None,
        query_mask: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """See `ClassPredictor`."""
        return self.class_head(image_features, query_embeddings, query_mask)

    def box_predictor(self, image_features: jax.Array, grid_shape: tuple[int, int]) -> jax.Array:
        """[B, P, W] features -> boxes [B, P, 4] (cx, cy, w, h) in [0, 1] of the padded input."""
        bias = jnp.asarray(compute_box_bias(*grid_shape))
        return jax.nn.sigmoid(self.obj_box_head(image_features) + bias)

    def objectness_predictor(self, image_features: jax.Array) -> jax.Array:
        """[B, P, W] features -> objectness logits [B, P] (OWLv2; query independent).

        The head's input gradient is stopped, as in the official OWLv2 configs.
        """
        return self.objectness_head(jax.lax.stop_gradient(image_features))[..., 0]

    def embed_image(self, images: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Everything that depends only on the image: the part inference caches.

        Returns:
          feature_map [B, g, g, W], image_features [B, P, W], pred_boxes [B, P, 4],
          class_embeddings [B, P, E] (unnormalised), the class head's logit_shift and logit_scale
          [B, P] (see `score_queries`) and, for OWLv2, objectness_logits [B, P].
        """
        fmap = self.image_embedder(images, train)
        b, h, w, d = fmap.shape
        feats = fmap.reshape(b, h * w, d)
        out = {
            "feature_map": fmap,
            "image_features": feats,
            "pred_boxes": self.box_predictor(feats, (h, w)),
            **self.class_head.image_terms(feats),
        }
        if self.config.objectness:
            out["objectness_logits"] = self.objectness_predictor(feats)
        return out

    def __call__(
        self, images: jax.Array, input_ids: jax.Array, train: bool = False
    ) -> dict[str, jax.Array]:
        """Full forward pass.

        Args:
          images: [B, S, S, 3] CLIP-normalised pixels.
          input_ids: [B, Q, 16] token ids (rows of zeros are padding queries).
        Returns:
          The `embed_image` outputs plus pred_logits [B, P, Q], query_embeddings [B, Q, E], and
          class_embeddings normalised (as the class head returns them with queries).
        """
        queries = self.text_embedder(input_ids, train)
        return self.detect(images, queries, input_ids[..., 0] > 0, train)

    def detect(
        self,
        images: jax.Array,
        query_embeddings: jax.Array,
        query_mask: jax.Array,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        """Forward pass with query embeddings computed elsewhere (e.g. once per training batch).

        Args:
          images: [B, S, S, 3] CLIP-normalised pixels.
          query_embeddings: [B, Q, E] unnormalised query embeddings.
          query_mask: [B, Q], False for padding queries.
        Returns:
          As `__call__`.
        """
        out = self.embed_image(images, train)
        cls = self.class_predictor(out["image_features"], query_embeddings, query_mask)
        return {**out, **cls, "query_embeddings": query_embeddings}


def param_shapes(config: ModelConfig) -> dict:
    """Nested dict of the parameter shapes of `OwlViT(config)`, computed without FLOPs."""
    module = OwlViT(config)
    images = jax.ShapeDtypeStruct((1, config.image_size, config.image_size, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, 1, config.context_length), jnp.int32)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), images, ids)
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), dict(variables["params"]))


def init_params(config: ModelConfig, rng: jax.Array) -> dict:
    """Freshly initialised parameters (new heads: zero last box layer, class prior 0.01)."""
    module = OwlViT(config)
    images = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    ids = jnp.zeros((1, 1, config.context_length), jnp.int32)
    return jax.jit(module.init)(rng, images, ids)["params"]
