"""owl's own safetensors format: exact round trips, self-describing metadata, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors
import safetensors.numpy

from owl.checkpoints.owl_format import is_owl_file, read_owl, save_owl
from owl.checkpoints.tree import CheckpointError, flatten_params, unflatten_params
from owl.models.configs import ModelConfig, get_variant
from owl.models.owl_vit import param_shapes


def random_flat(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical flat tree with the shapes of owl's model, filled with distinct random values."""
    rng = np.random.default_rng(seed)
    shapes = flatten_params(param_shapes(config))
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize(
    "config",
    [
        get_variant("tiny-owlvit"),
        get_variant("tiny-owlv2"),
        # Posemb truncation: 96 px input, position embedding kept for the native 4x4 grid.
        get_variant("tiny-owlv2").replace(image_size=96, native_grid_size=4, pad_value=0.25),
    ],
    ids=["owlvit", "owlv2", "owlv2-truncated"],
)
def test_round_trip_preserves_config_and_arrays_bit_exactly(tmp_path, config):
    flat = random_flat(config)
    flat["backbone/clip/visual/ln_pre/bias"][:3] = [np.float32(1e-45), -0.0, np.float32(3e38)]
    path = save_owl(tmp_path / "model.safetensors", config, unflatten_params(flat))
    stored_config, params = read_owl(path)
    assert stored_config == config
    got = flatten_params(params)
    assert sorted(got) == sorted(flat)
    for key, want in flat.items():
        assert got[key].dtype == np.float32 and got[key].shape == want.shape, key
        assert got[key].tobytes() == want.tobytes(), key  # bit-exact, -0.0 and denormals kept


def test_file_is_plain_safetensors_with_owl_metadata(tmp_path):
    config = get_variant("tiny-owlvit")
    flat = random_flat(config, seed=1)
    path = save_owl(tmp_path / "m.safetensors", config, unflatten_params(flat))
    with safetensors.safe_open(path, framework="np") as f:
        metadata = f.metadata()
        keys = sorted(f.keys())
    assert set(metadata) == {"format", "format_version", "config"}
    assert metadata["format"] == "owl" and metadata["format_version"] == "1"
    assert json.loads(metadata["config"]) == {
        "family": "owlvit", "image_size": 128, "patch_size": 32,
        "vision_width": 64, "vision_layers": 2, "vision_heads": 4,
        "text_width": 32, "text_layers": 2, "text_heads": 4, "embed_dim": 32,
        "vocab_size": 49408, "context_length": 16, "objectness": False,
        "pad_value": 0.5, "native_grid_size": None,
    }  # fmt: skip
    assert keys == sorted(flat)
    assert "backbone/clip/visual/transformer/resblocks_1/attn/query/kernel" in keys
    assert is_owl_file(path)


def test_truncated_file_raises_checkpoint_error_naming_it(tmp_path):
    config = get_variant("tiny-owlvit")
    path = save_owl(tmp_path / "broken.safetensors", config, unflatten_params(random_flat(config)))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"broken\.safetensors: not a readable safetensors"):
        read_owl(path)


def test_garbage_header_raises_checkpoint_error(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"junk\.safetensors: not a readable"):
        read_owl(path)
    assert not is_owl_file(path)


def test_safetensors_without_owl_metadata_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file({"x": np.zeros(2, np.float32)}, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not an owl checkpoint.*'pt'.*owl convert"):
        read_owl(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "future.safetensors"
    meta = {"format": "owl", "format_version": "2", "config": get_variant("tiny-owlvit").to_json()}
    safetensors.numpy.save_file({"x": np.zeros(2, np.float32)}, path, metadata=meta)
    with pytest.raises(CheckpointError, match="version '2' is not supported"):
        read_owl(path)


def test_invalid_stored_config_is_reported(tmp_path):
    path = tmp_path / "badcfg.safetensors"
    meta = {"format": "owl", "format_version": "1", "config": json.dumps({"family": "yolo"})}
    safetensors.numpy.save_file({"x": np.zeros(2, np.float32)}, path, metadata=meta)
    with pytest.raises(CheckpointError, match="badcfg.safetensors: invalid model config"):
        read_owl(path)


def test_saving_with_a_config_that_contradicts_the_shapes_fails(tmp_path):
    flat = random_flat(get_variant("tiny-owlvit"))
    wrong = get_variant("tiny-owlvit").replace(vision_heads=8)
    with pytest.raises(CheckpointError, match="vision_heads: config 8 vs weights 4"):
        save_owl(tmp_path / "x.safetensors", wrong, unflatten_params(flat))
    assert not (tmp_path / "x.safetensors").exists()


def test_gzip_file_round_trips_bit_exactly(tmp_path):
    from owl.checkpoints.load import read_checkpoint, sniff_format

    config = get_variant("tiny-owlv2")
    flat = random_flat(config, seed=4)
    flat["backbone/clip/text/token_embedding/embedding"][100:] = 0.0  # zero rows compress
    params = unflatten_params(flat)
    plain = save_owl(tmp_path / "m.safetensors", config, params)
    first = save_owl(tmp_path / "m.safetensors.gz", config, params)
    assert first.stat().st_size < plain.stat().st_size / 2
    assert is_owl_file(first) and sniff_format(first) == "owl"
    stored_config, got = read_checkpoint(first)
    assert stored_config == config
    for key, want in flat.items():
        assert flatten_params(got)[key].tobytes() == want.tobytes(), key


def test_truncated_gzip_file_raises_checkpoint_error_naming_it(tmp_path):
    config = get_variant("tiny-owlvit")
    path = save_owl(tmp_path / "cut.safetensors.gz", config, unflatten_params(random_flat(config)))
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(CheckpointError, match=r"cut\.safetensors\.gz: not a readable"):
        read_owl(path)
