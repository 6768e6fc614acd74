"""The shipped `shapes-tiny` model: loads by name offline, and detects ShapesWorld objects by text,
novel categories included (it never saw a box of them), and by one-shot image query.

The scenes are rendered here from ShapesWorld seeds that no training or evaluation set uses
(the recipe's worlds are 0-2 and 100-102)."""

from __future__ import annotations

import numpy as np
import pytest

import owl
from owl.checkpoints import registry
from owl.data import shapes
from owl.inference.detector import Detector
from owl.models.configs import get_variant
from owl.ops.boxes import box_iou
from owl.recipes import shapes as recipe

SEED = 4242
RED_CIRCLE = shapes.category_index("red", "circle")


def _xyxy(obj: shapes.ShapeObject) -> np.ndarray:
    return np.array(obj.box_xyxy, np.float64)


def _scene(index: int, target: int, others: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A scene holding category ``target`` and ``others`` base objects; (image, target box)."""
    rng = np.random.default_rng([SEED, index])
    distractors = rng.choice(
        [c for c in shapes.BASE_CATEGORY_INDICES if c != target], size=others, replace=False
    )
    scene = shapes.sample_scene(
        SEED, index, categories=[target, *map(int, distractors)],
        min_objects=others + 1, max_objects=others + 1,
    )  # fmt: skip
    (obj,) = [o for o in scene.objects if o.category == target]
    return scene.image, _xyxy(obj)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iou, _ = box_iou(a[None], b[None])
    return float(iou[0, 0])


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(owl.load("shapes-tiny"))


def _top_box(detector: Detector, image: np.ndarray, query) -> np.ndarray:
    dets = detector.detect(image, [query], threshold=0.0, max_detections=1)[0]
    assert len(dets) == 1
    return dets.xyxy[0]


def test_shapes_tiny_ships_in_the_package_and_loads_offline(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.CACHE_DIR_ENV, str(tmp_path / "empty-cache"))
    monkeypatch.setenv(registry.BASE_URL_ENV, "http://127.0.0.1:9/unreachable/")
    path = registry.resolve("shapes-tiny", progress=False)
    assert path == registry.cached_path("shapes-tiny") and path.name.endswith(".safetensors.gz")
    assert path.stat().st_size < 8 * 2**20  # a few MB
    model = owl.load("shapes-tiny")
    assert model.config == get_variant("shapes-tiny")


def test_vocabulary_pruning_keeps_every_shapesworld_token(detector):
    table = np.asarray(
        detector.model.params["backbone"]["clip"]["text"]["token_embedding"]["embedding"]
    )
    used = np.flatnonzero(np.abs(table).sum(axis=1) > 0)
    np.testing.assert_array_equal(used, recipe.vocabulary_token_ids())


def test_finds_a_red_circle_with_a_tight_box(detector):
    """Red circle is a novel category: the detector never saw a box of one."""
    ious = []
    for index in range(8):
        image, box = _scene(index, RED_CIRCLE)
        ious.append(_iou(box, _top_box(detector, image, "red circle")))
    assert min(ious) > 0.4, ious  # the best box is on the red circle in every scene
    assert sum(iou > 0.7 for iou in ious) >= 6, ious  # and tight in most (measured: 6 of 8)


def test_novel_text_queries_land_on_the_novel_object(detector):
    hits = []
    for n, category in enumerate(shapes.NOVEL_CATEGORY_INDICES):
        image, box = _scene(100 + n, category)
        top = _top_box(detector, image, shapes.CATEGORIES[category])
        hits.append(_iou(box, top) > 0.5)
    assert sum(hits) >= 12, hits  # of 16 novel categories (measured: 13; chance about 5)


def test_one_shot_image_query_finds_the_same_category(detector):
    from owl.inference.queries import ImageQuery

    hits = []
    for n, category in enumerate(shapes.NOVEL_CATEGORY_INDICES):
        support, support_box = _scene(200 + n, category)
        image, box = _scene(300 + n, category)
        query = ImageQuery(exemplars=((support, tuple(support_box)),))
        top = _top_box(detector, image, query)
        hits.append(_iou(box, top) > 0.5)
    assert sum(hits) >= 10, hits  # of 16 (measured: 11; chance about 5)
