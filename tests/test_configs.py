"""Every config file under configs/ loads, and model configs equal the variant table."""

from __future__ import annotations

import runpy
from pathlib import Path

import ml_collections
import pytest

from owl.models.configs import ModelConfig, get_variant

CONFIGS = Path(__file__).resolve().parents[1] / "owl" / "configs"
MODEL_FILES = sorted(p for p in (CONFIGS / "models").glob("*.py") if p.name != "__init__.py")


def test_there_is_one_model_config_per_official_variant():
    names = {p.stem.replace("_", "-") for p in MODEL_FILES}
    assert names == {"owlvit-b32", "owlvit-b16", "owlvit-l14", "owlv2-b16", "owlv2-l14"}


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_model_config_matches_variant(path):
    cfg = runpy.run_path(str(path))["get_config"]()
    assert isinstance(cfg, ml_collections.ConfigDict)
    assert ModelConfig.from_dict(cfg.to_dict()) == get_variant(path.stem.replace("_", "-"))
    with pytest.raises(AttributeError):
        cfg.not_a_field = 1  # locked: a misspelt override fails


@pytest.mark.parametrize(
    "path", sorted(p for p in CONFIGS.glob("*.py") if p.name != "__init__.py"), ids=lambda p: p.stem
)
def test_recipe_configs_load(path):
    from owl.train.config import load_config

    cfg = load_config(path)
    assert isinstance(cfg, ml_collections.ConfigDict) and len(cfg) > 0
