"""What a wheel carries: every package under owl/ (found, not listed) and the shipped recipes."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _folders_with_python(root: Path) -> set[str]:
    """Dotted names of every folder under owl/ that holds a .py file (what must be a package)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            found.add(".".join(Path(folder).relative_to(root.parent).parts))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel that `pip wheel .` builds from this checkout (no dependencies, no network)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    [path] = out.glob("owl-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_package_under_owl_and_the_cli(wheel):
    names = wheel.namelist()
    packages = {".".join(n.split("/")[:-1]) for n in names if n.endswith(".py")}
    assert _folders_with_python(REPO / "owl") <= packages
    assert {"owl.recipes", "owl.configs", "owl.configs.models", "owl.cli"} <= packages
    assert "owl/cli/main.py" in names and not any(n.startswith("cli/") for n in names)


def test_wheel_ships_the_recipes_and_assets(wheel):
    names = set(wheel.namelist())
    for recipe in ("finetune_owlvit_b32", "finetune_owlv2_b16", "train_tiny", "shapes_clip",
                   "shapes_detect"):  # fmt: skip
        assert f"owl/configs/{recipe}.py" in names
    assert "owl/assets/shapes-tiny.safetensors.gz" in names
    assert "owl/assets/bpe_simple_vocab_16e6.txt.gz" in names
    assert "owl/assets/example-shapes.png" in names  # `owl example-image`: the wheel quick start
    assert "owl/assets/shapes-tiny.calibration.json" in names  # `owl detect --calibrated`
