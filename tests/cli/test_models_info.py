"""`owl models` columns and `owl models --info NAME`: the official LVIS figures and their source."""

from __future__ import annotations

import json
import math

import jax
import pytest
from click.testing import CliRunner

from owl.checkpoints import registry
from owl.cli.main import cli
from owl.models.configs import VARIANTS
from owl.models.owl_vit import param_shapes

# The scenic owl_vit README table (LVIS val), as quoted in issue 14.
OFFICIAL = {
    "owlvit-b32": (19.3, 16.9), "owlvit-b16": (20.8, 17.1), "owlvit-l14": (34.6, 31.2),
    "owlv2-b16-st": (26.5, 29.5), "owlv2-b16": (41.4, 36.2), "owlv2-b16-ensemble": (43.9, 40.5),
    "owlv2-l14-st": (32.8, 34.6), "owlv2-l14": (48.8, 44.0), "owlv2-l14-ensemble": (44.6, 42.6),
}  # fmt: skip


def test_registry_holds_the_official_lvis_numbers():
    for name, (ap, apr) in OFFICIAL.items():
        entry = registry.get_entry(name)
        assert dict(entry.scores) == {"LVIS AP": ap, "LVIS APr": apr}
        assert "scenic owl_vit README" in entry.scores_source


@pytest.mark.parametrize("variant", sorted(registry.PARAMS))
def test_parameter_counts_are_the_models_own(variant):
    shapes = jax.tree_util.tree_leaves(
        param_shapes(VARIANTS[variant]), is_leaf=lambda x: isinstance(x, tuple)
    )
    assert registry.PARAMS[variant] == sum(math.prod(s) for s in shapes)


def test_models_table_has_the_columns():
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:8] == [
        "NAME", "VARIANT", "INPUT", "PARAMS", "AP/APr*", "FWD**", "SIZE", "CACHED",
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith("owlv2-b16-ensemble "))
    assert row.split()[2:8] == ["960", "px", "154.6M", "43.9/40.5", "5.66s", "590"]
    tiny = next(line for line in lines if line.startswith("shapes-tiny "))
    assert tiny.split()[2:6] == ["128", "px", "3.6M", "50.7/31.9"]
    assert any("benchmarks/forward.py" in line for line in lines)


def test_models_info_gives_figures_and_source():
    result = CliRunner().invoke(cli, ["models", "--info", "owlvit-l14"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "input size    840 x 840 px" in out
    assert "parameters    433,102,087" in out
    assert "download      1652 MiB" in out
    assert "LVIS AP                           34.6" in out
    assert "LVIS APr                          31.2" in out
    assert "source: scenic owl_vit README" in out
    assert "forward       - (not measured: benchmarks" in out


def test_models_info_json_and_shapes_tiny():
    result = CliRunner().invoke(cli, ["models", "--info", "shapes-tiny", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["scores"]["ShapesWorld novel AP50"] == 56.2
    assert info["scores"]["ShapesWorld base AP50"] == 80.4
    assert info["params"] == registry.PARAMS["shapes-tiny"] and info["forward_s"] is None
    assert "docs/shapes.md" in info["scores_source"]


def test_models_info_unknown_name_is_a_usage_error():
    result = CliRunner().invoke(cli, ["models", "--info", "owlvit-b33"])
    assert result.exit_code == 2
    assert "owlvit-b32" in result.output


def test_forward_times_have_one_source_named_with_its_cpu():
    # owl/assets/forward_times.json feeds `owl models` and is the README performance table's owl
    # column: the two must not drift apart again (0.47 / 2.46 / 5.25 against 3.128 / 5.656).
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = dict(re.findall(r"^\| (owl[\w-]+) @ \d+ \(\d+ tokens\) \| ([\d.]+) \|", readme, re.M))
    assert {k: float(v) for k, v in table.items()} == registry.FORWARD_S
    assert "AMD EPYC, 2 cores" in registry.FORWARD_MACHINE
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[6] for line in result.output.splitlines()[1:11]}
    assert rows["owlvit-b32"] == "0.47s" and rows["owlv2-b16-ensemble"] == "5.66s"
    assert rows["owlvit-b16"] == "3.13s" and rows["owlv2-l14"] == "-"
    assert f"on {registry.FORWARD_MACHINE}, from `python benchmarks/forward.py" in result.output
