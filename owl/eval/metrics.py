"""COCO and LVIS (federated) box metrics that equal the official evaluators, plus base/novel splits.

:func:`evaluate` is the entry point: a dataset (COCO- or LVIS-style JSON) and detections in the
COCO results format go in, a JSON-serialisable dict of metrics comes out.

COCO
    Computed by pycocotools' ``COCOeval`` (bbox) itself, so the 12 standard stats are the official
    numbers by construction. Its prints are silenced unless ``verbose``.

LVIS
    Computed by this module's own implementation of the LVIS v1 federated protocol (the rules of
    ``lvis`` 0.5.3 ``LVISEval``/``LVISResults``; the ``_lvis_*`` functions below name each rule):

    * at most ``max_dets`` (300) detections per image, the highest scoring, ties kept in file
      order; then annotations and detections with area outside (0, inf) are dropped, as
      ``LVIS.get_ann_ids`` does;
    * a detection is evaluated only if its category is present in the image's ground truth or in
      the image's ``neg_category_ids``; other categories are not penalised;
    * an unmatched detection of a category in ``not_exhaustive_category_ids`` (or outside the
      area range) is ignored, not counted as a false positive;
    * greedy matching per (image, category) by descending score over IoU 0.50:0.95, no crowd
      regions, ground truth flagged ``ignore`` matched last; 101-point interpolated precision; AP
      averaged over the valid (threshold, recall, category) cells, APr/APc/APf over the categories
      of each ``frequency`` group.

    Why our own code: the official package is unusable as a dependency (its ``np.float`` breaks
    on numpy 2; ``import lvis`` pulls OpenCV in for visualisation; it visits every (image,
    category) pair, ~24M for LVIS val, and it crashes on an empty result list). faster-coco-eval
    1.8.0's ``lvis_style`` mode is not equal: checked against ``lvis`` 0.5.3 on random fixtures
    (maxDets=[300]) it differed by up to 4e-3 AP on some, and more where ground truth carries
    ``ignore`` or boxes have zero area; it would also be a new compiled dependency. The protocol is
    ~150 lines; ours uses the same pycocotools IoU, the same operation order in the precision
    arithmetic and the same averaging expressions, and only visits pairs that hold a ground truth
    or a detection, so its numbers equal the official API's exactly (tests/eval checks this
    against ``lvis`` 0.5.3 on fixture datasets). Matching is vectorised over the ten IoU
    thresholds; tie-breaking follows the official loops (equal IoU -> the later ground truth).

Base/novel split
    Given novel category ids, ``AP``/``AP50`` over the novel and over the remaining (base)
    categories are averaged from the accumulated per-category precision exactly as the full AP
    is, so they equal running the official evaluator restricted to those categories.

Undefined values (no ground truth for a category or group) are reported as -1, the official
convention.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from owl.data.annotations import (
    FREQUENCIES,
    EvalDataError,
    ResultsTable,
    check_lvis_frequencies,
    detect_format,
    load_annotations,
    load_results,
)

#: IoU thresholds 0.50:0.05:0.95, built exactly as both official evaluators build them.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: The 101 recall points of the interpolated precision.
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: (label, min area, max area), inclusive, in pixels squared.
AREA_RANGES = (
    ("all", 0**2, 1e5**2),
    ("small", 0**2, 32**2),
    ("medium", 32**2, 96**2),
    ("large", 96**2, 1e5**2),
)
#: Names of pycocotools' 12 ``COCOeval.stats``, in order.
COCO_STAT_NAMES = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)  # fmt: skip


def evaluate(
    annotations: str | os.PathLike | Mapping[str, Any],
    results: str | os.PathLike | Sequence[Mapping[str, Any]] | ResultsTable,
    *,
    fmt: str | None = None,
    novel_category_ids: Iterable[int] | None = None,
    max_dets: int = 300,
    verbose: bool = False,
) -> dict[str, Any]:
    """Evaluates detections against a COCO- or LVIS-style dataset.

    Args:
        annotations: the dataset JSON file or its parsed dict.
        results: detections as a results JSON file, a list of
            ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` rows, or a
            :class:`~owl.data.annotations.ResultsTable`. Category ids are the dataset's real ids.
        fmt: ``"coco"``, ``"lvis"`` or None to detect it (LVIS if images carry
            ``neg_category_ids``/``not_exhaustive_category_ids`` or categories a ``frequency``).
        novel_category_ids: if given, AP/AP50 are also reported over these categories
            (``AP_novel``, ``AP50_novel``) and over all others (``AP_base``, ``AP50_base``).
        max_dets: LVIS only: detections kept per image (the official value is 300). COCO uses
            its own fixed 1/10/100 per image and category.
        verbose: let pycocotools print its progress and summary.

    Returns:
        A JSON-serialisable dict: ``format``, ``num_images``, ``num_categories``,
        ``num_detections``, ``max_dets`` (None for COCO), ``stats`` (name -> value; COCO: AP,
        AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl; LVIS: AP, AP50, AP75, APs,
        APm, APl, APr, APc, APf, AR@300, ARs@300, ARm@300, ARl@300; plus the split keys),
        ``per_category`` (name -> {id, AP, AP50[, frequency]}), ``per_category_by_id``
        (str(id) -> {name, AP, AP50[, frequency]}), ``novel_category_ids`` (sorted, or None)
        and ``pr_curves`` (precision at the 101 recall points, overall and base/novel; see
        :func:`_pr_curves`).

    Raises:
        EvalDataError: bad annotations or results (one line naming the file and the problem).
        ValueError: an unknown ``fmt`` or a non-positive ``max_dets``.
    """
    gt = load_annotations(annotations)
    fmt = fmt or detect_format(gt)
    if fmt not in ("coco", "lvis"):
        raise ValueError(f"fmt must be 'coco', 'lvis' or None, got {fmt!r}")
    if fmt == "lvis" and (not isinstance(max_dets, int) or max_dets <= 0):
        raise ValueError(f"max_dets must be a positive integer, got {max_dets!r}")
    table = load_results(results, gt)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    categories = {c["id"]: c for c in gt["categories"]}
    novel = None
    if novel_category_ids is not None:
        novel = sorted({int(c) for c in novel_category_ids})
        unknown = sorted(set(novel) - set(cat_ids))
        if unknown:
            raise EvalDataError(f"novel category ids not in the annotations: {unknown[:10]}")
        if not novel:
            raise EvalDataError("the novel category set is empty")

    if fmt == "coco":
        stats, precision = _coco_eval(gt, table, verbose=verbose)
    else:
        check_lvis_frequencies(gt)
        precision, recall = _lvis_accumulate(gt, table, max_dets)
        stats = _lvis_summary(precision, recall, [categories[c] for c in cat_ids], max_dets)
        precision = precision[:, :, :, 0]  # area "all": [T, R, K]

    if novel is not None:
        stats.update(_split_stats(precision, cat_ids, set(novel)))

    per_name, per_id = {}, {}
    for k, cid in enumerate(cat_ids):
        record = {"AP": _mean_valid(precision[:, :, k]), "AP50": _mean_valid(precision[0, :, k])}
        if fmt == "lvis":
            record["frequency"] = categories[cid]["frequency"]
        per_name[categories[cid]["name"]] = {"id": cid, **record}
        per_id[str(cid)] = {"name": categories[cid]["name"], **record}

    return {
        "format": fmt,
        "num_images": len(gt["images"]),
        "num_categories": len(cat_ids),
        "num_detections": len(table),
        "max_dets": max_dets if fmt == "lvis" else None,
        "stats": stats,
        "per_category": per_name,
        "per_category_by_id": per_id,
        "novel_category_ids": novel,
        "pr_curves": _pr_curves(precision, cat_ids, None if novel is None else set(novel)),
    }


def _pr_curves(precision: np.ndarray, cat_ids: list[int], novel: set[int] | None) -> dict[str, Any]:
    """Precision at each of the 101 recall points, averaged over categories as AP averages them.

    ``precision50`` is IoU 0.50 (its mean over recall points is AP50 when every category has
    ground truth); ``precision`` averages IoU 0.50:0.95 too (its mean is then AP). -1 marks a
    recall point without any valid cell. Groups: "overall", and "base"/"novel" with a split.
    """
    groups = {"overall": list(range(len(cat_ids)))}
    if novel is not None:
        groups["base"] = [k for k, c in enumerate(cat_ids) if c not in novel]
        groups["novel"] = [k for k, c in enumerate(cat_ids) if c in novel]
    out: dict[str, Any] = {"recall": [float(r) for r in RECALL_THRESHOLDS]}
    for group, members in groups.items():
        p = precision[:, :, members]  # [T, R, K']
        out[group] = {
            "precision": [_mean_valid(p[:, r]) for r in range(p.shape[1])],
            "precision50": [_mean_valid(p[0, r]) for r in range(p.shape[1])],
        }
    return out


def _mean_valid(s: np.ndarray) -> float:
    """Mean over cells > -1 (the official averaging), or -1 when there are none."""
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _split_stats(precision: np.ndarray, cat_ids: list[int], novel: set[int]) -> dict[str, float]:
    """AP and AP50 over novel and base categories from [T, R, K] precision (area all)."""
    out = {}
    for part, members in (
        ("base", [k for k, c in enumerate(cat_ids) if c not in novel]),
        ("novel", [k for k, c in enumerate(cat_ids) if c in novel]),
    ):
        out[f"AP_{part}"] = _mean_valid(precision[:, :, members])
        out[f"AP50_{part}"] = _mean_valid(precision[0][:, members])
    return out


# ----------------------------------------------------------------------------------------------
# COCO: pycocotools itself.


def _coco_eval(
    gt: dict[str, Any], table: ResultsTable, *, verbose: bool
) -> tuple[dict[str, float], np.ndarray]:
    """Runs COCOeval (bbox): the named stats and [T, R, K] precision (area all, 100 dets)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # COCOeval writes an "ignore" key into the ground-truth dicts: give it copies.
    gt = {**gt, "annotations": [dict(a) for a in gt["annotations"]]}
    sink = sys.stdout if verbose else io.StringIO()
    with contextlib.redirect_stdout(sink):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if len(table):
            coco_dt = coco_gt.loadRes(table.to_rows())
        else:  # loadRes cannot take an empty list; no detections is a valid (zero) result
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": gt["images"],
                "categories": gt["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {name: float(v) for name, v in zip(COCO_STAT_NAMES, ev.stats, strict=True)}
    m = list(ev.params.maxDets).index(100)
    return stats, ev.eval["precision"][:, :, :, 0, m]


# ----------------------------------------------------------------------------------------------
# LVIS: the federated protocol of lvis 0.5.3, restricted to non-empty (image, category) pairs.


def _lvis_keep_top(image_ids: np.ndarray, scores: np.ndarray, max_dets: int) -> np.ndarray:
    """LVISResults.limit_dets_per_image: per image the max_dets best scores, ties in file order."""
    n = len(scores)
    order = np.lexsort((np.arange(n), -scores, image_ids))
    sorted_images = image_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_images[1:] != sorted_images[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    keep = np.zeros(n, bool)
    keep[order[rank < max_dets]] = True
    return keep


def _lvis_match(
    ious: np.ndarray | None, gt_ignore: np.ndarray, gt_ids: np.ndarray, num_dt: int
) -> tuple[np.ndarray, np.ndarray]:
    """LVISEval.evaluate_img's greedy matching, for all IoU thresholds at once.

    Detections are in descending score order, ground truth with ignored ones last. For each
    detection and threshold the unmatched ground truth with the highest IoU >= threshold wins
    (the later one on equal IoU); ignored ground truth only if no regular one qualifies.

    Returns:
        dt_matches [T, D] (the matched ground-truth id, 0 if none; float like the official) and
        dt_ignore [T, D] (matched to an ignored ground truth).
    """
    num_thr = len(IOU_THRESHOLDS)
    dt_m = np.zeros((num_thr, num_dt))
    dt_ig = np.zeros((num_thr, num_dt), dtype=bool)
    if ious is None:
        return dt_m, dt_ig
    num_gt = len(gt_ids)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
    regular = ~gt_ignore
    taken = np.zeros((num_thr, num_gt), dtype=bool)
    for d in range(num_dt):
        ok = ~taken & (ious[d] >= thresholds)
        ok_regular = ok & regular
        use = np.where(ok_regular.any(axis=1, keepdims=True), ok_regular, ok)
        hit = np.flatnonzero(use.any(axis=1))
        if hit.size == 0:
            continue
        values = np.where(use[hit], ious[d], -1.0)
        m = num_gt - 1 - np.argmax(values[:, ::-1], axis=1)
        taken[hit, m] = True
        dt_m[hit, d] = gt_ids[m]
        dt_ig[hit, d] = gt_ignore[m]
    return dt_m, dt_ig


def _lvis_accumulate(
    gt: dict[str, Any], table: ResultsTable, max_dets: int
) -> tuple[np.ndarray, np.ndarray]:
    """The LVIS protocol up to LVISEval.accumulate.

    Returns:
        precision [T, R, K, A] and recall [T, K, A], -1 where a category has no ground truth.
    """
    import pycocotools.mask as mask_utils

    cat_ids = sorted(c["id"] for c in gt["categories"])
    img_ids = sorted(im["id"] for im in gt["images"])
    num_cats, num_imgs = len(cat_ids), len(img_ids)
    cat_index = {c: k for k, c in enumerate(cat_ids)}
    img_rank = {i: r for r, i in enumerate(img_ids)}
    inf = float("inf")

    # Ground truth with area in (0, inf), file order within each (category, image).
    gts: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for ann in gt["annotations"]:
        if 0 < ann["area"] < inf:
            gts[cat_index[ann["category_id"]], img_rank[ann["image_id"]]].append(ann)

    # Detections: top max_dets per image, area in (0, inf), federated category filter.
    area = table.boxes[:, 2] * table.boxes[:, 3]
    keep = _lvis_keep_top(table.image_ids, table.scores, max_dets) & (area > 0) & (area < inf)
    det_k = np.array([cat_index[c] for c in table.category_ids.tolist()], dtype=np.int64)
    det_r = np.array([img_rank[i] for i in table.image_ids.tolist()], dtype=np.int64)
    allowed = {k * num_imgs + r for k, r in gts}
    for im in gt["images"]:
        r = img_rank[im["id"]]
        allowed.update(
            cat_index[c] * num_imgs + r for c in im["neg_category_ids"] if c in cat_index
        )
    pair = det_k * num_imgs + det_r
    keep &= np.isin(pair, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
    idx = np.flatnonzero(keep)
    # Per (category, image): descending score, ties in file order (stable, like the official).
    idx = idx[np.lexsort((idx, -table.scores[idx], det_r[idx], det_k[idx]))]
    dts: dict[tuple[int, int], np.ndarray] = {}
    if idx.size:
        p = pair[idx]
        cuts = np.flatnonzero(p[1:] != p[:-1]) + 1
        for block in np.split(idx, cuts):
            dts[int(det_k[block[0]]), int(det_r[block[0]])] = block

    not_exhaustive = {
        img_rank[im["id"]]: set(im["not_exhaustive_category_ids"]) for im in gt["images"]
    }
    per_cell: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    for k, r in sorted(set(gts) | set(dts)):
        g = gts.get((k, r), [])
        d = dts.get((k, r), np.zeros(0, np.int64))
        gt_boxes = np.array([a["bbox"] for a in g], dtype=np.float64).reshape(-1, 4)
        gt_area = np.array([a["area"] for a in g], dtype=np.float64)
        gt_flag = np.array([bool(a.get("ignore", 0)) for a in g], dtype=bool)
        gt_ids = np.array([a["id"] for a in g], dtype=np.float64)
        ious = None
        if len(g) and len(d):
            ious = np.asarray(mask_utils.iou(table.boxes[d], gt_boxes, [0] * len(g)))
        skip_fp = cat_ids[k] in not_exhaustive[r]
        for a, (_, lo, hi) in enumerate(AREA_RANGES):
            gt_ig = gt_flag | (gt_area < lo) | (gt_area > hi)
            order = np.argsort(gt_ig, kind="mergesort")
            dt_m, dt_ig = _lvis_match(
                None if ious is None else ious[:, order], gt_ig[order], gt_ids[order], len(d)
            )
            outside = (area[d] < lo) | (area[d] > hi) | skip_fp
            dt_ig = np.logical_or(dt_ig, np.logical_and(dt_m == 0, outside[None, :]))
            per_cell[k, a].append((table.scores[d], dt_m, dt_ig, gt_ig))

    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = -np.ones((num_thr, num_rec, num_cats, len(AREA_RANGES)))
    recall = -np.ones((num_thr, num_cats, len(AREA_RANGES)))
    for (k, a), cells in per_cell.items():
        scores = np.concatenate([c[0] for c in cells])
        order = np.argsort(-scores, kind="mergesort")
        dt_m = np.concatenate([c[1] for c in cells], axis=1)[:, order]
        dt_ig = np.concatenate([c[2] for c in cells], axis=1)[:, order]
        num_gt = np.count_nonzero(np.concatenate([c[3] for c in cells]) == 0)
        if num_gt == 0:
            continue
        tps = np.logical_and(dt_m, np.logical_not(dt_ig))
        fps = np.logical_and(np.logical_not(dt_m), np.logical_not(dt_ig))
        tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
        fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
        num_dt = tp_sum.shape[1]
        rc = tp_sum / num_gt
        recall[:, k, a] = rc[:, -1] if num_dt else 0
        pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # max precision to the right
        for t in range(num_thr):
            at = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            row = np.zeros(num_rec)
            row[at < num_dt] = pr[t, at[at < num_dt]]
            precision[t, :, k, a] = row
    return precision, recall


def _lvis_summary(
    precision: np.ndarray, recall: np.ndarray, categories: list[Mapping[str, Any]], max_dets: int
) -> dict[str, float]:
    """LVISEval.summarize: the same index expressions, so the same averages bit for bit."""
    labels = [label for label, _, _ in AREA_RANGES]
    groups = [[k for k, c in enumerate(categories) if c["frequency"] == f] for f in FREQUENCIES]

    def summarize(kind: str, iou_thr: float | None = None, area: str = "all", group=None) -> float:
        aidx = [labels.index(area)]
        s = precision if kind == "ap" else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        if kind == "ar":
            s = s[:, :, aidx]
        elif group is not None:
            s = s[:, :, groups[group], aidx]
        else:
            s = s[:, :, :, aidx]
        return _mean_valid(s)

    stats = {
        "AP": summarize("ap"),
        "AP50": summarize("ap", iou_thr=0.50),
        "AP75": summarize("ap", iou_thr=0.75),
        "APs": summarize("ap", area="small"),
        "APm": summarize("ap", area="medium"),
        "APl": summarize("ap", area="large"),
        "APr": summarize("ap", group=0),
        "APc": summarize("ap", group=1),
        "APf": summarize("ap", group=2),
        f"AR@{max_dets}": summarize("ar"),
    }
    for area in ("small", "medium", "large"):
        stats[f"AR{area[0]}@{max_dets}"] = summarize("ar", area=area)
    return stats
