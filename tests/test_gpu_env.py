"""benchmarks/gpu_env.py: the wheels carried to the GPU image cover what owl needs, are listed
with their sizes, and fit the 64 MiB a device run may carry."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_env  # noqa: E402


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower()


def test_every_owl_dependency_is_the_images_or_carried():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    covered = set(gpu_env.CARRIED) | set(gpu_env.IMAGE) | set(gpu_env.PROVIDED_BY_IMAGE)
    assert sorted({_name(d) for d in deps} - covered) == []
    assert not set(gpu_env.CARRIED) & set(gpu_env.IMAGE)  # the image's JAX/torch never travel


def test_size_report_lists_each_wheel_and_checks_the_limit(tmp_path):
    (tmp_path / "a-1.0-py3-none-any.whl").write_bytes(b"x" * 2048)
    (tmp_path / "b-2.0-py3-none-any.whl").write_bytes(b"x" * 1024)
    files = gpu_env.wheel_files(tmp_path)
    lines, total, fits = gpu_env.size_report(files, limit=4096)
    assert total == 3072 and fits
    assert [line.split()[0] for line in lines] == [
        "a-1.0-py3-none-any.whl",
        "b-2.0-py3-none-any.whl",
    ]
    assert lines[0].split()[1:] == ["2.0", "KiB"]
    assert not gpu_env.size_report(files, limit=3072)[2]


@pytest.mark.slow
def test_prepare_downloads_every_carried_wheel_under_64_mib(tmp_path):
    # Downloads from the package registry (about 10 MiB), as `gpu_env.py prepare` does.
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_env.py"), "prepare", "--dest",
         str(tmp_path)], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    wheels = gpu_env.wheel_files(tmp_path)
    assert {gpu_env._dist_of(w) for w in wheels} == {gpu_env._norm(d) for d in gpu_env.CARRIED}
    for w in wheels:  # CPython 3.12 on x86-64 Linux, or pure Python
        assert re.search(r"-(py3-none-any|cp3\d+-(cp312|abi3)-manylinux\S*x86_64)\.whl$", w.name)
    total = sum(w.stat().st_size for w in wheels)
    assert total < 64 << 20
    assert f"total {total / 2**20:.2f} MiB of the 64 MiB a run may carry" in out.stdout
    for w in wheels:
        assert w.name in out.stdout
