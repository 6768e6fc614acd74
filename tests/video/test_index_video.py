"""`owl index` on a video (--every), `owl search` answering with timestamps, the gallery link."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("faiss")

from click.testing import CliRunner  # noqa: E402

from owl.cli.main import cli  # noqa: E402
from owl.data.shapes import render_shape_mask  # noqa: E402


def write_clip(path):
    """10 s at 10 fps of grey noise; a red circle only in frames 40..59 (4.0 s to 5.9 s)."""
    from owl.video.writer import VideoWriter

    rng = np.random.default_rng(0)
    background = np.clip(130 + rng.normal(0, 8, (128, 128, 3)), 0, 255).astype(np.uint8)
    mask = render_shape_mask("circle", 30, 30)
    with VideoWriter(path, 10, 128, 128) as writer:
        for k in range(100):
            frame = background.copy()
            if 40 <= k < 60:
                frame[50:80, 40 + k - 40 : 70 + k - 40][mask] = (220, 30, 30)
            writer.write(frame)
    return path


def test_search_names_the_video_and_the_times_the_object_is_there(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4")
    index = tmp_path / "v.owlindex"
    runner = CliRunner()
    built = runner.invoke(cli, ["index", str(clip), "--index", str(index), "--model", "shapes-tiny",
                                "--every", "1s"])  # fmt: skip
    assert built.exit_code == 0, built.output
    assert "10 frames indexed" in built.output
    again = runner.invoke(cli, ["index", str(clip), "--index", str(index)])
    assert again.exit_code == 0 and "0 frames indexed" in again.output  # unchanged: skipped
    out = tmp_path / "hits.json"
    page = tmp_path / "hits.html"
    found = runner.invoke(cli, ["search", "--index", str(index), "-q", "red circle", "-t", "0.3",
                                "-o", str(out), "--html", str(page)])  # fmt: skip
    assert found.exit_code == 0, found.output
    paths = [r["image"]["path"] for r in json.loads(out.read_text())["results"]]
    assert sorted(paths) == [f"{clip}#t=4.000", f"{clip}#t=5.000"]
    html = page.read_text()
    assert f"{clip.resolve().as_uri()}#t=4.000" in html and "data:image/png;base64" in html
    assert "cannot draw" not in html
