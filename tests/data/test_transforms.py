"""Tests for owl/data/transforms.py: geometry kept consistent with pixels, merging, query sets."""

from __future__ import annotations

import numpy as np
import pytest

from owl.data import transforms as T
from owl.ops.image import CLIP_MEAN, CLIP_STD
from owl.text.tokenizer import get_tokenizer

GREY = 0.5
# Distinct, saturated colours, far from the grey background and from each other.
COLOURS = {
    "red box": (1.0, 0.0, 0.0),
    "green box": (0.0, 1.0, 0.0),
    "blue box": (0.0, 0.0, 1.0),
    "yellow box": (1.0, 1.0, 0.0),
    "cyan box": (0.0, 1.0, 1.0),
    "magenta box": (1.0, 0.0, 1.0),
    "black box": (0.0, 0.0, 0.0),
    "white box": (1.0, 1.0, 1.0),
    "orange box": (1.0, 0.5, 0.0),
}


def painted(height, width, rects):
    """A grey image with filled rectangles {name: (x0, y0, x1, y1)} in their colour."""
    image = np.full((height, width, 3), GREY, np.float32)
    for name, (x0, y0, x1, y1) in rects.items():
        image[y0:y1, x0:x1] = COLOURS[name]
    boxes = np.array(list(rects.values()), np.float32).reshape(-1, 4)
    return T.Sample(image, boxes, tuple((n,) for n in rects))


def assert_boxes_on_colour(sample, tol_px=1.5):
    """Every box covers its colour: its interior is that colour and its edges are tight."""
    image = sample.image
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    for box, (name,) in zip(sample.boxes, sample.labels, strict=True):
        colour = np.asarray(COLOURS[name], np.float32)
        mask = np.all(np.abs(image - colour) < 0.05, axis=-1)
        x0, y0, x1, y1 = box
        inner = (xs > x0 + tol_px) & (xs < x1 - tol_px) & (ys > y0 + tol_px) & (ys < y1 - tol_px)
        assert inner.any(), f"{name}: box {box} too small to check"
        assert mask[inner].all(), f"{name}: pixels inside {box} are not its colour"
        rows, cols = np.nonzero(mask)
        found = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float64)
        np.testing.assert_allclose(found, box, atol=tol_px, err_msg=f"{name}: box not tight")


# ------------------------------------------------------------------------------------- geometry


def test_flip_mirrors_boxes_exactly():
    s = painted(60, 100, {"red box": (10, 20, 30, 50), "blue box": (70, 5, 100, 15)})
    out = T.flip(s)
    # x -> 100 - x, computed by hand.
    np.testing.assert_array_equal(out.boxes, [[70, 20, 90, 50], [0, 5, 30, 15]])
    assert_boxes_on_colour(out, tol_px=0)
    assert out.labels == s.labels


def test_horizontal_flip_probability():
    s = painted(20, 30, {"red box": (0, 0, 10, 10)})
    rng = np.random.default_rng(0)
    flipped = sum(T.horizontal_flip(s, rng).boxes[0, 0] == 20 for _ in range(2000))
    assert 900 < flipped < 1100
    assert T.horizontal_flip(s, rng, p=0.0) is s


def test_crop_clips_and_keeps_boxes_with_enough_area():
    s = painted(
        100,
        100,
        {
            "red box": (10, 10, 30, 30),  # fully inside the window
            "green box": (40, 10, 60, 30),  # 14 of 20 columns inside: 70% -> kept, clipped
            "blue box": (10, 60, 30, 80),  # 10 of 20 rows inside: 50% -> dropped
            "yellow box": (80, 80, 95, 95),  # outside -> dropped
        },
    )
    out = T.crop(s, (5, 0, 54, 70), min_area_fraction=0.6)  # x 5..54, y 0..70
    assert out.image.shape == (70, 49, 3)
    assert [ls[0] for ls in out.labels] == ["red box", "green box"]
    np.testing.assert_array_equal(out.boxes, [[5, 10, 25, 30], [35, 10, 49, 30]])
    assert_boxes_on_colour(out, tol_px=0)


def test_crop_keeps_exactly_sixty_percent():
    s = painted(50, 100, {"red box": (0, 0, 10, 10)})
    assert len(T.crop(s, (4, 0, 100, 50), 0.6).labels) == 1  # 6/10 left
    assert len(T.crop(s, (5, 0, 100, 50), 0.6).labels) == 0  # 5/10 left


def test_crop_window_ranges():
    rng = np.random.default_rng(3)
    for _ in range(300):
        x0, y0, x1, y1 = T.sample_crop_window(rng, 90, 120)
        w, h = x1 - x0, y1 - y0
        assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 90
        assert 0.3 - 0.03 <= w * h / (90 * 120) <= 1.0
        assert 0.75 - 0.05 <= w / h <= 1.33 + 0.05


def test_random_crop_keeps_pixels_under_boxes():
    s = painted(
        80,
        100,
        {"red box": (5, 5, 35, 40), "green box": (50, 10, 90, 30), "blue box": (20, 50, 70, 75)},
    )
    rng = np.random.default_rng(1)
    kept = 0
    for _ in range(40):
        out = T.random_crop(s, rng)
        assert_boxes_on_colour(out, tol_px=0)
        kept += len(out.labels)
    assert kept > 0


def test_resize_with_pad_boxes_follow_pixels():
    s = painted(80, 120, {"red box": (10, 10, 50, 40), "green box": (70, 30, 118, 78)})
    out = T.resize_with_pad(s, 64, pad_value=0.25)
    assert out.image.shape == (64, 64, 3)
    # long side 120 -> 64, short side floor(80 * 64 / 120) = 42 rows; the rest is padding.
    np.testing.assert_allclose(out.image[42:], 0.25)
    np.testing.assert_allclose(
        out.boxes[0], [10 * 64 / 120, 10 * 42 / 80, 50 * 64 / 120, 40 * 42 / 80]
    )
    assert_boxes_on_colour(out, tol_px=1.5)


def test_resize_upscales_tall_image():
    s = painted(50, 30, {"blue box": (3, 4, 20, 30)})
    out = T.resize_with_pad(s, 100, pad_value=0.0)
    # height 50 -> 100, width floor(30 * 100 / 50) = 60
    np.testing.assert_allclose(out.image[:, 60:], 0.0)
    assert_boxes_on_colour(out, tol_px=1.5)


def test_mosaic_offsets_tiles_and_merges_label_lists():
    tiles = [
        painted(32, 32, {"red box": (2, 2, 10, 10)}).replace(negatives=("cat", "green box")),
        painted(32, 32, {"green box": (5, 5, 20, 12)}).replace(negatives=("dog",)),
        painted(32, 32, {"blue box": (0, 0, 32, 32)}),
        painted(32, 32, {"yellow box": (30, 30, 32, 32)}).replace(negatives=("cat", "bird")),
    ]
    out = T.mosaic(tiles, 65, pad_value=0.1, exclude_negatives=("bird",))
    assert out.image.shape == (65, 65, 3)
    # tile k at row k // 2, column k % 2, 32 px each; the 1 px strip at the end is padding.
    np.testing.assert_array_equal(
        out.boxes, [[2, 2, 10, 10], [37, 5, 52, 12], [0, 32, 32, 64], [62, 62, 64, 64]]
    )
    np.testing.assert_allclose(out.image[64], 0.1)
    np.testing.assert_allclose(out.image[:, 64], 0.1)
    assert out.labels == (("red box",), ("green box",), ("blue box",), ("yellow box",))
    # union of negatives minus positives ("green box") and excluded ("bird")
    assert out.negatives == ("cat", "dog")
    assert_boxes_on_colour(out, tol_px=0)


def test_mosaic_rejects_wrong_tiles():
    with pytest.raises(ValueError, match="square number"):
        T.mosaic([painted(10, 10, {})] * 3, 30, 0.5)
    with pytest.raises(ValueError, match="expected"):
        T.mosaic([painted(10, 10, {})] * 4, 30, 0.5)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_augmented_mosaic_keeps_boxes_on_colour(n):
    config = T.AugmentConfig(image_size=96, pad_value=GREY)
    names = list(COLOURS)  # one colour per tile, so no colour repeats in a mosaic
    shapes = [
        (4, 6, 40, 40),
        (60, 50, 110, 75),
        (20, 10, 70, 70),
        (0, 0, 30, 80),
        (50, 30, 100, 60),
    ]
    rng = np.random.default_rng(n)
    checked = 0
    for _ in range(4):
        tiles = []
        for k in range(n * n):
            tile = painted(80, 120, {names[k]: shapes[int(rng.integers(len(shapes)))]})
            tiles.append(T.augment_tile(tile, rng, 96 // n, config))
        out = T.mosaic(tiles, 96, GREY)
        assert out.image.shape == (96, 96, 3)
        assert_boxes_on_colour(out, tol_px=2.0)
        checked += len(out.labels)
    assert checked >= n * n


def test_choose_mosaic_size_frequencies():
    rng = np.random.default_rng(0)
    draws = [T.choose_mosaic_size(rng) for _ in range(6000)]
    freq = [draws.count(n) / len(draws) for n in (1, 2, 3)]
    np.testing.assert_allclose(freq, [0.4, 0.3, 0.3], atol=0.025)


# ------------------------------------------------------------------------------------- merging


def test_merge_overlapping_instances():
    boxes = np.array(
        [
            [0, 0, 10, 10],
            [20, 20, 30, 30],
            [0, 0, 10, 9.5],  # IoU 0.95 with box 0 -> merged into it
            [20, 20, 30, 28.95],  # IoU 0.895 with box 1 -> stays separate
        ],
        np.float32,
    )
    s = T.Sample(np.zeros((40, 40, 3), np.float32), boxes, (("a",), ("b",), ("c", "a"), ("d",)))
    seen_boxes = set()
    for seed in range(20):
        out = T.merge_overlapping_instances(s, np.random.default_rng(seed), 0.9)
        assert out.labels == (("a", "c"), ("b",), ("d",))
        np.testing.assert_array_equal(out.boxes[1:], boxes[[1, 3]])
        seen_boxes.add(tuple(out.boxes[0].tolist()))
    # the kept box is one of the two, chosen at random
    assert seen_boxes == {(0, 0, 10, 10), (0, 0, 10, 9.5)}


def test_merge_chains_three_identical_boxes():
    boxes = np.array([[0, 0, 10, 10]] * 3, np.float32)
    s = T.Sample(np.zeros((10, 10, 3), np.float32), boxes, (("a",), ("b",), ("c",)))
    out = T.merge_overlapping_instances(s, np.random.default_rng(0), 0.9)
    assert out.labels == (("a", "b", "c"),)


# ------------------------------------------------------------------------------------- queries

SOT, EOT = 49406, 49407


def _decode(row):
    return get_tokenizer().decode(row)


def test_prompt_label():
    assert T.prompt_label("cat", "itap of a {}.") == "itap of a cat"
    assert T.prompt_label("#tree house", "a photo of a {}.") == "tree house"


def test_build_query_set_order_and_truncation():
    rng = np.random.default_rng(0)
    queries, row_of = T.build_query_set(
        ["cat", "dog", "cat"], ["bird", "dog", "fish"], rng, max_queries=6, templates=("{}",)
    )
    assert queries[:3] == ["", "cat", "dog"]
    assert sorted(queries[3:5]) == ["bird", "fish"] and queries[5] == ""
    assert {k: queries[v] for k, v in row_of.items()} == {
        "cat": "cat", "dog": "dog", "bird": "bird", "fish": "fish"
    }  # fmt: skip
    # Too many labels: positives are kept first, negatives dropped.
    queries, row_of = T.build_query_set(
        ["a", "b", "c"], ["x", "y"], rng, max_queries=3, templates=("{}",)
    )
    assert queries == ["", "a", "b"] and set(row_of) == {"a", "b"}


def test_build_query_set_uses_random_templates():
    rng = np.random.default_rng(0)
    templates = ("a photo of a {}.", "itap of the {}", "{}")
    prompts = set()
    for _ in range(30):
        queries, _ = T.build_query_set(["cat"], [], rng, max_queries=2, templates=templates)
        prompts.add(queries[1])
    assert prompts == {"a photo of a cat", "itap of the cat", "cat"}


def test_encode_example_follows_the_batch_contract():
    config = T.AugmentConfig(
        image_size=40, pad_value=0.5, max_queries=8, max_instances=5, prompt_templates=("{}",)
    )
    image = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    boxes = np.array([[0, 0, 20, 10], [10, 20, 40, 40], [0, 0, 20, 10.2]], np.float32)
    s = T.Sample(image, boxes, (("cat",), ("dog",), ("kitten",)), negatives=("bird", "cat"))
    ex = T.encode_example(s, np.random.default_rng(1), config)

    assert ex["image"].dtype == np.float32 and ex["image"].shape == (40, 40, 3)
    np.testing.assert_allclose(
        ex["image"], (image - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD), rtol=1e-6
    )
    q = ex["queries"]
    assert q.dtype == np.int32 and q.shape == (8, 16)
    # row 0 and the padding rows are '' = [SOT, EOT, 0, ...]
    empty = [SOT, EOT] + [0] * 14
    texts = [_decode(row) for row in q]
    assert q[0].tolist() == empty and texts[0] == ""
    # positives in order of appearance (the "cat" and "kitten" boxes merge: IoU 200/204), then
    # the negatives minus positives ("cat" is both: a positive)
    assert texts[1:5] == ["cat", "kitten", "dog", "bird"]
    for row in range(5, 8):
        assert q[row].tolist() == empty

    labels, mask = ex["labels"], ex["instance_mask"]
    assert labels.dtype == np.float32 and labels.shape == (5, 8)
    assert mask.dtype == bool and mask.tolist() == [True, True, False, False, False]
    row = {t: i for i, t in enumerate(texts) if t}
    expected = np.zeros((5, 8), np.float32)
    expected[0, [row["cat"], row["kitten"]]] = 1  # merged instance carries both labels
    expected[1, row["dog"]] = 1
    expected[2:, 0] = 1  # padding instances: column 0
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(mask, labels[:, 0] == 0)

    b = ex["boxes"]
    assert b.dtype == np.float32 and b.shape == (5, 4)
    # cxcywh / 40, by hand (merged box is one of the two "cat"/"kitten" boxes)
    assert np.allclose(b[0], [0.25, 0.125, 0.5, 0.25]) or np.allclose(
        b[0], [0.25, 0.1275, 0.5, 0.255]
    )
    np.testing.assert_allclose(b[1], [0.625, 0.75, 0.75, 0.5])
    np.testing.assert_array_equal(b[2:], 0)


def test_encode_example_truncates_instances_and_drops_unqueried():
    config = T.AugmentConfig(
        image_size=20, pad_value=0.0, max_queries=3, max_instances=3, prompt_templates=("{}",)
    )
    boxes = np.array([[0, 0, 4, 4], [5, 5, 9, 9], [10, 10, 14, 14], [15, 15, 19, 19]], np.float32)
    s = T.Sample(np.zeros((20, 20, 3), np.float32), boxes, (("a",), ("b",), ("c",), ("d",)))
    ex = T.encode_example(s, np.random.default_rng(0), config)
    texts = [_decode(r) for r in ex["queries"]]
    assert texts == ["", "a", "b"]  # 'd' truncated with its instance, 'c' has no query row left
    assert ex["instance_mask"].tolist() == [True, True, False]
    np.testing.assert_array_equal(ex["labels"], [[0, 1, 0], [0, 0, 1], [1, 0, 0]])


def test_augment_config_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        T.AugmentConfig(image_size=96, pad_value=0.5, mosaic_probs=(0.5, 0.3, 0.3))
    with pytest.raises(ValueError, match="equal length"):
        T.AugmentConfig(image_size=96, pad_value=0.5, mosaic_sizes=(1, 2))
    with pytest.raises(ValueError, match="exactly one"):
        T.AugmentConfig(image_size=96, pad_value=0.5, prompt_templates=("no slot",))
