"""owl.plots and the curves behind it: the plotted values are the metrics' own.

The precision-recall curves come from `owl.eval.metrics.evaluate` ("pr_curves"); their mean over
the 101 recall points must equal pycocotools' AP and AP50 (when every category has ground truth).
Each picture's .json sidecar, read back from the drawn artists, must hold exactly those curves,
the per-category APs and the training records.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from owl import plots  # noqa: E402
from owl.cli.main import cli  # noqa: E402
from owl.eval.metrics import evaluate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ANNOTATIONS = REPO / "examples" / "shapes" / "annotations.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _dataset_and_results() -> tuple[dict, list[dict]]:
    """The shipped example scenes, their categories cut to those with boxes, and detections:
    every box shifted a little (some a lot) plus one false positive per image."""
    gt = json.loads(ANNOTATIONS.read_text())
    present = {a["category_id"] for a in gt["annotations"]}
    gt["categories"] = [c for c in gt["categories"] if c["id"] in present]
    rng = np.random.default_rng(0)
    rows = []
    for k, a in enumerate(gt["annotations"]):
        x, y, w, h = a["bbox"]
        shift = 1.0 if k % 3 else 0.3 * w
        rows.append({"image_id": a["image_id"], "category_id": a["category_id"],
                     "bbox": [x + shift, y, w, h], "score": float(rng.uniform(0.2, 1.0))})  # fmt: skip
    for image in gt["images"]:
        rows.append({"image_id": image["id"], "category_id": gt["categories"][0]["id"],
                     "bbox": [0, 0, 10, 10], "score": 0.9})  # fmt: skip
    return gt, rows


@pytest.fixture(scope="module")
def metrics() -> dict:
    gt, rows = _dataset_and_results()
    novel = [c["id"] for c in gt["categories"][:3]]
    return evaluate(gt, rows, novel_category_ids=novel)


def test_pr_curves_average_to_the_official_ap(metrics):
    curves, stats = metrics["pr_curves"], metrics["stats"]
    assert len(curves["recall"]) == 101 and curves["recall"][50] == pytest.approx(0.5)
    assert 0 < stats["AP"] < stats["AP50"] < 1  # a fixture that is neither trivial nor perfect
    for group, suffix in (("overall", ""), ("base", "_base"), ("novel", "_novel")):
        assert np.mean(curves[group]["precision50"]) == pytest.approx(stats["AP50" + suffix])
        assert np.mean(curves[group]["precision"]) == pytest.approx(stats["AP" + suffix])


def test_eval_plots_draw_the_metrics_curves_and_category_aps(metrics, tmp_path):
    written = plots.eval_plots(metrics, tmp_path)
    assert [p.name for p in written] == ["pr_curves.png", "per_category_ap.png"]
    for path in written:
        assert path.read_bytes()[:8] == PNG_MAGIC
    drawn = json.loads((tmp_path / "pr_curves.json").read_text())["panels"]
    curves = metrics["pr_curves"]
    for panel, key in (("IoU=0.50", "precision50"), ("IoU=0.50:0.95", "precision")):
        assert set(drawn[panel]) == {"overall", "base", "novel"}
        for group, line in drawn[panel].items():
            keep = [i for i, p in enumerate(curves[group][key]) if p > -1]
            assert line["x"] == pytest.approx([curves["recall"][i] for i in keep])
            assert line["y"] == pytest.approx([curves[group][key][i] for i in keep])
    bars = json.loads((tmp_path / "per_category_ap.json").read_text())
    per = metrics["per_category"]
    assert sorted(bars["names"]) == sorted(n for n, r in per.items() if r["AP"] > -1)
    assert bars["AP"] == pytest.approx([per[n]["AP"] for n in bars["names"]])
    assert bars["AP"] == sorted(bars["AP"], reverse=True)
    novel = set(metrics["novel_category_ids"])
    assert bars["novel"] == [per[n]["id"] in novel for n in bars["names"]]


def test_without_a_split_only_the_overall_curve(tmp_path):
    gt, rows = _dataset_and_results()
    result = evaluate(copy.deepcopy(gt), rows)
    assert set(result["pr_curves"]) == {"recall", "overall"}
    drawn = plots.pr_curves(result, tmp_path / "pr.png")
    assert set(drawn["panels"]["IoU=0.50"]) == {"overall"}


def test_training_plot_draws_the_logged_records(tmp_path):
    records = [
        {"step": 10, "split": "train", "loss": 2.0, "loss_class": 1.5, "lr": 1e-4, "text_lr": 0.0},
        {"step": 20, "split": "train", "loss": 1.0, "loss_class": 0.7, "lr": 2e-4, "text_lr": 0.0},
        {"step": 20, "split": "eval", "loss": 1.2, "AP": 0.25, "AP50": 0.5},
        {"step": 30, "split": "train", "loss": "nan", "loss_class": 0.5, "lr": 1e-4},
        {"step": 40, "split": "eval", "loss": 0.9, "AP": 0.35, "AP50": 0.6},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    path = plots.training_plot_of_run(tmp_path)
    assert path == tmp_path / "training.png" and path.read_bytes()[:8] == PNG_MAGIC
    drawn = json.loads(path.with_suffix(".json").read_text())
    assert drawn["loss"]["loss"] == {"x": [10, 20], "y": [2.0, 1.0]}  # the "nan" string skipped
    assert drawn["loss"]["loss_class"] == {"x": [10, 20, 30], "y": [1.5, 0.7, 0.5]}
    assert drawn["loss"]["eval loss"] == {"x": [20, 40], "y": [1.2, 0.9]}
    assert drawn["lr"] == {"lr": {"x": [10, 20, 30], "y": [1e-4, 2e-4, 1e-4]}}  # text_lr all 0
    assert drawn["ap"] == {"AP": {"x": [20, 40], "y": [0.25, 0.35]},
                           "AP50": {"x": [20, 40], "y": [0.5, 0.6]}}  # fmt: skip


def test_owl_eval_plots_writes_the_pictures(tmp_path):
    gt, rows = _dataset_and_results()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(rows))
    novel = ",".join(c["name"] for c in gt["categories"][:3])
    args = ["eval", "--detections", str(tmp_path / "dets.json"), "--annotations",
            str(tmp_path / "gt.json"), "--novel-categories", novel, "--plots", str(tmp_path / "p")]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'p' / 'pr_curves.png'}" in result.output
    expected = evaluate(gt, rows, novel_category_ids=[c["id"] for c in gt["categories"][:3]])
    bars = json.loads((tmp_path / "p" / "per_category_ap.json").read_text())
    assert bars["AP"] == pytest.approx(sorted(
        (r["AP"] for r in expected["per_category"].values() if r["AP"] > -1), reverse=True
    ))  # fmt: skip


def test_owl_eval_plots_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    args = ["eval", "--detections", str(ANNOTATIONS), "--annotations", str(ANNOTATIONS),
            "--plots", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        'Error: --plots needs matplotlib; install it with: pip install "owl[plots]"'
    ]
