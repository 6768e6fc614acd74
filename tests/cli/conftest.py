"""Fixtures for CLI tests."""

from __future__ import annotations

import pytest

import owl.checkpoints.load as load_module


@pytest.fixture(scope="module", autouse=True)
def load_once():
    """Loads each model file once per module: later invocations reuse it and JAX's compilations."""
    real, cache = load_module.load, {}

    def cached(source, **kwargs):
        key = (str(source), kwargs.get("precision", "f32"))
        if key not in cache:
            cache[key] = real(source, **kwargs)
        return cache[key]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load_module, "load", cached)
        yield
