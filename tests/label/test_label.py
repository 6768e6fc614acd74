"""Tests for owl/label and `owl label`: formats read back independently, AP equals `owl detect`'s,
kill -9 resume equals a fresh run, bad images, caption -> query extraction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from owl.cli.main import cli
from owl.data import shapes
from owl.label.captions import caption_queries, match_captions, read_captions

sv = pytest.importorskip("supervision")

NAMES = ["red circle", "blue star", "green square", "yellow triangle", "white ring"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    shapes.write_coco_dataset(out, 10, seed=5, progress=False)
    return out


def _run(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def test_caption_queries_on_constructed_captions():
    assert caption_queries("a small red star, a large blue circle and a white ring") == [
        "small red star", "small red", "red star", "small", "red", "star",
        "large blue circle", "large blue", "blue circle", "large", "blue", "circle",
        "white ring", "white", "ring",
    ]  # fmt: skip
    two = caption_queries(
        "A small red star and a white ring.", min_words=2, max_words=2,
        extra_stop_words=("small", "large"),
    )  # fmt: skip
    assert two == ["red star", "white ring"]
    assert caption_queries("a photo of the dog on a sofa") == ["dog", "sofa"]
    assert caption_queries("the, of and") == []
    assert len(caption_queries(" ".join(f"w{i}" for i in range(40)))) == 300


def test_captions_file_json_and_csv(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"a/x.png": "a red star", "y.png": ["dog", "cat"]}))
    entries = match_captions(["a/x.png", "/else/y.png", "z.png"], read_captions(j))
    assert entries == ["a red star", ["dog", "cat"], None]
    c = tmp_path / "c.csv"
    c.write_text('image,classes\nx.png,"dog; cat"\n')
    assert read_captions(c) == {"x.png": ["dog", "cat"]}
    bad = tmp_path / "b.csv"
    bad.write_text("file,text\nx.png,dog\n")
    with pytest.raises(ValueError, match=r"b\.csv:1: the CSV needs a header"):
        read_captions(bad)


def test_every_format_read_back_by_supervision_equals_detect(world, tmp_path):
    out = tmp_path / "ds"
    classes = ",".join(NAMES)
    r = _run(["label", str(world / "images"), "--classes", classes, "-t", "0.05", "--out",
              str(out), "--format", "coco,yolo,voc", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    dets = tmp_path / "d.json"
    args = ["detect", str(world / "images"), "-t", "0.05", "--nms", "--class-agnostic-nms",
            "--nms-iou", "0.5", "-o", str(dets), "--quiet"]  # fmt: skip
    for n in NAMES:
        args += ["-q", n]
    assert _run(args).exit_code == 0
    from owl.inference.outputs import read_json

    expected = {}
    for d in read_json(dets):
        expected[os.path.basename(d.metadata["path"])] = (d.xyxy, list(d.labels))
    assert sum(len(v[1]) for v in expected.values()) > 0
    images = str(out / "images")
    readers = {
        "yolo": sv.DetectionDataset.from_yolo(images, str(out / "labels"), str(out / "data.yaml")),
        "voc": sv.DetectionDataset.from_pascal_voc(images, str(out / "Annotations")),
        "coco": sv.DetectionDataset.from_coco(images, str(out / "annotations.json")),
    }
    for fmt, ds in readers.items():
        assert len(ds) == 10, fmt
        for path, _, got in ds:
            boxes, labels = expected[os.path.basename(path)]
            assert len(got) == len(labels), fmt
            o1, o2 = np.lexsort(got.xyxy.T[::-1]), np.lexsort(boxes.T[::-1])
            np.testing.assert_allclose(got.xyxy[o1], boxes[o2], atol=0.128)  # 1e-3 of 128 px
            assert [ds.classes[int(c)] for c in got.class_id[o1]] == [labels[i] for i in o2]


def test_eval_of_the_labels_equals_detect_ap(world, tmp_path):
    from owl.eval.metrics import evaluate

    gt = json.loads((world / "annotations.json").read_text())
    names = [c["name"] for c in gt["categories"]]
    out = tmp_path / "ds"
    r = _run(["label", str(world / "images"), "--classes", ",".join(names), "-t", "0.1",
              "--out", str(out), "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    labels = json.loads((out / "annotations.json").read_text())
    by_file = {im["file_name"]: im["id"] for im in gt["images"]}
    ids = {im["id"]: by_file[im["file_name"]] for im in labels["images"]}
    cat = {c["id"]: next(g["id"] for g in gt["categories"] if g["name"] == c["name"])
           for c in labels["categories"]}  # fmt: skip
    rows = [{"image_id": ids[a["image_id"]], "category_id": cat[a["category_id"]],
             "bbox": a["bbox"], "score": a["score"]} for a in labels["annotations"]]  # fmt: skip
    dets = tmp_path / "d.coco.json"
    r = _run(["detect", str(world / "images"), "--annotations", str(world / "annotations.json"),
              "-t", "0.1", "--nms", "--class-agnostic-nms", "--nms-iou", "0.5", "-o", str(dets),
              "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    a = evaluate(world / "annotations.json", rows)
    b = evaluate(world / "annotations.json", str(dets))
    assert len(rows) == len(json.loads(dets.read_text())) > 0
    assert a["stats"]["AP"] == pytest.approx(b["stats"]["AP"], abs=1e-9)
    assert a["stats"]["AP50"] == pytest.approx(b["stats"]["AP50"], abs=1e-9)


def test_bad_images_are_reported_and_the_rest_written(world, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("000000.png", "000001.png"):
        (folder / name).write_bytes((world / "images" / name).read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "ds"
    r = CliRunner().invoke(cli, ["label", str(folder), "--classes", "red circle", "--out",
                                 str(out), "--format", "yolo", "-t", "0.01"])  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "1 of 3 images failed" in r.output and "broken.png" in r.output
    assert sorted(os.listdir(out / "images")) == ["000000.png", "000001.png"]
    assert sorted(os.listdir(out / "labels")) == ["000000.txt", "000001.txt"]


def test_usage_errors(world, tmp_path):
    r = CliRunner().invoke(cli, ["label", str(world / "images"), "--out", str(tmp_path)])
    assert r.exit_code == 2 and "give the vocabulary" in r.output
    r = CliRunner().invoke(cli, ["label", str(world / "images"), "--classes", "a", "--out",
                                 str(tmp_path), "--format", "tfrecord"])  # fmt: skip
    assert r.exit_code == 2 and "--format" in r.output
    r = CliRunner().invoke(cli, ["label", str(world / "images"), "--classes", "a", "--out",
                                 str(tmp_path), "--split", "val=2"])  # fmt: skip
    assert r.exit_code == 2 and "--split" in r.output


def test_captions_label_from_each_images_caption(world, tmp_path):
    gt = json.loads((world / "annotations.json").read_text())
    captions = {im["file_name"]: im["caption"] for im in gt["images"]}
    f = tmp_path / "captions.json"
    f.write_text(json.dumps(captions))
    out = tmp_path / "ds"
    r = _run(["label", str(world / "images"), "--captions", str(f), "--out", str(out), "-t",
              "0.05", "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((out / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    for a in data["annotations"]:  # every label is an n-gram of its own image's caption
        assert names[a["category_id"]] in caption_queries(captions[files[a["image_id"]]])


def _tree(folder: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and ".owl-label" not in p.parts:
            # VOC's <path> names the output folder itself, which differs between the two runs
            out[str(p.relative_to(folder))] = p.read_bytes().replace(str(folder).encode(), b"DIR")
    return out


def test_kill_9_and_resume_equals_a_fresh_run(world, tmp_path):
    args = [sys.executable, "-m", "owl", "label", str(world / "images"), "--classes",
            ",".join(NAMES), "-t", "0.05", "--format", "coco,yolo,voc", "--split", "val=0.3",
            "--batch-size", "1", "--quiet"]  # fmt: skip
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    subprocess.run([*args, "--out", str(fresh)], check=True, capture_output=True)
    proc = subprocess.Popen([*args, "--out", str(resumed)], stderr=subprocess.PIPE)
    log = resumed / ".owl-label" / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and log.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines = log.read_bytes().count(b"\n")
    assert 3 <= lines < 10, lines  # killed in the middle
    with open(log, "ab") as f:  # and as if killed during a write
        f.write(b'{"image_id":9,"ima')
    r = subprocess.run([*args, "--out", str(resumed)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert _tree(resumed) == _tree(fresh)
    assert len(_tree(fresh)) > 10
