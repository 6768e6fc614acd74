"""Tests of the Flax detector's building blocks: box bias, shapes, masks, posemb truncation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from owl.models.clip import text_attention_mask
from owl.models.configs import get_variant
from owl.models.owl_vit import OwlViT, compute_box_bias, init_params, param_shapes


def test_box_bias_matches_official_reference_values():
    # Reference values from the official owl_vit/tests/utils_test.py (spec §1.6), 3x3 grid.
    bias = compute_box_bias(3, 3)
    assert bias.shape == (9, 4) and bias.dtype == np.float32
    np.testing.assert_allclose(bias[0], [-0.69299614, -0.69299614, -0.692997, -0.692997], atol=2e-6)
    last_column = bias.reshape(3, 3, 4)[:, 2, 0]
    np.testing.assert_allclose(last_column, 9.2103, atol=1e-4)
    for grid, size_bias in [
        (3, -0.6930),
        (24, -3.1332),
        (48, -3.8455),
        (60, -4.0717),
        (72, -4.2556),
    ]:
        np.testing.assert_allclose(compute_box_bias(grid, grid)[:, 2:], size_bias, atol=1e-4)


def test_box_bias_is_row_major_with_bottom_right_corners():
    h, w = 2, 4
    bias = compute_box_bias(h, w)
    centres = 1 / (1 + np.exp(-bias[:, :2].astype(np.float64)))
    # sigmoid(logit(t)) recovers t up to the 1e-4 epsilon.
    expected = np.array([[(j + 1) / w, (i + 1) / h] for i in range(h) for j in range(w)])
    np.testing.assert_allclose(centres, expected, atol=3e-4)
    # The size prior uses the grid width for both sides (official quirk).
    np.testing.assert_allclose(1 / (1 + np.exp(-bias[:, 2:].astype(np.float64))), 1 / w, atol=3e-4)


def test_b32_at_224_output_shapes_without_flops():
    # Mirrors the official models_test: B/32 at 224 px gives a 7x7 map and 49 class embeddings.
    cfg = get_variant("owlvit-b32").replace(image_size=224)
    module = OwlViT(cfg)
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((2, 5, 16), jnp.int32)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), images, ids)
    out = jax.eval_shape(module.apply, variables, images, ids)
    assert out["feature_map"].shape == (2, 7, 7, 768)
    assert out["class_embeddings"].shape == (2, 49, 512)
    assert out["pred_logits"].shape == (2, 49, 5)
    assert out["pred_boxes"].shape == (2, 49, 4)
    assert "objectness_logits" not in out


@pytest.mark.parametrize(
    "name", ["owlvit-b32", "owlvit-b16", "owlvit-l14", "owlv2-b16", "owlv2-l14"]
)
def test_official_variant_parameter_shapes(name):
    cfg = get_variant(name)
    shapes = param_shapes(cfg)
    visual = shapes["backbone"]["clip"]["visual"]
    g = cfg.image_size // cfg.patch_size
    assert visual["positional_embedding"] == (g * g + 1, cfg.vision_width)
    assert visual["conv1"]["kernel"] == (cfg.patch_size, cfg.patch_size, 3, cfg.vision_width)
    assert "bias" not in visual["conv1"]
    block = visual["transformer"]["resblocks_0"]
    assert block["attn"]["query"]["kernel"] == (cfg.vision_width, cfg.vision_heads, 64)
    assert len(visual["transformer"]) == cfg.vision_layers
    assert shapes["backbone"]["clip"]["text"]["positional_embedding"] == (16, cfg.text_width)
    assert shapes["backbone"]["clip"]["text"]["text_projection"] == {
        "kernel": (cfg.text_width, cfg.embed_dim)
    }
    assert shapes["class_head"]["Dense_0"]["kernel"] == (cfg.vision_width, cfg.embed_dim)
    assert ("objectness_head" in shapes) == name.startswith("owlv2")


def test_text_attention_mask_is_causal_and_ignores_padding():
    ids = jnp.array([[49406, 320, 49407, 0], [0, 0, 0, 0]])
    mask = np.asarray(text_attention_mask(ids))[:, 0]
    expected0 = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(mask[0], expected0)
    assert not mask[1].any()


@pytest.fixture(scope="module")
def tiny():
    cfg = get_variant("tiny-owlv2")
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


def test_padding_queries_are_masked_and_real_ones_are_not(tiny):
    cfg, params = tiny
    module = OwlViT(cfg)
    images = jax.random.normal(jax.random.PRNGKey(1), (1, 128, 128, 3))
    ids = jnp.array([[[49406, 320, 49407] + [0] * 13, [49406, 49407] + [0] * 14, [0] * 16]])
    out = module.apply({"params": params}, images, ids)
    logits = np.asarray(out["pred_logits"])
    assert np.all(logits[..., 2] == -1e6)
    assert np.all(np.abs(logits[..., :2]) < 1e3)  # the empty-string query "" is a real query


def test_posemb_truncation_uses_top_left_block(tiny):
    cfg, params = tiny
    # A 96 px input on a model whose posemb covers 128 px (a 4x4 grid) uses the top-left 3x3.
    small_cfg = cfg.replace(image_size=96, native_grid_size=4)
    images = jax.random.normal(jax.random.PRNGKey(2), (1, 96, 96, 3))
    feats_truncated = OwlViT(small_cfg).apply({"params": params}, images, method="image_embedder")

    posemb = params["backbone"]["clip"]["visual"]["positional_embedding"]
    grid = posemb[1:].reshape(4, 4, -1)[:3, :3].reshape(9, -1)
    cropped = jax.tree_util.tree_map(lambda x: x, params)
    cropped["backbone"]["clip"]["visual"]["positional_embedding"] = jnp.concatenate(
        [posemb[:1], grid]
    )
    feats_cropped = OwlViT(cfg.replace(image_size=96)).apply(
        {"params": cropped}, images, method="image_embedder"
    )
    np.testing.assert_allclose(feats_truncated, feats_cropped, atol=1e-6)

    with pytest.raises(ValueError, match="larger than the position embedding"):
        OwlViT(cfg).apply({"params": params}, jnp.zeros((1, 160, 160, 3)), method="image_embedder")


def test_stochastic_depth_only_in_training(tiny):
    cfg, params = tiny
    images = jax.random.normal(jax.random.PRNGKey(3), (2, 128, 128, 3))
    deterministic = OwlViT(cfg).apply({"params": params}, images, method="image_embedder")
    same = OwlViT(cfg, vision_drop_path=0.9).apply(
        {"params": params}, images, method="image_embedder"
    )
    np.testing.assert_array_equal(deterministic, same)
    dropped = OwlViT(cfg, vision_drop_path=0.9).apply(
        {"params": params},
        images,
        True,
        method="image_embedder",
        rngs={"dropout": jax.random.PRNGKey(4)},
    )
    assert not np.allclose(deterministic, dropped)


def test_text_embedding_ignores_the_padding_tail(tiny_owlvit):
    # The Detector cuts token rows to 8 when the queries are short; the result must not change.
    ids = np.zeros((3, 16), np.int32)
    ids[:, 0], ids[0, 1:4], ids[0, 4] = 49406, [320, 1929, 2368], 49407
    ids[1, 1], ids[2, 1:7], ids[2, 7] = 49407, [11, 22, 33, 44, 55, 66], 49407
    full = np.asarray(tiny_owlvit.embed_text(ids))
    short = np.asarray(tiny_owlvit.embed_text(ids[:, :8]))
    np.testing.assert_allclose(short, full, atol=1e-5)
    with pytest.raises(ValueError, match="more than the model's context of 16"):
        tiny_owlvit.embed_text(np.zeros((1, 17), np.int32))
