"""`owl convert` end to end: any supported source -> owl safetensors file."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from owl.cli.main import cli

from owl.checkpoints.official import write_official
from owl.checkpoints.owl_format import read_owl
from owl.checkpoints.transformers_format import write_transformers
from owl.checkpoints.tree import flatten_params, unflatten_params
from owl.models.configs import ModelConfig, get_variant
from owl.models.owl_vit import param_shapes


def random_flat(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical flat tree with the shapes of owl's model, filled with distinct random values."""
    rng = np.random.default_rng(seed)
    shapes = flatten_params(param_shapes(config))
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def run(*args: str):
    return CliRunner().invoke(cli, ["convert", *map(str, args)])


def assert_owl_file_equals(path, config, flat):
    got_config, params = read_owl(path)
    assert got_config == config
    got = flatten_params(params)
    assert sorted(got) == sorted(flat)
    for key, want in flat.items():
        np.testing.assert_array_equal(got[key], want, err_msg=key)


def test_transformers_directory_to_owl_file(tmp_path):
    config = get_variant("tiny-owlv2")
    flat = random_flat(config)
    write_transformers(tmp_path / "hf", config, unflatten_params(flat))

    result = run(tmp_path / "hf", tmp_path / "owlv2-tiny")  # no extension: .safetensors added
    assert result.exit_code == 0, result.output
    dest = tmp_path / "owlv2-tiny.safetensors"
    assert_owl_file_equals(dest, config, flat)
    n_params = sum(int(np.prod(v.shape)) for v in flat.values())
    assert result.output.splitlines() == [
        f"read transformers checkpoint {tmp_path / 'hf'}",
        "  owlv2: image 128 px, patch 32 (4x4 grid), vision 64x2 (4 heads), text 32x2 (4 heads), "
        "embed 32, objectness yes, pad 0.0",
        f"  {n_params:,} parameters",
        f"wrote {dest}",
    ]


@pytest.mark.parametrize("era", ["v1-2022", "current"])
def test_official_checkpoint_to_owl_file(tmp_path, era):
    config = get_variant("tiny-owlvit")
    flat = random_flat(config, seed=1)
    src = write_official(tmp_path / "clip_vit_tiny", unflatten_params(flat), era)
    result = run(src, tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"read official checkpoint {src}\n  owlvit: image 128 px")
    assert_owl_file_equals(tmp_path / "out.safetensors", config, flat)


def test_existing_destination_needs_overwrite(tmp_path):
    config = get_variant("tiny-owlvit")
    src = write_official(tmp_path / "ckpt", unflatten_params(random_flat(config)))
    dest = tmp_path / "out.safetensors"
    dest.write_bytes(b"keep me")
    result = run(src, dest)
    assert result.exit_code == 1
    assert f"Error: {dest} exists; pass --overwrite to replace it" in result.output
    assert dest.read_bytes() == b"keep me"
    assert run(src, dest, "--overwrite").exit_code == 0
    assert read_owl(dest)[0] == config


def test_pickled_source_is_refused_with_the_safetensors_hint(tmp_path):
    src = tmp_path / "pytorch_model.bin"
    src.write_bytes(b"\x80\x04\x95")
    result = run(src, tmp_path / "out")
    assert result.exit_code == 1
    assert "refusing to read a pickled checkpoint" in result.output
    assert "save_pretrained(dir, safe_serialization=True)" in result.output
    assert not (tmp_path / "out.safetensors").exists()


def test_variant_that_does_not_fit_names_the_first_mismatch(tmp_path):
    config = get_variant("tiny-owlvit")
    src = write_official(tmp_path / "ckpt", unflatten_params(random_flat(config)))
    result = run(src, tmp_path / "out", "--variant", "tiny-owlv2")
    assert result.exit_code == 1
    assert "does not fit the weights: objectness: config True vs weights False" in result.output


def test_unknown_variant_is_a_usage_error(tmp_path):
    src = write_official(
        tmp_path / "ckpt", unflatten_params(random_flat(get_variant("tiny-owlvit")))
    )
    result = run(src, tmp_path / "out", "--variant", "owlvit-b99")
    assert result.exit_code == 2
    assert "unknown model variant 'owlvit-b99'" in result.output


def test_truncated_source_is_a_clean_error(tmp_path):
    src = write_official(
        tmp_path / "ckpt", unflatten_params(random_flat(get_variant("tiny-owlvit")))
    )
    src.write_bytes(src.read_bytes()[:5000])
    result = run(src, tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {src}: not a readable Flax msgpack checkpoint")
