"""Tests for the ShapesWorld generator (owl/data/shapes.py) and `owl shapes generate`."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from owl.data import shapes as world

# The 16 novel categories, worked out by hand from the rule (shape - colour) % 8 in {0, 4}.
HAND_NOVEL = {
    # (shape - colour) % 8 == 0: the diagonal
    "red circle", "green square", "blue triangle", "yellow star",
    "purple hexagon", "orange cross", "black diamond", "white ring",
    # (shape - colour) % 8 == 4
    "red hexagon", "green cross", "blue diamond", "yellow ring",
    "purple circle", "orange square", "black triangle", "white star",
}  # fmt: skip

SCENE_SEEDS = [(0, i) for i in range(40)] + [(7, i) for i in range(20)]


def _scenes(image_size=128, **kwargs):
    return [world.sample_scene(s, i, image_size=image_size, **kwargs) for s, i in SCENE_SEEDS]


@pytest.fixture(scope="module")
def scenes_128():
    return _scenes()


# ----------------------------------------------------------------------------- categories


def test_names_and_colours_follow_the_specification():
    assert world.SHAPES == (
        "circle", "square", "triangle", "star", "hexagon", "cross", "diamond", "ring",
    )  # fmt: skip
    assert world.COLOURS == {
        "red": (220, 30, 30),
        "green": (30, 160, 50),
        "blue": (30, 70, 220),
        "yellow": (240, 210, 20),
        "purple": (130, 50, 190),
        "orange": (250, 130, 10),
        "black": (20, 20, 20),
        "white": (250, 250, 250),
    }
    assert len(world.CATEGORIES) == 64
    assert world.CATEGORIES[0] == "red circle"
    assert world.CATEGORIES[8] == "green circle"
    assert world.CATEGORIES[13] == "green cross"
    assert world.CATEGORIES[63] == "white ring"
    assert world.category_index("red", "circle") == 0
    assert world.category_index("green", "circle") == 8
    assert world.category_index("blue", "star") == 19
    assert world.category_index("white", "ring") == 63


@pytest.mark.parametrize(
    ("colour", "shape", "novel"),
    [
        ("red", "circle", True),  # (0, 0)
        ("red", "hexagon", True),  # (0, 4)
        ("green", "circle", False),  # (1, 0)
        ("green", "square", True),  # (1, 1)
        ("green", "cross", True),  # (1, 5)
        ("purple", "circle", True),  # (4, 0)
        ("white", "circle", False),  # (7, 0)
        ("white", "star", True),  # (7, 3)
        ("white", "ring", True),  # (7, 7)
        ("blue", "star", False),  # (2, 3)
    ],
)
def test_novel_rule_by_hand(colour, shape, novel):
    assert world.is_novel(world.category_index(colour, shape)) is novel


def test_split_is_16_novel_48_base_and_covers_every_colour_and_shape():
    novel = {world.CATEGORIES[i] for i in world.NOVEL_CATEGORY_INDICES}
    base = {world.CATEGORIES[i] for i in world.BASE_CATEGORY_INDICES}
    assert novel == HAND_NOVEL
    assert len(base) == 48 and not novel & base and novel | base == set(world.CATEGORIES)
    assert world.NOVEL_CATEGORY_IDS == tuple(i + 1 for i in world.NOVEL_CATEGORY_INDICES)
    assert world.BASE_CATEGORY_IDS == tuple(i + 1 for i in world.BASE_CATEGORY_INDICES)
    for split in (novel, base):
        assert {name.split()[0] for name in split} == set(world.COLOURS)
        assert {name.split()[1] for name in split} == set(world.SHAPES)


def test_bad_names_and_indices_raise():
    with pytest.raises(ValueError, match="Unknown colour 'pink'"):
        world.category_index("pink", "circle")
    with pytest.raises(ValueError, match="Unknown shape 'oval'"):
        world.category_index("red", "oval")
    with pytest.raises(ValueError, match="out of range"):
        world.is_novel(64)


# ----------------------------------------------------------------------------- masks


def _ascii(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in row] for row in rows])


def test_small_masks_match_hand_drawn_pixels():
    # Pixel centres at (x + 0.5) / n; worked out by hand from each shape's inequality.
    assert np.array_equal(
        world.render_shape_mask("diamond", 5, 5),
        _ascii(["..#..", ".###.", "#####", ".###.", "..#.."]),
    )
    assert np.array_equal(
        world.render_shape_mask("circle", 5, 5),
        _ascii([".###.", "#####", "#####", "#####", ".###."]),
    )
    cross = ["..##..", "..##..", "######", "######", "..##..", "..##.."]
    assert np.array_equal(world.render_shape_mask("cross", 6, 6), _ascii(cross))
    assert world.render_shape_mask("square", 7, 3).all()


SIZES = [
    (w, h) for w in (6, 7, 12, 16, 17, 31, 40, 56) for h in (w, round(w * 1.25), round(w / 1.2))
]


@pytest.mark.parametrize("shape", world.SHAPES)
def test_masks_are_tight_and_mirror_symmetric(shape):
    for w, h in SIZES:
        mask = world.render_shape_mask(shape, w, h)
        assert mask.shape == (h, w) and mask.dtype == bool
        rows, cols = np.nonzero(mask)
        assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, h - 1, 0, w - 1), (w, h)
        assert np.array_equal(mask, mask[:, ::-1]), (w, h)  # every shape is left-right symmetric
        if shape not in ("triangle", "star"):
            assert np.array_equal(mask, mask[::-1]), (w, h)


def _pentagram_area_fraction() -> float:
    """Area of a regular pentagram divided by its bounding-box area (shoelace formula)."""
    inner = math.sin(math.radians(18)) / math.sin(math.radians(54))
    pts = [
        ((1.0 if k % 2 == 0 else inner) * math.cos(a), (1.0 if k % 2 == 0 else inner) * math.sin(a))
        for k, a in enumerate(math.radians(-90 + 36 * k) for k in range(10))
    ]
    area = 0.5 * abs(
        sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1], strict=True))
    )
    # Width 2 cos 18; height from the top point (-1) to the lower points (sin 54).
    return area / (2 * math.cos(math.radians(18)) * (1 + math.sin(math.radians(54))))


@pytest.mark.parametrize(
    ("shape", "fraction"),
    [
        ("circle", math.pi / 4),
        ("ring", math.pi / 4 * (1 - 0.6**2)),
        ("square", 1.0),
        ("triangle", 0.5),
        ("diamond", 0.5),
        ("hexagon", 0.75),  # flat-top hexagon: box minus four corner triangles of 1/16 each
        ("cross", 1 - 4 * (1 / 3) ** 2),
        ("star", _pentagram_area_fraction()),
    ],
)
def test_mask_area_matches_geometry(shape, fraction):
    # Sharp tips may be drawn up to ~1 px past the box (then clipped) to keep masks tight, which
    # grows the star by a few percent; a large box keeps that within the tolerance.
    mask = world.render_shape_mask(shape, 120, 110)
    assert mask.mean() == pytest.approx(fraction, rel=0.04)


def test_shape_features():
    n = 48
    c = np.arange(n) + 0.5 - n / 2  # pixel-centre offsets from the box centre
    r = np.hypot(c[:, None], c[None, :]) / (n / 2)  # radius relative to the outer radius
    ring = world.render_shape_mask("ring", n, n)
    assert not ring[r < 0.55].any()  # the hole (inner radius 0.6)
    assert ring[(r > 0.65) & (r < 0.95)].all()
    assert not ring[r > 1.05].any()
    circle = world.render_shape_mask("circle", n, n)
    assert circle[r < 0.95].all() and not circle[r > 1.05].any()
    cross = world.render_shape_mask("cross", n, n)
    k = n // 3 - 1
    for corner in (cross[:k, :k], cross[:k, -k:], cross[-k:, :k], cross[-k:, -k:]):
        assert not corner.any()
    assert cross[n // 2 - 2 : n // 2 + 2].all() and cross[:, n // 2 - 2 : n // 2 + 2].all()
    diamond = world.render_shape_mask("diamond", n, n)
    manhattan = (np.abs(c[:, None]) + np.abs(c[None, :])) / (n / 2)
    assert not diamond[manhattan > 1.05].any() and diamond[manhattan < 0.95].all()
    hexagon = world.render_shape_mask("hexagon", n, n)
    assert not hexagon[:4, :4].any() and hexagon[:, n // 2].all() and hexagon[n // 2].all()
    triangle = world.render_shape_mask("triangle", n, n)
    assert triangle[-1].all() and triangle[0].sum() <= 2 and not triangle[: n // 2, :4].any()
    star = world.render_shape_mask("star", n, n)
    assert star[n // 2, n // 2] and star[0].sum() <= 2
    assert not star[-3:, n // 2 - 3 : n // 2 + 3].any()  # notch between the two lower points
    assert not star[:8, :8].any() and not star[:8, -8:].any()


def test_render_shape_mask_rejects_bad_input():
    with pytest.raises(ValueError, match="Unknown shape 'oval'"):
        world.render_shape_mask("oval", 8, 8)
    with pytest.raises(ValueError, match="at least 1x1"):
        world.render_shape_mask("circle", 0, 8)


# ----------------------------------------------------------------------------- scenes


def test_same_seed_and_index_give_identical_scenes():
    a = world.sample_scene(3, 7)
    world.sample_scene(3, 8)  # generating other images in between changes nothing
    b = world.sample_scene(3, 7)
    assert a.image.dtype == np.uint8 and a.image.shape == (128, 128, 3)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.objects == b.objects and a.caption == b.caption
    assert world.sample_scene(4, 7).image.tobytes() != a.image.tobytes()
    assert world.sample_scene(3, 6).image.tobytes() != a.image.tobytes()


def test_layout_rules(scenes_128):
    counts = []
    for scene in scenes_128:
        counts.append(len(scene.objects))
        boxes = [tuple(int(v) for v in o.box_xyxy) for o in scene.objects]
        assert len({o.category for o in scene.objects}) == len(scene.objects)  # distinct
        for obj, (x0, y0, x1, y1) in zip(scene.objects, boxes, strict=True):
            assert obj.box_xyxy == (float(x0), float(y0), float(x1), float(y1))
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            assert 16 <= x1 - x0 <= 56 and 16 <= y1 - y0 <= 56
            assert max(x1 - x0, y1 - y0) / min(x1 - x0, y1 - y0) <= 1.25 + 1 / 16
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                gap_x = max(b[0] - a[2], a[0] - b[2])
                gap_y = max(b[1] - a[3], a[1] - b[3])
                assert max(gap_x, gap_y) >= 2, (a, b)  # disjoint, with 2 free pixels between
    assert set(counts) == {1, 2, 3, 4}


def test_boxes_are_tight_around_the_drawn_pixels(scenes_128):
    colours = np.array(list(world.COLOURS.values()), dtype=np.uint8)
    for scene in scenes_128:
        image = scene.image
        drawn = np.zeros(image.shape[:2], dtype=bool)
        for obj in scene.objects:
            x0, y0, x1, y1 = (int(v) for v in obj.box_xyxy)
            # Look one pixel beyond the box (boxes keep 2 px apart, so no other object is there).
            ex0, ey0 = max(x0 - 1, 0), max(y0 - 1, 0)
            window = image[ey0 : y1 + 1, ex0 : x1 + 1]
            is_colour = np.all(window == np.array(obj.rgb, dtype=np.uint8), axis=-1)
            rows, cols = np.nonzero(is_colour)
            found = (ex0 + cols.min(), ey0 + rows.min(), ex0 + cols.max() + 1, ey0 + rows.max() + 1)
            assert found == (x0, y0, x1, y1), obj
            assert np.array_equal(is_colour[y0 - ey0 : y1 - ey0, x0 - ex0 : x1 - ex0], obj.mask())
            drawn[y0:y1, x0:x1] |= obj.mask()
        # Noise covers the background only: object colours occur exactly where objects are drawn.
        any_colour = np.any(np.all(image[:, :, None, :] == colours, axis=-1), axis=-1)
        assert np.array_equal(any_colour, drawn)


def test_background_is_grey_level_plus_noise(scenes_128):
    for scene in scenes_128[:20]:
        free = np.ones(scene.image.shape[:2], dtype=bool)
        for obj in scene.objects:
            x0, y0, x1, y1 = (int(v) for v in obj.box_xyxy)
            free[y0:y1, x0:x1] = False
        pixels = scene.image[free].astype(np.float64)  # [N, 3]
        level = pixels.mean()
        assert 89 <= level <= 171
        assert np.abs(pixels.mean(axis=0) - level).max() < 1.0  # grey: channels agree
        assert pixels.std(axis=0) == pytest.approx([8.0] * 3, rel=0.08)


CAPTION_PART = re.compile(r"^(a|an) (?:(small|large) )?(\w+) (\w+)$")


def test_captions_name_each_object_once(scenes_128):
    reordered = False
    for scene in scenes_128:
        parts = re.split(r", | and ", scene.caption)
        assert len(parts) == len(scene.objects), scene.caption
        by_name = {o.name: o for o in scene.objects}
        named = []
        for part in parts:
            article, size, colour, shape = CAPTION_PART.match(part).groups()
            obj = by_name[f"{colour} {shape}"]
            side = max(obj.width, obj.height)
            assert size == ("small" if side <= 24 else "large" if side >= 44 else None), part
            assert article == ("an" if (size or colour)[0] in "aeiou" else "a"), part
            named.append(obj.name)
        for obj in scene.objects:
            assert len(re.findall(rf"\b{obj.name}\b", scene.caption)) == 1
        assert sorted(named) == sorted(by_name)
        reordered |= named != [o.name for o in scene.objects]
    assert reordered  # the caption order is shuffled, not the drawing order
    one = next(s for s in scenes_128 if len(s.objects) == 1)
    assert " and " not in one.caption and "," not in one.caption
    three = next(s for s in scenes_128 if len(s.objects) == 3)
    assert three.caption.count(", ") == 1 and three.caption.count(" and ") == 1


def test_category_restriction_and_object_counts():
    for i in range(20):
        scene = world.sample_scene(1, i, categories=world.BASE_CATEGORY_INDICES)
        assert not any(world.is_novel(o.category) for o in scene.objects)
        three = world.sample_scene(1, i, min_objects=3, max_objects=3)
        assert len(three.objects) == 3
    only = world.sample_scene(1, 0, categories=[5], max_objects=4)
    assert [o.category for o in only.objects] == [5]
    with pytest.raises(ValueError, match="Only 1 categories allowed but min_objects=2"):
        world.sample_scene(1, 0, categories=[5], min_objects=2)
    with pytest.raises(ValueError, match="Category index 64 is out of range"):
        world.sample_scene(1, 0, categories=[64])
    with pytest.raises(ValueError, match="min_objects <= max_objects"):
        world.sample_scene(1, 0, min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        world.sample_scene(-1, 0)


@pytest.mark.parametrize(
    ("size", "hw", "sides"), [(256, (256, 256), (32, 112)), ((96, 160), (96, 160), (12, 42))]
)
def test_box_sides_scale_with_image_size(size, hw, sides):
    assert world.box_side_limits(size) == sides  # 16 and 56 scaled by min(H, W) / 128
    seen = []
    for i in range(15):
        scene = world.sample_scene(2, i, image_size=size)
        assert scene.image.shape == (*hw, 3)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box_xyxy
            assert x1 <= hw[1] and y1 <= hw[0]
            seen += [obj.width, obj.height]
    assert sides[0] <= min(seen) and max(seen) <= sides[1]
    if hw == (256, 256):
        assert max(seen) > 56
    else:
        assert min(seen) < 16


def test_too_small_image_raises():
    with pytest.raises(ValueError, match="Image size 8x8 is too small"):
        world.sample_scene(0, 0, image_size=8)


# ----------------------------------------------------------------------------- COCO export


def test_coco_export_matches_the_scenes(tmp_path):
    from pycocotools.coco import COCO

    path = world.write_coco_dataset(tmp_path / "ds", 5, seed=11, image_size=64, progress=False)
    assert path == tmp_path / "ds" / "annotations.json"
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5]
    cats = coco.loadCats(coco.getCatIds())
    assert len(cats) == 64
    for cat in cats:
        assert cat["name"] == world.CATEGORIES[cat["id"] - 1]
        assert cat["name"] == f"{cat['colour']} {cat['shape']}"
        assert cat["split"] == ("novel" if cat["name"] in HAND_NOVEL else "base")
    ann_ids = set()
    for index in range(5):
        scene = world.sample_scene(11, index, image_size=64)
        info = coco.loadImgs(index + 1)[0]
        assert (info["width"], info["height"], info["caption"]) == (64, 64, scene.caption)
        png = np.asarray(Image.open(tmp_path / "ds" / "images" / info["file_name"]).convert("RGB"))
        assert np.array_equal(png, scene.image)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[index + 1]))
        assert len(anns) == len(scene.objects)
        for ann, obj in zip(anns, scene.objects, strict=True):
            x0, y0, x1, y1 = obj.box_xyxy
            assert ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
            assert ann["category_id"] == obj.category + 1
            assert ann["area"] == int(obj.mask().sum()) and ann["iscrowd"] == 0
            ann_ids.add(ann["id"])
    assert len(ann_ids) == len(coco.getAnnIds())  # unique ids
    info = json.loads(path.read_text())["info"]
    assert info["seed"] == 11 and info["image_size"] == [64, 64]


# ----------------------------------------------------------------------------- CLI


def test_cli_generate_writes_the_dataset(tmp_path):
    from owl.cli.main import cli

    out = tmp_path / "shapes"
    args = ["shapes", "generate", "--out", str(out), "--num-images", "3", "--seed", "2"]
    result = CliRunner().invoke(cli, [*args, "--image-size", "64", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "000000.png", "000001.png", "000002.png",
    ]  # fmt: skip
    data = json.loads((out / "annotations.json").read_text())
    assert len(data["images"]) == 3
    objects = [o for i in range(3) for o in world.sample_scene(2, i, image_size=64).objects]
    assert len(data["annotations"]) == len(objects)
    novel = sum(world.is_novel(o.category) for o in objects)
    assert str(out / "annotations.json") in result.output
    assert f"Objects: {len(objects)} ({len(objects) - novel} base, {novel} novel)" in result.output


def test_cli_help_and_errors(tmp_path):
    from owl.cli.main import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["shapes", "--help"])
    assert result.exit_code == 0 and "generate" in result.output
    result = runner.invoke(cli, ["shapes", "generate", "--help"])
    assert (
        result.exit_code == 0
        and "--num-images" in result.output
        and "default: 128" in result.output
    )
    out = str(tmp_path / "x")
    result = runner.invoke(cli, ["shapes", "generate", "--out", out, "--num-images", "0"])
    assert result.exit_code == 2 and "--num-images" in result.output
    result = runner.invoke(
        cli, ["shapes", "generate", "--out", out, "--num-images", "1", "--image-size", "8"]
    )
    assert result.exit_code == 2 and "too small" in result.output
    a_file = tmp_path / "file.txt"
    a_file.write_text("")
    result = runner.invoke(cli, ["shapes", "generate", "--out", str(a_file), "--num-images", "1"])
    assert result.exit_code == 2 and "file.txt" in result.output
