"""owl serve's short videos (owl/serve/video.py): the same frames and tracks as `owl detect
clip.mp4 --track -o x.jsonl`, a drawn video that decodes, the frame cap, bad files, the store."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from click.testing import CliRunner  # noqa: E402

from owl.cli.main import cli  # noqa: E402
from owl.data import shapes_video  # noqa: E402
from owl.inference.detector import Detector  # noqa: E402
from owl.serve.video import DrawnVideos, VideoRequest, detect_uploaded_video  # noqa: E402
from owl.video.reader import VideoError, probe  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    spec = shapes_video.sample_video(3, num_frames=40, fps=10.0)
    video, _ = shapes_video.write_video(spec, tmp_path_factory.mktemp("sv"))
    return video, [o.name for o in spec.objects]


@pytest.fixture(scope="module")
def detector():
    return Detector("shapes-tiny", batch_size=8, backend="jax")


def detect(detector, clip, tmp_path, request):
    video, names = clip
    queries = detector.prepare_queries(names)
    return detect_uploaded_video(
        detector, threading.Lock(), video, "upload.mp4", queries, request, tmp_path / "drawn.mp4",
        {"threshold": 0.1},
    )  # fmt: skip


def test_frames_and_tracks_equal_owl_detect_track_jsonl(detector, clip, tmp_path):
    video, names = clip
    got = detect(detector, clip, tmp_path, VideoRequest(fps=5.0))
    out = tmp_path / "cli.jsonl"
    args = ["detect", "--model", "shapes-tiny", "--backend", "jax", str(video), "--track"]
    args += ["--fps", "5", "-o", str(out), "--threshold", "0.1", "--quiet"]
    args += [a for n in names for a in ("-q", n)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    want = [json.loads(line) for line in out.read_text().splitlines()]
    assert [f["frame"] for f in got["frames"]] == list(range(0, 40, 2))  # 10 fps file at 5 fps
    assert len(want) == len(got["frames"]) == got["frames_detected"] == 20
    for w, g in zip(want, got["frames"], strict=True):
        assert g["video"] == "upload.mp4"
        assert (g["frame"], g["timestamp"]) == (w["frame"], w["timestamp"])
        assert [(d["label"], d["track_id"]) for d in g["detections"]] == [
            (d["label"], d["track_id"]) for d in w["detections"]
        ]
        np.testing.assert_allclose(
            [d["box"] for d in g["detections"]] or np.zeros((0, 4)),
            [d["box"] for d in w["detections"]] or np.zeros((0, 4)),
            atol=1e-4,
        )
    assert got["tracks"] >= 1 and got["truncated"] is False
    assert (got["width"], got["height"], got["fps"]) == (128, 128, 5.0)

    drawn = probe(tmp_path / "drawn.mp4")  # decodes, one frame per detected frame, same size
    assert (drawn.width, drawn.height, drawn.frames) == (128, 128, 20)


def test_the_frame_cap_truncates_and_says_so(detector, clip, tmp_path):
    got = detect(detector, clip, tmp_path, VideoRequest(fps=None, stride=1, max_frames=7))
    assert got["frames_detected"] == 7 and got["truncated"] is True
    assert [f["frame"] for f in got["frames"]] == list(range(7))
    assert probe(tmp_path / "drawn.mp4").frames == 7


def test_a_file_that_is_no_video_names_the_upload_not_the_server_path(detector, tmp_path):
    bad = tmp_path / "secret-server-name.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    queries = detector.prepare_queries(["red circle"])
    with pytest.raises(VideoError) as e:
        detect_uploaded_video(
            detector, threading.Lock(), bad, "holiday.mp4", queries, VideoRequest(),
            tmp_path / "drawn.mp4", {},
        )  # fmt: skip
    message = str(e.value)
    assert "holiday.mp4" in message and "secret-server-name" not in message
    assert "\n" not in message
    assert not (tmp_path / "drawn.mp4").exists()


def test_the_drawn_store_keeps_the_latest_few():
    store = DrawnVideos(capacity=2)
    try:
        ids = []
        for k in range(3):
            video_id, path = store.new_path()
            path.write_bytes(bytes([k]))
            store.add(video_id, path)
            ids.append(video_id)
        assert store.get(ids[0]) is None and len(store) == 2
        assert store.get(ids[2]).read_bytes() == b"\x02"
        assert len({*ids}) == 3 and all(len(i) == 16 for i in ids)
    finally:
        store.close()
    assert not store.folder.exists()
