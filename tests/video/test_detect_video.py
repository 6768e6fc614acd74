"""`owl detect` on videos: per-frame equality with images, outputs, tracks, drawn video, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402
from video_helpers import write_audio_only, write_numbered, write_variable_rate  # noqa: E402

from owl.cli.main import cli  # noqa: E402
from owl.data import shapes_video  # noqa: E402
from owl.video.reader import iter_frames, probe  # noqa: E402


@pytest.fixture(scope="module")
def shapes_clip(tmp_path_factory):
    spec = shapes_video.sample_video(3, num_frames=40, fps=10.0)
    video, gt = shapes_video.write_video(spec, tmp_path_factory.mktemp("sv"))
    return video, gt, [o.name for o in spec.objects]


def run(args):
    result = CliRunner().invoke(cli, ["detect", "--model", "shapes-tiny", *args])
    return result


def queries(names):
    return [a for n in names for a in ("-q", n)]


def test_frames_equal_detect_on_the_same_frames_as_pngs(tmp_path, shapes_clip):
    video, _, names = shapes_clip
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for f in iter_frames(video):
        if f.index % 5 == 0:
            Image.fromarray(f.image).save(pngs / f"{f.index:03d}.png")
    images = run([str(pngs), *queries(names), "-o", str(tmp_path / "img.json"), "--quiet"])
    assert images.exit_code == 0, images.output
    frames = run([str(video), *queries(names), "--stride", "5", "-o", str(tmp_path / "v.jsonl")])
    assert frames.exit_code == 0, frames.output
    expected = json.loads((tmp_path / "img.json").read_text())["results"]
    got = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in got] == list(range(0, 40, 5))
    assert [r["timestamp"] for r in got] == pytest.approx([k / 10 for k in range(0, 40, 5)])
    assert len(got) == len(expected)
    for frame, image in zip(got, expected, strict=True):
        assert [d["label"] for d in frame["detections"]] == [
            d["label"] for d in image["detections"]
        ]
        for a, b in zip(frame["detections"], image["detections"], strict=True):
            np.testing.assert_allclose(a["box"], b["box"], atol=1e-5)
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    assert f"{video}: 40 frames read, 8 detected" in frames.output


def test_tracks_mot_output_read_by_motmetrics_and_drawn_video(tmp_path, shapes_clip):
    from owl.video.mot_metrics import _motmetrics

    video, gt, names = shapes_clip
    mot = tmp_path / "t.mot.txt"
    result = run([str(video), *queries(names), "--track", "--nms", "-o", str(mot),
                  "--save-dir", str(tmp_path / "drawn"), "--save-frames"])  # fmt: skip
    assert result.exit_code == 0, result.output
    mm = _motmetrics()
    table = mm.io.loadtxt(str(mot), fmt="mot15-2D")
    rows = np.loadtxt(mot, delimiter=",", ndmin=2)
    assert len(table) == len(rows) > 0
    assert set(table.index.get_level_values(0)) <= set(range(1, 41))  # frames from 1
    assert (rows[:, 7:] == -1).all() and (rows[:, 1] >= 1).all()
    # each track keeps one query's label: ids are unique per (id, class) in the JSONL run
    drawn = tmp_path / "drawn" / "video.mp4"
    info = probe(drawn)
    assert (info.width, info.height, info.fps) == (128, 128, 10.0)
    assert sum(1 for _ in iter_frames(drawn)) == 40
    assert len(list((tmp_path / "drawn" / "video").glob("*.png"))) == 40
    assert "tracks" in result.output


def test_track_label_is_its_query(tmp_path, shapes_clip):
    video, _, names = shapes_clip
    out = tmp_path / "t.jsonl"
    assert run([str(video), *queries(names), "--track", "-o", str(out)]).exit_code == 0
    labels: dict[int, set] = {}
    for line in out.read_text().splitlines():
        for d in json.loads(line)["detections"]:
            if d["track_id"] is not None:
                labels.setdefault(d["track_id"], set()).add(d["label"])
    assert labels and all(len(v) == 1 for v in labels.values())


def test_csv_has_frame_timestamp_and_track(tmp_path, shapes_clip):
    video, _, names = shapes_clip
    out = tmp_path / "t.csv"
    assert run([str(video), *queries(names), "--fps", "2", "-o", str(out)]).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "image,x0,y0,x1,y1,score,label,query_index,frame,timestamp,track_id"
    frames = sorted({int(line.split(",")[8]) for line in lines[1:]})
    assert set(frames) <= {0, 5, 10, 15, 20, 25, 30, 35}


def test_bad_videos_fail_one_line_each_and_the_run_goes_on(tmp_path):
    good = write_numbered(tmp_path / "good.mp4", 6)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mkv").write_text("no video here\n" * 20)
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    write_audio_only(tmp_path / "audio.mp4")
    vfr = write_variable_rate(tmp_path / "vfr.mkv", [0, 0.1, 0.15, 0.5, 0.55, 1.0, 1.7])
    out = tmp_path / "all.jsonl"
    result = run([str(tmp_path), "-q", "red star", "-o", str(out)])
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("  failed:")]
    assert len(failed) == 4, result.output
    for name in ("empty.mp4", "text.mkv", "cut.mp4", "audio.mp4"):
        assert sum(name in line for line in failed) == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted({r["video"] for r in records}) == sorted([str(good), str(vfr)])
    times = [r["timestamp"] for r in records if r["video"] == str(vfr)]
    assert times == pytest.approx([0, 0.1, 0.15, 0.5, 0.55, 1.0, 1.7])  # the stream's own times


def test_video_options_without_video_are_usage_errors(tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    result = run([str(tmp_path / "a.png"), "-q", "x", "--track"])
    assert result.exit_code == 2 and "applies to video files" in result.output


def test_query_video_exemplar_equals_the_same_frame_as_query_image(tmp_path, shapes_clip):
    video, gt, _ = shapes_clip
    rows = np.loadtxt(gt, delimiter=",", ndmin=2)
    x, y, w, h = rows[(rows[:, 0] == 11) & (rows[:, 1] == 1)][0, 2:6]  # object 1 at 1.0 s
    box = f"{x},{y},{x + w},{y + h}"
    [frame] = [f for f in iter_frames(video) if f.index == 10]
    png = tmp_path / "video.png"
    Image.fromarray(frame.image).save(png)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    common = [str(video), "--query-box", box, "--end", "2"]
    ra = run([*common, "--query-video", str(video), "--query-frame", "1.0", "-o", str(a)])
    rb = run([*common, "--query-image", str(png), "-o", str(b)])
    assert ra.exit_code == 0 and rb.exit_code == 0, ra.output + rb.output
    assert a.read_text() == b.read_text()
    at_1s = json.loads(a.read_text().splitlines()[10])
    assert at_1s["frame"] == 10 and at_1s["detections"][0]["label"] == "video"
    best = np.array(at_1s["detections"][0]["box"])
    inter = np.clip(np.minimum(best[2:], [x + w, y + h]) - np.maximum(best[:2], [x, y]), 0, None)
    iou = inter.prod() / ((best[2:] - best[:2]).prod() + w * h - inter.prod())
    assert iou > 0.5  # the exemplar finds its own object in its own frame
