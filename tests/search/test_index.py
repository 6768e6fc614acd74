"""owl.Index and `owl index` / `owl search`: scores equal `owl detect`, incremental updates equal a
fresh build, kill -9 safety, shards, model mismatch, bad images, negatives, the gallery."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import owl
from owl.cli.main import cli
from owl.inference.queries import EmbeddingQuery
from owl.search.index import Index, IndexMismatchError
from owl.search.negatives import suppress_negatives

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images"
QUERIES = ["red circle", "blue square@0.2", "green triangle"]


@pytest.fixture(scope="module")
def detector():
    return owl.Detector("shapes-tiny")


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n distinct images: the shipped ShapesWorld examples with a few noisy pixels each."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bases = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(EXAMPLES.glob("*.png"))]
    paths = []
    for i in range(n):
        image = bases[i % len(bases)].copy()
        ys, xs = rng.integers(0, image.shape[0], 8), rng.integers(0, image.shape[1], 8)
        image[ys, xs] = rng.integers(0, 256, (8, 3))
        path = folder / f"{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def contents(index_path: Path) -> list[tuple]:
    """Everything an index holds about its images, by path (row ids and mtimes left out)."""
    db = sqlite3.connect(index_path)
    rows = db.execute(
        "SELECT path, sha256, size, width, height, scale, num_boxes, boxes, embeddings,"
        " logit_shift, logit_scale, objectness, box_index FROM images ORDER BY path"
    ).fetchall()
    db.close()
    return rows


def test_search_scores_equal_detect_scores(tmp_path, detector):
    paths = [str(p) for p in sorted(EXAMPLES.glob("*.png"))]
    with Index(tmp_path / "all.idx", model=detector, boxes_per_image=64) as index:
        index.add(paths)
        results = index.search(QUERIES, top=10, threshold=0.05)
    expected = {
        os.path.abspath(p): d
        for p, d in zip(paths, detector.detect(paths, QUERIES, threshold=0.05), strict=True)
    }
    assert len(results) == sum(len(d) > 0 for d in expected.values())
    best = [float(d.confidence[0]) for d in results]
    assert best == sorted(best, reverse=True)
    for got in results:
        want = expected[got.metadata["path"]]
        np.testing.assert_array_equal(got.data["box_index"], want.data["box_index"])
        np.testing.assert_allclose(got.confidence, want.confidence, atol=1e-5)
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-4)
        assert list(got.labels) == list(want.labels)


def test_kept_boxes_keep_their_detect_scores(tmp_path, detector):
    """With K < P the index keeps the top-K boxes by rank; each keeps the score detect gives it."""
    paths = [str(p) for p in sorted(EXAMPLES.glob("*.png"))]
    with Index(tmp_path / "k4.idx", model=detector, boxes_per_image=4) as index:
        index.add(paths)
        records = {r.path: r for r in index.records()}
        results = index.search(QUERIES, top=10, threshold=0.0, max_detections=None)
    assert all(len(r.box_index) == 4 for r in records.values())
    for got in results:
        enc = detector.encode_image(got.metadata["path"])
        bound = (1 + enc.logit_shift) * enc.logit_scale
        np.testing.assert_array_equal(
            records[got.metadata["path"]].box_index, np.argsort(-bound, kind="stable")[:4]
        )
        logits = detector.score(enc, detector.prepare_queries(QUERIES))
        want = 1 / (1 + np.exp(-logits[got.data["box_index"], got.class_id].astype(np.float64)))
        np.testing.assert_allclose(got.confidence, want, atol=1e-5)


def test_incremental_update_equals_fresh_build(tmp_path, detector):
    folder = tmp_path / "photos"
    paths = make_images(folder, 6)
    with Index(tmp_path / "inc.idx", model=detector) as index:
        first = index.add(paths[:4])
        assert (first.encoded, first.unchanged) == (4, 0)
        shutil.copy(paths[5], paths[1])  # changed content
        paths[3].unlink()  # removed
        (folder / "copy.png").write_bytes(paths[0].read_bytes())  # same content, new path
        current = sorted(folder.glob("*.png"))
        again = index.add(current)
        assert (again.encoded, again.copied, again.unchanged) == (3, 1, 2)  # 1, 4, 5 | copy | 0, 2
        assert index.prune() == [os.path.abspath(paths[3])]
    with Index(tmp_path / "fresh.idx", model=detector) as fresh:
        fresh.add(current)
    assert contents(tmp_path / "inc.idx") == contents(tmp_path / "fresh.idx")


def test_model_mismatch_is_refused(tmp_path, detector, tiny_owlvit, tiny_model_file):
    with Index(tmp_path / "m.idx", model=detector) as index:
        index.add([sorted(EXAMPLES.glob("*.png"))[0]])
    with pytest.raises(IndexMismatchError, match="shapes-tiny"):
        Index(tmp_path / "m.idx", model=tiny_owlvit)
    result = CliRunner().invoke(
        cli, ["search", "--index", str(tmp_path / "m.idx"), "-q", "x", "--model", tiny_model_file]
    )
    assert result.exit_code == 2
    assert "was built with model 'shapes-tiny'" in result.output


def test_cli_reports_bad_images_and_indexes_the_others(tmp_path):
    folder = tmp_path / "photos"
    make_images(folder, 3)
    (folder / "broken.png").write_bytes(b"not an image")
    index_path = tmp_path / "cli.idx"
    result = CliRunner().invoke(cli, ["index", str(folder), "--index", str(index_path)])
    assert result.exit_code == 1
    assert "1 of 4 images failed:" in result.output
    assert f"failed: {folder / 'broken.png'}: not an image file" in result.output
    assert [Path(r[0]).name for r in contents(index_path)] == ["000.png", "001.png", "002.png"]

    out = tmp_path / "found.json"
    html = tmp_path / "found.html"
    result = CliRunner().invoke(
        cli,
        ["search", "--index", str(index_path), "-q", "red circle", "--top", "2", "-o", str(out),
         "--html", str(html), "--save-dir", str(tmp_path / "drawn")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = [r["image"]["path"] for r in json.loads(out.read_text())["results"]]
    assert len(found) == 2
    page = html.read_text()
    listed = [p.split('"')[0] for p in page.split('data-path="')[1:]]
    assert listed == found
    assert page.count('src="data:image/png;base64,') == 2
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == [
        f"001_{Path(found[0]).stem}.png", f"002_{Path(found[1]).stem}.png"
    ]  # fmt: skip


def test_negative_rule_on_constructed_embeddings():
    logits = np.array([[2.0, 1.0], [0.5, 3.0], [1.0, 1.0]], np.float32)
    negative = np.array([[1.5, -9.0], [0.4, 0.6], [1.0, 0.0]], np.float32)
    out = suppress_negatives(logits, negative)
    # box 0: negative 1.5 < 2.0 keeps query 0, beats 1.0 drops query 1; box 1: 0.6 > 0.5 drops
    # query 0 only; box 2: a tie (1.0 == 1.0) keeps both.
    assert (out > -1e5).tolist() == [[True, False], [False, True], [True, True]]
    np.testing.assert_array_equal(out[out > -1e5], logits[out > -1e5])


def test_negative_queries_in_search(tmp_path, detector):
    """A negative equal to the query's own direction plus a little of a box's drops that box."""
    paths = [str(p) for p in sorted(EXAMPLES.glob("*.png"))]
    with Index(tmp_path / "n.idx", model=detector, boxes_per_image=64) as index:
        index.add(paths)
        query = detector.embed_texts(["red circle"])[0]
        [plain, *_] = index.search([EmbeddingQuery(query, "q", kind="text")], threshold=0.0)
        snap = index._current_snapshot()
        image = snap.paths.index(plain.metadata["path"])
        rows = np.arange(snap.offsets[image], snap.offsets[image + 1])
        best_row = rows[np.flatnonzero(snap.box_index[rows] == plain.data["box_index"][0])[0]]
        box = snap.embeddings[best_row]
        q = query / np.linalg.norm(query)
        negative = q + 0.5 * box  # closer to that box than q is
        assert negative / np.linalg.norm(negative) @ box > q @ box
        results = index.search(
            [EmbeddingQuery(query, "q", kind="text")], threshold=0.0,
            negatives=[EmbeddingQuery(negative, "not", kind="text")],
            max_detections=None,
        )  # fmt: skip
        [with_negative] = [r for r in results if r.metadata["path"] == plain.metadata["path"]]
        neg_cos = snap.embeddings[rows] @ (negative / np.linalg.norm(negative))
        kept = snap.box_index[rows][neg_cos <= snap.embeddings[rows] @ q]
    assert plain.data["box_index"][0] not in set(with_negative.data["box_index"].tolist())
    assert set(with_negative.data["box_index"].tolist()) == set(kept.tolist())


def test_reading_while_another_process_writes(tmp_path, detector):
    paths = make_images(tmp_path / "photos", 2)
    with Index(tmp_path / "r.idx", model=detector) as index:
        index.add(paths[:1])
        writer = sqlite3.connect(tmp_path / "r.idx", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM images")  # uncommitted: readers still see the image
        assert len(index.search(["red circle"], threshold=0.0)) == 1
        writer.execute("ROLLBACK")
        writer.close()


def _owl(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OWL_COMPILATION_CACHE": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "owl", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_two_shard_processes_equal_one(tmp_path, detector):
    folder = tmp_path / "photos"
    paths = make_images(folder, 10)
    shards = [
        _owl("index", str(folder), "--index", str(tmp_path / "two.idx"), "--num-shards", "2",
             "--shard-index", str(i), "--quiet")
        for i in range(2)
    ]  # fmt: skip
    for p in shards:
        assert p.wait(timeout=300) == 0, p.stdout.read().decode()
    with Index(tmp_path / "one.idx", model=detector) as one:
        one.add(paths)
    assert len(contents(tmp_path / "two.idx")) == 10
    assert contents(tmp_path / "two.idx") == contents(tmp_path / "one.idx")


def test_kill_9_during_indexing_then_resume_equals_fresh_build(tmp_path, detector):
    folder = tmp_path / "photos"
    paths = make_images(folder, 64)
    index_path = tmp_path / "killed.idx"
    proc = _owl("index", str(folder), "--index", str(index_path), "--quiet")
    deadline = time.monotonic() + 240
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            db = sqlite3.connect(f"file:{index_path}?mode=ro", uri=True, timeout=1)
            committed = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            db.close()
        except sqlite3.Error:
            continue
        if committed:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < committed < 64, "the kill should land mid-run"
    with Index(index_path, model=detector) as resumed:
        report = resumed.add(paths)
    assert report.unchanged >= committed and report.encoded == 64 - report.unchanged
    with Index(tmp_path / "fresh.idx", model=detector) as fresh:
        fresh.add(paths)
    assert contents(index_path) == contents(tmp_path / "fresh.idx")


def test_without_the_search_extra_the_command_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "faiss" else real(name, *a)
    )
    result = CliRunner().invoke(cli, ["index", str(EXAMPLES), "--index", str(tmp_path / "x.idx")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: `owl index` needs the search extra (module 'faiss' is not installed); "
        'install it with: pip install "owl[search]"'
    ]
    assert not (tmp_path / "x.idx").exists()


def test_faiss_path_gives_the_exact_results(tmp_path, detector):
    """Above `exact_below` boxes, FAISS proposes candidates; re-scored, they equal exact search."""
    paths = make_images(tmp_path / "photos", 12)
    with Index(tmp_path / "e.idx", model=detector) as exact:
        exact.add(paths)
        want = exact.search(QUERIES, top=3)
    with Index(tmp_path / "e.idx", model=detector, exact_below=1) as ann:
        got = ann.search(QUERIES, top=3)
    assert [g.metadata["path"] for g in got] == [w.metadata["path"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g == w
    assert len(list(tmp_path.glob("e.idx.vectors-*.faiss"))) == 1
