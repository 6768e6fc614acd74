"""Fitting and measuring calibration on ShapesWorld with shapes-tiny (owl.eval.calibration)."""

from __future__ import annotations

import numpy as np
import pytest
from ece_reference import ece_by_histogram

from owl.data.shapes import CATEGORIES, sample_scene
from owl.eval.calibration import (
    calibrated_scores,
    ece,
    fit_calibration,
    no_match_accuracy,
    raw_scores,
    score_images,
    select,
    threshold_metrics,
)
from owl.inference.calibration import Calibration
from owl.inference.detector import Detector


def _world(seed: int, n: int):
    scenes = [sample_scene(seed, i) for i in range(n)]
    truths = [
        (np.array([o.box_xyxy for o in s.objects]), [o.name for o in s.objects]) for s in scenes
    ]
    return [s.image for s in scenes], truths


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector("shapes-tiny", backend="jax")


@pytest.fixture(scope="module")
def held_out(detector):
    return score_images(detector, *_world(101, 16), CATEGORIES, contrast=CATEGORIES)


def test_shapes_world_ece_equals_the_independent_formula(held_out):
    shipped = Calibration.for_model("shapes-tiny")
    for fn in (raw_scores, calibrated_scores(shipped)):
        sel = select(held_out, fn)
        assert len(sel.scores) == 16 * 64 * 5  # best 5 per image and query
        assert ece(sel) == pytest.approx(ece_by_histogram(sel.scores, sel.matched), abs=1e-12)


def test_counted_boxes_are_what_detect_returns(detector, held_out):
    """select() counts the boxes the Detector returns with --multi-label and calibration."""
    shipped = Calibration.for_model("shapes-tiny")
    sel = select(held_out, calibrated_scores(shipped))
    images, _ = _world(101, 4)
    for i, image in enumerate(images):
        [dets] = detector.detect(image, CATEGORIES, calibration=shipped, multi_label=True,
                                 threshold=0.2, max_detections=None)  # fmt: skip
        for q, name in enumerate(CATEGORIES):
            mine = (sel.image == i) & (sel.query == q) & (sel.scores >= 0.2)
            got = np.sort(dets.confidence[dets.labels == name])[::-1]
            np.testing.assert_allclose(got, sel.scores[mine], rtol=1e-6)


def test_truth_counts_and_no_match(held_out):
    # image 0 of world 101 holds these categories exactly once each (an image never holds one
    # category twice); every other (image, category) pair is a "no match" pair.
    scene = sample_scene(101, 0)
    counts = held_out.num_truth[0]
    assert {CATEGORIES[q] for q in np.flatnonzero(counts)} == {o.name for o in scene.objects}
    sel = select(held_out)
    assert no_match_accuracy(sel, 1.01) == 1.0  # nothing reaches 1.01
    assert no_match_accuracy(sel, 0.0) == 0.0  # every pair has some box >= 0


def test_fit_on_one_world_improves_the_other(detector, held_out):
    calib = score_images(detector, *_world(103, 48), CATEGORIES, contrast=CATEGORIES)
    cal = fit_calibration(calib, model="shapes-tiny")
    assert cal.contrast == tuple(CATEGORIES) and cal.fit["boxes"] == 48 * 64 * 5
    assert set(cal.queries) <= set(CATEGORIES)
    raw_sel, cal_sel = select(held_out), select(held_out, calibrated_scores(cal))
    assert ece(cal_sel) < ece(raw_sel)
    m = threshold_metrics(cal_sel, 0.5)
    assert np.all(m["true_positives"] <= m["detections"])
    iso = fit_calibration(calib, method="isotonic")
    assert iso.method == "isotonic" and iso.contrast == ()


def test_detector_takes_a_calibration_file_path(detector, tmp_path):
    path = Calibration.for_model("shapes-tiny").save(tmp_path / "calib.json")
    image = np.full((128, 128, 3), 128, np.uint8)  # nothing to find
    [raw] = detector.detect(image, ["red circle"], threshold=0.0)
    [calibrated] = detector.detect(image, ["red circle"], calibration=str(path))
    assert len(raw) > 0 and len(calibrated) == 0


def test_defaults_follow_calibration(detector):
    shipped = Calibration.for_model("shapes-tiny")
    _, raw = detector._queries_and_options(["red circle"], nms=None, threshold=None, nms_iou=None)
    assert (raw.threshold, raw.nms, raw.nms_iou, raw.calibration) == (0.1, False, 0.3, None)
    _, cal = detector._queries_and_options(
        ["red circle"], nms=None, threshold=None, nms_iou=None, calibration=shipped
    )
    assert (cal.threshold, cal.nms, cal.nms_iou) == (0.5, True, 0.5)


def test_candidate_boxes_keep_every_query_s_best(detector, held_out):
    few = score_images(detector, *_world(101, 2), CATEGORIES[:3], contrast=CATEGORIES, candidates=2)
    for im, full in zip(few.images, held_out.images[:2], strict=True):
        assert len(im.logits) <= 2 * 3 * 2 < len(full.logits)  # 2 by logit + 2 by margin, 3 queries
        np.testing.assert_allclose(im.logits.max(axis=0), full.logits[:, :3].max(axis=0), rtol=1e-5)
