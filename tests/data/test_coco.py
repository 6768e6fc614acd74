"""Tests for owl/data/coco.py: COCO/LVIS reading, federated negatives, problems, hygiene."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from owl.data import shapes
from owl.data.coco import (
    DatasetError,
    DetectionDataset,
    Example,
    NegativeSampler,
    load_detection_dataset,
)
from owl.data.transforms import Sample, add_random_negatives


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    shapes.write_coco_dataset(out, 6, seed=3, image_size=64, progress=False)
    return out


def _write_png(path, width, height):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (128, 128, 128)).save(path)


# ------------------------------------------------------------------------------------- COCO


def test_coco_examples_match_the_json(shapes_dir):
    data = json.loads((shapes_dir / "annotations.json").read_text())
    ds = load_detection_dataset(shapes_dir / "annotations.json", shapes_dir / "images")
    assert len(ds) == 6 and ds.exhaustive
    names = {c["id"]: c["name"] for c in data["categories"]}
    for ex, im in zip(ds, data["images"], strict=True):
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        assert ex.image_id == im["id"]
        assert ex.image_path == str((shapes_dir / "images" / im["file_name"]).resolve())
        assert (ex.width, ex.height) == (64, 64)
        expected = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
        np.testing.assert_array_equal(ex.boxes, expected)
        assert ex.labels == tuple(names[a["category_id"]] for a in anns)
        assert ex.negatives == () and ex.not_exhaustive == ()
    assert ds.class_names == tuple(shapes.CATEGORIES)
    assert ds.report.num_problems == 0
    assert ds.report.num_instances == len(data["annotations"])


def test_coco_exhaustive_negatives_are_all_absent_classes(shapes_dir):
    ds = load_detection_dataset(shapes_dir / "annotations.json", shapes_dir / "images")
    for ex in ds:
        negatives = ds.negatives_for(ex)
        assert set(negatives) == set(shapes.CATEGORIES) - set(ex.labels)
        assert len(negatives) == 64 - len(set(ex.labels))
    federated = load_detection_dataset(
        shapes_dir / "annotations.json", shapes_dir / "images", exhaustive=False
    )
    assert not federated.exhaustive
    assert all(federated.negatives_for(ex) == () for ex in federated)


def test_remove_categories_by_id_and_name(shapes_dir):
    novel = set(shapes.NOVEL_CATEGORY_IDS)
    data = json.loads((shapes_dir / "annotations.json").read_text())
    novel_names = {shapes.CATEGORIES[i - 1] for i in novel}
    kept_anns = [a for a in data["annotations"] if a["category_id"] not in novel]
    assert 0 < len(kept_anns) < len(data["annotations"])  # the fixture has both kinds

    by_id = load_detection_dataset(
        shapes_dir / "annotations.json", shapes_dir / "images", remove_categories=sorted(novel)
    )
    raw_names = [n.upper().replace(" ", "_") for n in sorted(novel_names)]  # canonicalised
    by_name = load_detection_dataset(
        shapes_dir / "annotations.json",
        shapes_dir / "images",
        remove_categories=raw_names + ["zebra"],
    )
    for ds in (by_id, by_name):
        assert len(ds) == 6  # images stay, their novel boxes go
        assert ds.report.num_instances == len(kept_anns)
        assert ds.report.num_removed_instances == len(data["annotations"]) - len(kept_anns)
        assert set(ds.removed_names) == novel_names
        assert not novel_names & set(ds.class_names)
        assert not novel_names & set(ds.negative_sampler.names)
        for ex in ds:
            assert not novel_names & set(ex.labels)
            assert not novel_names & set(ds.negatives_for(ex))
    assert by_name.report.unmatched_removals == ("zebra",)
    assert "zebra" in by_name.report.summary()
    with pytest.raises(DatasetError, match="999"):
        load_detection_dataset(
            shapes_dir / "annotations.json", shapes_dir / "images", remove_categories=[999]
        )


# ------------------------------------------------------------------------------------- LVIS


def _lvis(tmp_path):
    for split, name in [("train2017", "a.jpg"), ("val2017", "b.jpg")]:
        _write_png(tmp_path / "imgs" / split / name, 40, 30)
    return {
        "images": [
            {
                "id": 1,
                "coco_url": "http://images.cocodataset.org/train2017/a.jpg",
                "width": 40,
                "height": 30,
                "neg_category_ids": [2, 3],
                "not_exhaustive_category_ids": [1],
            },
            {
                "id": 2,
                "coco_url": "http://images.cocodataset.org/val2017/b.jpg",
                "width": 40,
                "height": 30,
                "neg_category_ids": [],
                "not_exhaustive_category_ids": [],
            },
        ],
        "categories": [
            {"id": 1, "name": "arctic_(type_of_shoe)", "frequency": "r"},
            {"id": 2, "name": "Ball", "frequency": "f"},
            {"id": 3, "name": "cab_(taxi)", "frequency": "c"},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 40, 30]},
        ],
    }


def test_lvis_federated_fields(tmp_path):
    ds = load_detection_dataset(_lvis(tmp_path), tmp_path / "imgs")
    assert not ds.exhaustive
    a, b = ds
    assert a.image_path == str((tmp_path / "imgs" / "train2017" / "a.jpg").resolve())
    assert b.image_path.endswith("val2017/b.jpg")
    assert a.labels == ("arctic type of shoe",)
    np.testing.assert_array_equal(a.boxes, [[1, 2, 11, 7]])
    assert a.negatives == ("ball", "cab taxi")
    assert a.not_exhaustive == ("arctic type of shoe",)
    assert ds.negatives_for(a) == ("ball", "cab taxi")
    assert ds.negatives_for(b) == ()
    assert ds.class_names == ("arctic type of shoe", "ball", "cab taxi")
    # random negatives come from labelled classes only, by frequency
    assert ds.negative_sampler.probabilities() == {"arctic type of shoe": 0.5, "ball": 0.5}


def test_lvis_removed_category_is_not_a_negative(tmp_path):
    ds = load_detection_dataset(_lvis(tmp_path), tmp_path / "imgs", remove_categories=["ball"])
    a, b = ds
    assert a.negatives == ("cab taxi",) and ds.negatives_for(a) == ("cab taxi",)
    assert b.labels == () and len(b.boxes) == 0
    assert "ball" not in ds.negative_sampler.names


# ------------------------------------------------------------------------------------- problems


def test_annotation_problems_are_counted_and_reported_once(tmp_path, caplog):
    _write_png(tmp_path / "imgs" / "ok.png", 50, 40)
    _write_png(tmp_path / "imgs" / "nosize.png", 20, 10)
    data = {
        "images": [
            {"id": 1, "file_name": "ok.png", "width": 50, "height": 40},
            {"id": 2, "file_name": "missing.png", "width": 50, "height": 40},
            {"id": 3, "file_name": "nosize.png"},
            {"id": 1, "file_name": "ok.png", "width": 50, "height": 40},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "?"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 5, 5]},  # fine
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},  # degenerate
            {"id": 3, "image_id": 1, "category_id": 2, "bbox": [45, 30, 10, 20]},  # clipped
            {"id": 4, "image_id": 1, "category_id": 2, "bbox": [60, 0, 5, 5]},  # outside
            {"id": 5, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]},  # unknown cat
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 7, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},  # missing image
            {"id": 8, "image_id": 9, "category_id": 1, "bbox": [1, 1, 5, 5]},  # unknown image
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]},  # malformed
            {"id": 10, "image_id": 3, "category_id": 2, "bbox": [0, 0, 4, 4]},  # fine
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},  # unnamed cat
            {"id": 12, "image_id": 1, "category_id": 1, "bbox": [1, 1, -3, 5]},  # degenerate
        ],
    }
    with caplog.at_level(logging.INFO, logger="owl.data.coco"):
        ds = load_detection_dataset(data, tmp_path / "imgs")
    report = ds.report
    assert report.counts == {
        "duplicate_image_id": 1,
        "missing_image_file": 1,
        "unnamed_category": 1,
        "degenerate_box": 2,
        "box_clipped": 1,
        "box_outside_image": 1,
        "unknown_category": 1,
        "crowd_box": 1,
        "unknown_image": 2,  # image 2 (dropped, file missing) and image 9
        "malformed_annotation": 1,
    }
    assert len(ds) == 2 and report.num_examples == 2 and report.num_instances == 3
    ok, nosize = ds
    np.testing.assert_array_equal(ok.boxes, [[10, 10, 15, 15], [45, 30, 50, 40]])
    assert ok.labels == ("cat", "dog")
    assert (nosize.width, nosize.height) == (20, 10)  # read from the file header
    assert report.examples["missing_image_file"] == [
        f"image 2: {tmp_path / 'imgs' / 'missing.png'}"
    ]
    assert len(report.examples["degenerate_box"]) == 2
    # one log record: the summary paragraph, a warning, naming counts and examples
    records = [r for r in caplog.records if r.name == "owl.data.coco"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "kept 2 of 4 images and 3 of 12 boxes" in message
    assert "2 boxes with width or height <= 0" in message and "annotation 2 bbox" in message


def test_examples_per_problem_are_capped(tmp_path):
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 5, "height": 5} for i in range(10)],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [],
    }
    _write_png(tmp_path / "9.png", 5, 5)
    ds = load_detection_dataset(data, tmp_path, log=False)
    assert ds.report.counts == {"missing_image_file": 9}
    assert len(ds.report.examples["missing_image_file"]) == 3


def test_fatal_only_when_nothing_usable_remains(tmp_path):
    data = {
        "images": [{"id": 1, "file_name": "gone.png", "width": 5, "height": 5}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}],
    }
    with pytest.raises(DatasetError, match="no usable training image remains.*1 images whose"):
        load_detection_dataset(data, tmp_path, log=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"images": [], "annotations": [], "categories": []}', "has no images"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1, "name": "x"}]}', "'annotations'"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_detection_dataset(path, tmp_path)


def test_missing_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="image folder not found"):
        load_detection_dataset({"images": []}, tmp_path / "nope")


# ------------------------------------------------------------------------------------- negatives


def test_negative_sampler_draws_proportionally_to_frequency():
    sampler = NegativeSampler({"a": 1, "b": 3, "c": 6, "never": 0})
    rng = np.random.default_rng(0)
    n = 20000
    draws = [sampler.sample(rng, 1)[0] for _ in range(n)]
    freq = {k: draws.count(k) / n for k in ("a", "b", "c")}
    # binomial standard deviations are at most 0.0035; allow about 4 of them
    assert abs(freq["a"] - 0.1) < 0.015 and abs(freq["b"] - 0.3) < 0.015
    assert abs(freq["c"] - 0.6) < 0.015 and "never" not in draws
    draws = [sampler.sample(rng, 1, exclude={"c"})[0] for _ in range(4000)]
    assert abs(draws.count("a") / 4000 - 0.25) < 0.03 and "c" not in draws


def test_negative_sampler_is_deterministic_and_without_replacement():
    sampler = NegativeSampler({f"n{i}": i + 1 for i in range(30)})
    first = sampler.sample(np.random.default_rng(5), 10, exclude={"n29"})
    assert first == sampler.sample(np.random.default_rng(5), 10, exclude={"n29"})
    assert len(set(first)) == 10 and "n29" not in first
    assert sorted(sampler.sample(np.random.default_rng(0), 100)) == sorted(sampler.names)


def test_add_random_negatives_tops_up_to_total():
    sampler = NegativeSampler({f"n{i}": 1 for i in range(100)})
    s = Sample(np.zeros((4, 4, 3), np.float32), [[0, 0, 1, 1]], (("n0",),), negatives=("n1",))
    out = add_random_negatives(s, np.random.default_rng(0), sampler, 50, exclude=["n2"])
    assert out.negatives[0] == "n1" and len(out.negatives) == 50 == len(set(out.negatives))
    assert not {"n0", "n2"} & set(out.negatives)
    many = s.replace(negatives=tuple(f"x{i}" for i in range(60)))
    assert add_random_negatives(many, np.random.default_rng(0), sampler, 50) is many


def test_plain_examples_make_a_federated_dataset():
    ex = Example("a.png", 1, 10, 10, [[0, 0, 5, 5], [1, 1, 4, 4]], ("cat", "cat"), ("dog",))
    ds = DetectionDataset([ex, Example("b.png", 2, 10, 10, [[0, 0, 2, 2]], ("dog",))])
    assert not ds.exhaustive
    assert ds.label_counts == {"cat": 2, "dog": 1}
    assert ds.class_names == ("cat", "dog")
    with pytest.raises(ValueError, match="one label per box"):
        Example("c.png", 3, 10, 10, [[0, 0, 1, 1]], ())
