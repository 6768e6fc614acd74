"""Tests for owl/train/ensemble.py and `owl ensemble`: weight-space averaging of two detectors."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from click.testing import CliRunner

from owl.checkpoints.owl_format import read_owl, save_owl
from owl.checkpoints.tree import CheckpointError, flatten_params
from owl.cli.main import cli
from owl.train.ensemble import average_params, ensemble_checkpoints


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_owlv2):
    """The tiny OWLv2 and a perturbed copy (same architecture), as files."""
    folder = tmp_path_factory.mktemp("ens")
    params = jax.device_get(tiny_owlv2.params)
    rng = np.random.default_rng(0)
    other = jax.tree_util.tree_map(
        lambda x: (np.asarray(x) + rng.standard_normal(np.shape(x))).astype(np.float32), params
    )
    a, b = folder / "a.safetensors", folder / "b.safetensors"
    save_owl(a, tiny_owlv2.config, params)
    save_owl(b, tiny_owlv2.config, other)
    return a, b


def _flat(path):
    return flatten_params(read_owl(path)[1])


def test_weight_zero_and_one_give_the_inputs_bit_for_bit(tmp_path, two_models):
    a, b = two_models
    for weight, want in ((0.0, a), (1.0, b)):
        out = ensemble_checkpoints(a, b, weight, tmp_path / f"w{weight}.safetensors")
        got, expected = _flat(out), _flat(want)
        assert got.keys() == expected.keys()
        for k in got:
            np.testing.assert_array_equal(got[k], expected[k])


def test_a_model_with_itself_is_itself(tmp_path, two_models):
    a, _ = two_models
    out = ensemble_checkpoints(a, a, 0.3, tmp_path / "self.safetensors")
    for k, v in _flat(a).items():
        np.testing.assert_array_equal(_flat(out)[k], v)


def test_arithmetic_against_numpy(tmp_path, two_models):
    a, b = two_models
    out = _flat(ensemble_checkpoints(a, b, 0.25, tmp_path / "mix.safetensors.gz"))
    fa, fb = _flat(a), _flat(b)
    for k in fa:
        want = (0.75 * fa[k].astype(np.float64) + 0.25 * fb[k].astype(np.float64)).astype(
            np.float32
        )
        np.testing.assert_array_equal(out[k], want)


def test_mismatched_trees_and_weights_are_refused(tiny_owlv2, tiny_owlvit, tmp_path):
    params = jax.device_get(tiny_owlv2.params)
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\]"):
        average_params(params, params, 1.5)
    a, v1 = tmp_path / "a.safetensors", tmp_path / "v1.safetensors"
    save_owl(a, tiny_owlv2.config, params)
    save_owl(v1, tiny_owlvit.config, jax.device_get(tiny_owlvit.params))
    with pytest.raises(CheckpointError, match="different architectures"):
        ensemble_checkpoints(a, v1, 0.5, tmp_path / "x.safetensors")


def test_cli(tmp_path, two_models, tiny_owlvit):
    a, b = two_models
    out = tmp_path / "c.safetensors"
    result = CliRunner().invoke(
        cli, ["ensemble", str(a), str(b), "--weight", "1", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    for k, v in _flat(b).items():
        np.testing.assert_array_equal(_flat(out)[k], v)
    again = CliRunner().invoke(cli, ["ensemble", str(a), str(b), "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output
    v1 = tmp_path / "v1.safetensors"
    save_owl(v1, tiny_owlvit.config, jax.device_get(tiny_owlvit.params))
    bad = CliRunner().invoke(cli, ["ensemble", str(a), str(v1), "--out", str(tmp_path / "d.st")])
    assert bad.exit_code == 2 and "different architectures" in bad.output
