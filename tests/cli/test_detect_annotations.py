"""`owl detect --annotations`: COCO results with the dataset's own ids, readable by `owl eval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from owl.cli.main import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shapes"
ANNOTATIONS = EXAMPLES / "annotations.json"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def dataset() -> dict:
    return json.loads(ANNOTATIONS.read_text())


def test_round_trip_detect_then_eval(tmp_path, dataset):
    """shapes-tiny on the shipped examples: every category is a query, eval scores the file."""
    dets = tmp_path / "dets.coco.json"
    result = run("detect", EXAMPLES / "images", "--annotations", ANNOTATIONS, "-o", dets,
                 "--threshold", "0.05", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(dets.read_text())
    assert rows
    assert {r["image_id"] for r in rows} <= {1, 2, 3}  # the file's ids, not positions 0..2
    assert {r["category_id"] for r in rows} <= {c["id"] for c in dataset["categories"]}

    evaluated = run("eval", "--detections", dets, "--annotations", ANNOTATIONS,
                    "--output-dir", tmp_path / "eval")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "COCO bbox metrics: 3 images, 64 categories" in evaluated.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_detections"] == len(rows)
    assert metrics["stats"]["AP50"] > 0.5  # the README quotes base AP50 0.80 for shapes-tiny


def test_ids_are_the_datasets_by_file_and_category_name(tmp_path, dataset):
    """The same run as owl JSON, mapped by hand through the annotation file, equals the COCO."""
    queries = ["red circle", "blue hexagon", "white star"]
    args = [a for q in queries for a in ("-q", q)]
    # The images in another order and from another folder: ids follow names, not positions.
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("000002.png", "000000.png", "000001.png"):
        shutil.copy(EXAMPLES / "images" / name, folder / name)
    images = [folder / "000002.png", folder / "000000.png", folder / "000001.png"]
    plain = tmp_path / "dets.json"
    coco = tmp_path / "dets.coco.json"
    assert run("detect", *images, *args, "-o", plain, "--quiet").exit_code == 0
    result = run("detect", *images, *args, "--annotations", ANNOTATIONS, "-o", coco, "--quiet")
    assert result.exit_code == 0, result.output

    image_id = {im["file_name"]: im["id"] for im in dataset["images"]}
    category_id = {c["name"]: c["id"] for c in dataset["categories"]}
    expected = []
    for record in json.loads(plain.read_text())["results"]:
        for det in record["detections"]:
            x0, y0, x1, y1 = det["box"]
            name = Path(record["image"]["path"]).name
            expected.append((image_id[name], category_id[det["label"]],
                             round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3),
                             det["score"]))  # fmt: skip
    got = [(r["image_id"], r["category_id"], *(round(v, 3) for v in r["bbox"]), r["score"])
           for r in json.loads(coco.read_text())]  # fmt: skip
    assert expected and sorted(got) == sorted(expected)
    assert {row[1] for row in got} <= {1, 21, 60}  # red circle, blue hexagon, white star


def test_a_query_that_is_no_category_is_a_usage_error(tmp_path):
    result = run("detect", EXAMPLES / "images", "-q", "red circle", "-q", "zebra",
                 "--annotations", ANNOTATIONS, "-o", tmp_path / "d.coco.json")  # fmt: skip
    assert result.exit_code == 2
    assert f"--annotations {ANNOTATIONS}: no category named 'zebra'" in result.output
    assert not (tmp_path / "d.coco.json").exists()


def test_an_image_not_in_the_dataset_fails_and_the_others_go_on(tmp_path):
    stranger = tmp_path / "999.png"
    shutil.copy(EXAMPLES / "images" / "000000.png", stranger)
    out = tmp_path / "d.coco.json"
    result = run("detect", stranger, EXAMPLES / "images" / "000001.png", "-q", "white star",
                 "--annotations", ANNOTATIONS, "-o", out)  # fmt: skip
    assert result.exit_code == 1
    assert f"  failed: {stranger}: no image with that file name in {ANNOTATIONS}" in result.output
    assert "1 of 2 images failed:" in result.output
    assert {r["image_id"] for r in json.loads(out.read_text())} == {2}


def test_annotations_need_coco_output(tmp_path):
    result = run("detect", EXAMPLES / "images", "--annotations", ANNOTATIONS,
                 "-o", tmp_path / "d.json")  # fmt: skip
    assert result.exit_code == 2
    assert "write them with --output FILE.coco.json" in result.output
