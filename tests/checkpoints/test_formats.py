"""Shared checkpoint logic: check_params, infer_config, sniff_format, read_checkpoint."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import safetensors.numpy

from owl.checkpoints.load import read_checkpoint, sniff_format
from owl.checkpoints.official import write_official
from owl.checkpoints.owl_format import save_owl
from owl.checkpoints.transformers_format import write_transformers
from owl.checkpoints.tree import (
    CheckpointError,
    check_params,
    flatten_params,
    infer_config,
    unflatten_params,
)
from owl.models.configs import VARIANTS, ModelConfig, get_variant
from owl.models.owl_vit import param_shapes

POSEMB = "backbone/clip/visual/positional_embedding"


def random_flat(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical flat tree with the shapes of owl's model, filled with distinct random values."""
    rng = np.random.default_rng(seed)
    shapes = flatten_params(param_shapes(config))
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def shape_only_tree(config: ModelConfig) -> dict:
    """Zero-memory arrays (broadcast views) with the shapes of owl's model."""
    flat = flatten_params(param_shapes(config))
    return unflatten_params({k: np.broadcast_to(np.float32(0), s) for k, s in flat.items()})


# -- check_params ------------------------------------------------------------------------------


def test_check_params_accepts_the_exact_tree():
    config = get_variant("tiny-owlv2")
    check_params(unflatten_params(random_flat(config)), param_shapes(config))


def test_check_params_names_the_first_mismatch_with_both_shapes():
    config = get_variant("tiny-owlvit")
    flat = random_flat(config)
    flat[POSEMB] = np.zeros((26, 64), np.float32)  # a 5x5 grid instead of 4x4
    flat["obj_box_head/Dense_2/kernel"] = np.zeros((64, 5), np.float32)
    expected = param_shapes(config)
    first = next(
        p for p in flatten_params(expected) if p in (POSEMB, "obj_box_head/Dense_2/kernel")
    )
    shapes = {POSEMB: ((26, 64), (17, 64)), "obj_box_head/Dense_2/kernel": ((64, 5), (64, 4))}
    have, want = shapes[first]
    with pytest.raises(CheckpointError) as info:
        check_params(unflatten_params(flat), expected)
    assert str(info.value) == (
        f"parameter {first!r} has shape {have} in the checkpoint but the model expects {want} "
        "(and 1 more mismatched parameter(s))"
    )


def test_check_params_lists_missing_and_unexpected_parameters():
    config = get_variant("tiny-owlvit")
    flat = random_flat(config)
    del flat["class_head/logit_scale/bias"]
    flat["objectness_head/Dense_0/kernel"] = np.zeros((64, 64), np.float32)
    with pytest.raises(CheckpointError) as info:
        check_params(unflatten_params(flat), param_shapes(config))
    assert str(info.value) == (
        "checkpoint does not fit the model: 1 missing parameter(s): class_head/logit_scale/bias; "
        "1 unexpected parameter(s): objectness_head/Dense_0/kernel"
    )


def test_check_params_takes_shape_structs_and_shortens_long_lists():
    expected = {
        "a": jax.ShapeDtypeStruct((2, 3), np.float32),
        "b": {f"w{i}": (1,) for i in range(5)},
    }
    with pytest.raises(
        CheckpointError, match=r"5 missing parameter\(s\): b/w0, b/w1, b/w2, \.\.\. \(2 more\)"
    ):
        check_params({"a": np.zeros((2, 3))}, expected)
    with pytest.raises(CheckpointError, match=r"'a' has shape \(3, 2\) .* expects \(2, 3\)$"):
        check_params(
            {"a": np.zeros((3, 2)), "b": {f"w{i}": np.zeros(1) for i in range(5)}}, expected
        )


# -- infer_config ------------------------------------------------------------------------------


def spec_tree(p, w, lv, hv, wt, lt, ht, e, rows, objectness):
    """Zero-memory tree with the official shapes of spec §1.10 (independent of owl's model)."""
    shapes = {
        "backbone/clip/visual/conv1/kernel": (p, p, 3, w),
        POSEMB: (rows, w),
        "backbone/clip/text/token_embedding/embedding": (49408, wt),
        "backbone/clip/text/positional_embedding": (16, wt),
        "backbone/clip/text/text_projection/kernel": (wt, e),
        "class_head/Dense_0/kernel": (w, e),
    }
    for tower, width, layers, heads in (("visual", w, lv, hv), ("text", wt, lt, ht)):
        for i in range(layers):
            blk = f"backbone/clip/{tower}/transformer/resblocks_{i}"
            shapes[f"{blk}/attn/query/kernel"] = (width, heads, 64)
            shapes[f"{blk}/mlp/c_fc/kernel"] = (width, 4 * width)
    if objectness:
        shapes["objectness_head/Dense_2/kernel"] = (w, 1)
    return unflatten_params({k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()})


# Spec §1.1 table: patch, vision width/layers/heads, text width/layers/heads, embed, posemb rows.
SPEC_ROWS = {
    "owlvit-b32": (32, 768, 12, 12, 512, 12, 8, 512, 577, False),
    "owlvit-b16": (16, 768, 12, 12, 512, 12, 8, 512, 2305, False),
    "owlvit-l14": (14, 1024, 24, 16, 768, 12, 12, 768, 3601, False),
    "owlv2-b16": (16, 768, 12, 12, 512, 12, 8, 512, 3601, True),
    "owlv2-l14": (14, 1024, 24, 16, 768, 12, 12, 768, 5185, True),
}


@pytest.mark.parametrize("name", sorted(SPEC_ROWS))
def test_infer_config_recovers_the_official_variants(name):
    assert infer_config(spec_tree(*SPEC_ROWS[name])) == VARIANTS[name]


@pytest.mark.parametrize("name", ["tiny-owlvit", "tiny-owlv2"])
def test_infer_config_recovers_the_tiny_configs(name):
    config = get_variant(name)
    assert infer_config(unflatten_params(random_flat(config))) == config


def test_explicit_config_and_overrides_win():
    tree = shape_only_tree(get_variant("tiny-owlv2"))
    explicit = get_variant("tiny-owlvit")
    assert infer_config(tree, overrides=explicit) is explicit
    got = infer_config(tree, overrides={"image_size": 96, "native_grid_size": 4})
    assert got == get_variant("tiny-owlv2").replace(image_size=96, native_grid_size=4)
    assert infer_config(tree, overrides={"family": "owlvit"}).pad_value == 0.5


def test_infer_config_names_a_missing_parameter():
    flat = flatten_params(shape_only_tree(get_variant("tiny-owlvit")))
    del flat["backbone/clip/text/text_projection/kernel"]
    with pytest.raises(
        CheckpointError, match="'backbone/clip/text/text_projection/kernel' is missing"
    ):
        infer_config(unflatten_params(flat))


def test_infer_config_rejects_a_non_square_position_embedding():
    flat = flatten_params(shape_only_tree(get_variant("tiny-owlvit")))
    flat[POSEMB] = np.zeros((20, 64), np.float32)
    with pytest.raises(CheckpointError, match="20 rows, not 1 \\+ a square number"):
        infer_config(unflatten_params(flat))


def test_infer_config_rejects_gaps_in_block_numbers():
    flat = flatten_params(shape_only_tree(get_variant("tiny-owlvit")))
    flat = {k.replace("resblocks_1/", "resblocks_2/"): v for k, v in flat.items()}
    with pytest.raises(CheckpointError, match=r"not numbered 0\.\.1 \(found \[0, 2\]\)"):
        infer_config(unflatten_params(flat))


# -- sniff_format and read_checkpoint ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    config = get_variant("tiny-owlv2")
    return config, unflatten_params(random_flat(config, seed=7))


def test_sniff_format_recognises_every_format(tmp_path, tiny):
    config, params = tiny
    write_transformers(tmp_path / "hf", config, params)
    official = write_official(tmp_path / "clip_vit_b32_b0203fc", params, "v1-2022")
    owl = save_owl(tmp_path / "m.safetensors", config, params)
    assert sniff_format(tmp_path / "hf") == "transformers"
    assert sniff_format(tmp_path / "hf" / "model.safetensors") == "transformers"
    assert sniff_format(official) == "official"
    assert sniff_format(owl) == "owl"
    for name, content in [
        ("pytorch_model.bin", b"anything"),
        ("weights.pth", b"anything"),
        ("noext_pickle", b"\x80\x04\x95\x00\x00"),
        ("noext_torchzip", b"PK\x03\x04rest"),
    ]:
        (tmp_path / name).write_bytes(content)
        assert sniff_format(tmp_path / name) == "pickle", name


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d, "directory has no config.json"),
        (lambda d: d / "absent", "no such file or directory"),
        (lambda d: (d / "x.txt").write_text("hello") and d / "x.txt", "unrecognised checkpoint"),
    ],
)
def test_sniff_format_errors(tmp_path, make, message):
    with pytest.raises(CheckpointError, match=message):
        sniff_format(make(tmp_path))


def test_bare_safetensors_file_without_config_is_explained(tmp_path):
    path = tmp_path / "weights.safetensors"
    safetensors.numpy.save_file({"x": np.zeros(2, np.float32)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="without owl metadata and no config.json"):
        sniff_format(path)


def test_read_checkpoint_reads_every_format_to_the_same_tree(tmp_path, tiny):
    config, params = tiny
    paths = [
        write_transformers(tmp_path / "hf", config, params),
        tmp_path / "hf" / "model.safetensors",
        write_official(tmp_path / "official", params, "v2-2023"),
        save_owl(tmp_path / "m.safetensors", config, params),
    ]
    want = flatten_params(params)
    for path in paths:
        got_config, got = read_checkpoint(path)
        assert got_config == config, path
        got = flatten_params(got)
        assert sorted(got) == sorted(want)
        assert all(np.array_equal(got[k], want[k]) for k in want), path


def test_read_checkpoint_uses_and_checks_an_explicit_config(tmp_path, tiny):
    config, params = tiny
    official = write_official(tmp_path / "official", params)
    truncated = config.replace(image_size=64, native_grid_size=4)
    assert read_checkpoint(official, config=truncated)[0] == truncated
    owl = save_owl(tmp_path / "m.safetensors", config, params)
    assert read_checkpoint(owl, config={"image_size": 96, "native_grid_size": 4})[0] == (
        config.replace(image_size=96, native_grid_size=4)
    )
    for path in (official, owl):
        with pytest.raises(
            CheckpointError, match="does not fit the weights: patch_size: config 16"
        ):
            read_checkpoint(path, config=get_variant("owlv2-b16"))


def test_read_checkpoint_refuses_pickles_in_one_line(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refusing to read a pickled checkpoint")
    assert "safe_serialization=True" in message and "\n" not in message
