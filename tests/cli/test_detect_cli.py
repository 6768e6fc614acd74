"""End-to-end tests of `owl detect` on a tiny OWLv2 saved to disk (tests/conftest.py).

The tiny model has a 4x4 patch grid (128 px input, patch 32), so every image has exactly 16
predicted boxes: with threshold 0 and --multi-label each query matches all 16.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import owl.checkpoints.load as load_module
from owl.cli.detect import detect
from owl.cli.options import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MODEL

BOXES_PER_IMAGE = 16  # tiny config: (128 / 32) ** 2 patches


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """imgs/a.png (80x60), imgs/b.jpg (40x50), imgs/sub/c.png (30x30): random pixels."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for rel, (h, w) in {"a.png": (60, 80), "b.jpg": (50, 40), "sub/c.png": (30, 30)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
    return root


def run(*args):
    return CliRunner().invoke(detect, [str(a) for a in args])


def ok(result, code: int = 0):
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def read(path) -> list[dict]:
    payload = json.loads(Path(path).read_text())
    assert set(payload) == {"version", "results"} and payload["version"] == 1
    return payload["results"]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


# -- outputs ---------------------------------------------------------------------------------------


def test_output_folder_is_created_like_save_dir(images, tiny_model_file, tmp_path):
    out = tmp_path / "new" / "sub"
    ok(run(images / "a.png", "--model", tiny_model_file, "-q", "cat", "-o", out / "d.json"))
    assert [r["image"]["path"] for r in read(out / "d.json")] == [str(images / "a.png")]


def test_json_csv_coco_outputs(images, tiny_model_file, tmp_path):
    args = [images, "-r", "--model", tiny_model_file, "-q", "cat", "-q", "dog@0.5", "-t", "0.2"]
    ok(run(*args, "--output", tmp_path / "d.json"))
    ok(run(*args, "--output", tmp_path / "d.csv"))
    ok(run(*args, "--output", tmp_path / "d.coco.json"))

    results = read(tmp_path / "d.json")
    paths = [str(images / "a.png"), str(images / "b.jpg"), str(images / "sub" / "c.png")]
    assert [r["image"]["path"] for r in results] == paths
    total = 0
    for record, path in zip(results, paths, strict=False):
        width, height = Image.open(path).size
        assert (record["image"]["width"], record["image"]["height"]) == (width, height)
        scores = [d["score"] for d in record["detections"]]
        assert scores == sorted(scores, reverse=True)
        for det in record["detections"]:
            assert {"box", "score", "label", "query_index"} <= set(det)
            x0, y0, x1, y1 = det["box"]
            assert 0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height
            assert det["label"] == ["cat", "dog"][det["query_index"]]
            assert det["score"] <= 1 and det["score"] >= (0.2 if det["label"] == "cat" else 0.5)
            total += 1
    assert total > 0

    with open(tmp_path / "d.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "x0", "y0", "x1", "y1", "score", "label", "query_index"]
    expected = [
        [r["image"]["path"], *d["box"], d["score"], d["label"], d["query_index"]]
        for r in results for d in r["detections"]
    ]  # fmt: skip
    parsed = [[r[0], *map(float, r[1:6]), r[6], int(r[7])] for r in rows[1:]]
    assert parsed == expected

    coco = json.loads((tmp_path / "d.coco.json").read_text())
    assert len(coco) == total
    expected_coco = [
        (i, d["query_index"], d["score"], [d["box"][0], d["box"][1],
                                           d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]])
        for i, r in enumerate(results) for d in r["detections"]
    ]  # fmt: skip
    for row, (image_id, category, score, bbox) in zip(coco, expected_coco, strict=False):
        assert set(row) == {"image_id", "category_id", "bbox", "score"}
        assert (row["image_id"], row["category_id"], row["score"]) == (image_id, category, score)
        assert row["bbox"] == pytest.approx(bbox, rel=1e-6, abs=1e-4)


def test_cli_matches_the_detector_api(images, tiny_model_file, tmp_path):
    from owl.inference.detector import Detector
    from owl.inference.queries import TextQuery

    out = tmp_path / "d.json"
    args = ["-q", "cat", "-q", "dog@0.5", "-t", "0.2", "--multi-label", "--nms", "--nms-iou", "0.4"]
    ok(run(images, "--model", tiny_model_file, *args, "--max-detections", "7", "-o", out))
    detector = Detector(load_module.load(tiny_model_file))
    expected = detector.detect(
        [str(images / "a.png"), str(images / "b.jpg")],
        ["cat", TextQuery("dog", threshold=0.5)],
        threshold=0.2, multi_label=True, nms=True, nms_iou=0.4, max_detections=7,
    )  # fmt: skip
    assert read(out) == json.loads(json.dumps([d.to_dict() for d in expected]))


def test_printed_detections_summary_and_progress(images, tiny_model_file, tmp_path):
    args = [images, "-r", "--model", tiny_model_file, "-q", "cat", "-q", "dog", "-t", "0.3"]
    ok(run(*args, "-o", tmp_path / "d.json"))
    results = read(tmp_path / "d.json")
    result = ok(run(*args))
    lines = result.stdout.splitlines()
    for record in results:
        path, n = record["image"]["path"], len(record["detections"])
        [head] = [i for i, line in enumerate(lines) if line.startswith(path + " ")]
        size = f"({record['image']['width']}x{record['image']['height']})"
        assert lines[head] == f"{path} {size}: " + (
            f"{n} detection" + "s" * (n != 1) if n else "nothing found"
        )
        for line, det in zip(lines[head + 1 : head + 1 + n], record["detections"], strict=False):
            assert line.split()[:2] == [f"{det['score']:.3f}", det["label"]]
    assert "images: 3 ok, 0 failed" in result.stderr
    for label in ("cat", "dog"):
        count = sum(d["label"] == label for r in results for d in r["detections"])
        assert [line.split() for line in result.stderr.splitlines() if line.startswith(label)] == [
            [label, "0.30", str(count)]
        ]
    # The progress bar: done/total [elapsed<ETA, rate].
    assert re.search(r"3/3 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+(image/s|s/image)\]", result.stderr)
    quiet = ok(run(*args, "--quiet"))
    assert "3/3" not in quiet.stderr and "images:" not in quiet.stderr
    assert quiet.stdout == result.stdout
    single = ok(run(images / "a.png", "--model", tiny_model_file, "-q", "cat"))
    assert "1/1" not in single.stderr  # no bar for one image


def test_save_dir_draws_one_png_per_image(images, tiny_model_file, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(images / "a.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(other / "a.png")
    out = tmp_path / "drawn"
    ok(
        run(
            images,
            "-r",
            other,
            "--model",
            tiny_model_file,
            "-q",
            "cat",
            "-t",
            "0",
            "--save-dir",
            out,
        )
    )
    names = {f"{images.name}__a.png": images / "a.png", "b.png": images / "b.jpg",
             "c.png": images / "sub" / "c.png", "other__a.png": other / "a.png"}  # fmt: skip
    assert sorted(os.listdir(out)) == sorted(names)
    for name, source in names.items():
        drawn, original = Image.open(out / name), Image.open(source)
        assert drawn.format == "PNG" and drawn.size == original.size
        # threshold 0: every image has boxes, so the drawing differs from the original.
        assert not np.array_equal(
            np.asarray(drawn.convert("RGB")), np.asarray(original.convert("RGB"))
        )


def test_per_query_thresholds(images, tiny_model_file, tmp_path):
    ok(run(images, "--model", tiny_model_file, "-q", "cat@1.0", "-q", "dog", "-t", "0",
           "--multi-label", "--max-detections", "0", "-o", tmp_path / "a.json"))  # fmt: skip
    for record in read(tmp_path / "a.json"):
        assert [d["label"] for d in record["detections"]] == ["dog"] * BOXES_PER_IMAGE
    # From a queries file, and lowering below the global threshold.
    (tmp_path / "q.txt").write_text("# comment\n\ndog@0.0\ncat\n", encoding="utf-8")
    ok(run(images, "--model", tiny_model_file, "--queries-file", tmp_path / "q.txt", "-t", "1",
           "--multi-label", "--max-detections", "0", "-o", tmp_path / "b.json"))  # fmt: skip
    for record in read(tmp_path / "b.json"):
        assert [d["label"] for d in record["detections"]] == ["dog"] * BOXES_PER_IMAGE


def test_max_detections(images, tiny_model_file, tmp_path):
    base = [
        images,
        "--model",
        tiny_model_file,
        "-q",
        "cat",
        "-q",
        "dog",
        "-t",
        "0",
        "--multi-label",
    ]
    ok(run(*base, "--max-detections", "0", "-o", tmp_path / "all.json"))
    ok(run(*base, "--max-detections", "5", "-o", tmp_path / "five.json"))
    for full, five in zip(read(tmp_path / "all.json"), read(tmp_path / "five.json"), strict=False):
        assert len(full["detections"]) == 2 * BOXES_PER_IMAGE
        assert five["detections"] == full["detections"][:5]


@pytest.mark.parametrize(
    "specs, recursive, expected",
    [
        (["{root}"], False, ["a.png", "b.jpg"]),
        (["{root}"], True, ["a.png", "b.jpg", "sub/c.png"]),
        (["{root}/*.png"], False, ["a.png"]),
        (["{root}/**/*.png"], False, ["a.png", "sub/c.png"]),
        (["{root}/sub/c.png", "{root}/*.jpg", "{root}/sub/c.png"], False, ["sub/c.png", "b.jpg"]),
    ],
)
def test_folders_globs_recursive(images, tiny_model_file, tmp_path, specs, recursive, expected):
    args = [s.format(root=images) for s in specs] + ["-r"] * recursive
    ok(run(*args, "--model", tiny_model_file, "-q", "cat", "-o", tmp_path / "d.json"))
    assert [
        os.path.relpath(r["image"]["path"], images) for r in read(tmp_path / "d.json")
    ] == expected


# -- bad target images: one line each, the batch goes on, exit 1 -----------------------------------


def _png(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _half_png(images: Path) -> bytes:
    data = (images / "a.png").read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, content, extra, reason",
    [
        ("missing.jpg", None, [], "no such file"),
        ("text.jpg", b"hello, I am not a picture", [], "not an image file"),
        ("cut.png", "half", [], "truncated or corrupt"),
        ("zero.png", _png(0, 7), [], "zero width or height"),
        ("big.png", "big", ["--max-image-pixels", "5000"], "exceeds the limit of 5000"),
    ],
)
def test_bad_image_reported_and_batch_goes_on(
    images, tiny_model_file, tmp_path, name, content, extra, reason
):
    bad = tmp_path / name
    if content == "half":
        content = _half_png(images)
    if content == "big":  # 100x100 = 10000 px; a.png (4800) and b.jpg (2000) stay under 5000
        Image.new("RGB", (100, 100), "red").save(bad)
    elif content is not None:
        bad.write_bytes(content)
    out = tmp_path / "d.json"
    result = run(images / "a.png", bad, images / "b.jpg", "--model", tiny_model_file, "-q", "cat",
                 "-t", "0", "-o", out, *extra)  # fmt: skip
    ok(result, 1)
    mentions = [line for line in result.stderr.splitlines() if name in line]
    assert len(mentions) == 1
    assert mentions[0].startswith(f"  failed: {bad}: ") and reason in mentions[0]
    assert "1 of 3 images failed:" in result.stderr
    assert "images: 2 ok, 1 failed" in result.stderr
    records = read(out)
    assert [r["image"]["path"] for r in records] == [str(images / "a.png"), str(images / "b.jpg")]
    assert all(len(r["detections"]) > 0 for r in records)


# -- usage errors: one line, exit 2, nothing written -----------------------------------------------


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "query.png"
    path.write_text("not an image")
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["-q", ""], "--query '' is empty"),
        (["-q", "   "], "--query '   ' is empty"),
        (
            ["-q", "red " * 20],
            "has more than 16 tokens but at most 14 fit; shorten it or pass --truncate",
        ),
        (["-q", "cat@2"], "query 'cat@2': threshold 2 is not in [0, 1]"),
        (["--query-image", "{a}", "--query-box", "0,0,81,10"], "a.png (80x60 px)"),
        (["--query-image", "{a}", "--query-box", "10,10,10,20"], "a.png has zero area"),
        (
            ["--query-image", "{a}", "--query-box", "1,2,3"],
            "query box '1,2,3': expected four numbers",
        ),
        (["--query-image", "{text}"], "query image {text}: not an image file"),
        (["--query-image", "{tmp}/nope.png"], "'{tmp}/nope.png' does not exist"),
        (["--query-embedding", "{text}"], "{text}: not a query embedding file"),
        (["--query-embedding", "{tmp}/nope.npz"], "{tmp}/nope.npz: query embedding file not found"),
        ([], "no queries given"),
        (["-q", "cat", "-o", "{tmp}/d.txt"], "--output {tmp}/d.txt: unknown format"),
        (["-q", "cat", "-o", "{text}/d.json"], "--output {text}/d.json: {text} is not a folder"),
        (["-q", "cat", "-t", "1.5"], "1.5 is not in the range 0.0<=x<=1.0"),
        (["-q", "cat", "--batch-size", "0"], "0 is not in the range x>=1"),
        (["-q", "cat", "--model", "owlv2-b16-ensembel"], "Did you mean 'owlv2-b16-ensemble'?"),
    ],
)
def test_usage_errors(images, tiny_model_file, tmp_path, text_file, args, message):
    fill = {"a": images / "a.png", "text": text_file, "tmp": tmp_path}
    args = [a.format(**fill) for a in args]
    if "--model" not in args:
        args += ["--model", tiny_model_file]
    if "-o" not in args:
        args += ["-o", tmp_path / "d.json"]
    result = run(images / "a.png", *args)
    ok(result, 2)
    [line] = error_lines(result)
    assert message.format(**fill) in line
    assert not (tmp_path / "d.json").exists()


@pytest.mark.parametrize(
    "images_args, message",
    [
        ([], "no images given"),
        (["{tmp}/empty"], "empty: folder holds no image files"),
        (["{tmp}/*.webp"], "*.webp' matches no image file"),
    ],
)
def test_no_images(tiny_model_file, tmp_path, images_args, message):
    (tmp_path / "empty").mkdir()
    result = run(
        *[a.format(tmp=tmp_path) for a in images_args], "--model", tiny_model_file, "-q", "x"
    )
    ok(result, 2)
    [line] = error_lines(result)
    assert message in line


def test_truncate_long_queries(images, tiny_model_file, tmp_path):
    long_query = "red " * 20
    ok(run(images / "a.png", "--model", tiny_model_file, "-q", long_query, "-t", "0",
           "--truncate-long-queries", "-o", tmp_path / "d.json"))  # fmt: skip
    [record] = read(tmp_path / "d.json")
    assert {d["label"] for d in record["detections"]} == {long_query.strip()}


def test_duplicate_queries_merged_with_a_note(images, tiny_model_file, tmp_path):
    queries = ["-q", "cat", "-q", "CAT ", "-q", "dog", "-t", "0", "--multi-label"]
    result = ok(
        run(images / "a.png", "--model", tiny_model_file, *queries, "-o", tmp_path / "d.json")
    )
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: duplicate query 'CAT' merged with the same query at query_index 0"]
    [record] = read(tmp_path / "d.json")
    assert sorted({(d["label"], d["query_index"]) for d in record["detections"]}) == [
        ("cat", 0), ("dog", 1),
    ]  # fmt: skip


# -- help and defaults -----------------------------------------------------------------------------


def test_help_lists_every_option_and_examples():
    result = ok(CliRunner().invoke(detect, ["--help"]))
    expected = [
        "--query", "--queries-file", "--query-image", "--query-box", "--query-label",
        "--query-method", "--query-embedding", "--model", "--threshold", "--multi-label",
        "--nms / --no-nms", "--nms-iou", "--class-agnostic-nms", "--max-detections",
        "--batch-size", "--output", "--save-dir", "--recursive", "--quiet", "--max-image-pixels",
        "--truncate-long-queries",
    ]  # fmt: skip
    for name in expected:
        assert name in result.output, name
    for param in detect.params:
        for opt in param.opts:
            assert opt in result.output
    examples = result.output.split("Examples:")[1]
    for name in ["--query", "--queries-file", "--query-image", "--query-box", "--query-embedding",
                 "--output", "--save-dir", "--recursive", "--max-image-pixels"]:  # fmt: skip
        assert name in examples, name
    assert 'owl detect street.jpg --query "red car" --query "bicycle@0.3"' in result.output


def test_defaults():
    from owl.ops.image import DEFAULT_MAX_PIXELS

    assert DEFAULT_MODEL == "shapes-tiny"  # ships in the package: works offline
    assert DEFAULT_MAX_IMAGE_PIXELS == DEFAULT_MAX_PIXELS
    defaults = {p.name: p.default for p in detect.params}
    assert defaults["model"] == DEFAULT_MODEL
    # threshold and NMS IoU are left to the Detector: 0.1 and 0.3 raw, 0.5 and the
    # calibration's own IoU (0.5) with --calibrated (tests/eval/test_calibration_fit.py)
    assert (defaults["threshold"], defaults["nms_iou"], defaults["max_detections"]) == (
        None,
        None,
        100,
    )
    from owl.cli.options import threshold_option_value

    assert threshold_option_value(None, None, 0.1) == 0.1
    assert threshold_option_value(None, object(), 0.1) == 0.5
    assert threshold_option_value(0.2, object(), 0.1) == 0.2
    assert (defaults["batch_size"], defaults["nms"]) == (4, None)
