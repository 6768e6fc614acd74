"""Blocked (online-softmax) attention equals plain attention, and the dispatcher picks by length."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from owl.models import attention as attn
from owl.models.clip import text_attention_mask
from owl.models.configs import get_variant
from owl.models.model import OwlModel
from owl.train.init import init_params


def _qkv(rng, batch, nq, nk, heads=3, depth=8, scale=3.0):
    q = rng.normal(size=(*batch, nq, heads, depth)) * scale  # large scores test the running max
    k = rng.normal(size=(*batch, nk, heads, depth)) * scale
    v = rng.normal(size=(*batch, nk, heads, depth))
    return [jnp.asarray(x, jnp.float32) for x in (q, k, v)]


@pytest.mark.parametrize("length", [1, 5, 16, 17, 63, 64, 65, 130, 577])
def test_blocked_equals_plain_across_lengths(length):
    q, k, v = _qkv(np.random.default_rng(length), (2,), length, length)
    want = attn.plain_attention(q, k, v)
    got = attn.blocked_attention(q, k, v, q_block=16, k_block=32)
    assert got.shape == want.shape == (2, length, 3, 8)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


@pytest.mark.parametrize("nq,nk", [(7, 50), (50, 7), (33, 100)])
def test_blocked_cross_attention_lengths(nq, nk):
    q, k, v = _qkv(np.random.default_rng(nq * nk), (1, 2), nq, nk)  # two batch axes
    want = attn.plain_attention(q, k, v)
    got = attn.blocked_attention(q, k, v, q_block=8, k_block=16)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_blocked_with_text_masks_including_fully_masked_rows():
    # Text-tower masks: causal, padding keys and padding query rows (every key masked).
    ids = np.array([[49406, 320, 1125, 49407, 0, 0, 0, 0, 0, 0, 0],
                    [49406, 320, 1125, 2368, 1929, 533, 49407, 0, 0, 0, 0],
                    [49406, 49407, 0, 0, 0, 0, 0, 0, 0, 0, 0]])  # fmt: skip
    mask = text_attention_mask(jnp.asarray(ids))  # [3, 1, 11, 11]
    q, k, v = _qkv(np.random.default_rng(0), (3,), 11, 11)
    want = attn.plain_attention(q, k, v, mask=mask)
    for q_block, k_block in [(4, 4), (3, 5), (11, 11)]:
        got = attn.blocked_attention(q, k, v, mask, q_block=q_block, k_block=k_block)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
    # A fully masked query row averages all values, as Flax's plain attention does.
    np.testing.assert_allclose(
        np.asarray(got)[0, 5], np.asarray(v)[0].mean(axis=0), atol=1e-5, rtol=0
    )


def test_blocked_with_per_head_mask():
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, (2,), 40, 40)
    mask = jnp.asarray(rng.random((2, 3, 40, 40)) > 0.3)
    want = attn.plain_attention(q, k, v, mask=mask)
    got = attn.blocked_attention(q, k, v, mask, q_block=16, k_block=16)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)


def test_even_blocks_split_lengths_evenly():
    assert attn._even_block(3601, 1024) == 904  # 4 blocks, 15 padded keys instead of 495
    assert attn._even_block(577, 1024) == 577
    assert attn._even_block(16, 128) == 16
    assert attn._even_block(2305, 128) == 128


def test_choose_by_length_and_environment(monkeypatch):
    monkeypatch.delenv("OWL_ATTENTION", raising=False)
    assert attn.choose(16, "cpu") == "plain"
    assert attn.choose(attn.BLOCKED_MIN_LENGTH - 1, "cpu") == "plain"
    assert attn.choose(attn.BLOCKED_MIN_LENGTH, "cpu") == "blocked"
    assert attn.choose(16, "gpu") == "cudnn"
    monkeypatch.setenv("OWL_ATTENTION", "plain")
    assert attn.choose(5000, "cpu") == "plain"
    monkeypatch.setenv("OWL_ATTENTION", "fast")
    with pytest.raises(ValueError, match="OWL_ATTENTION='fast'"):
        attn.choose(5000, "cpu")


def test_image_tower_blocked_equals_plain(monkeypatch):
    # A tiny detector at 368 px with patch 16: 1 + 23 * 23 = 530 tokens, past the blocked threshold.
    config = dataclasses.replace(get_variant("tiny-owlv2"), image_size=368, patch_size=16)
    model = OwlModel(config, init_params(config, jax.random.key(0)))
    pixels = np.random.default_rng(0).normal(size=(1, 368, 368, 3)).astype(np.float32)
    outputs = {}
    for form in ("plain", "blocked"):
        monkeypatch.setenv("OWL_ATTENTION", form)
        model = OwlModel(config, model.params)  # fresh jit: the form is chosen at trace time
        outputs[form] = jax.device_get(model.embed_image(pixels, features=False))
    for key in ("pred_boxes", "class_embeddings", "objectness_logits", "logit_shift"):
        np.testing.assert_allclose(outputs["blocked"][key], outputs["plain"][key], atol=1e-5)
