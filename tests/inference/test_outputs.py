"""Tests for owl/inference/outputs.py: JSON, CSV and COCO files written and read back."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from owl.inference.detections import Detections
from owl.inference.outputs import (
    CSV_HEADER,
    read_json,
    to_coco_rows,
    write_coco,
    write_csv,
    write_detections,
    write_json,
)


def batch() -> list[Detections]:
    first = Detections(
        xyxy=[[10.5, 20.25, 30.0, 60.0], [0.0, 0.0, 1.0 / 3.0, 2.0]],
        confidence=[0.875, 0.1],
        class_id=[1, 0],
        labels=["a dog", "a cat, sitting"],  # the comma exercises CSV quoting
        data={"objectness": np.array([0.5, 0.25], np.float32)},
        metadata={"path": "/data/one.jpg", "width": 640, "height": 480, "image_id": 42},
    )
    second = Detections.empty({"path": "/data/two.jpg", "width": 10, "height": 10, "image_id": 7})
    third = Detections(xyxy=[[1.0, 2.0, 3.0, 4.0]], confidence=[0.5], class_id=[2], labels=["bird"])
    return [first, second, third]


def test_json_round_trip(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, batch())
    payload = json.loads(path.read_text())
    assert payload["version"] == 1 and len(payload["results"]) == 3
    assert payload["results"][0]["detections"][0]["box"] == [10.5, 20.25, 30.0, 60.0]
    assert payload["results"][1] == {
        "image": {"path": "/data/two.jpg", "width": 10, "height": 10, "image_id": 7},
        "detections": [],
    }
    assert read_json(path) == batch()  # exact: float32 values survive the text round trip


def test_read_json_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError, match="not an owl detections file"):
        read_json(tmp_path / "x.json")


def test_csv_round_trip(tmp_path):
    path = tmp_path / "out.csv"
    write_csv(path, batch())
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1] == ["/data/one.jpg", "10.5", "20.25", "30.0", "60.0", "0.875", "a dog", "1"]
    assert rows[2][:2] == ["/data/one.jpg", "0.0"] and rows[2][6:] == ["a cat, sitting", "0"]
    assert np.float32(rows[2][3]) == np.float32(1.0 / 3.0)  # shortest text, exact float32
    assert rows[3] == ["2", "1.0", "2.0", "3.0", "4.0", "0.5", "bird", "2"]  # no path: position
    assert len(rows) == 4  # the empty image has no rows


def test_coco_rows_convert_xyxy_to_xywh_and_map_categories():
    det = batch()[0]
    # Box (10.5, 20.25, 30, 60) -> x=10.5, y=20.25, w=30-10.5=19.5, h=60-20.25=39.75.
    rows = to_coco_rows(det, image_id=5, category_ids={0: 17, 1: 18})
    assert rows[0] == {
        "image_id": 5,
        "category_id": 18,
        "bbox": [10.5, 20.25, 19.5, 39.75],
        "score": 0.875,
    }
    assert rows[1]["category_id"] == 17
    assert [r["category_id"] for r in to_coco_rows(det, 5)] == [1, 0]  # None: the query index
    with pytest.raises(ValueError, match="query index 1 has no category id"):
        to_coco_rows(det, 5, category_ids=[3])


def test_coco_round_trip_with_default_and_explicit_image_ids(tmp_path):
    path = tmp_path / "out.coco.json"
    write_coco(path, batch()[:2], category_ids=[100, 200])
    rows = json.loads(path.read_text())
    assert [r["image_id"] for r in rows] == [42, 42]  # from metadata["image_id"]
    assert [r["category_id"] for r in rows] == [200, 100]
    assert rows[1]["bbox"] == [0.0, 0.0, 0.33333334, 2.0]  # shortest text of float32(1/3)
    assert np.float32(rows[1]["bbox"][2]) == np.float32(1.0 / 3.0)
    write_coco(path, batch(), image_ids=[1, 2, 3], category_ids=[0, 1, 2])
    rows = json.loads(path.read_text())
    assert [(r["image_id"], r["category_id"], r["score"]) for r in rows] == [
        (1, 1, 0.875),
        (1, 0, 0.1),
        (3, 2, 0.5),
    ]
    with pytest.raises(ValueError, match="got 1 image ids for 3 images"):
        write_coco(path, batch(), image_ids=[1])


@pytest.mark.parametrize(
    "name, check",
    [
        ("res.json", lambda text: json.loads(text)["version"] == 1),
        ("res.CSV", lambda text: text.startswith("image,x0,y0,x1,y1,score,label,query_index\n")),
        ("res.coco.json", lambda text: isinstance(json.loads(text), list)),
    ],
)
def test_write_detections_dispatches_on_suffix(tmp_path, name, check):
    write_detections(tmp_path / name, batch())
    assert check((tmp_path / name).read_text())
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_write_detections_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"out\.txt: unknown output format; name the file"):
        write_detections(tmp_path / "out.txt", batch())
