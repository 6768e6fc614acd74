"""One exit-code scheme for every command: 0 ok, 1 some inputs failed, 2 usage, 130 Ctrl-C."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from owl.cli.main import COMMANDS, cli
from owl.cli.options import EXIT_CODES_HELP

SCHEME_LINE = "Exit codes: 0 success; 1 some inputs failed"


@pytest.mark.parametrize(
    "command", [[], *([name] for name in COMMANDS), ["shapes", "generate"], ["shapes", "reproduce"]]
)
def test_every_help_lists_the_same_exit_codes(command):
    result = CliRunner().invoke(cli, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert SCHEME_LINE in result.output
    assert "2 usage error" in result.output and "130 interrupted (Ctrl-C)" in result.output
    assert EXIT_CODES_HELP.startswith("\b\n" + SCHEME_LINE)


def test_ctrl_c_exits_130_not_1(monkeypatch):
    import owl.cli.models as models_module

    def interrupted() -> list:
        raise KeyboardInterrupt

    monkeypatch.setattr("owl.checkpoints.registry.list_entries", interrupted)
    assert models_module is not None
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "Aborted!" not in result.output


def _dataset(tmp_path) -> str:
    path = tmp_path / "ann.json"
    dataset = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "categories": [{"id": 3, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 4],
                         "area": 16, "iscrowd": 0}],
    }  # fmt: skip
    path.write_text(json.dumps(dataset))
    return str(path)


@pytest.mark.parametrize(
    "args",
    [
        ["detect", "x.png", "-q", "cat", "--model", "owlvit-b33"],
        ["embed-query", "--query", "cat", "-o", "{tmp}/q.npz", "--model", "owlvit-b33"],
        ["eval", "--model", "owlvit-b33", "--annotations", "{ann}", "--images", "{tmp}",
         "--output-dir", "{tmp}/o"],
        ["convert", "owlvit-b33", "{tmp}/out.safetensors"],
        ["models", "--path", "owlvit-b33"],
    ],
    ids=lambda a: a[0],
)  # fmt: skip
def test_an_unknown_model_is_a_usage_error_in_every_command(tmp_path, args):
    ann = _dataset(tmp_path)
    args = [a.format(tmp=tmp_path, ann=ann) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "unknown model 'owlvit-b33'. Did you mean 'owlvit-b32'?" in result.output
