"""`owl convert` end to end: any supported source -> owl safetensors file."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from owl.checkpoints.official import write_official
from owl.checkpoints.owl_format import read_owl
from owl.checkpoints.transformers_format import write_transformers
from owl.checkpoints.tree import flatten_params, unflatten_params
from owl.cli.main import cli
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
    assert result.exit_code == 2
    assert f"Error: {dest} exists; pass --overwrite to replace it" in result.output
    assert dest.read_bytes() == b"keep me"
    assert run(src, dest, "--overwrite").exit_code == 0
    assert read_owl(dest)[0] == config


def test_pickled_source_is_refused_with_the_safetensors_hint(tmp_path):
    src = tmp_path / "pytorch_model.bin"
    src.write_bytes(b"\x80\x04\x95")
    result = run(src, tmp_path / "out")
    assert result.exit_code == 2
    assert "refusing to read a pickled checkpoint" in result.output
    assert "save_pretrained(dir, safe_serialization=True)" in result.output
    assert not (tmp_path / "out.safetensors").exists()


def test_variant_that_does_not_fit_names_the_first_mismatch(tmp_path):
    config = get_variant("tiny-owlvit")
    src = write_official(tmp_path / "ckpt", unflatten_params(random_flat(config)))
    result = run(src, tmp_path / "out", "--variant", "tiny-owlv2")
    assert result.exit_code == 2
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
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {src}: not a readable Flax msgpack checkpoint")


def test_registry_name_is_accepted_as_source(tmp_path):
    """`owl convert shapes-tiny out` reads the shipped model, as `owl.load("shapes-tiny")` does."""
    from owl.checkpoints.owl_format import is_compressed
    from owl.checkpoints.registry import cached_path

    dest = tmp_path / "st.safetensors"
    result = run("shapes-tiny", dest)
    assert result.exit_code == 0, result.output
    shipped = cached_path("shapes-tiny")
    assert is_compressed(shipped) and f"read owl checkpoint {shipped}" in result.output
    want_config, want = read_owl(shipped)
    got_config, got = read_owl(dest)
    assert got_config == want_config == get_variant("shapes-tiny")
    for key, value in flatten_params(want).items():
        np.testing.assert_array_equal(flatten_params(got)[key], value, err_msg=key)


def test_unknown_name_as_source_is_a_usage_error_with_a_suggestion(tmp_path):
    result = run("shapes-tinny", tmp_path / "out")
    assert result.exit_code == 2
    assert "SRC 'shapes-tinny' is neither an existing path nor a model name" in result.output
    assert "Did you mean 'shapes-tiny'?" in result.output


def test_truncated_owl_file_is_called_truncated(tmp_path):
    """Not "without owl metadata and no config.json beside it" (issue 13, item 12)."""
    config = get_variant("tiny-owlvit")
    src = tmp_path / "cut.safetensors"
    from owl.checkpoints.owl_format import save_owl

    save_owl(src, config, unflatten_params(random_flat(config)))
    size = src.stat().st_size
    src.write_bytes(src.read_bytes()[: size // 2])
    result = run(src, tmp_path / "out")
    assert result.exit_code == 2
    assert result.output.startswith(
        f"Error: {src}: truncated or corrupt safetensors file (its header describes {size} "
        f"bytes but the file has {size // 2}); copy or download it again"
    )
    assert "without owl metadata" not in result.output
