"""owl.files: atomic writes that leave the old file on failure and respect the umask."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from owl.files import atomic_path, atomic_write


@pytest.fixture
def umask():
    """Sets a umask for the test and restores the old one."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_text_file_written_under_umask_022_is_0644(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "sub" / "out.json"
    with atomic_write(path) as f:
        f.write("[]\n")
    assert path.read_text() == "[]\n"
    assert _mode(path) == 0o644


def test_mode_follows_a_stricter_umask(tmp_path, umask):
    umask(0o077)
    path = tmp_path / "private.bin"
    with atomic_write(path, "wb") as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert _mode(path) == 0o600


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path) as f:
            f.write("new, half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_atomic_path_for_writers_that_take_a_file_name(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "arr.npy"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path
        np.save(tmp.open("wb"), np.arange(3))
    assert np.load(path).tolist() == [0, 1, 2]
    assert _mode(path) == 0o644


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


@pytest.mark.parametrize("writer", ["owl", "official", "coco"])
def test_written_files_are_not_private(tmp_path, umask, writer):
    """The files a user gets (converted checkpoints, -o outputs, detections) follow the umask."""
    umask(0o022)
    if writer == "coco":
        from owl.data.annotations import ResultsTable, write_results

        path = tmp_path / "detections.json"
        write_results(path, ResultsTable.empty())
    else:
        from owl.models.configs import get_variant
        from owl.models.owl_vit import param_shapes

        config = get_variant("shapes-tiny")
        params = _zeros(param_shapes(config))
        if writer == "owl":
            from owl.checkpoints.owl_format import save_owl

            path = save_owl(tmp_path / "m.safetensors", config, params)
        else:
            from owl.checkpoints.official import write_official

            path = write_official(tmp_path / "m.msgpack", params)
    assert _mode(path) == 0o644


def _zeros(shapes):
    if isinstance(shapes, dict):
        return {k: _zeros(v) for k, v in shapes.items()}
    return np.zeros(tuple(shapes.shape) if hasattr(shapes, "shape") else tuple(shapes), np.float32)
