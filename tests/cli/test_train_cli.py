"""`owl train` / `owl pretrain`: recipe names; one line, not a traceback, without [train]."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from owl.cli.main import cli


@pytest.mark.parametrize(
    ("command", "recipe", "line"),
    [
        ("train", "finetune_owlvit_b32", "variant: owlvit-b32"),
        ("pretrain", "shapes_clip", "num_steps: "),
    ],
)
def test_config_takes_a_recipe_name_from_any_folder(tmp_path, monkeypatch, command, recipe, line):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [command, "--config", recipe, "--print-config"])
    assert result.exit_code == 0, result.output
    assert line in result.output
    assert list(tmp_path.iterdir()) == []  # printing writes nothing


@pytest.mark.parametrize("command", ["train", "pretrain"])
def test_workdir_is_needed_to_run(command):
    result = CliRunner().invoke(cli, [command, "--config", "train_tiny"])
    assert result.exit_code == 2
    assert "Error: missing option '--workdir'" in result.output


def test_help_lists_the_recipe_names():
    result = CliRunner().invoke(cli, ["train", "--help"], terminal_width=200)
    assert (
        "(adapt, finetune_owlv2_b16, finetune_owlvit_b32, shapes_clip, shapes_detect, train_tiny)"
        in (result.output)
    )


def test_unknown_recipe_name_is_a_usage_error():
    result = CliRunner().invoke(cli, ["train", "--config", "nope", "--workdir", "w"])
    assert result.exit_code == 2
    assert "--config nope: no such file and not a recipe name" in result.output


@pytest.mark.parametrize(
    ("command", "recipe", "module"),
    [("train", "train_tiny", "clu"), ("pretrain", "shapes_clip", "orbax.checkpoint")],
)
def test_missing_train_extra_is_one_line_and_exit_2(tmp_path, monkeypatch, command, recipe, module):
    monkeypatch.setitem(sys.modules, module, None)  # find_spec -> None: as if not installed
    result = CliRunner().invoke(
        cli, [command, "--config", recipe, "--workdir", str(tmp_path / "w")]
    )
    assert result.exit_code == 2
    assert result.output == (
        f"Error: `owl {command}` needs the training extra (module {module!r} is not "
        'installed); install it with: pip install "owl[train]"\n'
    )
    assert not (tmp_path / "w").exists()  # stopped before anything was written
