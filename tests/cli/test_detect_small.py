"""Small `owl detect` behaviours: stdout output, counts in words, embedding-file errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from owl.cli.detect import detect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images" / "000000.png"


def run(*args):
    return CliRunner().invoke(detect, [str(a) for a in args])


def test_dash_output_writes_owl_json_to_stdout_and_nothing_else(tmp_path):
    result = run(EXAMPLE, "-q", "red circle", "-o", "-", "--quiet")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)  # stdout is the JSON document alone
    assert payload["version"] == 1 and len(payload["results"]) == 1
    assert payload["results"][0]["image"]["path"] == str(EXAMPLE)
    assert not (Path.cwd() / "-").exists()


def test_dash_output_in_csv_and_coco(tmp_path):
    as_csv = run(EXAMPLE, "-q", "red circle", "-o", "-", "--output-format", "csv", "--quiet")
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["image", "x0", "y0", "x1", "y1", "score", "label", "query_index"]
    assert len(rows) > 1 and {r[6] for r in rows[1:]} == {"red circle"}
    as_coco = run(EXAMPLE, "-q", "red circle", "-o", "-", "--output-format", "coco", "--quiet")
    coco = json.loads(as_coco.stdout)
    assert coco and {r["image_id"] for r in coco} == {0} and {r["category_id"] for r in coco} == {0}


def test_output_format_must_agree_with_a_file_name(tmp_path):
    result = run(EXAMPLE, "-q", "x", "-o", tmp_path / "d.csv", "--output-format", "json")
    assert result.exit_code == 2
    assert "--output-format json contradicts the file name d.csv (csv)" in result.output


def test_one_image_is_one_image_not_1_images(tmp_path):
    out = tmp_path / "d.json"
    result = run(EXAMPLE, "-q", "red circle", "-o", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out} (1 image)\n" in result.stderr


def test_one_failed_image_is_counted_in_words(tmp_path):
    result = run(tmp_path / "missing.png", "-q", "red circle")
    assert result.exit_code == 1
    assert "1 of 1 image failed:" in result.stderr


@pytest.mark.parametrize(
    "contents",
    [
        {"embedding": np.array([{"a": 1}], dtype=object)},  # pickled object array
        {"label": np.str_("dog")},  # no embedding
    ],
    ids=["pickled", "no-embedding"],
)
def test_bad_embedding_file_says_what_it_should_be_never_unpickle(tmp_path, contents):
    path = tmp_path / "q.npz"
    np.savez(path, **contents)
    result = run(EXAMPLE, "--query-embedding", path)
    assert result.exit_code == 2
    [line] = [x for x in result.output.splitlines() if x.startswith("Error:")]
    assert line.startswith(f"Error: {path}: ")
    assert line.endswith(
        "expected an .npz of plain arrays: a 1-D float 'embedding', and 'label', 'model' and "
        "'kind' strings, as `owl embed-query -o FILE.npz` writes it; make it again with that"
    )
    assert "unsafely" not in result.output and "allow_pickle" not in result.output


def test_precision_bf16_finds_the_same_red_circle():
    def best(*extra):
        result = run(EXAMPLE, "-q", "red circle", "-o", "-", "--quiet", *extra)
        assert result.exit_code == 0, result.output
        [det, *_] = json.loads(result.stdout)["results"][0]["detections"]
        return np.array(det["box"]), det["score"]

    (box32, score32), (box16, score16) = best(), best("--precision", "bf16")
    assert score16 != score32  # bf16 really ran
    np.testing.assert_allclose(box16, box32, atol=2.0)  # pixels, on a 128-pixel image
    assert abs(score16 - score32) < 0.05
    bad = run(EXAMPLE, "-q", "red circle", "--precision", "fp8")
    assert bad.exit_code == 2 and "'fp8' is not one of 'f32', 'bf16'" in bad.output
