"""The quick start from a wheel install: the shipped example image, and no output file when every
input failed (CI's wheel smoke test runs the same from an installed wheel, .ci/run)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from owl.cli.main import cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images" / "000000.png"


def test_example_image_is_the_readmes_image_and_ships_in_the_package():
    result = CliRunner().invoke(cli, ["example-image"])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip())
    assert path.parent.name == "assets" and path.parent.parent.name == "owl"
    assert path.read_bytes() == EXAMPLE.read_bytes()
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["owl"]
    assert "assets/*" in data  # package data: the wheel carries it


def test_quick_start_with_the_example_image_finds_the_red_circle(tmp_path):
    path = CliRunner().invoke(cli, ["example-image"]).stdout.strip()
    out = tmp_path / "out" / "example.json"
    result = CliRunner().invoke(
        cli, ["detect", path, "--model", "shapes-tiny", "--query", "red circle", "--output",
              str(out), "--save-dir", str(tmp_path / "out"), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [record] = json.loads(out.read_text())["results"]
    found = [d for d in record["detections"] if d["label"] == "red circle"]
    # The red circle of examples/shapes/images/000000.png (docs/export.md: box 80,99,107,126).
    assert found and found[0]["score"] > 0.5
    assert [round(v) for v in found[0]["box"]] == [80, 99, 107, 126]
    assert (tmp_path / "out" / "example-shapes.png").is_file()


def test_a_run_where_every_input_failed_writes_no_output_file(tmp_path):
    out = tmp_path / "out" / "000000.json"
    (tmp_path / "broken.png").write_bytes(b"not an image")
    result = CliRunner().invoke(
        cli, ["detect", str(tmp_path / "broken.png"), str(tmp_path / "missing.png"), "--model",
              "shapes-tiny", "-q", "red circle", "--output", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"{out} not written: no image could be read" in result.stderr
    assert "2 of 2 images failed:" in result.stderr
    assert not out.exists()
    # One good input among bad ones: the file is written, with the good image only.
    result = CliRunner().invoke(
        cli, ["detect", str(tmp_path / "broken.png"), str(EXAMPLE), "--model", "shapes-tiny",
              "-q", "red circle", "--output", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert [r["image"]["path"] for r in json.loads(out.read_text())["results"]] == [str(EXAMPLE)]
