"""Scaled dot-product attention for the CLIP towers: plain, blocked (online softmax) or cuDNN.

Plain attention materialises the [heads, N, N] score matrix. At OWLv2's 3601 tokens that is
155 M floats per layer, and on XLA:CPU the softmax over it, not the matmuls, dominated the
forward (2 s of a layer's ~2.3 s). `blocked_attention` walks query blocks and, within each, key
blocks with a running max and sum (the online softmax of Rabe & Staats 2021 and flash attention),
so only [heads, q_block, k_block] scores exist at a time and they stay in cache.

`attention` is what the towers call (as Flax's `attention_fn`). It picks:
  * on GPU, `jax.nn.dot_product_attention(implementation="cudnn")` where cuDNN takes the shapes,
    else XLA's;
  * on CPU, the blocked form from `BLOCKED_MIN_LENGTH` keys on (measured faster there; see
    benchmarks/attention.py), else Flax's plain attention, so that short sequences (the text
    tower, tiny test models) keep exactly the numerics parity was established with.

Every form takes Flax's layout: query, key, value [batch..., length, heads, depth], an optional
boolean mask broadcastable to [batch..., heads, q_length, k_length] (True = may attend) and
returns [batch..., q_length, heads, depth]. Masked scores are set to the dtype's lowest finite
value, as Flax does, so a query row with every key masked averages all values in every form.
"""

from __future__ import annotations

import functools
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

# Measured per transformer layer on the 2-core AVX-512 CPU (`python benchmarks/attention.py`):
# with 128-query and 1024-key blocks the blocked form took 30 / 63 / 241 / 509 ms at 577 / 1025 /
# 2305 / 3601 tokens against plain attention's 67 / 127 / 514 / 1399 ms. Smaller key blocks lose
# XLA:CPU's intra-op threading (the loop body becomes too small to split over cores); larger ones
# fall out of cache. Text (16 tokens) and tiny test models stay plain.
BLOCKED_MIN_LENGTH = 512
Q_BLOCK = 128
K_BLOCK = 1024

# OWL_ATTENTION=plain|blocked|cudnn|auto overrides the choice (benchmarks and debugging).
_ENV = "OWL_ATTENTION"


def plain_attention(query, key, value, mask=None, dtype=None, precision=None):
    """Flax's `dot_product_attention`: the full [heads, Nq, Nk] softmax (the reference)."""
    return nn.dot_product_attention(
        query, key, value, mask=mask, dtype=dtype, precision=precision, deterministic=True
    )


def blocked_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    mask: jax.Array | None = None,
    *,
    q_block: int | None = None,
    k_block: int | None = None,
    precision=None,
) -> jax.Array:
    """Attention computed block by block with an online softmax; equal to `plain_attention`.

    Query and key lengths need not be multiples of the blocks: they are padded, padded keys get
    -inf (they never receive weight) and padded query rows are cut off at the end.

    Args:
      query: [..., Nq, H, D]; key, value: [..., Nk, H, D].
      mask: optional bool, broadcastable to [..., H, Nq, Nk]; True = may attend.
      q_block, k_block: block sizes (clipped to the lengths).
      precision: matmul precision (as for `jnp.einsum`).
    Returns:
      [..., Nq, H, D] in the query's dtype; accumulation is in float32.
    """
    *batch, nq, heads, depth = query.shape
    nk = key.shape[-3]
    q_block, k_block = _even_block(nq, q_block or Q_BLOCK), _even_block(nk, k_block or K_BLOCK)
    n_qb, n_kb = -(-nq // q_block), -(-nk // k_block)
    flat = math.prod(batch)
    out_dtype = query.dtype

    def blocks(x, n_blocks, size):  # [..., N, H, D] -> [n_blocks, B, H, size, D]
        x = x.reshape(flat, x.shape[-3], heads, depth)
        x = jnp.pad(x, ((0, 0), (0, n_blocks * size - x.shape[1]), (0, 0), (0, 0)))
        return x.reshape(flat, n_blocks, size, heads, depth).transpose(1, 0, 3, 2, 4)

    scale = jnp.asarray(depth**-0.5, query.dtype)
    qb = blocks(query * scale, n_qb, q_block)
    kb, vb = blocks(key, n_kb, k_block), blocks(value, n_kb, k_block)
    key_real = (jnp.arange(n_kb * k_block) < nk).reshape(n_kb, k_block)
    if mask is not None:
        mask = jnp.broadcast_to(mask, (*batch, heads, nq, nk)).reshape(flat, heads, nq, nk)
        mask = jnp.pad(mask, ((0, 0), (0, 0), (0, n_qb * q_block - nq), (0, n_kb * k_block - nk)))
        mask = mask.reshape(flat, heads, n_qb, q_block, n_kb, k_block).transpose(2, 4, 0, 1, 3, 5)
    big_neg = jnp.finfo(jnp.float32).min
    einsum = functools.partial(jnp.einsum, precision=precision, preferred_element_type=jnp.float32)

    def one_query_block(args):
        q, q_mask = args  # [B, H, q, D], [n_kb, B, H, q, k] or None

        def step(carry, xs):
            m, denom, acc = carry
            k, v, real, k_mask = xs
            s = einsum("bhqd,bhkd->bhqk", q, k)
            if k_mask is not None:
                s = jnp.where(k_mask, s, big_neg)
            s = jnp.where(real, s, -jnp.inf)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            correction = jnp.exp(m - m_new)
            denom = denom * correction + p.sum(-1)
            acc = acc * correction[..., None] + einsum("bhqk,bhkd->bhqd", p.astype(v.dtype), v)
            return (m_new, denom, acc), None

        init = (
            jnp.full((flat, heads, q_block), -jnp.inf, jnp.float32),
            jnp.zeros((flat, heads, q_block), jnp.float32),
            jnp.zeros((flat, heads, q_block, depth), jnp.float32),
        )
        (_, denom, acc), _ = jax.lax.scan(step, init, (kb, vb, key_real, q_mask))
        return (acc / denom[..., None]).astype(out_dtype)

    out = jax.lax.map(one_query_block, (qb, mask))  # [n_qb, B, H, q, D]
    out = out.transpose(1, 0, 3, 2, 4).reshape(flat, n_qb * q_block, heads, depth)[:, :nq]
    return out.reshape(*batch, nq, heads, depth)


def _even_block(length: int, target: int) -> int:
    """The block size near `target` that splits `length` into equal blocks (multiple of 8)."""
    n_blocks = -(-length // target)
    per_block = -(-length // n_blocks)
    return min(length, -(-per_block // 8) * 8)


def _cudnn_or_xla(query, key, value, mask):
    try:
        return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="cudnn")
    except Exception:  # cuDNN missing, or shapes/dtypes it does not take
        return jax.nn.dot_product_attention(query, key, value, mask=mask, implementation="xla")


def choose(length: int, backend: str | None = None) -> str:
    """The attention form used for `length` keys: "plain", "blocked" or "cudnn"."""
    forced = os.environ.get(_ENV, "auto").strip().lower()
    if forced not in ("auto", ""):
        if forced not in ("plain", "blocked", "cudnn"):
            raise ValueError(f"{_ENV}={forced!r}: use plain, blocked, cudnn or auto")
        return forced
    backend = backend or jax.default_backend()
    if backend == "gpu":
        return "cudnn"
    return "blocked" if length >= BLOCKED_MIN_LENGTH else "plain"


def attention(query, key, value, bias=None, mask=None, dtype=None, precision=None, **_unused):
    """Flax `attention_fn`: dispatches to the form `choose` picks for this key length.

    Dropout arguments are ignored: the towers never use attention dropout.
    """
    if bias is not None:
        raise ValueError("attention bias is not supported; pass a boolean mask")
    form = choose(key.shape[-3])
    if form == "cudnn":
        return _cudnn_or_xla(query, key, value, mask)
    if form == "blocked":
        return blocked_attention(query, key, value, mask, precision=precision)
    return plain_attention(query, key, value, mask=mask, dtype=dtype, precision=precision)
