"""`owl serve --review` through its API (httpx's ASGI transport), on a hand-written data set in
each format: delete, relabel and draw, save, and read the files back with supervision; stale
saves refused (409) as docs/review.md says; bad data sets and bad edits refused with one line and
nothing on disk changed."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import pytest
from review_data import CLASSES, make_dataset, read_back
from serving import call

from owl.serve.review import ReviewError, ReviewSession
from owl.serve.review_app import create_review_app

warnings.filterwarnings("ignore", message="OpenCV", category=UserWarning)
FORMATS = ("coco", "yolo", "voc")
DRAWN = [8.0, 64.0, 48.0, 112.0]


def open_app(path: Path):
    return create_review_app(ReviewSession(path))


def dataset(app) -> dict:
    r = call(app, "GET", "/review/v1/dataset")
    assert r.status_code == 200, r.text
    return r.json()


def by_name(data: dict) -> dict:
    return {Path(im["name"]).name: im for im in data["images"]}


def edited_a(im: dict) -> dict:
    """Image a.png with its green triangle deleted, its blue square relabelled "red circle" and a
    green triangle drawn (score 1: a person's box)."""
    boxes = [dict(b) for b in im["boxes"] if b["label"] != "green triangle"]
    for b in boxes:
        if b["label"] == "blue square":
            b["label"], b["score"] = "red circle", 1.0 if b["score"] is not None else None
    boxes.append({"id": "new-1", "label": "green triangle", "box": DRAWN, "score": None})
    return {"key": im["key"], "version": im["version"], "boxes": boxes}


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".png"
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_delete_relabel_draw_and_save_writes_the_format_back(tmp_path, fmt):
    path = make_dataset(tmp_path, fmt)
    before = snapshot(tmp_path)
    app = open_app(path)
    data = dataset(app)
    assert data["format"] == fmt and sorted(data["classes"]) == sorted(CLASSES)
    names = [Path(im["name"]).name for im in data["images"]]
    # Scores (COCO): the image with the lowest-scored box first; else the data set's order.
    assert names == (["b.png", "a.png", "c.png"] if fmt == "coco" else ["a.png", "b.png", "c.png"])
    r = call(
        app,
        "POST",
        "/review/v1/save",
        json={"who": "ann", "images": [edited_a(by_name(data)["a.png"])]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["saved"] == 1

    expected = {
        "a.png": sorted(
            [
                ([8.0, 8.0, 40.0, 40.0], "red circle"),
                ([48.0, 48.0, 96.0, 104.0], "red circle"),
                (DRAWN, "green triangle"),
            ]
        ),  # fmt: skip
        "b.png": [([16.0, 32.0, 64.0, 72.0], "red circle")],
        "c.png": [],
    }
    assert read_back(tmp_path, fmt) == expected
    after = snapshot(tmp_path)
    if fmt == "yolo":  # only a.png's label file changed; data.yaml untouched
        changed = {k for k in after if before.get(k) != after[k]}
        assert changed == {"labels/a.txt", "data.review-log.jsonl"}
        rows = [line.split() for line in after["labels/a.txt"].decode().splitlines()]
        assert rows == [
            ["0", "0.1875", "0.1875", "0.25", "0.25"],
            ["0", "0.5625", "0.59375", "0.375", "0.4375"],
            ["2", "0.21875", "0.6875", "0.3125", "0.375"],
        ]
    if fmt == "voc":
        changed = {k for k in after if before.get(k) != after[k]}
        assert changed == {"Annotations/a.xml", "review-log.jsonl"}
    if fmt == "coco":
        coco = json.loads(after["annotations.json"])
        rows = sorted(
            (a["bbox"], a["category_id"], round(a["score"], 6))
            for a in coco["annotations"]
            if a["image_id"] == 1
        )
        assert rows == [
            ([8.0, 8.0, 32.0, 32.0], 1, 0.9),
            ([8.0, 64.0, 40.0, 48.0], 3, 1.0),
            ([48.0, 48.0, 48.0, 56.0], 1, 1.0),
        ]
        assert [c["name"] for c in coco["categories"]] == CLASSES

    # The edit log: one JSON line per change, who and when.
    log = [
        json.loads(line)
        for line in next(tmp_path.glob("*review-log.jsonl")).read_text().splitlines()
    ]
    assert sorted(r["action"] for r in log) == ["delete", "draw", "relabel"]
    assert {r["who"] for r in log} == {"ann"} and all(r["time"].endswith("+00:00") for r in log)
    relabel = next(r for r in log if r["action"] == "relabel")
    assert relabel["before"]["label"] == "blue square" and relabel["after"]["label"] == "red circle"
    # A new server reads what was saved; the page's versions then agree with the saved ones.
    again = dataset(open_app(path))
    assert by_name(again)["a.png"]["version"] == by_name(r.json())["a.png"]["version"]


def test_a_stale_save_is_refused_with_409_and_other_images_still_save(tmp_path):
    path = make_dataset(tmp_path, "yolo")
    app = open_app(path)
    tab1, tab2 = dataset(app), dataset(app)
    a1, a2 = by_name(tab1)["a.png"], by_name(tab2)["a.png"]
    r = call(app, "POST", "/review/v1/save", json={"who": "one", "images": [edited_a(a1)]})
    assert r.status_code == 200
    saved = (tmp_path / "labels/a.txt").read_bytes()
    # The same edit from the old version is no conflict (nothing to overwrite): saved 0.
    r = call(app, "POST", "/review/v1/save", json={"who": "two", "images": [edited_a(a2)]})
    assert r.status_code == 200 and r.json()["saved"] == 0
    # Tab 2 deletes every box of a.png, from the version before tab 1's save: refused.
    stale = {"key": a2["key"], "version": a2["version"], "boxes": []}
    r = call(app, "POST", "/review/v1/save", json={"who": "two", "images": [stale]})
    assert r.status_code == 409
    body = r.json()
    assert "saved by another tab or person" in body["error"] and "\n" not in body["error"]
    assert [c["name"] for c in body["conflicts"]] == ["images/a.png"]
    assert len(body["conflicts"][0]["boxes"]) == 3  # tab 1's version, for the page to show
    assert (tmp_path / "labels/a.txt").read_bytes() == saved
    # A save that also names b.png is refused as a whole; b.png alone saves.
    b2 = by_name(tab2)["b.png"]
    both = [stale, {"key": b2["key"], "version": b2["version"], "boxes": []}]
    assert (
        call(app, "POST", "/review/v1/save", json={"who": "two", "images": both}).status_code == 409
    )
    r = call(app, "POST", "/review/v1/save", json={"who": "two", "images": both[1:]})
    assert r.status_code == 200 and (tmp_path / "labels/b.txt").read_text() == ""
    # "Keep mine": the same edit based on the version the 409 returned overwrites, knowingly.
    stale["version"] = body["conflicts"][0]["version"]
    r = call(app, "POST", "/review/v1/save", json={"who": "two", "images": [stale]})
    assert r.status_code == 200 and (tmp_path / "labels/a.txt").read_text() == ""


def test_a_file_changed_on_disk_refuses_the_save(tmp_path):
    path = make_dataset(tmp_path, "coco")
    app = open_app(path)
    a = by_name(dataset(app))["a.png"]
    path.write_text(path.read_text().replace('"score": 0.9', '"score": 0.95'))
    changed = path.read_bytes()
    r = call(app, "POST", "/review/v1/save", json={"who": "ann", "images": [edited_a(a)]})
    assert r.status_code == 409 and "changed on disk since owl serve read it" in r.json()["error"]
    assert path.read_bytes() == changed


@pytest.mark.parametrize("fmt", FORMATS)
def test_boxes_outside_the_image_are_refused_on_open(tmp_path, fmt):
    outside = {
        "a.png": [([8, 8, 40, 40], "red circle", 0.9), ([100, 100, 140, 120], "red circle", 0.5)]
    }
    path = make_dataset(tmp_path, fmt, outside)
    before = snapshot(tmp_path)
    with pytest.raises(ReviewError) as e:
        ReviewSession(path)
    message = str(e.value)
    assert "\n" not in message and "outside" in message, message
    name = {"coco": "annotations.json", "yolo": "a.txt:2", "voc": "a.xml:1"}[fmt]
    assert name in message, message
    assert snapshot(tmp_path) == before


def test_cli_refuses_a_bad_data_set_with_exit_2_and_one_line(tmp_path):
    from click.testing import CliRunner

    from owl.cli.main import cli

    outside = {"a.png": [([100, 100, 140, 120], "red circle", 0.5)]}
    path = make_dataset(tmp_path, "coco", outside)
    result = CliRunner().invoke(cli, ["serve", "--review", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"Error: --review: {path}: "), lines
    assert "1 boxes partly outside their image (clipped to it)" in lines[0], lines


@pytest.mark.parametrize(
    "box, label, expected",
    [
        (
            [8, 8, 40, 40],
            "purple cat",
            "unknown class name 'purple cat'; this data set's classes are",
        ),
        ([8, 8, 140, 40], "red circle", "is empty or outside the 128x128 image"),
        ([40, 8, 8, 40], "red circle", "is empty or outside the 128x128 image"),
    ],
)
def test_bad_edits_get_400_and_nothing_is_written(tmp_path, box, label, expected):
    path = make_dataset(tmp_path, "voc")
    before = snapshot(tmp_path)
    app = open_app(path)
    a = edited_a(by_name(dataset(app))["a.png"])
    a["boxes"].append({"id": "bad", "label": label, "box": box, "score": None})
    r = call(app, "POST", "/review/v1/save", json={"who": "ann", "images": [a]})
    assert r.status_code == 400
    assert expected in r.json()["error"] and "\n" not in r.json()["error"]
    assert snapshot(tmp_path) == before  # no data file, no log line


@contextlib.contextmanager
def read_only(folder: Path):
    """The folder as a read-only one: chmod for a normal user; as root (who may write anywhere),
    the effective user is nobody while the block runs (the folder stays root's, mode 0755)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_read_only_folder_gets_507_and_the_edit_saves_once_writable(fmt):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        path = make_dataset(root, fmt)
        before = snapshot(root)
        app = open_app(path)
        a = edited_a(by_name(dataset(app))["a.png"])
        with read_only(root):
            r = call(app, "POST", "/review/v1/save", json={"who": "ann", "images": [a]})
        assert r.status_code == 507, r.text
        message = r.json()["error"]
        assert "\n" not in message and "make it writable and save again" in message, message
        assert snapshot(root) == before
        r = call(app, "POST", "/review/v1/save", json={"who": "ann", "images": [a]})
        assert r.status_code == 200, r.text
        assert len(read_back(root, fmt)["a.png"]) == 3


def test_guard_refuses_foreign_host_and_origin_and_keys_are_not_paths(tmp_path):
    app = open_app(make_dataset(tmp_path, "coco"))
    r = call(app, "GET", "/review/v1/dataset", headers={"host": "evil.example"})
    assert r.status_code == 403
    r = call(app, "POST", "/review/v1/save", json={"who": "x", "images": []},
             headers={"origin": "http://evil.example"})  # fmt: skip
    assert r.status_code == 403
    assert call(app, "GET", "/review/v1/images/..%2Fannotations.json").status_code in (404, 422)
    assert call(app, "GET", "/review/v1/images/7").status_code == 404
    assert call(app, "GET", "/review/v1/images/0").content[:4] == b"\x89PNG"


def test_move_and_accept_are_logged_and_a_persons_box_gets_score_1(tmp_path):
    path = make_dataset(tmp_path, "coco")
    app = open_app(path)
    images = by_name(dataset(app))
    a, b = images["a.png"], images["b.png"]
    moved = [dict(x) for x in a["boxes"]]
    moved[0]["box"] = [16.0, 8.0, 48.0, 40.0]  # red circle 8 px right (the page sends score 1)
    moved[0]["score"] = 1.0
    accepted = [dict(b["boxes"][0], score=1.0)]
    edits = [
        {"key": a["key"], "version": a["version"], "boxes": moved},
        {"key": b["key"], "version": b["version"], "boxes": accepted},
    ]
    r = call(app, "POST", "/review/v1/save", json={"who": "bo", "images": edits})
    assert r.status_code == 200 and r.json()["saved"] == 2, r.text
    coco = json.loads(path.read_text())
    rows = sorted((a["image_id"], a["bbox"], round(a["score"], 6)) for a in coco["annotations"])
    assert rows == [
        (1, [16.0, 8.0, 32.0, 32.0], 1.0),
        (1, [48.0, 48.0, 48.0, 56.0], 0.3),
        (1, [64.0, 8.0, 56.0, 24.0], 0.6),
        (2, [16.0, 32.0, 48.0, 40.0], 1.0),
    ]
    log = [
        json.loads(x) for x in (tmp_path / "annotations.review-log.jsonl").read_text().splitlines()
    ]
    assert [(r["image"], r["action"], r["who"], r["save"]) for r in log] == [
        ("a.png", "move", "bo", 1),
        ("b.png", "accept", "bo", 1),
    ]
    assert log[0]["before"]["box"] == [8.0, 8.0, 40.0, 40.0] and log[0]["after"]["box"] == [
        16.0,
        8.0,
        48.0,
        40.0,
    ]
    # Saving the same boxes again changes nothing and logs nothing.
    images = by_name(r.json())
    same = [
        {"key": im["key"], "version": im["version"], "boxes": im["boxes"]} for im in images.values()
    ]
    r = call(app, "POST", "/review/v1/save", json={"who": "bo", "images": same})
    assert r.status_code == 200 and r.json()["saved"] == 0
    assert len((tmp_path / "annotations.review-log.jsonl").read_text().splitlines()) == 2


def test_cli_serves_the_review_page_without_a_model(tmp_path):
    from serve_process import start_server, stop_server

    path = make_dataset(tmp_path, "voc")
    server = start_server("--review", str(path), timeout=60)
    try:
        import urllib.request

        with urllib.request.urlopen(server.url + "/review/v1/dataset", timeout=10) as r:
            body = json.loads(r.read())
        assert body["format"] == "voc" and len(body["images"]) == 3
        with urllib.request.urlopen(server.url + "/", timeout=10) as r:
            assert b"/static/review.js" in r.read()
    finally:
        code, err = stop_server(server)
    assert code == 130, err
    assert f"edit log {path / 'review-log.jsonl'}" in err, err


def test_coco_fields_the_writer_drops_are_named_and_the_original_is_kept(tmp_path):
    path = make_dataset(tmp_path, "coco")
    data = json.loads(path.read_text())
    data["info"] = {"year": 2026}
    data["categories"][0]["supercategory"] = "shape"
    path.write_text(json.dumps(data))
    original = path.read_bytes()
    app = open_app(path)
    body = dataset(app)
    assert body["note"] == (
        "saving rewrites annotations.json in owl's COCO form, without info, "
        "categories.supercategory; the file as it was is kept as annotations.json.orig on the "
        "first save"
    )
    a = by_name(body)["a.png"]
    r = call(app, "POST", "/review/v1/save", json={"who": "ann", "images": [edited_a(a)]})
    assert r.status_code == 200
    backup = tmp_path / "annotations.json.orig"
    assert backup.read_bytes() == original
    a = by_name(r.json())["a.png"]
    r = call(app, "POST", "/review/v1/save",
             json={"who": "ann", "images": [{**a, "boxes": []}]})  # fmt: skip
    assert r.status_code == 200 and backup.read_bytes() == original  # kept, not overwritten
    assert "info" not in json.loads(path.read_text())
