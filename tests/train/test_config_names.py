"""`--config` takes a shipped recipe's name or a path (`owl.train.config.resolve_config`)."""

from __future__ import annotations

import pytest

from owl.train.config import RECIPES_DIR, ConfigError, recipe_names, resolve_config


def test_recipe_names_are_the_shipped_files():
    assert recipe_names() == [
        "adapt", "finetune_owlv2_b16", "finetune_owlvit_b32", "shapes_clip", "shapes_detect", "train_tiny",
    ]  # fmt: skip


def test_a_name_resolves_to_the_shipped_file_with_or_without_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from any checkout
    assert resolve_config("finetune_owlvit_b32") == RECIPES_DIR / "finetune_owlvit_b32.py"
    assert resolve_config("train_tiny.py") == RECIPES_DIR / "train_tiny.py"


def test_an_existing_file_wins_over_a_recipe_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train_tiny.py").write_text("def get_config():\n    return None\n")
    assert resolve_config("train_tiny.py") == tmp_path.joinpath("train_tiny.py").relative_to(
        tmp_path
    )


def test_an_unknown_name_lists_the_recipes_and_suggests_one():
    with pytest.raises(ConfigError) as info:
        resolve_config("finetune_owlvit")
    message = str(info.value)
    assert "(did you mean 'finetune_owlvit_b32'?)" in message
    assert "one of: adapt, finetune_owlv2_b16, finetune_owlvit_b32, shapes_clip" in message


def test_a_missing_path_is_not_taken_for_a_name(tmp_path):
    with pytest.raises(ConfigError, match="no such file and not a recipe name"):
        resolve_config(tmp_path / "train_tiny.py")
