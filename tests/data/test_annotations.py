"""Tests for owl.data.annotations: loading, validation errors, writing, and the category-id map."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from owl.data.annotations import (
    CategoryMap,
    EvalDataError,
    ResultsTable,
    detect_format,
    load_annotations,
    load_json,
    load_results,
    write_results,
)


def _dataset() -> dict:
    """COCO ids are not contiguous: 1, 3, 7, 90 (index 0..3)."""
    return {
        "info": {"year": 2017},
        "images": [{"id": 4, "width": 64, "height": 48}, {"id": 9, "width": 64, "height": 48}],
        "categories": [
            {"id": 90, "name": "toothbrush"},
            {"id": 1, "name": "person"},
            {"id": 7, "name": "train"},
            {"id": 3, "name": "car"},
        ],
        "annotations": [
            {"id": 1, "image_id": 4, "category_id": 1, "bbox": [1, 2, 10, 20]},
            {"id": 2, "image_id": 9, "category_id": 90, "bbox": [0, 0, 4, 4], "area": 7.5},
        ],
    }


def _row(image_id=4, category_id=1, bbox=(1.0, 2.0, 3.0, 4.0), score=0.5) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": list(bbox), "score": score}


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{\n  "images": [],\n  "categories": [,]\n}\n', encoding="utf-8")
    with pytest.raises(EvalDataError) as err:
        load_json(path)
    assert str(err.value).startswith(f"{path}:3:18: invalid JSON: Expecting value")
    assert "\n" not in str(err.value)
    with pytest.raises(EvalDataError, match="file not found"):
        load_json(tmp_path / "missing.json")


def test_annotations_are_normalised_without_touching_the_input(tmp_path):
    raw = _dataset()
    before = copy.deepcopy(raw)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    for source in (raw, path):
        ann = load_annotations(source)
        assert ann["annotations"][0]["area"] == 200 and ann["annotations"][0]["iscrowd"] == 0
        assert ann["annotations"][1]["area"] == 7.5  # a given area is kept
        assert ann["info"] == {"year": 2017}
        assert load_annotations(ann) is ann  # already validated
    assert raw == before
    assert ann.origin == str(path)


def test_empty_dataset_and_bad_annotations_are_rejected():
    with pytest.raises(EvalDataError, match="annotations: the dataset has no images"):
        load_annotations({"images": [], "categories": [{"id": 1, "name": "a"}]})
    with pytest.raises(EvalDataError, match="no categories"):
        load_annotations({"images": [{"id": 1}], "categories": []})
    cases = [
        (lambda d: d["images"].append({"id": 4}), "duplicate image ids: 4"),
        (
            lambda d: d["categories"].append({"id": 5, "name": "car"}),
            "'car' is used by ids 3 and 5",
        ),
        (lambda d: d["annotations"][0].update(image_id=77), "unknown image ids: 77"),
        (lambda d: d["annotations"][0].update(category_id=2), "unknown category ids: 2"),
        (
            lambda d: d["annotations"][1].update(bbox=[0, 0, -1, 4]),
            "annotation 2: 'bbox'.*negative",
        ),
        (lambda d: d["annotations"][0].pop("bbox"), r"annotation 1: 'bbox' must be \[x, y"),
    ]
    for mutate, message in cases:
        data = _dataset()
        mutate(data)
        with pytest.raises(EvalDataError, match=message):
            load_annotations(data)


def test_format_detection():
    assert detect_format(load_annotations(_dataset())) == "coco"
    with_neg = _dataset()
    with_neg["images"][0]["neg_category_ids"] = [3]
    lvis = load_annotations(with_neg)
    assert detect_format(lvis) == "lvis"
    # LVIS-style sets get the federated lists on every image.
    assert lvis["images"][1]["neg_category_ids"] == []
    assert lvis["images"][1]["not_exhaustive_category_ids"] == []
    with_freq = _dataset()
    with_freq["categories"][0]["frequency"] = "r"
    assert detect_format(load_annotations(with_freq)) == "lvis"


def test_results_load_in_order_and_check_ids(tmp_path):
    ann = load_annotations(_dataset())
    rows = [_row(9, 90, score=0.25), _row(4, 1, (5, 6, 7, 8), 1)]
    table = load_results(rows, ann)
    assert table.image_ids.tolist() == [9, 4] and table.category_ids.tolist() == [90, 1]
    assert table.boxes.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert table.scores.tolist() == [0.25, 1.0]

    unknown_cats = [_row(category_id=c) for c in (2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 2)]
    with pytest.raises(EvalDataError) as err:
        load_results(unknown_cats, ann)
    assert "category ids not in the annotations: 2, 4, 5, 6, 8, 9, 10, 11, 12, 13 (and 1 more)" in (
        str(err.value)
    )
    with pytest.raises(EvalDataError, match="image ids not in the annotations: 5, 123"):
        load_results([_row(123), _row(5), _row(4)], ann)

    path = tmp_path / "dets.json"
    path.write_text(json.dumps({"detections": rows}), encoding="utf-8")
    with pytest.raises(EvalDataError, match=f"{path}: expected a JSON list"):
        load_results(path, ann)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image_id": 4, "category_id": 1, "bbox": [1, 2, 3, 4]}, "detection 1: 'score'"),
        (_row(image_id="4"), "detection 1: 'image_id' must be an integer"),
        (_row(category_id=1.5), "detection 1: 'category_id' must be an integer"),
        (_row(bbox=(1, 2, 3)), r"detection 1: 'bbox' must be \[x, y, width, height\]"),
        (_row(bbox=(1, 2, -3, 4)), "detection 1: 'bbox'.*negative"),
        (_row(score=float("nan")), "detection 1: 'score' must be a finite number"),
        ("box", "detection 1 is not an object"),
    ],
)
def test_malformed_detection_rows_are_named(row, message):
    with pytest.raises(EvalDataError, match=message):
        load_results([_row(), row], load_annotations(_dataset()))


def test_write_results_round_trips(tmp_path):
    ann = load_annotations(_dataset())
    rows = [
        {
            "image_id": np.int64(9),
            "category_id": np.int32(90),
            "bbox": np.array([1.5, 2.0, 3.25, 4.0]),
            "score": np.float32(0.75),
        },
        _row(4, 1, (0.1, 0.2, 0.3, 0.4), 0.1),
    ]
    path = write_results(tmp_path / "sub" / "dets.json", rows)
    assert json.loads(path.read_text())[0] == {
        "image_id": 9, "category_id": 90, "bbox": [1.5, 2.0, 3.25, 4.0], "score": 0.75
    }  # fmt: skip
    table = load_results(path, ann)
    assert table.to_rows()[1] == _row(4, 1, (0.1, 0.2, 0.3, 0.4), 0.1)
    again = load_results(write_results(tmp_path / "again.json", table), ann)
    for a, b in zip(
        (table.image_ids, table.category_ids, table.boxes, table.scores),
        (again.image_ids, again.category_ids, again.boxes, again.scores),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_results_table_checks_column_lengths():
    with pytest.raises(ValueError, match="columns disagree"):
        ResultsTable(np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros((3, 4)), np.zeros(2))


def test_category_map_round_trip_with_non_contiguous_ids(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_dataset()), encoding="utf-8")
    cmap = CategoryMap.from_annotations(path)
    assert cmap.ids == (1, 3, 7, 90)
    assert cmap.names == ("person", "car", "train", "toothbrush")
    indices = np.array([3, 0, 0, 2, 1])
    ids = cmap.ids_for_indices(indices)
    assert ids.tolist() == [90, 1, 1, 7, 3]  # index 0 is category id 1, and it is kept
    np.testing.assert_array_equal(cmap.indices_for_ids(ids), indices)
    assert cmap.name_of(7) == "train" and len(cmap) == 4
    with pytest.raises(KeyError, match="unknown category ids: 2"):
        cmap.indices_for_ids([1, 2])
    with pytest.raises(IndexError):
        cmap.ids_for_indices([4])
    with pytest.raises(IndexError):
        cmap.ids_for_indices([-1])


def test_category_map_resolves_names_and_ids():
    cmap = CategoryMap.from_annotations(_dataset())
    assert cmap.resolve(["car", 90, "7", "PERSON", " train "]) == [1, 3, 7, 90]
    with pytest.raises(EvalDataError, match="unknown categories .*: 2, zebra"):
        cmap.resolve(["car", "zebra", "2"])


def test_write_results_text_is_one_compact_object_per_line(tmp_path):
    table = ResultsTable(
        np.array([3, 3]), np.array([1, 90]), np.array([[0.5, 1.0, 2.0, 4.25], [0.1, 0, 1, 1]]),
        np.array([0.875, 0.1]),
    )  # fmt: skip
    path = write_results(tmp_path / "d.json", table, chunk=1)
    assert path.read_text() == (
        '[{"image_id":3,"category_id":1,"bbox":[0.5,1.0,2.0,4.25],"score":0.875},\n'
        '{"image_id":3,"category_id":90,"bbox":[0.1,0.0,1.0,1.0],"score":0.1}]\n'
    )
    assert write_results(tmp_path / "e.json", []).read_text() == "[]\n"


def test_detect_coco_output_uses_the_same_writer(tmp_path):
    from owl.inference.detections import Detections
    from owl.inference.outputs import write_coco

    det = Detections(
        xyxy=np.array([[0.5, 1.0, 2.5, 5.25]], np.float32),
        confidence=np.array([0.875], np.float32),
        class_id=np.array([0]),
        labels=np.array(["a"]),
    )
    write_coco(tmp_path / "o.coco.json", [det], image_ids=[7], category_ids=[90])
    assert (tmp_path / "o.coco.json").read_text() == (
        '[{"image_id":7,"category_id":90,"bbox":[0.5,1.0,2.0,4.25],"score":0.875}]\n'
    )
