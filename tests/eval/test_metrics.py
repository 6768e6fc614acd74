"""Tests for owl.eval.metrics and the `owl eval` command.

The reference numbers come from the official evaluators run on the same files: pycocotools'
COCOeval (loaded from the JSON file, as a user would) and the official LVIS API ``lvis`` 0.5.3
(see lvis_reference.py). A few small cases are checked against values worked out by hand.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from lvis_reference import official_lvis_eval  # tests/eval/lvis_reference.py

from owl.cli.eval import eval_cmd
from owl.cli.main import cli
from owl.data.annotations import EvalDataError, ResultsTable
from owl.eval.metrics import COCO_STAT_NAMES, evaluate

COCO_CATS = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 7, "name": "train", "supercategory": "vehicle"},
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
]
LVIS_CAT_IDS = (1, 2, 3, 5, 8, 13, 21, 34)


# ---------------------------------------------------------------------------------------------
# Fixture datasets, built from seeded generators.


def _box(rng: np.random.Generator, width: int, height: int) -> list[float]:
    """A box whose size spans the small/medium/large COCO area ranges."""
    side = float(np.exp(rng.uniform(np.log(6), np.log(260))))
    w, h = round(side * rng.uniform(0.6, 1.4), 2), round(side * rng.uniform(0.6, 1.4), 2)
    return [round(rng.uniform(0, width - 5), 2), round(rng.uniform(0, height - 5), 2), w, h]


def _near(rng: np.random.Generator, box: list[float], jitter: float) -> list[float]:
    """A detection around a ground-truth box (IoU from ~1 down to a miss)."""
    x, y, w, h = box
    return [
        round(x + rng.normal(0, jitter * max(w, 1)), 2),
        round(y + rng.normal(0, jitter * max(h, 1)), 2),
        round(max(w * (1 + rng.normal(0, jitter)), 0.5), 2),
        round(max(h * (1 + rng.normal(0, jitter)), 0.5), 2),
    ]


def _score(rng: np.random.Generator) -> float:
    return round(float(rng.uniform()), 1)  # coarse, so that score ties are common


def coco_fixture(seed: int, num_images: int = 6) -> tuple[dict, list[dict]]:
    """A COCO-style set (ids 1, 3, 7, 90; crowd regions; all area ranges) and detections."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(num_images):
        image_id, width, height = 1000 + 13 * i, int(rng.integers(200, 640)), 480
        images.append({"id": image_id, "width": width, "height": height, "file_name": "x.jpg"})
        for cat in rng.choice([c["id"] for c in COCO_CATS], size=3, replace=False).tolist():
            for _ in range(int(rng.integers(0, 4))):
                box = _box(rng, width, height)
                crowd = int(rng.random() < 0.15)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": cat,
                        "bbox": box,
                        "area": round(box[2] * box[3] * rng.uniform(0.5, 1), 2),
                        "iscrowd": crowd,
                    }
                )
                for _ in range(int(rng.integers(0, 3))):  # true positives and shifted boxes
                    dets.append(_det(image_id, cat, _near(rng, box, 0.12), _score(rng)))
            for _ in range(int(rng.integers(0, 3))):  # false positives
                dets.append(_det(image_id, cat, _box(rng, width, height), _score(rng)))
    crowded = images[0]["id"]  # > 100 detections of one category: exercises maxDets=100
    target = next((a for a in anns if a["image_id"] == crowded), anns[0])
    for _ in range(120):
        dets.append(_det(crowded, target["category_id"], _near(rng, target["bbox"], 0.3), 0.3))
    dets = [dets[j] for j in rng.permutation(len(dets))]
    return {"images": images, "categories": copy.deepcopy(COCO_CATS), "annotations": anns}, dets


def lvis_fixture(seed: int, num_images: int = 8, crowded: bool = False) -> tuple[dict, list[dict]]:
    """An LVIS-style set with federated labels, frequencies, rare oddities, and detections.

    Per image, categories are split into present (ground truth), negative (verified absent) and
    unlisted ones; some present categories are not exhaustively annotated. Detections include
    true positives, shifted and duplicate boxes, false positives on present, negative and
    unlisted categories, zero-area boxes, and, if ``crowded``, 350 on one image (over the 300
    limit). Some ground truth has zero area or an ``ignore`` flag.
    """
    rng = np.random.default_rng(seed)
    categories = [
        {"id": c, "name": f"thing{c}", "frequency": "rcf"[i % 3], "synset": f"thing.n.{c}"}
        for i, c in enumerate(LVIS_CAT_IDS)
    ]
    images, anns, dets = [], [], []
    for i in range(num_images):
        image_id, width, height = 7 * i + 3, int(rng.integers(200, 640)), 400
        order = rng.permutation(LVIS_CAT_IDS).tolist()
        n_pos, n_neg = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        present, negative = order[:n_pos], order[n_pos : n_pos + n_neg]
        images.append(
            {
                "id": image_id,
                "width": width,
                "height": height,
                "neg_category_ids": negative,
                "not_exhaustive_category_ids": [c for c in present if rng.random() < 0.3],
            }
        )
        for cat in present:
            for _ in range(int(rng.integers(1, 4))):
                box = _box(rng, width, height)
                if rng.random() < 0.05:
                    box[2] = 0.0
                ann = {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": box,
                    "area": round(box[2] * box[3] * rng.uniform(0.5, 1), 2),
                    "segmentation": [],
                }
                if rng.random() < 0.05:
                    ann["ignore"] = 1
                anns.append(ann)
                for _ in range(int(rng.integers(0, 3))):
                    dets.append(_det(image_id, cat, _near(rng, box, 0.1), _score(rng)))
                if rng.random() < 0.2:  # identical boxes with equal scores
                    dets += [
                        _det(image_id, cat, list(box), 0.5),
                        _det(image_id, cat, list(box), 0.5),
                    ]
        for cat in order:  # false positives on present, negative and unlisted categories
            for _ in range(int(rng.integers(0, 3))):
                dets.append(_det(image_id, cat, _box(rng, width, height), _score(rng)))
        if rng.random() < 0.3:
            dets.append(_det(image_id, present[0], [1.0, 1.0, 0.0, 5.0], 0.9))
    tricky_anns, tricky_dets = _tricky_image(999, LVIS_CAT_IDS[seed % len(LVIS_CAT_IDS)], len(anns))
    images.append({"id": 999, "neg_category_ids": [], "not_exhaustive_category_ids": []})
    anns += tricky_anns
    dets += tricky_dets
    if crowded:
        target = anns[0]
        for _ in range(350):
            box = _near(rng, target["bbox"], 0.3)
            dets.append(_det(target["image_id"], target["category_id"], box, _score(rng)))
    dets = [dets[j] for j in rng.permutation(len(dets))]
    return {"images": images, "categories": categories, "annotations": anns}, dets


def _tricky_image(image_id: int, cat: int, first_id: int) -> tuple[list[dict], list[dict]]:
    """Matching corner cases, each of which changes the numbers if handled differently.

    * IoU exactly 0.5 and 0.75 (a threshold counts as a match);
    * one detection with equal IoU (9/11) to two ground-truth boxes: it takes the later one,
      which leaves the earlier for a second detection only at IoU <= 7/13;
    * a detection overlapping an ``ignore`` box (IoU 1) and a regular box (IoU 9/11): the
      regular box wins.
    """
    boxes = [
        ([0, 0, 10, 10], {}),
        ([100, 0, 10, 10], {}),
        ([200, 0, 10, 10], {}),
        ([202, 0, 10, 10], {}),
        ([300, 0, 10, 10], {}),
        ([301, 0, 10, 10], {"ignore": 1}),
    ]
    anns = [
        {"id": first_id + j + 1, "image_id": image_id, "category_id": cat, "bbox": box,
         "area": 100.0, **extra}
        for j, (box, extra) in enumerate(boxes)
    ]  # fmt: skip
    dets = [
        _det(image_id, cat, [0, 0, 10, 5], 0.95),  # IoU 0.5
        _det(image_id, cat, [100, 0, 10, 7.5], 0.85),  # IoU 0.75
        _det(image_id, cat, [201, 0, 10, 10], 0.8),  # IoU 9/11 with both 200 and 202
        _det(image_id, cat, [203, 0, 10, 10], 0.7),  # IoU 9/11 with 202, 7/13 with 200
        _det(image_id, cat, [301, 0, 10, 10], 0.6),  # IoU 1 with the ignored box
    ]
    return anns, dets


def _det(image_id: int, category_id: int, bbox: list[float], score: float) -> dict:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def _write(path: Path, data) -> str:
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def official_coco(ann_path: str, dets: list[dict], cat_ids: list[int] | None = None) -> np.ndarray:
    """Runs pycocotools COCOeval (bbox) on the files, optionally restricted to some categories."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_path)
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), iouType="bbox")
        if cat_ids is not None:
            ev.params.catIds = sorted(cat_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


# ---------------------------------------------------------------------------------------------
# COCO: equal to pycocotools.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_stats_equal_pycocotools(tmp_path, seed):
    gt, dets = coco_fixture(seed)
    ann_path = _write(tmp_path / "ann.json", gt)
    ours = evaluate(ann_path, _write(tmp_path / "dets.json", dets))
    assert ours["format"] == "coco"
    reference = official_coco(ann_path, dets)
    assert list(ours["stats"]) == list(COCO_STAT_NAMES)
    assert [ours["stats"][k] for k in COCO_STAT_NAMES] == reference.tolist()
    assert 0 < ours["stats"]["AP"] < 1


def test_coco_per_category_and_split_equal_restricted_cocoeval(tmp_path):
    gt, dets = coco_fixture(3)
    ann_path = _write(tmp_path / "ann.json", gt)
    ours = evaluate(ann_path, dets, novel_category_ids=[90, 1])
    for cat in COCO_CATS:
        reference = official_coco(ann_path, dets, cat_ids=[cat["id"]])
        by_name = ours["per_category"][cat["name"]]
        assert by_name == {"id": cat["id"], "AP": reference[0], "AP50": reference[1]}
        assert ours["per_category_by_id"][str(cat["id"])]["AP"] == reference[0]
    novel = official_coco(ann_path, dets, cat_ids=[1, 90])
    base = official_coco(ann_path, dets, cat_ids=[3, 7])
    assert ours["novel_category_ids"] == [1, 90]
    assert (ours["stats"]["AP_novel"], ours["stats"]["AP50_novel"]) == (novel[0], novel[1])
    assert (ours["stats"]["AP_base"], ours["stats"]["AP50_base"]) == (base[0], base[1])


def test_category_id_1_detections_count():
    """The official evaluator drops class index 0 (category id 1); we must not."""
    gt = {
        "images": [{"id": 5, "width": 100, "height": 100}],
        "categories": COCO_CATS,
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 1, "bbox": [10, 10, 50, 50], "area": 2500}
        ],
    }
    found = evaluate(gt, [_det(5, 1, [10, 10, 50, 50], 0.9)])
    # Precision is tp / (tp + fp + eps), so a perfect detector scores 1 - 2e-16.
    assert found["per_category"]["person"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert found["stats"]["AP"] == pytest.approx(1.0, abs=1e-12)  # the only category with gt
    missed = evaluate(gt, [_det(5, 3, [10, 10, 50, 50], 0.9)])
    assert missed["stats"]["AP"] == 0.0


def test_no_detections_give_zero_ap_not_a_crash():
    gt, _ = coco_fixture(4)
    metrics = evaluate(gt, [])
    assert metrics["num_detections"] == 0
    assert metrics["stats"]["AP"] == 0.0 and metrics["stats"]["AR100"] == 0.0
    lvis_gt, _ = lvis_fixture(4)
    lvis = evaluate(lvis_gt, ResultsTable.empty())
    assert lvis["stats"]["AP"] == 0.0 and lvis["stats"]["AR@300"] == 0.0


def test_metrics_are_json_serialisable_and_round_trip():
    gt, dets = lvis_fixture(5)
    metrics = evaluate(gt, dets, novel_category_ids=[1, 2])
    assert json.loads(json.dumps(metrics)) == metrics
    gt, dets = coco_fixture(5)
    metrics = evaluate(gt, dets)
    assert json.loads(json.dumps(metrics)) == metrics


# ---------------------------------------------------------------------------------------------
# LVIS: equal to the official LVIS API.

LVIS_CASES = [(seed, 300, seed % 3 == 0) for seed in range(8)] + [(s, 5, True) for s in (8, 9)]


@pytest.mark.parametrize(("seed", "max_dets", "crowded"), LVIS_CASES)
def test_lvis_stats_equal_official_api(tmp_path, seed, max_dets, crowded):
    gt, dets = lvis_fixture(seed, num_images=4 + seed, crowded=crowded)
    ann_path = _write(tmp_path / "lvis.json", gt)
    reference, precision = official_lvis_eval(ann_path, dets, max_dets=max_dets)
    ours = evaluate(ann_path, _write(tmp_path / "dets.json", dets), max_dets=max_dets)
    assert ours["format"] == "lvis"
    assert ours["stats"] == {k: float(v) for k, v in reference.items()}
    assert list(ours["stats"])[-4:] == [f"AR@{max_dets}", f"ARs@{max_dets}"] + [
        f"ARm@{max_dets}",
        f"ARl@{max_dets}",
    ]
    for k, cat_id in enumerate(LVIS_CAT_IDS):
        cell = precision[:, :, k, 0]
        expected_ap = float(np.mean(cell[cell > -1])) if (cell > -1).any() else -1.0
        assert ours["per_category_by_id"][str(cat_id)]["AP"] == expected_ap


@pytest.mark.parametrize("seed", [10, 11])
def test_lvis_split_equals_official_api_restricted_to_categories(tmp_path, seed):
    gt, dets = lvis_fixture(seed, num_images=10)
    ann_path = _write(tmp_path / "lvis.json", gt)
    novel = [1, 8, 34]
    base = [c for c in LVIS_CAT_IDS if c not in novel]
    ours = evaluate(ann_path, dets, novel_category_ids=novel)["stats"]
    for part, cat_ids in (("novel", novel), ("base", base)):
        reference, _ = official_lvis_eval(ann_path, dets, cat_ids=cat_ids)
        assert (ours[f"AP_{part}"], ours[f"AP50_{part}"]) == (reference["AP"], reference["AP50"])


def _two_image_lvis(neg_2: list[int], not_exhaustive_1: list[int]) -> dict:
    """Category 1 has one box on image 1; image 2 has no category-1 ground truth."""
    return {
        "images": [
            {"id": 1, "neg_category_ids": [], "not_exhaustive_category_ids": not_exhaustive_1},
            {"id": 2, "neg_category_ids": neg_2, "not_exhaustive_category_ids": []},
        ],
        "categories": [{"id": 1, "name": "a", "frequency": "f"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600}
        ],
    }


def test_lvis_federated_rules_by_hand():
    """A perfect hit at 0.5 and a miss at 0.9 rank as FP, TP: precision 1/2 at every recall.

    Without the false positive, precision is 1 (up to the official eps, 2e-16) everywhere.
    """
    one = pytest.approx(1.0, abs=1e-12)
    hit = _det(1, 1, [10, 10, 40, 40], 0.5)
    miss_on_image_2 = _det(2, 1, [100, 100, 40, 40], 0.9)
    miss_on_image_1 = _det(1, 1, [100, 100, 40, 40], 0.9)
    # Image 2 verified negative for category 1: the miss is a false positive.
    assert evaluate(_two_image_lvis([1], []), [hit, miss_on_image_2])["stats"]["AP"] == 0.5
    # Category 1 unlisted on image 2: that detection is not evaluated at all.
    assert evaluate(_two_image_lvis([], []), [hit, miss_on_image_2])["stats"]["AP"] == one
    # Category 1 not exhaustively annotated on image 1: its unmatched detection is ignored.
    assert evaluate(_two_image_lvis([], [1]), [hit, miss_on_image_1])["stats"]["AP"] == one
    assert evaluate(_two_image_lvis([], []), [hit, miss_on_image_1])["stats"]["AP"] == 0.5
    # max_dets keeps the best scores per image: with 1, the hit on image 1 is cut.
    metrics = evaluate(_two_image_lvis([], []), [hit, miss_on_image_1], max_dets=1)
    assert metrics["stats"]["AP"] == 0.0 and metrics["stats"]["AR@1"] == 0.0
    assert metrics["stats"]["APr"] == -1.0  # no rare category: undefined, as officially


def test_lvis_detections_on_unlisted_categories_change_nothing():
    gt, dets = lvis_fixture(12)
    unlisted = []
    for im in gt["images"]:
        present = {a["category_id"] for a in gt["annotations"] if a["image_id"] == im["id"]}
        for cat in sorted(set(LVIS_CAT_IDS) - present - set(im["neg_category_ids"])):
            unlisted.append(_det(im["id"], cat, [5, 5, 50, 50], 0.99))
    assert unlisted
    assert evaluate(gt, dets + unlisted)["stats"] == evaluate(gt, dets)["stats"]


def test_format_detection_and_override():
    lvis_gt, dets = lvis_fixture(13)
    assert evaluate(lvis_gt, dets)["format"] == "lvis"
    as_coco = evaluate(lvis_gt, dets, fmt="coco")
    assert as_coco["format"] == "coco" and list(as_coco["stats"]) == list(COCO_STAT_NAMES)
    coco_gt, coco_dets = coco_fixture(13)
    with pytest.raises(EvalDataError, match="frequency.*ids 1, 3, 7, 90"):
        evaluate(coco_gt, coco_dets, fmt="lvis")
    with pytest.raises(ValueError, match="fmt must be"):
        evaluate(coco_gt, coco_dets, fmt="voc")


def test_unknown_novel_categories_are_named():
    gt, dets = coco_fixture(14)
    with pytest.raises(EvalDataError, match=r"novel category ids not in the annotations: \[2, 4\]"):
        evaluate(gt, dets, novel_category_ids=[1, 2, 4])


# ---------------------------------------------------------------------------------------------
# `owl eval`.


def test_cli_coco_prints_table_and_writes_metrics(tmp_path):
    gt, dets = coco_fixture(20)
    ann_path = _write(tmp_path / "ann.json", gt)
    det_path = _write(tmp_path / "dets.json", dets)
    out_dir = tmp_path / "out"
    result = CliRunner().invoke(
        eval_cmd,
        ["--detections", det_path, "--annotations", ann_path, "--output-dir", str(out_dir)],
    )
    assert result.exit_code == 0, result.output
    reference = official_coco(ann_path, dets)
    assert f"AP     {reference[0]:.4f}" in result.output
    assert f"ARl    {reference[11]:.4f}" in result.output
    assert "COCO bbox metrics: 6 images, 4 categories" in result.output
    written = json.loads((out_dir / "metrics.json").read_text())
    assert [written["stats"][k] for k in COCO_STAT_NAMES] == reference.tolist()
    assert written["detections"] == det_path and written["format"] == "coco"


def test_cli_lvis_novel_categories_by_name_and_from_file(tmp_path):
    gt, dets = lvis_fixture(21, num_images=10)
    ann_path = _write(tmp_path / "lvis.json", gt)
    det_path = _write(tmp_path / "dets.json", dets)
    reference, _ = official_lvis_eval(ann_path, dets, cat_ids=[1, 13])
    by_name = CliRunner().invoke(
        eval_cmd,
        ["--detections", det_path, "--annotations", ann_path, "--novel-categories", "thing1, 13"],
    )
    assert by_name.exit_code == 0, by_name.output
    assert "novel (2 categories)" in by_name.output and "base (6 categories)" in by_name.output
    assert f"novel (2 categories)      {reference['AP']:.4f}" in by_name.output
    novel_file = tmp_path / "novel.txt"
    novel_file.write_text("# rare ones\nTHING13\n\n1\n", encoding="utf-8")
    out_dir = tmp_path / "o"
    from_file = CliRunner().invoke(
        eval_cmd,
        [
            "--detections", det_path, "--annotations", ann_path,
            "--novel-categories", str(novel_file), "--output-dir", str(out_dir),
        ],
    )  # fmt: skip
    assert from_file.exit_code == 0, from_file.output
    written = json.loads((out_dir / "metrics.json").read_text())
    assert written["novel_category_ids"] == [1, 13]
    assert written["stats"]["AP_novel"] == reference["AP"]


def test_cli_exit_codes_and_messages(tmp_path):
    gt, dets = coco_fixture(22)
    ann_path = _write(tmp_path / "ann.json", gt)
    det_path = _write(tmp_path / "dets.json", dets)
    runner = CliRunner()

    no_dets = runner.invoke(eval_cmd, ["--annotations", ann_path])
    assert no_dets.exit_code == 2 and "nothing to evaluate" in no_dets.output

    nope = str(tmp_path / "nope.json")
    missing = runner.invoke(eval_cmd, ["--detections", nope, "--annotations", ann_path])
    assert missing.exit_code == 2 and "nope.json" in missing.output

    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"image_id": 1,\n   "bbox": [1, 2, 3 4]}\n]\n', encoding="utf-8")
    bad_json = runner.invoke(eval_cmd, ["--detections", str(broken), "--annotations", ann_path])
    assert bad_json.exit_code == 2
    assert f"{broken}:3:21: invalid JSON" in bad_json.output

    unknown = runner.invoke(
        eval_cmd,
        ["--detections", det_path, "--annotations", ann_path, "--novel-categories", "car,zebra"],
    )
    assert unknown.exit_code == 2 and "zebra" in unknown.output and "car" not in unknown.output

    as_lvis = runner.invoke(
        eval_cmd, ["--detections", det_path, "--annotations", ann_path, "--format", "lvis"]
    )
    assert as_lvis.exit_code == 2 and f"{ann_path}: LVIS evaluation needs" in as_lvis.output


def test_eval_is_registered_in_the_owl_group():
    result = CliRunner().invoke(cli, ["eval", "--help"])
    assert result.exit_code == 0
    assert "--detections" in result.output and "Examples:" in result.output
