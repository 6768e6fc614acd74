"""Shared fixtures: tiny detectors with random (non-default) weights, in memory and on disk."""

from __future__ import annotations

import os

# Tests compile into memory only: the persistent cache is tested on its own, in subprocesses
# (tests/test_compilation_cache.py), and must not collect entries in a user's cache folder.
os.environ["OWL_COMPILATION_CACHE"] = "0"
# The default backend (auto) would export every model to ONNX on first use, since the test env
# has onnxruntime: tests run on JAX unless they ask for a backend (tests/export/test_auto.py
# runs the default path and compares it with JAX).
os.environ["OWL_BACKEND"] = "jax"

import jax  # noqa: E402
import numpy as np
import pytest

from owl.checkpoints.owl_format import save_owl
from owl.models.configs import get_variant
from owl.models.model import OwlModel
from owl.models.owl_vit import param_shapes


def _tiny_params(name: str, seed: int):
    """Random tiny parameters, drawn in NumPy from the model's shapes (no init compile).

    Every bias and LayerNorm is off its default (a mis-mapped parameter changes outputs); kernels
    are N(0, 1/fan_in), embeddings N(0, 0.02), position embeddings N(0, 0.1).
    """
    cfg = get_variant(name)
    rng = np.random.default_rng(seed)

    def draw(path, shape):
        keys = [str(getattr(k, "key", k)) for k in path]
        last = keys[-1]
        normal = rng.standard_normal(shape).astype(np.float32)
        if last == "bias":
            return 0.05 * normal
        if last == "scale" and len(shape) == 1:
            return 1 + 0.1 * normal
        if last == "kernel":
            fan_in = int(np.prod(shape[:-1])) if "out" not in keys else int(np.prod(shape[:2]))
            return normal / np.sqrt(fan_in)
        if last == "logit_scale" and shape == ():
            return np.float32(np.log(1 / 0.07))
        if last == "positional_embedding":
            return 0.1 * normal
        return 0.02 * normal

    shapes = param_shapes(cfg)
    params = jax.tree_util.tree_map_with_path(draw, shapes, is_leaf=lambda x: isinstance(x, tuple))
    return cfg, params


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
