"""Official scenic msgpack checkpoints: every naming era, mixed trees, extras, corrupt files."""

from __future__ import annotations

import logging

import ml_dtypes
import numpy as np
import pytest
from flax import serialization

from owl.checkpoints.official import official_to_canonical, read_official, write_official
from owl.checkpoints.tree import CheckpointError, flatten_params, unflatten_params
from owl.models.configs import get_variant
from owl.models.owl_vit import param_shapes

VIS = "backbone/clip/visual/transformer"
TXT = "backbone/clip/text/transformer"


def random_flat(variant: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical flat tree with the shapes of owl's model, filled with distinct random values."""
    rng = np.random.default_rng(seed)
    shapes = flatten_params(param_shapes(get_variant(variant)))
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def assert_same_tree(params: dict, flat: dict[str, np.ndarray]) -> None:
    got = flatten_params(params)
    assert sorted(got) == sorted(flat)
    for key, want in flat.items():
        assert got[key].dtype == np.float32, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)


@pytest.mark.parametrize("variant", ["tiny-owlvit", "tiny-owlv2"])
@pytest.mark.parametrize("era", ["v1-2022", "v2-2023", "current"])
def test_every_era_reads_back_to_the_canonical_tree(tmp_path, variant, era):
    flat = random_flat(variant)
    path = write_official(tmp_path / f"ckpt-{era}", unflatten_params(flat), era)
    assert_same_tree(read_official(path), flat)


def test_writer_produces_the_historical_layouts(tmp_path):
    flat = random_flat("tiny-owlvit")
    raw = {}
    for era in ("v1-2022", "v2-2023", "current"):
        path = write_official(tmp_path / era, unflatten_params(flat), era)
        raw[era] = serialization.msgpack_restore(path.read_bytes())

    v1 = raw["v1-2022"]
    assert list(v1) == ["optimizer"] and list(v1["optimizer"]) == ["target"]
    block = v1["optimizer"]["target"]["backbone"]["clip"]["visual"]["transformer"]["resblocks.1"]
    assert sorted(block) == ["attn", "ln_1", "ln_2", "mlp"]
    # torch-CLIP names: ln_1 is the pre-attention LayerNorm, ln_2 the pre-MLP one.
    np.testing.assert_array_equal(block["ln_1"]["scale"], flat[f"{VIS}/resblocks_1/ln_0/scale"])
    np.testing.assert_array_equal(block["ln_2"]["bias"], flat[f"{VIS}/resblocks_1/ln_1/bias"])
    assert v1["optimizer"]["target"]["class_head"]["padding"].shape == (32,)

    v2 = raw["v2-2023"]
    assert list(v2) == ["params"]
    text_blocks = v2["params"]["backbone"]["clip"]["text"]["transformer"]
    assert sorted(text_blocks) == ["resblocks.0", "resblocks.1"]
    assert sorted(text_blocks["resblocks.0"]) == ["attn", "ln_0", "ln_1", "mlp"]

    current = raw["current"]
    assert list(current) == ["params"]
    assert sorted(current["params"]["backbone"]["clip"]["visual"]["transformer"]) == [
        "resblocks_0",
        "resblocks_1",
    ]


def test_mixed_era_blocks_are_fixed_per_block():
    """Old and new blocks in one tree (the official loader crashes here, scenic #1127)."""
    flat = random_flat("tiny-owlv2", seed=1)
    raw = {}
    for path, value in flat.items():
        # visual block 0: v1 naming; visual block 1: current; text blocks: v2 naming.
        if path.startswith(f"{VIS}/resblocks_0/"):
            path = path.replace("resblocks_0/ln_1/", "resblocks.0/ln_2/")
            path = path.replace("resblocks_0/ln_0/", "resblocks.0/ln_1/")
            path = path.replace("resblocks_0/", "resblocks.0/")
        elif path.startswith(f"{TXT}/"):
            path = path.replace("resblocks_", "resblocks.")
        raw[path] = value
    assert f"{VIS}/resblocks.0/ln_2/scale" in raw and f"{VIS}/resblocks_1/ln_1/scale" in raw
    data = serialization.msgpack_serialize({"params": unflatten_params(raw)})
    assert_same_tree(read_official(data), flat)


def test_extra_keys_are_ignored_and_reported(tmp_path, caplog):
    flat = random_flat("tiny-owlvit", seed=2)
    target = dict(flat)
    target["class_head/padding"] = np.zeros(32, np.float32)
    target["class_head/padding_bias"] = np.zeros(1, np.float32)
    target["backbone/clip/visual/proj"] = np.zeros((64, 32), np.float32)
    target["obj_mask_head/Dense_0/kernel"] = np.zeros((2, 2), np.float32)
    tree = {"optimizer": {"target": unflatten_params(target), "state": {"step": np.int64(3)}}}

    params, ignored = official_to_canonical(tree)
    assert_same_tree(params, flat)
    assert sorted(ignored) == [
        "backbone/clip/visual/proj",
        "class_head/padding",
        "class_head/padding_bias",
        "obj_mask_head/Dense_0/kernel",
        "optimizer/state",
    ]

    path = tmp_path / "with_extras"
    path.write_bytes(serialization.msgpack_serialize(tree))
    with caplog.at_level(logging.INFO, logger="owl.checkpoints.official"):
        read_official(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "obj_mask_head/Dense_0/kernel" in warnings[0]
    assert str(path) in warnings[0]
    assert len(infos) == 1 and "class_head/padding" in infos[0] and "optimizer/state" in infos[0]


def test_parameters_at_the_top_level_are_read():
    flat = random_flat("tiny-owlvit", seed=3)
    data = serialization.msgpack_serialize(unflatten_params(flat))
    assert_same_tree(read_official(data), flat)


def test_bfloat16_checkpoints_are_widened_exactly():
    flat = random_flat("tiny-owlvit", seed=4)
    low = {k: v.astype(ml_dtypes.bfloat16) for k, v in flat.items()}
    data = serialization.msgpack_serialize({"params": unflatten_params(low)})
    # bfloat16 -> float32 is exact, so the reference is the bfloat16 value widened by NumPy.
    assert_same_tree(read_official(data), {k: v.astype(np.float32) for k, v in low.items()})


def test_truncated_file_raises_checkpoint_error_naming_it(tmp_path):
    path = write_official(tmp_path / "clip_vit_b32", unflatten_params(random_flat("tiny-owlvit")))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="clip_vit_b32.*truncated or corrupt"):
        read_official(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x93\x01\x02\x03", "top level is not a map"),
        (b"not msgpack at all", "not a readable Flax msgpack"),
        (serialization.msgpack_serialize({"params": {"x": np.zeros(2)}}), "no OWL-ViT parameters"),
    ],
)
def test_files_that_are_not_owl_checkpoints_are_refused(tmp_path, content, message):
    path = tmp_path / "weird.msgpack"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        read_official(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothere.*cannot read"):
        read_official(tmp_path / "nothere")


def test_block_with_both_naming_schemes_is_an_error():
    flat = random_flat("tiny-owlvit", seed=5)
    flat[f"{VIS}/resblocks_0/ln_2/scale"] = np.ones(64, np.float32)
    with pytest.raises(CheckpointError, match="resblocks_0.*ln_0 and ln_2"):
        official_to_canonical({"params": unflatten_params(flat)})


def test_block_under_two_names_is_an_error():
    flat = random_flat("tiny-owlvit", seed=6)
    flat[f"{VIS}/resblocks.0/ln_0/scale"] = np.ones(64, np.float32)
    with pytest.raises(CheckpointError, match="block 0 appears twice"):
        official_to_canonical({"params": unflatten_params(flat)})


def test_unknown_era_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="v3"):
        write_official(tmp_path / "x", unflatten_params(random_flat("tiny-owlvit")), "v3")
