"""`owl train --data --model --out`: printed defaults, COCO and YOLO inputs, bad inputs (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from owl.cli.train import train

SHAPES = Path(__file__).resolve().parents[2] / "examples" / "shapes"


def _invoke(*args: str):
    return CliRunner().invoke(train, list(args))


def _coco(tmp_path: Path, keep_annotations=True, drop_class_boxes=False) -> Path:
    root = tmp_path / "coco"
    shutil.copytree(SHAPES, root)
    ann = json.loads((root / "annotations.json").read_text())
    used = {a["category_id"] for a in ann["annotations"]}
    ann["categories"] = [c for c in ann["categories"] if c["id"] in used]
    if not keep_annotations:
        ann["annotations"] = []
    if drop_class_boxes:
        gone = ann["annotations"][0]["category_id"]
        ann["annotations"] = [a for a in ann["annotations"] if a["category_id"] != gone]
    (root / "annotations.json").write_text(json.dumps(ann))
    return root / "annotations.json"


def test_front_door_prints_every_default_and_set_overrides(tmp_path):
    data = _coco(tmp_path)
    out = tmp_path / "mine.safetensors"
    r = _invoke("--data", str(data), "--model", "shapes-tiny", "--out", str(out),
                "--set", "optim.lr=0.0007", "--print-config")  # fmt: skip
    assert r.exit_code == 0, r.output
    n = len(json.loads(data.read_text())["images"])
    steps = max(100, min(3000, -(-n * 100 // 8)))
    for line in (
        "default init.source = shapes-tiny",
        "default model.variant = shapes-tiny",
        f"default train.num_steps = {steps}",
        "default cdc.enabled = True",
        "default optim.freeze_text = True",
        "overridden by --set: optim.lr=0.0007",
    ):
        assert line in r.output
    assert "lr: 0.0007" in r.output and f"num_steps: {steps}" in r.output


def test_empty_data_set_is_exit_2(tmp_path):
    r = _invoke("--data", str(_coco(tmp_path, keep_annotations=False)), "--model",
                "shapes-tiny", "--out", str(tmp_path / "o.safetensors"))  # fmt: skip
    assert r.exit_code == 2 and "box" in r.output and len(r.output.strip().splitlines()) == 1


def test_class_without_boxes_is_exit_2(tmp_path):
    r = _invoke("--data", str(_coco(tmp_path, drop_class_boxes=True)), "--model",
                "shapes-tiny", "--out", str(tmp_path / "o.safetensors"))  # fmt: skip
    assert r.exit_code == 2 and "without any box" in r.output, r.output


def test_export_folder_as_model_is_exit_2(tmp_path):
    export = tmp_path / "st-onnx"
    export.mkdir()
    (export / "manifest.json").write_text("{}")
    r = _invoke("--data", str(_coco(tmp_path)), "--model", str(export), "--out",
                str(tmp_path / "o.safetensors"))  # fmt: skip
    assert r.exit_code == 2 and "export folder" in r.output, r.output


def test_data_needs_model_and_out(tmp_path):
    r = _invoke("--data", str(_coco(tmp_path)))
    assert r.exit_code == 2 and "--model" in r.output
