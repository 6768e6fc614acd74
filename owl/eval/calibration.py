"""Fitting and measuring score calibration on labelled images (`owl calibrate`, the benchmark).

Which boxes count (the same rule for fitting, for the ECE and for precision and recall): for
every image and every query, the query's boxes after per-query NMS (IoU ``nms_iou``, the rule of
`owl.ops.boxes.nms`: a box is dropped when its IoU with a better one is above it) on the
scores being measured, the best ``top_k`` kept. Each is labelled by greedy one-to-one matching
in descending score order (COCO's rule): a true match when its IoU with a not yet matched
ground-truth box of the query's category is >= ``match_iou``. So a calibrated probability is
"the chance that this box counts as a true positive", the quantity precision counts, and
duplicates of a found object are false. This is what `owl detect --calibrated --multi-label`
returns per query, best first, before its threshold.

A threshold keeps a prefix of each (image, query) list, so the labels hold at every threshold:
precision and recall at any threshold follow from one selection (`threshold_metrics`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from owl.inference.calibration import (
    ECE_BINS,
    Calibration,
    expected_calibration_error,
    fit_isotonic,
    fit_logistic,
    rival_margins,
)
from owl.inference.detector import Detector, QuerySet
from owl.ops.boxes import box_iou
from owl.ops.image import ImageInput, ImageLoadError, boxes_to_pixels
from owl.ops.scores import sigmoid
from owl.text.prompts import canonicalize

TOP_K = 5
NMS_IOU = 0.5
MATCH_IOU = 0.5
#: Shrinkage of per-query Platt parameters towards the global fit, in samples.
PRIOR_STRENGTH = 20.0


@dataclasses.dataclass(frozen=True, eq=False)
class ImageScores:
    """One labelled image, scored: what every selection and fit starts from.

    Attributes:
      logits: [P, Q] raw logits of the queries.
      margins: [P, Q] margins against the contrast vocabulary (`rival_margins`), or None.
      boxes: [P, 4] xyxy pixel boxes.
    P is the candidate boxes kept of the image's predictions (`score_images`' ``candidates``).
      truth_boxes: [T, 4] ground-truth boxes; truth_query: [T] their query index (-1: a
        category that is no query).
    """

    logits: np.ndarray
    margins: np.ndarray | None
    boxes: np.ndarray
    truth_boxes: np.ndarray
    truth_query: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class ScoredSet:
    """A labelled image set scored against queries (`score_images`).

    Attributes:
      queries: [Q] canonical query names.
      images: one `ImageScores` per readable image.
      contrast: the contrast vocabulary the margins were computed against.
      failures: "path: problem" of images that could not be read (left out).
    """

    queries: tuple[str, ...]
    images: tuple[ImageScores, ...]
    contrast: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    @property
    def num_truth(self) -> np.ndarray:
        """[I, Q] ground-truth boxes of each query's category per image."""
        out = np.zeros((len(self.images), len(self.queries)), np.int64)
        for i, im in enumerate(self.images):
            q = im.truth_query[im.truth_query >= 0]
            np.add.at(out[i], q, 1)
        return out


@dataclasses.dataclass(frozen=True)
class Selection:
    """The boxes counted for one way of scoring (see the module docstring), flat.

    Attributes:
      scores: [N] the scores selected on; logits, margins: [N] their raw inputs.
      matched: [N] true match or not. query, image: [N] indices.
      num_truth: [I, Q] ground-truth counts.
    """

    scores: np.ndarray
    logits: np.ndarray
    margins: np.ndarray | None
    matched: np.ndarray
    query: np.ndarray
    image: np.ndarray
    num_truth: np.ndarray


def score_images(
    detector: Detector,
    images: Sequence[ImageInput],
    truths: Sequence[tuple[np.ndarray, Sequence[str]]],
    queries: Sequence[str],
    *,
    contrast: Sequence[str] = (),
    candidates: int = 64,
) -> ScoredSet:
    """Runs the detector over labelled images: every box's logit for every query.

    Args:
      detector: the Detector (its image cache makes a second pass cheap).
      images: image files or arrays.
      truths: per image (boxes [N, 4] xyxy pixels, N class names).
      queries: text queries (class names).
      contrast: a contrast vocabulary (`Calibration.contrast`); margins are computed against it.
      candidates: per image, only the boxes among the best ``candidates`` of some query by
        logit or by margin are kept (memory: OWLv2 predicts 3600 boxes per image); a model with
        at most that many boxes keeps them all (shapes-tiny: 64).

    Returns:
      A `ScoredSet`; unreadable images are skipped and listed in ``failures``.
    """
    qs = detector.prepare_queries(list(queries))
    names = tuple(canonicalize(label) for label in qs.labels)
    contrast = tuple(canonicalize(c) for c in contrast)
    cqs: QuerySet | None = detector.prepare_queries(list(contrast)) if contrast else None
    column = {name: q for q, name in enumerate(names)}
    out: list[ImageScores] = []
    failures: list[str] = []
    batch = max(1, detector.batch_size) * 4
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        for offset, enc in enumerate(detector.encode_images(chunk)):
            i = start + offset
            if isinstance(enc, ImageLoadError):
                failures.append(str(enc))
                continue
            logits = np.asarray(detector.score(enc, qs), np.float64)
            margins = None
            if cqs is not None:
                margins = rival_margins(logits, names, detector.score(enc, cqs), contrast)
            boxes = boxes_to_pixels(enc.pred_boxes, enc.meta).astype(np.float64)
            if len(boxes) > candidates:
                keep = [np.argsort(-logits, axis=0, kind="stable")[:candidates]]
                if margins is not None:
                    keep.append(np.argsort(-margins, axis=0, kind="stable")[:candidates])
                rows = np.unique(np.concatenate([k.reshape(-1) for k in keep]))
                logits, boxes = logits[rows], boxes[rows]
                margins = None if margins is None else margins[rows]
            truth_boxes = np.asarray(truths[i][0], np.float64).reshape(-1, 4)
            truth_query = np.array(
                [column.get(canonicalize(n), -1) for n in truths[i][1]], np.int64
            )
            out.append(ImageScores(logits, margins, boxes, truth_boxes, truth_query))
    return ScoredSet(names, tuple(out), contrast, tuple(failures))


def _nms_top_k(scores: np.ndarray, boxes: np.ndarray, top_k: int, nms_iou: float) -> list[int]:
    """Indices of the best ``top_k`` boxes after greedy NMS (ops.boxes.nms' rule and order)."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if keep:
            iou, _ = box_iou(boxes[i : i + 1], boxes[keep])
            if iou.max() > nms_iou:
                continue
        keep.append(int(i))
        if len(keep) == top_k:
            break
    return keep


def _greedy_match(boxes: np.ndarray, truth: np.ndarray, match_iou: float) -> np.ndarray:
    """Greedy one-to-one matching of score-ordered boxes to truth boxes: matched flags."""
    matched = np.zeros(len(boxes), bool)
    if not len(truth) or not len(boxes):
        return matched
    iou, _ = box_iou(np.asarray(boxes, np.float64), np.asarray(truth, np.float64))
    free = np.ones(len(truth), bool)
    for i in range(len(boxes)):
        candidates = np.where(free, iou[i], -1.0)
        j = int(np.argmax(candidates))
        if candidates[j] >= match_iou:
            matched[i] = True
            free[j] = False
    return matched


ScoreFn = Callable[[ImageScores, Sequence[str]], np.ndarray]


def raw_scores(image: ImageScores, queries: Sequence[str]) -> np.ndarray:
    """The uncalibrated score matrix [P, Q]: sigmoid of the logits."""
    return sigmoid(image.logits)


def calibrated_scores(calibration: Calibration) -> ScoreFn:
    """A score function [P, Q] applying ``calibration`` (with its margins)."""

    def fn(image: ImageScores, queries: Sequence[str]) -> np.ndarray:
        out = np.empty_like(image.logits)
        for q, name in enumerate(queries):
            m = None if image.margins is None else image.margins[:, q]
            out[:, q] = calibration.apply(image.logits[:, q], name, m)
        return out

    return fn


def select(
    scored: ScoredSet,
    score_fn: ScoreFn = raw_scores,
    *,
    top_k: int = TOP_K,
    nms_iou: float = NMS_IOU,
    match_iou: float = MATCH_IOU,
) -> Selection:
    """The boxes counted for ``score_fn`` (see the module docstring), labelled."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("s", "l", "m", "y", "q", "i")}
    for i, im in enumerate(scored.images):
        scores = score_fn(im, scored.queries)
        for q in range(len(scored.queries)):
            keep = _nms_top_k(scores[:, q], im.boxes, top_k, nms_iou)
            truth = im.truth_boxes[im.truth_query == q]
            parts["s"].append(scores[keep, q])
            parts["l"].append(im.logits[keep, q])
            if im.margins is not None:
                parts["m"].append(im.margins[keep, q])
            parts["y"].append(_greedy_match(im.boxes[keep], truth, match_iou))
            parts["q"].append(np.full(len(keep), q))
            parts["i"].append(np.full(len(keep), i))

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros(0, dtype)

    return Selection(
        scores=cat("s", np.float64),
        logits=cat("l", np.float64),
        margins=cat("m", np.float64) if parts["m"] else None,
        matched=cat("y", bool),
        query=cat("q", np.int64),
        image=cat("i", np.int64),
        num_truth=scored.num_truth,
    )


def _features(sel: Selection, mine: np.ndarray | slice, contrast: bool) -> np.ndarray:
    if contrast and sel.margins is not None:
        return np.stack([sel.logits[mine], sel.margins[mine]], axis=1)
    return sel.logits[mine].reshape(-1, 1)


def _fit_once(
    scored: ScoredSet, sel: Selection, method: str, prior_strength: float, contrast: bool
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    y = sel.matched.astype(np.float64)
    queries: dict[str, dict[str, Any]] = {}
    if method == "platt":
        w0 = fit_logistic(_features(sel, slice(None), contrast), y)
        default = _platt_params(w0, contrast)
    else:
        gx, gy = fit_isotonic(sel.logits, y)
        default = {"x": gx, "y": gy}
    for q, name in enumerate(scored.queries):
        mine = sel.query == q
        if not mine.any():
            continue
        counts = {"positives": int(sel.matched[mine].sum()), "boxes": int(mine.sum())}
        if method == "platt":
            w = fit_logistic(
                _features(sel, mine, contrast), y[mine], prior=w0, strength=prior_strength
            )
            queries[name] = {**_platt_params(w, contrast), **counts}
        elif counts["positives"]:
            qx, qy = fit_isotonic(sel.logits[mine], y[mine])
            queries[name] = {"x": qx, "y": qy, **counts}
    return default, queries


def _platt_params(w: np.ndarray, contrast: bool) -> dict[str, float]:
    if contrast:
        return {"a": float(w[0]), "c": float(w[1]), "b": float(w[2])}
    return {"a": float(w[0]), "b": float(w[1])}


def fit_calibration(
    scored: ScoredSet,
    *,
    method: str = "platt",
    prior_strength: float = PRIOR_STRENGTH,
    per_query: bool = True,
    rounds: int = 2,
    model: str | None = None,
    fit_info: dict[str, Any] | None = None,
) -> Calibration:
    """Fits a `Calibration`: a global map, then one per query.

    Platt: the global weights on every counted box, then each query's by maximum likelihood
    with a Gaussian pull of ``prior_strength`` samples towards the global fit (a query with few
    positives stays near it). With a contrast vocabulary in ``scored`` the margin is a second
    feature. Isotonic: the global and each query's own step function on the logit (a query
    without a positive box keeps the global one). The boxes counted depend on the scores, so
    the fit is repeated ``rounds`` times, each on the boxes the previous fit selects (the
    first on raw scores).

    Raises:
      ValueError: an unknown method, or no counted box was a true match.
    """
    if method not in ("platt", "isotonic"):
        raise ValueError(f"method must be 'platt' or 'isotonic', got {method!r}")
    contrast = bool(scored.contrast) and method == "platt"
    sel = select(scored)
    if sel.logits.size == 0 or not sel.matched.any():
        raise ValueError(
            "no true match among the calibration boxes: the data set needs boxes of the "
            "queried categories that the model finds"
        )
    calibration = None
    for _ in range(max(1, rounds)):
        default, queries = _fit_once(scored, sel, method, prior_strength, contrast)
        info = {"nms_iou": NMS_IOU, "match_iou": MATCH_IOU, "top_k": TOP_K, **(fit_info or {})}
        info.update(boxes=int(sel.logits.size), positives=int(sel.matched.sum()))
        if method == "platt":
            info["prior_strength"] = prior_strength
        calibration = Calibration(
            method=method, default=default, queries=queries if per_query else {},
            contrast=scored.contrast if contrast else (), model=model, fit=info,
        )  # fmt: skip
        sel = select(scored, calibrated_scores(calibration))
    assert calibration is not None
    return calibration


def threshold_metrics(sel: Selection, threshold: float) -> dict[str, np.ndarray]:
    """Per query at ``scores >= threshold``: precision, recall, detections, true positives.

    Precision is NaN for a query with no detection; recall NaN for one with no ground truth.
    """
    kept = sel.scores >= threshold
    nq = sel.num_truth.shape[1]
    det = np.bincount(sel.query[kept], minlength=nq).astype(np.float64)
    tp = np.bincount(sel.query[kept & sel.matched], minlength=nq).astype(np.float64)
    gt = sel.num_truth.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(det > 0, tp / det, np.nan)
        recall = np.where(gt > 0, tp / gt, np.nan)
    return {"precision": precision, "recall": recall, "detections": det, "true_positives": tp}


def no_match_accuracy(sel: Selection, threshold: float) -> float:
    """Of the (image, query) pairs whose category is not in the image, the fraction with no
    box scoring >= ``threshold``."""
    absent = sel.num_truth == 0
    fired = np.zeros_like(absent)
    hit = sel.scores >= threshold
    fired[sel.image[hit], sel.query[hit]] = True
    return float((absent & ~fired).sum() / max(int(absent.sum()), 1))


def ece(sel: Selection, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the counted boxes' scores (equal-width bins)."""
    return expected_calibration_error(sel.scores, sel.matched, bins)


__all__ = [
    "MATCH_IOU",
    "NMS_IOU",
    "TOP_K",
    "ImageScores",
    "ScoredSet",
    "Selection",
    "calibrated_scores",
    "ece",
    "fit_calibration",
    "no_match_accuracy",
    "raw_scores",
    "score_images",
    "select",
    "threshold_metrics",
]
