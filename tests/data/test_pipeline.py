"""Tests for owl/data/pipeline.py: batch contract, determinism, resumption, sharding, workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from owl.data import shapes
from owl.data.coco import load_detection_dataset
from owl.data.pipeline import EpochShuffleSampler, build_train_loader, make_training_example
from owl.data.transforms import AugmentConfig
from owl.ops.image import CLIP_MEAN, CLIP_STD
from owl.text.tokenizer import get_tokenizer

S = 96
KW = {"image_size": S, "pad_value": 0.5, "max_queries": 80, "max_instances": 12}
KEYS = ("image", "queries", "labels", "boxes", "instance_mask")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    shapes.write_coco_dataset(out, 10, seed=11, image_size=80, progress=False)
    return load_detection_dataset(out / "annotations.json", out / "images", log=False)


def take(loader_or_iter, n):
    it = iter(loader_or_iter)
    return [next(it) for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(KEYS) == set(y)
        for k in KEYS:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def decode(row):
    return get_tokenizer().decode(row)


def names_in(text):
    """Category names that occur in a prompt (a prompt holds one label)."""
    return [n for n in shapes.CATEGORIES if n in text]


def test_batches_follow_the_contract(dataset):
    batches = take(build_train_loader(dataset, seed=0, global_batch_size=3, **KW), 2)
    tok = get_tokenizer()
    empty = tok.tokenize([""])[0]
    for batch in batches:
        assert batch["image"].shape == (3, S, S, 3) and batch["image"].dtype == np.float32
        assert batch["queries"].shape == (3, 80, 16) and batch["queries"].dtype == np.int32
        assert batch["labels"].shape == (3, 12, 80) and batch["labels"].dtype == np.float32
        assert batch["boxes"].shape == (3, 12, 4) and batch["boxes"].dtype == np.float32
        assert batch["instance_mask"].shape == (3, 12) and batch["instance_mask"].dtype == bool
        for b in range(3):
            q, labels, boxes = batch["queries"][b], batch["labels"][b], batch["boxes"][b]
            mask = batch["instance_mask"][b]
            np.testing.assert_array_equal(q[0], empty)
            assert set(np.unique(labels)) <= {0.0, 1.0}
            np.testing.assert_array_equal(mask, labels[:, 0] == 0)
            assert (labels[mask, 1:].sum(1) >= 1).all()
            assert (labels[~mask].sum(1) == 1).all()  # padding: only column 0
            np.testing.assert_array_equal(boxes[~mask], 0)
            assert (boxes[mask, 2:] > 0).all() and (boxes >= 0).all() and (boxes <= 1).all()
            # every labelled column is a real query, not ''
            for col in np.flatnonzero(labels[mask].any(0)):
                assert decode(q[col]) != ""
        assert batch["instance_mask"].any()  # a crop can empty one example, not all


def test_instances_sit_on_pixels_of_their_label(dataset):
    """End to end: un-normalise the image; each box holds pixels of its label's colour."""
    config = AugmentConfig(**KW, prompt_templates=("{}",))
    checked = 0
    for index in range(len(dataset)):
        ex = make_training_example(dataset, index, np.random.default_rng(index), config)
        image = ex["image"] * np.float32(CLIP_STD) + np.float32(CLIP_MEAN)
        rows = [decode(r) for r in ex["queries"]]
        for m in np.flatnonzero(ex["instance_mask"]):
            (col,) = np.flatnonzero(ex["labels"][m])  # ShapesWorld boxes never merge
            colour, _ = rows[col].split(" ")
            rgb = np.asarray(shapes.COLOURS[colour], np.float32) / 255
            cx, cy, w, h = ex["boxes"][m] * S
            x0, y0 = int(np.ceil(cx - w / 2)), int(np.ceil(cy - h / 2))
            x1, y1 = int(np.floor(cx + w / 2)), int(np.floor(cy + h / 2))
            patch = image[y0:y1, x0:x1]
            on_colour = np.all(np.abs(patch - rgb) < 0.03, axis=-1)
            assert on_colour.mean() > 0.2, (index, rows[col])
            checked += 1
    assert checked >= len(dataset)


def test_exhaustive_queries_hold_every_class(dataset):
    # Without crops nothing is cut away, so every class is a positive or a negative. (A class
    # whose box a crop drops is neither: part of it may still be visible.)
    config = AugmentConfig(
        image_size=S, pad_value=0.5, max_queries=80, max_instances=20, mosaic_sizes=(2,),
        mosaic_probs=(1.0,), crop_area_range=(1.0, 1.0), crop_aspect_range=(1.0, 1.0),
    )  # fmt: skip
    for index in range(3):
        ex = make_training_example(dataset, index, np.random.default_rng(index), config)
        texts = [decode(r) for r in ex["queries"]]
        found = [n for t in texts for n in names_in(t)]
        assert sorted(found) == sorted(shapes.CATEGORIES)  # each class exactly once
        assert texts[65:] == [""] * 15


def test_removed_categories_never_appear(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes_novel")
    shapes.write_coco_dataset(out, 6, seed=5, image_size=64, progress=False)
    novel = {shapes.CATEGORIES[i - 1] for i in shapes.NOVEL_CATEGORY_IDS}
    assert any(
        a["category_id"] in shapes.NOVEL_CATEGORY_IDS
        for a in json.loads((out / "annotations.json").read_text())["annotations"]
    )
    for exhaustive in (True, False):
        ds = load_detection_dataset(
            out / "annotations.json",
            out / "images",
            remove_categories=shapes.NOVEL_CATEGORY_IDS,
            exhaustive=exhaustive,
            log=False,
        )
        for batch in take(build_train_loader(ds, seed=0, global_batch_size=3, **KW), 2):
            texts = {decode(r) for r in batch["queries"].reshape(-1, 16)}
            assert not {n for t in texts for n in names_in(t)} & novel
            assert len({n for t in texts for n in names_in(t)}) > 10


def test_annotated_negatives_reach_the_query_set(tmp_path):
    Image.new("RGB", (40, 40), (90, 90, 90)).save(tmp_path / "a.png")
    data = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 40,
             "neg_category_ids": [2, 3], "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"},
                       {"id": 3, "name": "fish"}, {"id": 4, "name": "bird"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40]}],
    }  # fmt: skip
    ds = load_detection_dataset(data, tmp_path, log=False)
    config = AugmentConfig(
        image_size=32, pad_value=0.0, max_queries=6, mosaic_sizes=(1,), mosaic_probs=(1.0,),
        prompt_templates=("{}",), num_negatives=3, crop_area_range=(1.0, 1.0),
        crop_aspect_range=(1.0, 1.0),
    )  # fmt: skip
    ex = make_training_example(ds, 0, np.random.default_rng(0), config)
    texts = [decode(r) for r in ex["queries"]]
    # 'bird' labels no box, so it is never a random negative; only 2 negatives exist
    assert texts[:2] == ["", "cat"] and sorted(texts[2:4]) == ["dog", "fish"]
    assert texts[4:] == ["", ""]
    assert ex["labels"][0].tolist() == [0, 1, 0, 0, 0, 0] and ex["instance_mask"][0]


def test_same_seed_same_batches_other_seed_other_batches(dataset):
    a = take(build_train_loader(dataset, seed=7, global_batch_size=2, **KW), 3)
    b = take(build_train_loader(dataset, seed=7, global_batch_size=2, **KW), 3)
    assert_same_batches(a, b)
    c = take(build_train_loader(dataset, seed=8, global_batch_size=2, **KW), 1)
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_resume_from_state_continues_exactly(dataset):
    full = take(build_train_loader(dataset, seed=3, global_batch_size=2, **KW), 5)
    it = iter(build_train_loader(dataset, seed=3, global_batch_size=2, **KW))
    take(it, 2)
    state = json.loads(json.dumps(it.get_state()))  # survives a JSON round trip
    assert state["batches_consumed"] == 2
    resumed = iter(build_train_loader(dataset, seed=3, global_batch_size=2, **KW))
    resumed.set_state(state)
    assert_same_batches(take(resumed, 3), full[2:])
    assert resumed.get_state()["batches_consumed"] == 5
    other = iter(build_train_loader(dataset, seed=4, global_batch_size=2, **KW))
    with pytest.raises(ValueError, match="seed: state 3 vs 4"):
        other.set_state(state)


def test_process_shards_partition_the_global_batch(dataset):
    global_batches = take(build_train_loader(dataset, seed=1, global_batch_size=4, **KW), 2)
    shards = [
        take(
            build_train_loader(
                dataset, seed=1, global_batch_size=4, process_index=p, process_count=2, **KW
            ),
            2,
        )
        for p in range(2)
    ]
    for step in range(2):
        for p in range(2):
            assert shards[p][step]["image"].shape[0] == 2
            for k in KEYS:
                # process p holds global positions p, p + 2 of each global batch
                np.testing.assert_array_equal(shards[p][step][k], global_batches[step][k][p::2])
        # disjoint: no example occurs in both shards
        a, b = shards[0][step]["image"], shards[1][step]["image"]
        assert not any(np.array_equal(x, y) for x in a for y in b)


def test_epochs_visit_every_example_once_as_first_tile():
    sampler = EpochShuffleSampler(7, seed=2)
    first = [sampler[i].record_key for i in range(7)]
    second = [sampler[i].record_key for i in range(7, 14)]
    assert sorted(first) == sorted(second) == list(range(7)) and first != second
    assert [sampler[i].record_key for i in range(7)] == first
    finite = EpochShuffleSampler(7, seed=2, num_epochs=2)
    assert len(finite) == 14
    with pytest.raises(IndexError):
        finite[14]


def test_finite_epochs_end(dataset):
    batches = list(build_train_loader(dataset, seed=0, global_batch_size=4, num_epochs=1, **KW))
    assert len(batches) == 2  # 10 examples, batches of 4, remainder dropped


def test_worker_processes_give_the_same_batches(dataset):
    reference = take(build_train_loader(dataset, seed=5, global_batch_size=2, **KW), 3)
    it = iter(build_train_loader(dataset, seed=5, global_batch_size=2, worker_count=2, **KW))
    try:
        got = take(it, 2)
        state = it.get_state()
    finally:
        it.close()
    assert_same_batches(got, reference[:2])
    # the state is portable: a loader without workers resumes it
    resumed = iter(build_train_loader(dataset, seed=5, global_batch_size=2, **KW))
    resumed.set_state(state)
    assert_same_batches(take(resumed, 1), reference[2:])


def test_bad_arguments(dataset):
    with pytest.raises(ValueError, match="multiple of process_count"):
        build_train_loader(dataset, seed=0, global_batch_size=3, process_count=2, **KW)
    with pytest.raises(ValueError, match="process_index"):
        build_train_loader(dataset, seed=0, global_batch_size=2, process_index=2, **KW)
