"""Fixtures for CLI tests."""

from __future__ import annotations

import pytest

import owl.checkpoints.load as load_module


@pytest.fixture(scope="module", autouse=True)
def load_once():
    """Loads each model file once per module: later invocations reuse it and JAX's compilations."""
    real, cache = load_module.load, {}

    def cached(source, **kwargs):
        if str(source) not in cache:
            cache[str(source)] = real(source, **kwargs)
        return cache[str(source)]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(load_module, "load", cached)
        yield
