"""`owl detect --calibrated`, `--calibration FILE`, `owl calibrate` and `owl label --calibrated`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from owl.cli.main import cli
from owl.data.shapes import CATEGORIES, write_coco_dataset

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shapes"
IMAGE = EXAMPLES / "images" / "000000.png"
# examples/shapes/annotations.json, image 000000.png: a purple triangle, a red circle at
# [81, 100, 24, 25] (xywh) and a purple hexagon; no purple circle.
RED_CIRCLE = (81.0, 100.0, 105.0, 125.0)


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _detections(path: Path) -> list[dict]:
    [record] = json.loads(path.read_text())["results"]
    return record["detections"]


def test_annotations_say_what_the_test_assumes():
    data = json.loads((EXAMPLES / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    [image] = [im for im in data["images"] if im["file_name"] == "000000.png"]
    found = {names[a["category_id"]]: a["bbox"] for a in data["annotations"]
             if a["image_id"] == image["id"]}  # fmt: skip
    assert "purple circle" not in found
    x, y, w, h = found["red circle"]
    assert (x, y, x + w, y + h) == RED_CIRCLE


def test_calibrated_detect_finds_the_red_circle_and_no_purple_circle(tmp_path):
    args = (IMAGE, "-q", "red circle", "-q", "purple circle", "--quiet")
    raw, calibrated = tmp_path / "raw.json", tmp_path / "calibrated.json"
    assert run("detect", *args, "-o", raw).exit_code == 0
    result = run("detect", *args, "--calibrated", "-o", calibrated)
    assert result.exit_code == 0, result.output
    # raw scores at the default threshold 0.1 also put a "purple circle" on the purple hexagon
    assert "purple circle" in {d["label"] for d in _detections(raw)}
    [only] = _detections(calibrated)
    assert only["label"] == "red circle" and only["score"] >= 0.5
    assert _iou(only["box"], RED_CIRCLE) >= 0.5
    assert 0.0 < only["data"]["raw_score"] < 1.0


def test_a_grey_image_gives_nothing_for_any_category(tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(grey)
    queries = [arg for name in CATEGORIES for arg in ("-q", name)]
    result = run("detect", grey, *queries, "--calibrated", "-o", tmp_path / "d.json", "--quiet")
    assert result.exit_code == 0, result.output
    assert _detections(tmp_path / "d.json") == []


def test_a_bad_calibration_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "calib.json"
    bad.write_text('{"format": "owl-calibration", "version": 1, "method": "platt"}')
    result = run("detect", IMAGE, "-q", "red circle", "--calibration", bad)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0], result.output


def test_calibrated_needs_a_file_for_a_model_that_ships_none():
    result = run("detect", IMAGE, "-q", "car", "--model", "owlvit-b32", "--calibrated")
    assert result.exit_code == 2
    assert "owl calibrate" in result.output and "owlvit-b32" in result.output


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib-world")
    write_coco_dataset(folder, 24, seed=103, progress=False)
    return folder


def test_owl_calibrate_writes_a_file_detect_uses(tmp_path, labelled):
    out = tmp_path / "calib.json"
    result = run("calibrate", "--data", labelled / "annotations.json", "--out", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["format"] == "owl-calibration" and data["model"] == "shapes-tiny"
    assert data["method"] == "platt" and data["fit"]["images"] == 24
    assert len(data["contrast"]) == 64 and set(data["queries"]) <= set(CATEGORIES)
    dets = tmp_path / "d.json"
    args = (IMAGE, "-q", "red circle", "-q", "purple circle", "-o", dets, "--quiet")
    assert run("detect", *args, "--calibration", out).exit_code == 0
    assert {d["label"] for d in _detections(dets)} <= {"red circle"}
    iso = tmp_path / "iso.json"
    result = run("calibrate", "--data", labelled, "--out", iso, "--method", "isotonic", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(iso.read_text())["method"] == "isotonic"


def test_owl_calibrate_refuses_a_missing_data_set(tmp_path):
    result = run("calibrate", "--data", tmp_path / "nothing", "--out", tmp_path / "c.json")
    assert result.exit_code == 2 and "nothing" in result.output


def test_label_calibrated_writes_only_likely_boxes(tmp_path):
    out = tmp_path / "ds"
    result = run("label", IMAGE, "--classes", "red circle,purple circle", "--out", out,
                 "--calibrated", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    labels = [names[a["category_id"]] for a in data["annotations"]]
    assert labels == ["red circle"]
    x, y, w, h = data["annotations"][0]["bbox"]
    assert _iou((x, y, x + w, y + h), RED_CIRCLE) >= 0.5
