"""Tests for owl/inference/detections.py: validation, indexing, merge, NMS, dict and supervision."""

from __future__ import annotations

import json
import sys
import types
from contextlib import nullcontext as does_not_raise

import numpy as np
import pytest

from owl.inference.detections import Detection, Detections


def make(n: int = 3, **overrides) -> Detections:
    """n detections with boxes (10i, 0, 10i + 5, 5), scores 0.9, 0.8, ..., class i % 2."""
    fields = dict(
        xyxy=[[10.0 * i, 0.0, 10.0 * i + 5, 5.0] for i in range(n)],
        confidence=[0.9 - 0.1 * i for i in range(n)],
        class_id=[i % 2 for i in range(n)],
        labels=[("cat", "dog")[i % 2] for i in range(n)],
        data={"objectness": np.arange(n, dtype=np.float32) / 10},
        metadata={"path": "a.jpg", "width": 100, "height": 50},
    )
    fields.update(overrides)
    return Detections(**fields)


# --------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "overrides, expectation",
    [
        ({}, does_not_raise()),
        (
            {"xyxy": np.zeros((3, 5))},
            pytest.raises(ValueError, match=r"xyxy must have shape \[N, 4\]"),
        ),
        (
            {"confidence": [0.5, 0.4]},
            pytest.raises(ValueError, match=r"confidence must have shape \[3\]"),
        ),
        ({"class_id": [0, 1]}, pytest.raises(ValueError, match=r"class_id must have shape \[3\]")),
        ({"class_id": [0.5, 1, 0]}, pytest.raises(ValueError, match="class_id must hold integers")),
        ({"labels": ["a", "b"]}, pytest.raises(ValueError, match=r"labels must have shape \[3\]")),
        (
            {"confidence": [0.1, np.nan, 0.2]},
            pytest.raises(ValueError, match="confidence contains NaN"),
        ),
        (
            {"xyxy": [["a", "b", "c", "d"]] * 3},
            pytest.raises(ValueError, match="xyxy must be numeric"),
        ),
        (
            {"data": {"objectness": np.zeros(2)}},
            pytest.raises(ValueError, match=r"data\['objectness'\] must have 3 rows"),
        ),
    ],
)
def test_validation(overrides, expectation):
    with expectation:
        make(**overrides)


def test_fields_are_normalised_copied_and_read_only():
    boxes = np.zeros((2, 4), dtype=np.float64)
    det = Detections(xyxy=boxes, confidence=[0.5, 0.25], class_id=[1, 0], labels=("a", "b"))
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    assert det.class_id.dtype == np.int64 and det.labels.dtype.kind == "U"
    with pytest.raises(ValueError, match="read-only"):
        det.xyxy[0, 0] = 1.0
    boxes[0, 0] = 7.0  # the caller's array is not shared
    assert det.xyxy[0, 0] == 0.0
    with pytest.raises(TypeError):
        det.metadata["path"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        det.xyxy = np.zeros((2, 4))  # type: ignore[misc]


def test_empty_and_len():
    empty = Detections.empty({"path": "x.png"})
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.metadata["path"] == "x.png"
    assert len(make(4)) == 4
    assert Detections(xyxy=[], confidence=[], class_id=[], labels=[]) == Detections.empty()


# --------------------------------------------------------------------------------------------------
# Container protocol


def test_int_index_gives_length_one_detections():
    det = make(3)[1]
    assert isinstance(det, Detections) and len(det) == 1
    np.testing.assert_array_equal(det.xyxy, [[10, 0, 15, 5]])
    assert det.labels.tolist() == ["dog"] and det.class_id.tolist() == [1]
    np.testing.assert_allclose(det.data["objectness"], [0.1])
    assert det.metadata["path"] == "a.jpg"
    assert make(3)[-1].labels.tolist() == ["cat"]
    with pytest.raises(IndexError, match="index 3 out of range for 3"):
        make(3)[3]


@pytest.mark.parametrize(
    "index, expected_x0",
    [
        (slice(1, None), [10, 20]),
        (np.array([2, 0]), [20, 0]),
        ([1], [10]),
        (np.array([True, False, True]), [0, 20]),
        (np.array([], dtype=np.int64), []),
    ],
)
def test_slicing(index, expected_x0):
    det = make(3)[index]
    np.testing.assert_array_equal(det.xyxy[:, 0], expected_x0)
    np.testing.assert_allclose(det.data["objectness"], np.array(expected_x0) / 100)


def test_bad_mask_and_data_key():
    with pytest.raises(IndexError, match=r"bool mask has shape \(2,\), expected \(3,\)"):
        make(3)[np.array([True, False])]
    np.testing.assert_allclose(make(2)["objectness"], [0.0, 0.1])


def test_iteration_yields_detection_tuples():
    items = list(make(2))
    assert [type(d) for d in items] == [Detection, Detection]
    assert items[1].label == "dog" and items[1].class_id == 1
    assert items[1].confidence == pytest.approx(0.8)
    np.testing.assert_array_equal(items[1].xyxy, [10, 0, 15, 5])


def test_equality():
    assert make(3) == make(3)
    assert make(3) != make(3, labels=["cat", "dog", "bird"])
    assert make(3) != make(3, metadata={"path": "b.jpg"})


# --------------------------------------------------------------------------------------------------
# Merge and operations


def test_merge_concatenates_in_order():
    a, b = make(2), make(3)[2:]
    merged = Detections.merge([a, Detections.empty(a.metadata), b])
    np.testing.assert_array_equal(merged.xyxy[:, 0], [0, 10, 20])
    assert merged.labels.tolist() == ["cat", "dog", "cat"]
    np.testing.assert_allclose(merged.data["objectness"], [0.0, 0.1, 0.2])
    assert dict(merged.metadata) == {"path": "a.jpg", "width": 100, "height": 50}
    assert Detections.merge([]) == Detections.empty()


def test_merge_errors():
    with pytest.raises(ValueError, match=r"metadata\['path'\] differ"):
        Detections.merge([make(1), make(1, metadata={"path": "b.jpg"})])
    with pytest.raises(ValueError, match="different data keys"):
        Detections.merge([make(1), make(1, data={})])


def test_with_nms_per_class_and_class_agnostic():
    # Boxes 0 and 1 overlap with IoU 81/119 = 0.68 (10x10 boxes offset by 1 in x and y: the
    # intersection is 9x9 = 81, the union 100 + 100 - 81 = 119); box 2 is far away.
    det = Detections(
        xyxy=[[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]],
        confidence=[0.6, 0.9, 0.7],
        class_id=[0, 0, 1],
        labels=["a", "a", "b"],
    )
    kept = det.with_nms(iou_threshold=0.5)
    np.testing.assert_array_equal(kept.xyxy[:, 0], [1, 50])  # box 0 suppressed by box 1
    np.testing.assert_allclose(kept.confidence, [0.9, 0.7])  # descending order
    assert len(det.with_nms(iou_threshold=0.7)) == 3  # 0.68 is not above 0.7
    # Same boxes, different classes: only the class-agnostic NMS suppresses across them.
    two_classes = Detections(
        xyxy=det.xyxy[:2], confidence=[0.6, 0.9], class_id=[0, 1], labels=["a", "b"]
    )
    assert len(two_classes.with_nms(0.5)) == 2
    agnostic = two_classes.with_nms(0.5, class_agnostic=True)
    assert agnostic.labels.tolist() == ["b"]


def test_filter_and_top_k():
    det = make(4, confidence=[0.3, 0.9, 0.5, 0.9])
    assert det.filter(0.5).confidence.tolist() == pytest.approx([0.9, 0.5, 0.9])
    top = det.top_k(3)
    np.testing.assert_array_equal(top.xyxy[:, 0], [10, 30, 20])  # ties keep the earlier first
    assert len(det.top_k(0)) == 0 and len(det.top_k(10)) == 4
    with pytest.raises(ValueError, match="k must be >= 0"):
        det.top_k(-1)


def test_area():
    np.testing.assert_allclose(make(2, xyxy=[[0, 0, 4, 5], [1, 1, 2, 3]]).area, [20, 2])


# --------------------------------------------------------------------------------------------------
# Interop


def test_to_dict_is_json_ready_and_exact():
    det = make(2, confidence=[0.3, 0.7])
    record = json.loads(json.dumps(det.to_dict()))
    assert record["image"] == {"path": "a.jpg", "width": 100, "height": 50}
    assert record["detections"][0] == {
        "box": [0.0, 0.0, 5.0, 5.0],
        "score": 0.3,  # shortest float32 text, not 0.30000001192092896
        "label": "cat",
        "query_index": 0,
        "data": {"objectness": 0.0},
    }
    assert record["detections"][1]["data"] == {"objectness": 0.1}
    assert Detections.from_dict(record) == det


def test_to_dict_without_data_has_no_data_key():
    record = make(1, data={}).to_dict()
    assert "data" not in record["detections"][0]
    assert Detections.from_dict({"image": {}, "detections": []}) == Detections.empty()


def test_supervision_fields_via_a_duck_typed_module(monkeypatch):
    class FakeSvDetections:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    monkeypatch.setitem(
        sys.modules, "supervision", types.SimpleNamespace(Detections=FakeSvDetections)
    )
    det = make(2)
    converted = det.to_supervision()
    kwargs = converted.kwargs
    assert set(kwargs) == {"xyxy", "confidence", "class_id", "data", "metadata"}
    np.testing.assert_array_equal(kwargs["xyxy"], det.xyxy)
    assert kwargs["xyxy"].flags.writeable  # supervision mutates its arrays
    np.testing.assert_array_equal(kwargs["class_id"], [0, 1])
    assert kwargs["data"]["class_name"].tolist() == ["cat", "dog"]
    np.testing.assert_allclose(kwargs["data"]["objectness"], [0.0, 0.1])
    assert kwargs["metadata"] == {"path": "a.jpg", "width": 100, "height": 50}


def test_to_supervision_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # makes `import supervision` fail
    with pytest.raises(ImportError, match="pip install supervision"):
        make(1).to_supervision()


def test_to_supervision_real():
    sv = pytest.importorskip("supervision")
    converted = make(2).to_supervision()
    assert isinstance(converted, sv.Detections) and len(converted) == 2
    assert converted.data["class_name"].tolist() == ["cat", "dog"]
