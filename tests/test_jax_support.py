"""owl.jax_support: the supported JAX range, and the one-line note outside it; the compile
cache left off (one line) on a JAX that lacks one of its options."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from owl.jax_support import JAX_RANGE, in_range, parse_version, version_note

REPO = Path(__file__).resolve().parents[1]


def test_the_range_is_the_one_pyproject_declares():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"jax{JAX_RANGE}" in deps and f"jaxlib{JAX_RANGE}" in deps
    # No exact pins in [project] dependencies: users keep their own versions.
    assert not [d for d in deps if "==" in d]
    floor = (REPO / ".ci" / "constraints-floor.txt").read_text()
    assert re.search(r"^jax==0\.10\.0$", floor, re.M) and re.search(
        r"^jaxlib==0\.10\.0$", floor, re.M
    )


@pytest.mark.parametrize(
    "version, inside",
    [("0.10.0", True), ("0.10.2", True), ("0.11.2", True), ("0.12.0.1", True),
     ("0.12.9.dev20261001", True), ("0.9.2", False), ("0.13.0", False), ("1.0.0", False),
     ("0.10.0rc1", True)],
)  # fmt: skip
def test_in_range(version, inside):
    assert in_range(version) is inside


def test_parse_version():
    assert parse_version("0.12.0.1") == (0, 12, 0, 1)
    assert parse_version("0.11.2+cuda13") == (0, 11, 2)
    assert parse_version("0.13.0rc1") == (0, 13, 0)


def test_note_outside_the_range_is_one_line():
    assert version_note("0.11.2") is None
    note = version_note("0.13.1")
    assert note == (
        "owl: jax 0.13.1 is outside the tested range >=0.10.0,<0.13; if something fails, install "
        'a jax in that range (pip install "jax>=0.10.0,<0.13")'
    )


_MISSING_OPTION = r"""
import sys
import jax
real = jax.config.update
def update(name, value):
    if name == "jax_persistent_cache_min_entry_size_bytes":
        raise AttributeError(f"Unrecognized config option: {name}")
    return real(name, value)
jax.config.update = update
from owl import compilation_cache
print(compilation_cache.enable(sys.argv[1]))
print(compilation_cache.enable(sys.argv[1]))
print(jax.config.jax_compilation_cache_dir)
"""


def test_a_jax_without_a_cache_option_leaves_the_cache_off_in_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "OWL_COMPILATION_CACHE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _MISSING_OPTION, str(tmp_path / "xla")], capture_output=True,
        text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    # Off both times (no directory set), and said once per process.
    assert out.stdout.splitlines() == ["None", "None", "None"]
    assert out.stderr.strip().splitlines() == [
        f"owl: jax {_jax_version()} has no option jax_persistent_cache_min_entry_size_bytes; the "
        "persistent compilation cache stays off (every process compiles again)"
    ]


def _jax_version() -> str:
    import jax

    return jax.__version__
