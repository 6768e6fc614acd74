"""Shared fixtures: tiny detectors with random (non-default) weights, in memory and on disk."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from owl.checkpoints.owl_format import save_owl
from owl.models.configs import get_variant
from owl.models.model import OwlModel
from owl.models.owl_vit import init_params


def _tiny_params(name: str, seed: int):
    """Random tiny parameters with every bias and LayerNorm moved off its default init."""
    cfg = get_variant(name)
    params = init_params(cfg, jax.random.PRNGKey(seed))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    rng = np.random.default_rng(seed)
    new = []
    for path, x in leaves:
        x = np.asarray(x)
        last = str(path[-1])
        if "bias" in last:
            x = 0.05 * rng.standard_normal(x.shape).astype(np.float32)
        elif "scale" in last and x.ndim == 1:
            x = (1 + 0.1 * rng.standard_normal(x.shape)).astype(np.float32)
        elif x.ndim == 2 and "Dense" in str(path) and np.abs(x).max() < 1e-3:
            x = (rng.standard_normal(x.shape) / np.sqrt(x.shape[0])).astype(np.float32)
        new.append(x)
    return cfg, jax.tree_util.tree_unflatten(treedef, new)


@pytest.fixture(scope="session")
def tiny_owlvit() -> OwlModel:
    """A tiny OWL-ViT v1 (128 px, patch 32, 4x4 grid) with random weights."""
    cfg, params = _tiny_params("tiny-owlvit", 0)
    return OwlModel(cfg, params, source="tiny-owlvit")


@pytest.fixture(scope="session")
def tiny_owlv2() -> OwlModel:
    """A tiny OWLv2 (with objectness head) with random weights."""
    cfg, params = _tiny_params("tiny-owlv2", 1)
    return OwlModel(cfg, params, source="tiny-owlv2")


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory, tiny_owlv2) -> str:
    """The tiny OWLv2 saved in owl's format; usable as `--model PATH`."""
    path = tmp_path_factory.mktemp("models") / "tiny-owlv2.safetensors"
    save_owl(path, tiny_owlv2.config, jax.device_get(tiny_owlv2.params))
    return str(path)
