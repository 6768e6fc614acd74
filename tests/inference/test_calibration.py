"""Calibrated scores: fits on constructed distributions, the ECE formula, the file, the wiring."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from ece_reference import ece_by_histogram

from owl.inference.calibration import (
    Calibration,
    CalibrationError,
    expected_calibration_error,
    fit_isotonic,
    fit_logistic,
    fit_platt,
    isotonic_apply,
    rival_margins,
)
from owl.inference.postprocess import PostprocessOptions, detections_from_scores

# -- fits on distributions where the answer is known ----------------------------------------------


def test_platt_recovers_the_logistic_model_the_labels_were_drawn_from():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.0, 200_000)
    y = rng.random(x.size) < 1 / (1 + np.exp(-(1.7 * x - 0.8)))
    a, b = fit_platt(x, y)
    assert a == pytest.approx(1.7, abs=0.03)
    assert b == pytest.approx(-0.8, abs=0.03)


def test_two_feature_logistic_recovers_its_weights():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.5, (200_000, 2))
    y = rng.random(len(x)) < 1 / (1 + np.exp(-(0.9 * x[:, 0] - 1.3 * x[:, 1] + 0.4)))
    w = fit_logistic(x, y)
    np.testing.assert_allclose(w, [0.9, -1.3, 0.4], atol=0.03)


def test_the_prior_holds_a_query_with_little_data_near_the_global_fit():
    # Four samples, all negative: maximum likelihood would run off to b -> -inf.
    x, y = np.array([0.0, 1.0, 2.0, 3.0]), np.zeros(4)
    a, b = fit_platt(x, y, prior=(2.0, -1.0), strength=1e6)
    assert (a, b) == pytest.approx((2.0, -1.0), abs=1e-3)
    free_a, free_b = fit_platt(x, y)
    assert math.isfinite(free_a) and math.isfinite(free_b) and free_b < -5


def test_isotonic_pools_adjacent_violators_exactly():
    x, y = fit_isotonic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1]))
    assert x == [1.0, 2.0, 3.0, 4.0]
    assert y == [0.0, 0.5, 0.5, 1.0]
    assert isotonic_apply(np.array([0.0, 1.5, 2.5, 9.0]), x, y).tolist() == [0.0, 0.25, 0.5, 1.0]


def test_isotonic_is_monotone_and_follows_the_true_curve():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 2.0, 100_000)
    y = rng.random(x.size) < 1 / (1 + np.exp(-x))
    bx, by = fit_isotonic(x, y)
    assert all(b >= a for a, b in zip(bx, bx[1:], strict=False))
    assert all(b >= a for a, b in zip(by, by[1:], strict=False))
    grid = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(isotonic_apply(grid, bx, by), 1 / (1 + np.exp(-grid)), atol=0.06)


# -- ECE -----------------------------------------------------------------------------------------


def test_ece_by_hand():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    y = np.array([0, 1, 1, 1])
    # bin [0.0667, 0.133): |0.5 - 0.1| * 2/4; bin [0.867, 0.933): |1 - 0.9| * 2/4
    assert expected_calibration_error(p, y) == pytest.approx(0.2 + 0.05)


def test_ece_matches_an_independent_histogram_implementation():
    rng = np.random.default_rng(3)
    p = rng.random(10_000) ** 2
    p[:7] = [0.0, 1.0, 1 / 15, 2 / 15, 14 / 15, 0.5, 1.0]  # bin edges and the ends
    y = rng.random(p.size) < np.sqrt(p)
    assert expected_calibration_error(p, y) == pytest.approx(ece_by_histogram(p, y), abs=1e-12)


def test_perfectly_calibrated_scores_have_small_ece():
    rng = np.random.default_rng(4)
    p = rng.random(400_000)
    y = rng.random(p.size) < p
    assert expected_calibration_error(p, y) < 0.005


# -- margins and the mapping ---------------------------------------------------------------------


def test_rival_margins_leave_the_query_itself_out():
    logits = np.array([[2.0, 0.0]])
    contrast_logits = np.array([[2.0, 0.0, 1.0]])
    m = rival_margins(logits, ["A", "b"], contrast_logits, ["a", "b", "c"])
    assert m.tolist() == [[2.0 - 1.0, 0.0 - 2.0]]
    # A query outside the vocabulary competes with all of it; a vocabulary of only itself: 0.
    assert rival_margins(logits[:, :1], ["z"], contrast_logits, ["a", "b", "c"]).tolist() == [[0.0]]
    assert rival_margins(logits[:, :1], ["a"], contrast_logits[:, :1], ["a"]).tolist() == [[0.0]]


def _platt(queries=None, default=(1.0, -2.0), **kw) -> Calibration:
    return Calibration(
        method="platt", default={"a": default[0], "b": default[1]}, queries=queries or {},
        model="shapes-tiny", fit={"nms_iou": 0.5}, **kw,
    )  # fmt: skip


def test_calibrated_postprocessing_thresholds_probabilities_and_keeps_the_raw_score():
    # query "x": p = sigmoid(logit - 2); logit 3 -> 0.731 (kept at 0.5), logit 1 -> 0.269 (dropped)
    cal = _platt()
    logits = np.array([[3.0], [1.0]])
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    opts = PostprocessOptions(threshold=0.5, calibration=cal)
    dets = detections_from_scores(logits, boxes, ["x"], [None], opts)
    assert dets.confidence.tolist() == pytest.approx([1 / (1 + math.exp(-1))])
    assert dets.data["raw_score"].tolist() == pytest.approx([1 / (1 + math.exp(-3))])
    assert dets.data["box_index"].tolist() == [0]


def test_a_box_keeps_the_query_with_the_highest_probability_not_logit():
    # raw: "loud" (logit 4) beats "quiet" (logit 2); calibrated: sigmoid(4 - 5) < sigmoid(2 - 1)
    cal = _platt({"loud": {"a": 1.0, "b": -5.0}, "quiet": {"a": 1.0, "b": -1.0}})
    logits = np.array([[4.0, 2.0]])
    boxes = np.array([[0, 0, 10, 10]], float)
    raw = detections_from_scores(logits, boxes, ["loud", "quiet"], [None, None],
                                 PostprocessOptions(threshold=0.0))  # fmt: skip
    calibrated = detections_from_scores(logits, boxes, ["Loud", "Quiet"], [None, None],
                                        PostprocessOptions(threshold=0.0, calibration=cal))  # fmt: skip
    assert raw.labels.tolist() == ["loud"]
    assert calibrated.labels.tolist() == ["Quiet"]
    assert calibrated.confidence.tolist() == pytest.approx([1 / (1 + math.exp(-1))])


def test_contrast_margin_enters_the_probability():
    cal = _platt({"x": {"a": 0.0, "c": 1.0, "b": 0.0}}, contrast=("x", "y"))
    p = cal.probabilities(np.array([[1.0], [1.0]]), ["x"], np.array([[1.0, 3.0], [1.0, -1.0]]))
    # margins: 1 - 3 = -2 and 1 - (-1) = 2
    np.testing.assert_allclose(p[:, 0], [1 / (1 + math.exp(2)), 1 / (1 + math.exp(-2))])
    with pytest.raises(ValueError, match="contrast"):
        cal.probabilities(np.array([[1.0]]), ["x"])


# -- the file ------------------------------------------------------------------------------------


def test_file_round_trip_gives_the_same_probabilities(tmp_path):
    cal = _platt({"red circle": {"a": 1.5, "c": 0.5, "b": -0.2, "positives": 3, "boxes": 40}},
                 contrast=("red circle", "blue star"))  # fmt: skip
    path = cal.save(tmp_path / "calib.json")
    text = path.read_text()
    assert json.loads(text)["format"] == "owl-calibration"
    back = Calibration.load(path)
    assert back == cal
    logits = np.array([[0.3, -1.0], [2.0, 0.5]])
    contrast = np.array([[0.1, 0.2], [0.0, 3.0]])
    labels = ["Red Circle", "green ring"]  # canonicalised; the second uses the default
    np.testing.assert_array_equal(
        back.probabilities(logits, labels, contrast), cal.probabilities(logits, labels, contrast)
    )
    iso = Calibration(method="isotonic", default={"x": [0.0, 1.0], "y": [0.1, 0.9]})
    assert Calibration.load(iso.save(tmp_path / "iso.json")) == iso


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "calibration file not found"),
        ("{not json", "not JSON"),
        ('{"format": "something else"}', "not an owl calibration file"),
        ('{"format": "owl-calibration", "version": 99}', "version 99"),
        ('{"format": "owl-calibration", "version": 1, "method": "magic", "default": {}}',
         "method must be one of"),
        ('{"format": "owl-calibration", "version": 1, "method": "platt", '
         '"default": {"a": 1, "b": "x"}}', "'b' must be a finite number"),
        ('{"format": "owl-calibration", "version": 1, "method": "isotonic", '
         '"default": {"x": [0, 1], "y": [0.9, 0.1]}}', "non-decreasing"),
        ('[1, 2]', "not an owl calibration file"),
    ],
)  # fmt: skip
def test_a_bad_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "calib.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CalibrationError) as info:
        Calibration.load(path)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_shapes_tiny_ships_a_calibration():
    cal = Calibration.for_model("shapes-tiny")
    assert cal is not None and cal.model == "shapes-tiny" and len(cal.contrast) == 64
    assert len(cal.queries) == 64 and cal.nms_iou == 0.5
    assert Calibration.for_model("owlvit-b32") is None
