"""CLIP image and text towers in Flax, with the module names of the official OWL checkpoints.

The layout follows scenic's `owl_vit/clip/layers.py` so that official parameter trees load without
renaming: `visual/{conv1, class_embedding, positional_embedding, ln_pre, transformer, ln_post}` and
`text/{token_embedding, positional_embedding, transformer, ln_final, text_projection}`, blocks named
`resblocks_{i}` with LayerNorms `ln_0` (before attention) and `ln_1` (before the MLP).

Numerics that matter for parity (spec §1.2, §1.4, §10):
  * every LayerNorm here has epsilon 1e-5 (PyTorch's default, which CLIP was trained with);
  * the MLP activation is QuickGELU, x * sigmoid(1.702 x), not GELU;
  * the vision tower applies `ln_post` to every token and has no visual projection (OWL drops it);
  * text attention is causal and ignores padding (id 0); the text embedding is taken at the
    position of the largest token id (the end token) and projected without bias, unnormalised.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from owl.models.attention import attention
from owl.models.configs import ModelConfig

LN_EPSILON = 1e-5


def quick_gelu(x: jax.Array) -> jax.Array:
    """CLIP's activation: x * sigmoid(1.702 x)."""
    return x * jax.nn.sigmoid(1.702 * x)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPSILON, name=name)


def _drop_branch(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Stochastic depth as in scenic: zero a residual branch per example, without rescaling."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x * keep.astype(x.dtype)


class MLP(nn.Module):
    """Transformer MLP: Dense `c_fc` (W -> 4W), QuickGELU, Dense `c_proj` (4W -> W)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        x = nn.Dense(4 * width, name="c_fc")(x)
        return nn.Dense(width, name="c_proj")(quick_gelu(x))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_0(x)), then x + mlp(ln_1(x)).

    Attributes:
      num_heads: attention heads.
      drop_rate: stochastic-depth probability of this block (training only).
    """

    num_heads: int
    drop_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False):
        y = _layer_norm("ln_0")(x)
        y = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, attention_fn=attention, name="attn"
        )(y, y, mask=mask, deterministic=True)
        if train and self.drop_rate > 0:
            y = _drop_branch(y, self.drop_rate, self.make_rng("dropout"))
        x = x + y
        y = MLP(name="mlp")(_layer_norm("ln_1")(x))
        if train and self.drop_rate > 0:
            y = _drop_branch(y, self.drop_rate, self.make_rng("dropout"))
        return x + y


class Transformer(nn.Module):
    """A stack of `num_layers` residual blocks named `resblocks_{i}`.

    Block i of L drops its branches with probability (i / max(L - 1, 1)) * drop_path_rate.
    """

    num_layers: int
    num_heads: int
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None, train: bool = False):
        for i in range(self.num_layers):
            rate = i / max(self.num_layers - 1, 1) * self.drop_path_rate
            x = ResidualAttentionBlock(self.num_heads, rate, name=f"resblocks_{i}")(x, mask, train)
        return x


class VisionTransformer(nn.Module):
    """CLIP ViT image tower returning every token after `ln_post` ([B, 1 + g*g, W]).

    Attributes:
      patch_size, width, num_layers, num_heads: the architecture.
      posemb_grid_size: grid side the position embedding has rows for. Inputs with a smaller grid
        use its top-left block (posemb truncation, OWLv2's variable resolution, spec §1.12).
      drop_path_rate: stochastic depth (training only).
    """

    patch_size: int
    width: int
    num_layers: int
    num_heads: int
    posemb_grid_size: int
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        p = self.patch_size
        # SAME padding as the official conv; identical to plain patches when S is a multiple of p.
        x = nn.Conv(self.width, (p, p), strides=(p, p), use_bias=False, padding="SAME",
                    name="conv1")(images)  # fmt: skip
        b, h, w, _ = x.shape
        x = x.reshape(b, h * w, self.width)  # row-major patches: row outer, column inner

        scale = self.width**-0.5
        cls = self.param("class_embedding", nn.initializers.normal(scale), (self.width,))
        g = self.posemb_grid_size
        posemb = self.param(
            "positional_embedding", nn.initializers.normal(scale), (g * g + 1, self.width)
        )
        if (h, w) != (g, g):
            if h > g or w > g:
                raise ValueError(
                    f"input grid {h}x{w} is larger than the position embedding's {g}x{g}; "
                    f"use an input of at most {g * p} px"
                )
            grid = posemb[1:].reshape(g, g, self.width)[:h, :w].reshape(h * w, self.width)
            posemb = jnp.concatenate([posemb[:1], grid], axis=0)

        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)).astype(x.dtype), x], 1)
        x = x + posemb[None].astype(x.dtype)
        x = _layer_norm("ln_pre")(x)
        x = Transformer(self.num_layers, self.num_heads, self.drop_path_rate, name="transformer")(
            x, train=train
        )
        return _layer_norm("ln_post")(x)


def text_attention_mask(input_ids: jax.Array) -> jax.Array:
    """Causal mask AND key-is-not-padding AND query-is-not-padding; padding is id 0.

    Args:
      input_ids: int [N, L].
    Returns:
      bool [N, 1, L, L] for Flax attention (True = may attend).
    """
    length = input_ids.shape[-1]
    causal = jnp.tril(jnp.ones((length, length), dtype=bool))
    valid = input_ids > 0
    mask = causal[None] & valid[:, None, :] & valid[:, :, None]
    return mask[:, None]


class TextEncoder(nn.Module):
    """CLIP text tower: token ids [N, L] -> unnormalised query embeddings [N, E], L <= context.

    Attributes:
      vocab_size, context_length, width, num_layers, num_heads, embed_dim: the architecture.
      drop_path_rate: stochastic depth (training only).
    """

    vocab_size: int
    context_length: int
    width: int
    num_layers: int
    num_heads: int
    embed_dim: int
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, input_ids: jax.Array, train: bool = False) -> jax.Array:
        length = input_ids.shape[-1]
        if length > self.context_length:
            raise ValueError(
                f"text input has {length} tokens per query, more than the model's context of "
                f"{self.context_length}"
            )
        x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                     name="token_embedding")(input_ids)  # fmt: skip
        posemb = self.param(
            "positional_embedding", nn.initializers.normal(0.01),
            (self.context_length, self.width),
        )  # fmt: skip
        # A shorter input (trailing padding cut off) gives the same embedding: attention is causal
        # and the embedding is read at the end token, so later positions never contribute.
        posemb = posemb[:length]
        x = x + posemb[None]
        x = Transformer(self.num_layers, self.num_heads, self.drop_path_rate, name="transformer")(
            x, mask=text_attention_mask(input_ids), train=train
        )
        x = _layer_norm("ln_final")(x)
        pooled = jnp.take_along_axis(x, jnp.argmax(input_ids, axis=-1)[:, None, None], axis=1)
        return nn.Dense(self.embed_dim, use_bias=False, name="text_projection")(pooled[:, 0])


class CLIP(nn.Module):
    """The two CLIP towers plus the contrastive `logit_scale` (used only for pretraining).

    Attributes:
      config: the architecture (`owl.models.configs.ModelConfig`).
      vision_drop_path, text_drop_path: stochastic depth rates (training only).
    """

    config: ModelConfig
    vision_drop_path: float = 0.0
    text_drop_path: float = 0.0

    def setup(self) -> None:
        c = self.config
        self.visual = VisionTransformer(
            patch_size=c.patch_size, width=c.vision_width, num_layers=c.vision_layers,
            num_heads=c.vision_heads, posemb_grid_size=c.posemb_grid_size,
            drop_path_rate=self.vision_drop_path,
        )  # fmt: skip
        self.text = TextEncoder(
            vocab_size=c.vocab_size, context_length=c.context_length, width=c.text_width,
            num_layers=c.text_layers, num_heads=c.text_heads, embed_dim=c.embed_dim,
            drop_path_rate=self.text_drop_path,
        )  # fmt: skip
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)), ())

    def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        """[B, S, S, 3] normalised pixels -> all tokens after ln_post [B, 1 + g*g, W]."""
        return self.visual(images, train=train)

    def encode_text(self, input_ids: jax.Array, train: bool = False) -> jax.Array:
        """[N, L] token ids -> unnormalised embeddings [N, E]."""
        return self.text(input_ids, train=train)

    def __call__(self, images: jax.Array, input_ids: jax.Array, train: bool = False):
        return self.encode_image(images, train), self.encode_text(input_ids, train)
