"""owl.eval (prompts, predict, runlog, evaluation) and `owl eval --model`.

Ensembling, top-k, ids, resume, bad input.

References are computed independently: per-template logits through `Detector.encode_image` +
`Detector.score` (another code path than the batched, jitted ensemble), boxes unpadded with the
official formula written out here, and expected values by hand where they are small.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from owl.cli.eval import eval_cmd
from owl.data.annotations import CategoryMap, load_annotations
from owl.eval.metrics import evaluate
from owl.eval.predict import describe_missing, find_images, predict_images, unpad_boxes
from owl.eval.prompts import embed_prompts, resolve_templates
from owl.eval.runlog import (
    LOG_FILE,
    RESULTS_FILE,
    SettingsMismatchError,
    predict_dataset,
    run_settings,
)
from owl.inference.detector import Detector
from owl.text.prompts import CLIP_BEST_PROMPT_TEMPLATES, canonicalize

# Non-contiguous ids including 1, listed out of order: class index k is the k-th id ascending.
CATEGORIES = [
    {"id": 90, "name": "toothbrush"},
    {"id": 1, "name": "person"},
    {"id": 7, "name": "train"},
    {"id": 3, "name": "car"},
]
IDS = [1, 3, 7, 90]
SIZES = [(40, 30), (30, 50), (64, 64), (50, 20), (33, 47)]  # (width, height)


def _write_dataset(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Five small PNGs in root/images and a COCO json with two boxes per image."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for n, (w, h) in enumerate(SIZES):
        image_id = 10 + 3 * n
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images_dir / f"im{image_id}.png")
        images.append({"id": image_id, "file_name": f"im{image_id}.png", "width": w, "height": h})
        for j in range(2):
            x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            box = [x, y, rng.uniform(4, w / 2), rng.uniform(4, h / 2)]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id,
                 "category_id": IDS[(n + j) % 4], "bbox": box}
            )  # fmt: skip
    ann = root / "ann.json"
    ann.write_text(
        json.dumps({"images": images, "categories": CATEGORIES, "annotations": annotations}),
        encoding="utf-8",
    )
    return ann, images_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    ann, images_dir = _write_dataset(root)
    dataset = load_annotations(ann)
    found, missing = find_images(dataset, images_dir)
    assert missing == []
    return {"ann": ann, "images_dir": images_dir, "dataset": dataset, "images": found}


@pytest.fixture(scope="module")
def detector(tiny_owlv2):
    return Detector(tiny_owlv2, batch_size=2, resize_method="tf")


@pytest.fixture(scope="module")
def ensemble(detector, data):
    return embed_prompts(
        detector, CategoryMap.from_annotations(data["dataset"]), CLIP_BEST_PROMPT_TEMPLATES
    )


def _official_unpad(box_cxcywh: np.ndarray, w: int, h: int) -> np.ndarray:
    """scenic evaluator: box / (image fraction + 1e-6), clip [0, 1], then xywh pixels."""
    m = max(w, h)
    frac = np.array([w / m, h / m, w / m, h / m]) + 1e-6
    cx, cy, bw, bh = np.clip(box_cxcywh / frac, 0.0, 1.0).T
    return np.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h], axis=-1)


def _reference(detector, enc, templates, k: int):
    """Top-k from per-template logits computed one template at a time via Detector.score."""
    names = [c["name"] for c in sorted(CATEGORIES, key=lambda c: c["id"])]
    per_template = np.stack([
        detector.score(enc, detector.prepare_queries([canonicalize(t.format(n)) for n in names]))
        for t in templates
    ])  # fmt: skip
    scores = 1 / (1 + np.exp(-per_template.astype(np.float64).mean(axis=0)))  # [P, C]
    order = np.argsort(-scores.ravel(), kind="stable")[:k]
    patch, label = np.divmod(order, len(names))
    meta = enc.meta
    boxes = _official_unpad(enc.pred_boxes[patch].astype(np.float64), meta.width, meta.height)
    return scores.ravel()[order], np.asarray(IDS)[label], boxes, per_template


# ----------------------------------------------------------------------------------------------
# Ensembling, top-k, category ids, boxes.


def test_ensemble_equals_mean_of_per_template_logits(detector, data, ensemble):
    k = 12
    images = data["images"][:2]
    preds = list(predict_images(detector, images, ensemble, top_k=k))
    assert [p.image_id for p in preds] == [im.image_id for im in images]
    encodings = detector.encode_images([im.path for im in images])
    for image, pred, enc in zip(images, preds, encodings, strict=True):
        scores, cat_ids, boxes, per_template = _reference(
            detector, enc, CLIP_BEST_PROMPT_TEMPLATES, k
        )
        assert (pred.width, pred.height) == (image.width, image.height)
        np.testing.assert_allclose(pred.scores, scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(pred.category_ids, cat_ids)
        np.testing.assert_allclose(pred.boxes, boxes, atol=1e-3)
        # The templates disagree, so a single template (or no averaging) would fail the test.
        single = np.sort(1 / (1 + np.exp(-per_template[0].ravel())))[::-1][:k]
        assert np.abs(single - scores).max() > 1e-3


def test_logits_are_averaged_not_embeddings(detector, data, ensemble):
    """Averaging the (normalised) embeddings instead gives other scores: the test can tell."""
    images = data["images"][:2]
    pred = next(predict_images(detector, images, ensemble, top_k=64))
    enc = detector.encode_images([im.path for im in images])[0]
    e = ensemble.embeddings / np.linalg.norm(ensemble.embeddings, axis=-1, keepdims=True)
    q = e.mean(axis=0)
    cls = enc.class_embeddings / (np.linalg.norm(enc.class_embeddings, axis=-1, keepdims=True))
    logits = cls @ (q / np.linalg.norm(q, axis=-1, keepdims=True)).T + enc.logit_shift[:, None]
    logits = logits * enc.logit_scale[:, None]
    wrong = np.sort(1 / (1 + np.exp(-logits.ravel())))[::-1]
    assert np.abs(wrong - pred.scores).max() > 1e-3


def test_top_k_picks_the_k_best_pairs_multi_label(detector, data, ensemble):
    image = data["images"][1]
    num_pairs = detector.model.config.num_patches * len(IDS)  # 16 x 4 = 64
    [full] = predict_images(detector, [image], ensemble, top_k=1000)  # more than exist
    [top5] = predict_images(detector, [image], ensemble, top_k=5)
    assert len(full.scores) == num_pairs and len(top5.scores) == 5
    assert np.all(np.diff(full.scores) <= 0)
    np.testing.assert_array_equal(top5.scores, full.scores[:5])
    np.testing.assert_array_equal(top5.category_ids, full.category_ids[:5])
    np.testing.assert_array_equal(top5.boxes, full.boxes[:5])
    # Multi-label: every (box, class) pair once, so each box appears with all 4 classes and each
    # class (index 0 = id 1 included) with all 16 boxes.
    pairs = {
        (tuple(np.round(b, 4)), c) for b, c in zip(full.boxes, full.category_ids, strict=False)
    }
    assert len(pairs) == num_pairs
    ids, counts = np.unique(full.category_ids, return_counts=True)
    assert ids.tolist() == IDS and counts.tolist() == [16, 16, 16, 16]


def test_category_id_mapping_round_trips(data):
    cmap = CategoryMap.from_annotations(data["dataset"])
    assert list(cmap.ids) == IDS and cmap.names == ("person", "car", "train", "toothbrush")
    np.testing.assert_array_equal(cmap.ids_for_indices([0, 1, 2, 3]), IDS)
    np.testing.assert_array_equal(cmap.indices_for_ids(cmap.ids_for_indices([3, 0, 2])), [3, 0, 2])


def test_unpad_boxes_by_hand():
    # 200 x 100 image: it fills the top half of the padded square (fractions 1 and 0.5).
    boxes = np.array([
        [0.5, 0.25, 0.2, 0.1],  # inside: x 80..120, y 40..60
        [0.5, 0.45, 0.2, 0.2],  # reaches below the image: corners are not clipped (official)
        [0.5, 0.8, 0.2, 0.1],   # centre in the padding: cy clipped to 1
    ])  # fmt: skip
    got = unpad_boxes(boxes, 200, 100)
    expected = np.array([[80, 40, 40, 20], [80, 70, 40, 40], [80, 90, 40, 20]], np.float64)
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_templates_from_the_prompts_option():
    assert resolve_templates("ensemble") == CLIP_BEST_PROMPT_TEMPLATES
    assert len(CLIP_BEST_PROMPT_TEMPLATES) == 7
    assert resolve_templates("none") == ("{}",)
    assert resolve_templates("a photo of a {}") == ("a photo of a {}",)
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates("a photo")


def test_over_long_prompts_official_collapse_or_truncate(detector):
    names = [
        "an extremely long category name, number one, with very many more words than fit in it",
        "another extremely long category name that also has far too many words to fit in there",
        "car",
    ]
    cmap = CategoryMap((1, 2, 3), tuple(names))
    official = embed_prompts(detector, cmap, ["{}"], long_prompts="official")
    cut = embed_prompts(detector, cmap, ["{}"], long_prompts="truncate")
    assert set(official.long_prompts) == {canonicalize(n) for n in names[:2]}
    e, t = official.embeddings[0], cut.embeddings[0]
    np.testing.assert_array_equal(e[0], e[1])  # EOT dropped: both pool at SOT (spec §1.4)
    assert np.abs(t[0] - t[1]).max() > 1e-4  # EOT kept: they differ
    np.testing.assert_allclose(e[2], t[2], rtol=1e-6)  # short prompts are not affected
    np.testing.assert_allclose(e[2], detector.embed_texts(["car"])[0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Resume.


def _settings(data, **overrides):
    base = dict(
        model="tiny", prompts="ensemble", templates=CLIP_BEST_PROMPT_TEMPLATES, top_k=300,
        resize="tf", long_prompts="official",
        categories=CategoryMap.from_annotations(data["dataset"]),
    )  # fmt: skip
    return run_settings(**{**base, **overrides})


class _Stop(Exception):
    pass


def _stop_after(n: int):
    seen = []

    def hook(result):
        seen.append(result)
        if len(seen) == n:
            raise _Stop

    return hook


def test_resume_after_interruption_gives_the_same_results_file(tmp_path, detector, data, ensemble):
    images, settings = data["images"], _settings(data)
    whole = predict_dataset(detector, images, ensemble, tmp_path / "a", settings=settings)
    assert whole.new == 5 and whole.resumed == 0 and len(whole.results) == 5 * 64
    reference = (tmp_path / "a" / RESULTS_FILE).read_bytes()

    # Killed after 3 images (the first of the second batch): 3 lines in the log.
    with pytest.raises(_Stop):
        predict_dataset(
            detector, images, ensemble, tmp_path / "b", settings=settings, on_result=_stop_after(3)
        )
    assert len((tmp_path / "b" / LOG_FILE).read_text().splitlines()) == 3
    resumed = predict_dataset(detector, images, ensemble, tmp_path / "b", settings=settings)
    assert (resumed.resumed, resumed.new) == (3, 2)
    assert (tmp_path / "b" / RESULTS_FILE).read_bytes() == reference

    # Killed while writing the 4th line: the torn line is discarded and that image redone.
    (tmp_path / "c").mkdir()
    shutil.copy(tmp_path / "a" / "run.json", tmp_path / "c" / "run.json")
    lines = (tmp_path / "a" / LOG_FILE).read_bytes().splitlines(keepends=True)
    torn = b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2]
    (tmp_path / "c" / LOG_FILE).write_bytes(torn)
    again = predict_dataset(detector, images, ensemble, tmp_path / "c", settings=settings)
    assert (again.resumed, again.new) == (3, 2)
    assert (tmp_path / "c" / RESULTS_FILE).read_bytes() == reference
    assert (tmp_path / "c" / LOG_FILE).read_bytes() == (tmp_path / "a" / LOG_FILE).read_bytes()

    # The results file holds what evaluate() reads: real ids, pixel boxes, one image per block.
    rows = json.loads(reference)
    assert {r["category_id"] for r in rows} == set(IDS)
    assert [r["image_id"] for r in rows[::64]] == [im.image_id for im in images]


def test_resume_with_other_settings_is_refused(tmp_path, detector, data, ensemble):
    images = data["images"][:2]
    predict_dataset(detector, images, ensemble, tmp_path, settings=_settings(data), top_k=300)
    other = _settings(data, top_k=10, resize="official")
    with pytest.raises(SettingsMismatchError, match=r"top_k: 300 there, 10 now; resize") as err:
        predict_dataset(detector, images, ensemble, tmp_path, settings=other, top_k=10)
    assert "--overwrite" in str(err.value)
    fresh = predict_dataset(
        detector, images, ensemble, tmp_path, settings=other, top_k=10, overwrite=True
    )
    assert (fresh.resumed, fresh.new, len(fresh.results)) == (0, 2, 20)
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["top_k"] == 10


# ----------------------------------------------------------------------------------------------
# Finding images.


def test_missing_images_are_listed_with_a_count(tmp_path):
    (tmp_path / "val2017").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val2017" / "000000000042.jpg")
    images = [
        # LVIS style: no file_name, found through coco_url in DIR/val2017/.
        {"id": 42, "coco_url": "http://images.cocodataset.org/val2017/000000000042.jpg"},
        *({"id": i, "file_name": f"gone{i:02d}.jpg"} for i in range(1, 13)),
    ]
    dataset = {"images": images, "categories": [{"id": 1, "name": "a"}], "annotations": []}
    found, missing = find_images(dataset, tmp_path)
    assert [(im.image_id, im.path) for im in found] == [
        (42, tmp_path / "val2017" / "000000000042.jpg")
    ]
    assert missing == [f"gone{i:02d}.jpg" for i in range(1, 13)]
    line = describe_missing(missing, 13, tmp_path)
    assert line.startswith(f"12 of 13 images in the annotations are not in {tmp_path}: gone01.jpg")
    assert "gone10.jpg (and 2 more)" in line and "gone11" not in line


# ----------------------------------------------------------------------------------------------
# `owl eval --model`.


def _cli(*args: str):
    return CliRunner().invoke(eval_cmd, [str(a) for a in args])


def test_cli_end_to_end_resume_and_settings_check(tmp_path, tiny_model_file):
    ann, images_dir = _write_dataset(tmp_path / "d", seed=3)
    out = tmp_path / "out"
    args = ("--model", tiny_model_file, "--annotations", ann, "--images", images_dir,
            "--output-dir", out, "--batch-size", "2", "--novel-categories", "person")  # fmt: skip
    first = _cli(*args)
    assert first.exit_code == 0, first.output
    rows = json.loads((out / RESULTS_FILE).read_text())
    assert len(rows) == 5 * 64 and {r["category_id"] for r in rows} == set(IDS)
    metrics = json.loads((out / "metrics.json").read_text())
    reference = evaluate(ann, out / RESULTS_FILE, novel_category_ids=[1])
    assert metrics["stats"] == reference["stats"]
    assert metrics["evaluated_images"] == 5 and metrics["settings"]["top_k"] == 300
    assert "COCO bbox metrics: 5 images, 4 categories, 320 detections" in first.output
    assert re.search(rf"^  AP +{reference['stats']['AP']:.4f}$", first.output, re.MULTILINE)
    assert "novel (1 categories)" in first.output

    again = _cli(*args)  # everything is in the log already: nothing is predicted again
    assert again.exit_code == 0, again.output
    assert "predicted 0 image(s), 5 already in" in again.output
    assert json.loads((out / RESULTS_FILE).read_text()) == rows

    changed = _cli(*args, "--top-k", "10")
    assert changed.exit_code == 2
    assert "other settings (top_k: 300 there, 10 now)" in changed.output
    assert "--overwrite" in changed.output


def test_cli_missing_and_unreadable_images(tmp_path, tiny_model_file):
    ann, images_dir = _write_dataset(tmp_path / "d", seed=4)
    (images_dir / "im13.png").unlink()  # missing
    (images_dir / "im16.png").write_bytes(b"not a png at all")  # unreadable
    out = tmp_path / "out"
    args = ("--model", tiny_model_file, "--annotations", ann, "--images", images_dir,
            "--output-dir", out, "--batch-size", "2")  # fmt: skip

    refused = _cli(*args)
    assert refused.exit_code == 1
    assert f"1 of 5 images in the annotations are not in {images_dir}: im13.png" in refused.output
    assert "--skip-missing" in refused.output and not out.exists()

    partial = _cli(*args, "--skip-missing")
    assert partial.exit_code == 1, partial.output
    assert "im16.png" in partial.output and "1 image(s) could not be read" in partial.output
    assert "COCO bbox metrics: 3 images" in partial.output
    rows = json.loads((out / RESULTS_FILE).read_text())
    assert sorted({r["image_id"] for r in rows}) == [10, 19, 22]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluated_images"] == 3 and metrics["missing_images"] == 1
    assert [f["image_id"] for f in metrics["failed_images"]] == [16]


def test_cli_usage_errors(tmp_path, tiny_model_file):
    ann, images_dir = _write_dataset(tmp_path / "d", seed=5)
    no_images = _cli("--model", tiny_model_file, "--annotations", ann, "--output-dir", tmp_path)
    assert no_images.exit_code == 2 and "--model needs --images DIR" in no_images.output
    both = _cli("--model", tiny_model_file, "--detections", ann, "--annotations", ann)
    assert both.exit_code == 2 and "either --detections or --model" in both.output
    bad_prompt = _cli(
        "--model", tiny_model_file, "--annotations", ann, "--images", images_dir,
        "--output-dir", tmp_path / "o", "--prompts", "a photo",
    )  # fmt: skip
    assert bad_prompt.exit_code == 2 and "exactly one '{}'" in bad_prompt.output
    unknown = _cli(
        "--model", "no-such-model", "--annotations", ann, "--images", images_dir,
        "--output-dir", tmp_path / "o",
    )  # fmt: skip
    assert unknown.exit_code == 2 and "--model no-such-model" in unknown.output


# ----------------------------------------------------------------------------------------------
# `owl.eval.evaluation.evaluate`: the one predict-then-score entry point.


def test_evaluate_takes_its_settings_from_the_detector(tmp_path, detector, data):
    from owl.eval.evaluation import evaluate as evaluate_model

    result = evaluate_model(
        detector, data["ann"], data["images_dir"], tmp_path, prompts="none", top_k=20,
        max_images=3,
    )  # fmt: skip
    settings = json.loads((tmp_path / "run.json").read_text())["settings"]
    assert settings["resize"] == "tf" == detector.resize_method
    assert settings["model"] == str(detector.model.source)
    assert (settings["top_k"], settings["templates"]) == (20, ["{}"])
    assert result.run.predicted_ids == (10, 13, 16)
    rows = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert len(rows) == 3 * 20 and {r["image_id"] for r in rows} == {10, 13, 16}
    # Scored on those three images only, as metrics.evaluate scores them by hand.
    dataset = json.loads(data["ann"].read_text())
    dataset["images"] = [im for im in dataset["images"] if im["id"] in (10, 13, 16)]
    dataset["annotations"] = [a for a in dataset["annotations"] if a["image_id"] in (10, 13, 16)]
    reference = evaluate(dataset, tmp_path / RESULTS_FILE)
    assert result.metrics["stats"] == reference["stats"] and result.metrics["num_images"] == 3
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["stats"] == reference["stats"] and saved["evaluated_images"] == 3


def test_evaluate_missing_images_raise_or_are_skipped(tmp_path, detector):
    from owl.eval.evaluation import MissingImagesError
    from owl.eval.evaluation import evaluate as evaluate_model

    ann, images_dir = _write_dataset(tmp_path / "d", seed=6)
    (images_dir / "im13.png").unlink()
    with pytest.raises(MissingImagesError, match=r"1 of 5 images .*: im13.png") as err:
        evaluate_model(detector, ann, images_dir, tmp_path / "a", skip_missing=False)
    assert err.value.missing == ("im13.png",) and not (tmp_path / "a").exists()
    result = evaluate_model(detector, ann, images_dir, tmp_path / "b", prompts="none", top_k=5)
    assert result.missing == ("im13.png",) and result.run.predicted_ids == (10, 16, 19, 22)
