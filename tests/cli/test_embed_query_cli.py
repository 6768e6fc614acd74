"""End-to-end tests of `owl embed-query`: round trip through `owl detect --query-embedding`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from owl.cli.detect import detect
from owl.cli.embed_query import embed_query
from owl.inference.queries import save_query_embedding


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """dog.png (80x60) and scene.jpg (64x48), random pixels."""
    root = tmp_path_factory.mktemp("eq")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(root / "dog.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "scene.jpg")
    return root


def invoke(command, *args):
    return CliRunner().invoke(command, [str(a) for a in args])


def ok(result, code: int = 0):
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def npz(path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def results(path) -> list:
    return json.loads(Path(path).read_text())["results"]


def test_round_trip_equals_image_query(images, tiny_model_file, tmp_path):
    emb = tmp_path / "dog.npz"
    result = ok(invoke(embed_query, "--model", tiny_model_file, "--query-image",
                       images / "dog.png", "--query-box", "10,5,50,40", "-o", emb))  # fmt: skip
    saved = npz(emb)
    assert saved["embedding"].shape == (32,) and saved["embedding"].dtype == np.float32
    assert str(saved["label"]) == "dog"  # the query image's stem
    assert str(saved["model"]) == str(Path(tiny_model_file).resolve())
    assert result.output.startswith(f"wrote {emb}: label 'dog', 32 values")

    targets = [images / "scene.jpg", images / "dog.png"]
    # --batch-size 1: XLA's float rounding depends (by ~1e-7) on which images share a batch, and
    # the image-query run encodes dog.png alone first (as exemplar), then finds it cached.
    common = ["--model", tiny_model_file, "-t", "0", "--max-detections", "10", "--batch-size", "1"]
    ok(invoke(detect, *targets, *common, "--query-embedding", emb, "-o", tmp_path / "a.json"))
    ok(invoke(detect, *targets, *common, "--query-image", images / "dog.png",
              "--query-box", "10,5,50,40", "-o", tmp_path / "b.json"))  # fmt: skip
    a, b = results(tmp_path / "a.json"), results(tmp_path / "b.json")
    assert a == b
    assert all(len(r["detections"]) > 0 for r in a)
    assert {d["label"] for r in a for d in r["detections"]} == {"dog"}


def test_several_boxes_average_into_one_embedding(images, tiny_model_file, tmp_path):
    def embed(out, *boxes, label=()):
        args = [x for box in boxes for x in ("--query-box", box)]
        ok(invoke(embed_query, "--model", tiny_model_file, "--query-image", images / "dog.png",
                  *args, *label, "-o", out))  # fmt: skip
        return npz(out)

    one = embed(tmp_path / "one.npz", "10,5,50,40")
    two = embed(tmp_path / "two.npz", "40,20,80,60")
    both = embed(tmp_path / "both.npz", "10,5,50,40", "40,20,80,60", label=("--label", "pup"))
    expected = (one["embedding"] + two["embedding"]) / 2
    np.testing.assert_allclose(both["embedding"], expected, rtol=1e-6, atol=1e-7)
    assert str(both["label"]) == "pup"


def test_text_embedding_round_trip(images, tiny_model_file, tmp_path):
    ok(
        invoke(
            embed_query, "--model", tiny_model_file, "--query", "a red car", "-o", tmp_path / "car"
        )
    )
    assert str(npz(tmp_path / "car.npz")["label"]) == "a red car"  # .npz added to the name
    common = [images / "scene.jpg", "--model", tiny_model_file, "-t", "0", "--no-nms"]
    ok(
        invoke(
            detect, *common, "--query-embedding", tmp_path / "car.npz", "-o", tmp_path / "a.json"
        )
    )
    ok(invoke(detect, *common, "-q", "a red car", "-o", tmp_path / "b.json"))
    assert results(tmp_path / "a.json") == results(tmp_path / "b.json")


def test_embedding_threshold_suffix(images, tiny_model_file, tmp_path):
    emb = save_query_embedding(
        tmp_path / "e.npz", np.ones(32), "thing", str(Path(tiny_model_file).resolve())
    )
    ok(invoke(detect, images / "scene.jpg", "--model", tiny_model_file, "-t", "0",
              "--query-embedding", f"{emb}@1.0", "-o", tmp_path / "d.json"))  # fmt: skip
    assert results(tmp_path / "d.json")[0]["detections"] == []


def test_other_model_is_a_note_and_wrong_size_an_error(images, tiny_model_file, tmp_path):
    other = save_query_embedding(tmp_path / "other.npz", np.ones(32), "thing", "owlvit-b32")
    result = ok(invoke(detect, images / "scene.jpg", "--model", tiny_model_file,
                       "--query-embedding", other, "--quiet"))  # fmt: skip
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1
    assert f"{other} was made with model 'owlvit-b32'" in notes[0]

    wrong = save_query_embedding(tmp_path / "wrong.npz", np.ones(512), "thing", "owlvit-b32")
    result = ok(invoke(detect, images / "scene.jpg", "--model", tiny_model_file,
                       "--query-embedding", wrong, "-o", tmp_path / "d.json"), 2)  # fmt: skip
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert f"{wrong}: embedding has 512 values but model" in line and "needs 32" in line
    assert not (tmp_path / "d.json").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give either --query-image (with --query-box) or --query TEXT"),
        (["--query", "x", "--query-image", "{dog}"], "give either --query-image"),
        (["--query", "x", "--query-box", "1,2,3,4"], "--query-box needs --query-image"),
        (["--query", " "], "--query is empty"),
        (["--query", "red " * 20], "has more than 16 tokens but at most 14 fit"),
        (["--query-image", "{dog}", "--query-box", "0,0,80,61"], "dog.png (80x60 px)"),
        (["--query-image", "{dog}", "--query-box", "5,5,4,9"], "is inverted (x1 < x0)"),
        (["--query-image", "{dog}", "--query-box", "5,5,5,9"], "has zero area"),
        (["--query-image", "{dog}", "--query-box", "5,5,9"], "query box '5,5,9': expected four"),
        (
            [
                "--query-image",
                "{dog}",
                "--query-image",
                "{dog}",
                "--query-box",
                "1,1,5,5",
                "--query-box",
                "1,1,6,6",
                "--query-box",
                "1,1,7,7",
            ],
            "got 2 --query-image and 3",
        ),
        (["--query-image", "{dog}", "--label", ""], "--label is empty"),
        (["--query-image", "{dog}", "--method", "best"], "'best' is not one of"),
    ],
)
def test_usage_errors(images, tiny_model_file, tmp_path, args, message):
    args = [a.format(dog=images / "dog.png") for a in args]
    result = invoke(embed_query, "--model", tiny_model_file, *args, "-o", tmp_path / "e.npz")
    ok(result, 2)
    [line] = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert message in line
    assert not (tmp_path / "e.npz").exists()


def test_help_lists_every_option():
    result = ok(CliRunner().invoke(embed_query, ["--help"]))
    for name in ["--model", "--query-image", "--query-box", "--query", "--label", "--method",
                 "--output", "--max-image-pixels", "--truncate-long-queries"]:  # fmt: skip
        assert name in result.output, name
    for param in embed_query.params:
        for opt in param.opts:
            assert opt in result.output
    assert (
        "owl embed-query --query-image dog.jpg --query-box 10,20,110,220 -o dog.npz"
        in (result.output.split("Examples:")[1])
    )
