"""transformers directories: mapping checked against torch modules, exact round trips via HF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    Owlv2Config,
    Owlv2ForObjectDetection,
    OwlViTConfig,
    OwlViTForObjectDetection,
)

from owl.checkpoints.transformers_format import (
    config_from_hf,
    read_transformers,
    write_transformers,
)
from owl.checkpoints.tree import CheckpointError, check_params, flatten_params
from owl.models.configs import get_variant
from owl.models.owl_vit import param_shapes

TINY_TEXT = dict(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
TINY_VISION = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    patch_size=32, image_size=128,
)  # fmt: skip
FAMILIES = {
    "owlvit": (OwlViTConfig, OwlViTForObjectDetection, "tiny-owlvit"),
    "owlv2": (Owlv2Config, Owlv2ForObjectDetection, "tiny-owlv2"),
}


def build_hf(family: str, seed: int = 0) -> torch.nn.Module:
    """Tiny HF detector with every parameter redrawn, so a mis-mapped bias or LN shows."""
    config_cls, model_cls, _ = FAMILIES[family]
    model = model_cls(
        config_cls(text_config=TINY_TEXT, vision_config=TINY_VISION, projection_dim=32)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + 0.01)
    return model.eval()


def t2n(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


@pytest.fixture(scope="module", params=["owlvit", "owlv2"])
def saved(request, tmp_path_factory):
    """(family, HF model, directory written by save_pretrained)."""
    model = build_hf(request.param)
    directory = tmp_path_factory.mktemp(f"hf-{request.param}")
    model.save_pretrained(directory, safe_serialization=True)
    return request.param, model, directory


def test_config_and_shapes_match_owls_tiny_variants(saved):
    family, _, directory = saved
    config, params = read_transformers(directory)
    assert config == get_variant(FAMILIES[family][2])
    check_params(params, param_shapes(config))  # every leaf present with the model's shape
    assert all(v.dtype == np.float32 for v in flatten_params(params).values())


def test_mapping_reproduces_the_torch_modules(saved):
    """Each converted kernel computes what the torch module computes on the same input."""
    family, model, directory = saved
    _, params = read_transformers(directory)
    p = flatten_params(params)
    core = getattr(model, family)
    rng = np.random.default_rng(0)
    vis, txt = "backbone/clip/visual", "backbone/clip/text"

    def torch_apply(module, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    for tower, hf, width, heads in ((vis, core.vision_model, 64, 4), (txt, core.text_model, 32, 4)):
        layer, blk = hf.encoder.layers[1], f"{tower}/transformer/resblocks_1"
        x = rng.standard_normal((5, width)).astype(np.float32)
        for short, long in (("q", "query"), ("k", "key"), ("v", "value")):
            ours = np.einsum("nw,whd->nhd", x, p[f"{blk}/attn/{long}/kernel"])
            ours = (ours + p[f"{blk}/attn/{long}/bias"]).reshape(5, width)
            theirs = torch_apply(getattr(layer.self_attn, f"{short}_proj"), x)
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
        y = x.reshape(5, heads, width // heads)  # head h = channels h*hd .. (h+1)*hd
        ours = np.einsum("nhd,hdw->nw", y, p[f"{blk}/attn/out/kernel"]) + p[f"{blk}/attn/out/bias"]
        np.testing.assert_allclose(ours, torch_apply(layer.self_attn.out_proj, x), atol=1e-5)
        ours = x @ p[f"{blk}/mlp/c_fc/kernel"] + p[f"{blk}/mlp/c_fc/bias"]
        np.testing.assert_allclose(ours, torch_apply(layer.mlp.fc1, x), atol=1e-5)
        # layer_norm1 is the pre-attention LN (ln_0), layer_norm2 the pre-MLP one (ln_1).
        np.testing.assert_array_equal(p[f"{blk}/ln_0/scale"], t2n(layer.layer_norm1.weight))
        np.testing.assert_array_equal(p[f"{blk}/ln_1/bias"], t2n(layer.layer_norm2.bias))

    # Patch embedding: NHWC patches dotted with the HWIO kernel == torch Conv2d on NCHW pixels.
    pixels = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    conv = torch_apply(core.vision_model.embeddings.patch_embedding, pixels)  # [1, 64, 2, 2]
    img = pixels[0].transpose(1, 2, 0)
    for i in range(2):
        for j in range(2):
            patch = img[32 * i : 32 * (i + 1), 32 * j : 32 * (j + 1)]
            ours = np.einsum("hwc,hwco->o", patch, p[f"{vis}/conv1/kernel"])
            np.testing.assert_allclose(ours, conv[0, :, i, j], rtol=1e-4, atol=1e-4)

    x = rng.standard_normal((3, 32)).astype(np.float32)
    np.testing.assert_allclose(
        x @ p[f"{txt}/text_projection/kernel"], torch_apply(core.text_projection, x), atol=1e-5
    )
    f = rng.standard_normal((3, 64)).astype(np.float32)
    for ours_name, theirs in (
        ("class_head/Dense_0", model.class_head.dense0),
        ("class_head/logit_shift", model.class_head.logit_shift),
        ("class_head/logit_scale", model.class_head.logit_scale),
        ("obj_box_head/Dense_2", model.box_head.dense2),
    ):
        ours = f @ p[f"{ours_name}/kernel"] + p[f"{ours_name}/bias"]
        np.testing.assert_allclose(ours, torch_apply(theirs, f), atol=1e-5)
    np.testing.assert_array_equal(
        p["backbone/merged_class_token/scale"], t2n(model.layer_norm.weight)
    )
    np.testing.assert_array_equal(
        p[f"{txt}/ln_final/bias"], t2n(core.text_model.final_layer_norm.bias)
    )
    np.testing.assert_array_equal(p["backbone/clip/logit_scale"], t2n(core.logit_scale))
    assert ("objectness_head/Dense_0/kernel" in p) == (family == "owlv2")


def test_round_trip_loads_back_into_transformers_exactly(saved, tmp_path):
    family, model, directory = saved
    config, params = read_transformers(directory)
    write_transformers(tmp_path, config, params)

    model_cls = FAMILIES[family][1]
    loaded, info = model_cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    before, after = model.state_dict(), loaded.state_dict()
    assert sorted(before) == sorted(after)
    projection = f"{family}.visual_projection.weight"  # not in owl's tree: written as zeros
    for key in before:
        if key != projection:
            assert torch.equal(before[key], after[key]), key
    assert not after[projection].any()

    config2, params2 = read_transformers(tmp_path)
    assert config2 == config
    a, b = flatten_params(params), flatten_params(params2)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sharded_safetensors_read_like_a_single_file(saved, tmp_path):
    family, model, directory = saved
    model.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="1MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "model.safetensors").exists()
    config, params = read_transformers(tmp_path)
    config1, params1 = read_transformers(directory)
    assert config == config1
    a, b = flatten_params(params), flatten_params(params1)
    assert sorted(a) == sorted(b)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_missing_config_fields_take_the_transformers_defaults():
    """config.json may omit defaults; ours must equal transformers' own default configs."""
    for family, (config_cls, _, _) in FAMILIES.items():
        hf = config_cls().to_dict()
        full = config_from_hf(hf)
        assert config_from_hf({"model_type": family}) == full
        assert full.patch_size == hf["vision_config"]["patch_size"]
        assert full.image_size == hf["vision_config"]["image_size"]
        assert full.text_heads == hf["text_config"]["num_attention_heads"]
    assert config_from_hf({"model_type": "owlvit"}) == get_variant("owlvit-b32")


def test_pickled_weights_are_refused_with_the_safetensors_hint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "owlvit"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04\x95")  # never opened
    with pytest.raises(CheckpointError) as info:
        read_transformers(tmp_path)
    message = str(info.value)
    assert "pytorch_model.bin" in message and "never unpickles" in message
    assert "save_pretrained(dir, safe_serialization=True)" in message
    assert "\n" not in message


def test_corrupt_safetensors_names_the_file(saved, tmp_path):
    _, _, directory = saved
    (tmp_path / "config.json").write_bytes((directory / "config.json").read_bytes())
    data = (directory / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors"):
        read_transformers(tmp_path)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model_type": "clip"}, "model_type 'clip' is not an OWL-ViT model"),
        (
            {"model_type": "owlvit", "text_config": {"hidden_size": 32, "intermediate_size": 64}},
            "text intermediate_size 64 is not 4 x hidden_size 32",
        ),
    ],
)
def test_bad_configs_are_rejected(tmp_path, config, message):
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        read_transformers(tmp_path)


def test_config_that_contradicts_the_weights_is_rejected(saved, tmp_path):
    _, _, directory = saved
    cfg = json.loads((directory / "config.json").read_text())
    cfg["vision_config"]["image_size"] = 96  # posemb has rows for a 4x4 grid, not 3x3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="posemb grid: config 3 vs weights 4"):
        read_transformers(tmp_path)


def test_missing_tensors_are_listed(saved, tmp_path):
    import safetensors.numpy

    family, _, directory = saved
    state = safetensors.numpy.load_file(directory / "model.safetensors")
    del state["box_head.dense1.bias"]
    safetensors.numpy.save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    (tmp_path / "config.json").write_bytes((directory / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) missing: box_head\.dense1\.bias"):
        read_transformers(tmp_path)
