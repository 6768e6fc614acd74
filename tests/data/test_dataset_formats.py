"""Tests for owl/data/formats.py, yolo.py, voc.py and the COCO instances writer.

Written datasets are read back by an independent reader (supervision's DetectionDataset) and by
owl's own readers; boxes must agree to 1e-3 of the image size. Mistakes in hand-made datasets are
one-line `DatasetError`s naming file and line.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from owl.data import shapes
from owl.data.coco import DatasetError, Example, load_detection_dataset
from owl.data.formats import (
    detect_dataset_format,
    load_dataset,
    place_images,
    unique_names,
    write_dataset,
)
from owl.data.voc import read_voc
from owl.data.yolo import read_yolo

sv = pytest.importorskip("supervision")

SIZE = 64


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 6-image ShapesWorld COCO set, with sub-pixel scored boxes added to image 1."""
    out = tmp_path_factory.mktemp("shapes")
    shapes.write_coco_dataset(out, 6, seed=3, image_size=SIZE, progress=False)
    ds = load_detection_dataset(out / "annotations.json", out / "images", log=False)
    examples = []
    rng = np.random.default_rng(0)
    for ex in ds.examples:
        boxes = ex.boxes + rng.uniform(-0.4, 0.4, ex.boxes.shape).astype(np.float32)
        boxes = np.clip(boxes, 0, SIZE)
        examples.append(
            dataclasses.replace(ex, boxes=boxes, scores=rng.uniform(0.1, 1, len(ex.labels)))
        )
    # An image with no boxes: every format must keep it.
    examples[-1] = dataclasses.replace(examples[-1], boxes=np.zeros((0, 4)), labels=(), scores=[])
    return examples, list(ds.class_names)


def _written(tmp_path, source, splits=None):
    examples, names = source
    splits = splits or {"": examples}
    placed = {}
    for split, exs in splits.items():
        placed[split] = place_images(
            exs, tmp_path / "images" / split, unique_names([e.image_path for e in exs])
        )
    write_dataset(tmp_path, placed, names, ["coco", "yolo", "voc"])
    return placed, names


def _by_name(examples):
    return {os.path.basename(e.image_path): e for e in examples}


def _assert_same(expected, boxes, labels, names_or_none=None):
    assert len(boxes) == len(expected.labels)
    tol = 1e-3 * max(expected.width, expected.height)
    order_e = np.lexsort(expected.boxes.T[::-1])
    order_g = np.lexsort(np.asarray(boxes).T[::-1]) if len(boxes) else []
    np.testing.assert_allclose(np.asarray(boxes)[order_g], expected.boxes[order_e], atol=tol)
    assert [labels[i] for i in order_g] == [expected.labels[i] for i in order_e]


def test_supervision_reads_every_format_back(tmp_path, source):
    placed, names = _written(tmp_path, source)
    expected = _by_name(placed[""])
    images = str(tmp_path / "images")
    readers = {
        "yolo": sv.DetectionDataset.from_yolo(
            images, str(tmp_path / "labels"), str(tmp_path / "data.yaml")
        ),
        "voc": sv.DetectionDataset.from_pascal_voc(images, str(tmp_path / "Annotations")),
        "coco": sv.DetectionDataset.from_coco(images, str(tmp_path / "annotations.json")),
    }
    for fmt, ds in readers.items():
        seen = set()
        for path, _, dets in ds:
            ex = expected[os.path.basename(path)]
            labels = [ds.classes[int(c)] for c in dets.class_id]
            _assert_same(ex, dets.xyxy, labels)
            seen.add(os.path.basename(path))
        assert seen == set(expected), fmt


def test_owl_readers_read_every_format_back(tmp_path, source):
    placed, _ = _written(tmp_path, source)
    expected = _by_name(placed[""])
    for target, fmt in (
        (tmp_path / "data.yaml", "yolo"),
        (tmp_path / "Annotations", "voc"),
        (tmp_path / "annotations.json", "coco"),
    ):
        ds, line = load_dataset(target, format="auto", log=False)
        assert line.startswith(f"data.format = {fmt} (auto-detected"), line
        assert len(ds) == len(expected)
        for ex in ds:
            _assert_same(expected[os.path.basename(ex.image_path)], ex.boxes, ex.labels)
            assert ds.exhaustive
    coco = load_detection_dataset(tmp_path / "annotations.json", tmp_path / "images", log=False)
    want = _by_name(placed[""])
    for ex in coco:
        np.testing.assert_allclose(
            ex.scores, want[os.path.basename(ex.image_path)].scores, rtol=1e-6
        )


def test_splits_and_min_score(tmp_path, source):
    examples, _ = source
    _written(tmp_path, source, {"train": examples[:4], "val": examples[4:]})
    assert sorted(os.listdir(tmp_path / "images")) == ["train", "val"]
    train, line = load_dataset(tmp_path / "data.yaml", split="train", log=False)
    val, _ = load_dataset(tmp_path / "data.yaml", split="val", log=False)
    assert (len(train), len(val)) == (4, 2)
    coco_val, line = load_dataset(tmp_path, format="coco", split="val", log=False)
    assert "as configured" in line and len(coco_val) == 2
    voc_train, _ = load_dataset(tmp_path, format="voc", split="train", log=False)
    assert len(voc_train) == 4
    all_scores = np.concatenate([e.scores for e in examples[:4]])
    kept, _ = load_dataset(tmp_path, format="coco", split="train", min_score=0.5, log=False)
    assert sum(len(e.labels) for e in kept) == int((all_scores >= 0.5).sum())
    # A dropped low-score box's class is not a negative of its image.
    for ex, orig in zip(kept, examples[:4], strict=True):
        low = {n for n, s in zip(orig.labels, orig.scores, strict=True) if s < 0.5}
        assert not low & set(kept.negatives_for(ex)) - set(ex.labels)


def test_remove_categories_in_yolo(tmp_path, source):
    _written(tmp_path, source)
    examples, _ = source
    name = examples[0].labels[0]
    ds, _ = load_dataset(tmp_path / "data.yaml", remove_categories=[name], log=False)
    assert all(name not in ex.labels for ex in ds)
    assert name not in ds.class_names and name in ds.removed_names


def _yolo_set(tmp_path, label_text, names=("cat", "dog")):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "a.png")
    Image.new("RGB", (40, 20)).save(tmp_path / "images" / "b.png")
    (tmp_path / "labels" / "a.txt").write_text(label_text)
    (tmp_path / "data.yaml").write_text(
        "train: images\nval: images\nnames: [" + ", ".join(names) + "]\n"
    )
    return tmp_path / "data.yaml"


def test_yolo_mistakes_name_file_and_line(tmp_path):
    yaml_path = _yolo_set(tmp_path, "0 0.5 0.5 0.5 0.5\n1 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError) as e:
        read_yolo(yaml_path, log=False)
    msg = str(e.value)
    assert f"{tmp_path / 'labels' / 'a.txt'}:3: class index 5 is outside the 2 names" in msg
    assert "\n" not in msg
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5\n")
    with pytest.raises(DatasetError, match=r"a\.txt:1: expected 'class cx cy w h'"):
        read_yolo(yaml_path, log=False)
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n0 0.95 0.5 0.5 0.5\n")
    with pytest.raises(DatasetError, match=r"a\.txt:2: box .* outside the image"):
        read_yolo(yaml_path, log=False)


def test_yolo_image_without_label_file_has_no_objects(tmp_path):
    yaml_path = _yolo_set(tmp_path, "1 0.5 0.25 0.5 0.5\n")
    ds, line = load_dataset(yaml_path, log=False)
    assert "1 images without a label file read as images with no objects" in line
    by = _by_name(ds.examples)
    assert by["b.png"].labels == () and by["a.png"].labels == ("dog",)
    np.testing.assert_allclose(by["a.png"].boxes, [[10, 0, 30, 10]], atol=1e-4)
    # An exhaustive set: dog is a negative of b, cat of a.
    assert "dog" in ds.negatives_for(by["b.png"]) and "cat" in ds.negatives_for(by["a.png"])


def test_yolo_folder_with_classes_txt(tmp_path):
    _yolo_set(tmp_path, "1 0.5 0.5 0.5 0.5\n")
    (tmp_path / "data.yaml").unlink()
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert detect_dataset_format(tmp_path) == "yolo"
    assert read_yolo(tmp_path, log=False).class_names == ("cat", "dog")


def _voc(tmp_path, box, size=(40, 20)):
    Image.new("RGB", size).save(tmp_path / "a.png")
    xml = (
        "<annotation>\n  <filename>a.png</filename>\n"
        f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>\n"
        "  <object>\n    <name>Cat</name>\n    <bndbox>\n"
        + "".join(
            f"      <{t}>{v}</{t}>\n"
            for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
        )
        + "    </bndbox>\n  </object>\n</annotation>\n"
    )
    (tmp_path / "ann").mkdir(exist_ok=True)
    (tmp_path / "ann" / "a.xml").write_text(xml)


def test_voc_box_outside_the_image_names_file_and_line(tmp_path):
    _voc(tmp_path, (1, 1, 41, 10))
    with pytest.raises(DatasetError) as e:
        read_voc(tmp_path / "ann", tmp_path, log=False)
    assert str(e.value).startswith(f"{tmp_path / 'ann' / 'a.xml'}:6: box xmin=1 ymin=1 xmax=41")
    assert "outside the 40x20 image" in str(e.value)


def test_voc_reads_one_based_inclusive_boxes(tmp_path):
    _voc(tmp_path, (1, 1, 40, 20))
    ds = read_voc(tmp_path / "ann", tmp_path, log=False)
    np.testing.assert_allclose(ds[0].boxes, [[0, 0, 40, 20]])
    assert ds[0].labels == ("cat",)


def test_voc_malformed_xml_names_the_line(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "a.xml").write_text("<annotation>\n<size>\n</annotation>\n")
    with pytest.raises(DatasetError, match=r"a\.xml:3: invalid XML"):
        read_voc(tmp_path / "ann", log=False)


def test_coco_instances_carry_scores_and_ids(tmp_path, source):
    placed, names = _written(tmp_path, source)
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == names
    assert [c["id"] for c in data["categories"]] == list(range(1, len(names) + 1))
    first = placed[""][0]
    anns = [a for a in data["annotations"] if a["image_id"] == first.image_id]
    assert [a["score"] for a in anns] == pytest.approx(first.scores.tolist(), rel=1e-6)
    x0, y0, x1, y1 = first.boxes[0].tolist()
    assert anns[0]["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-4)


def test_unique_names_and_place_images(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / folder / "x.png")
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "X.jpg"]
    assert unique_names(paths) == ["x.png", "x-2.png", "X-3.jpg"]
    ex = [Example(str(p), i, 4, 4, np.zeros((0, 4)), ()) for i, p in enumerate(paths[:2])]
    placed = place_images(ex, tmp_path / "out", ["x.png", "x-2.png"])
    assert os.path.samefile(placed[1].image_path, paths[1])
    copied = place_images(ex, tmp_path / "copy", ["x.png", "x-2.png"], copy=True)
    assert not os.path.islink(copied[0].image_path)
    assert open(copied[0].image_path, "rb").read() == paths[0].read_bytes()


def test_detect_dataset_format_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset"):
        detect_dataset_format(tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a dataset owl can read"):
        detect_dataset_format(tmp_path)


def test_trainer_reads_a_yolo_set_and_says_so(tmp_path, source, capsys):
    """`owl train`'s loader builder takes data.yaml with no image folder and prints the format."""
    from owl.configs import __file__ as configs_init  # noqa: F401 (the shipped configs exist)
    from owl.train.config import load_config, resolve_config
    from owl.train.trainer import build_loaders, model_config_from

    _written(tmp_path, source)
    config = load_config(
        resolve_config("shapes_detect"),
        [f"data.train_annotations={tmp_path / 'data.yaml'}", "train.batch_size=2"],
    )
    train, _ = build_loaders(config, model_config_from(config))
    err = capsys.readouterr().err
    assert (
        "data.format = yolo (auto-detected from" in err and "6 images, " in err
    )  # novel boxes removed by the config
    batch = next(iter(train))
    assert batch["image"].shape[0] == 2
