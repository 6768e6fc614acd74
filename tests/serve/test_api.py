"""The JSON API over shapes-tiny through httpx's ASGI transport: detect, rescore equals a fresh
detect, search over a tiny index, bad images and unknown ids get 4xx with the message, foreign Host/Origin refused."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from serving import EXAMPLE, call

from owl.inference.detector import Detector
from owl.search.index import Index
from owl.serve.app import create_app

IMAGES = EXAMPLE.parent


@pytest.fixture(scope="module")
def app():
    detector = Detector("shapes-tiny", batch_size=1)
    application = create_app(detector, model_name="shapes-tiny", max_upload_bytes=1 << 20)
    yield application
    application.state.server.store.close()


def detect(app, data: bytes, name: str = "000000.png", **fields) -> httpx.Response:
    return call(app, "POST", "/v1/detect", files={"images": (name, data)}, data=fields)


def test_detect_finds_the_red_circle_and_rescore_equals_a_fresh_detect(app):
    r = detect(app, EXAMPLE.read_bytes(), query="red circle")
    assert r.status_code == 200, r.text
    body = r.json()
    [dets] = [d for d in body["results"][0]["detections"] if d["label"] == "red circle"]
    x0, y0, x1, y1 = dets["box"]  # ground truth: bbox [81, 100, 24, 25]
    assert abs(x0 - 81) < 6 and abs(y0 - 100) < 6 and abs(x1 - 105) < 6 and abs(y1 - 125) < 6
    image_id = body["image_ids"][0]
    fresh = detect(app, EXAMPLE.read_bytes(), options=json.dumps({"queries": ["red circle@0.05"]}))
    rescored = call(
        app, "POST", "/v1/rescore", json={"image_ids": [image_id], "queries": ["red circle@0.05"]}
    )
    assert rescored.status_code == 200
    assert rescored.json()["results"] == fresh.json()["results"]


def test_bad_image_gets_the_cli_message(app):
    r = detect(app, b"not an image", name="notes.txt", query="red circle")
    assert r.status_code == 400
    assert r.json()["error"] == (
        "notes.txt: not an image file Pillow can read; pass a JPEG, PNG, BMP, GIF, TIFF or WebP file."
    )


def test_unknown_id_and_oversized_upload_are_4xx(app):
    r = call(app, "POST", "/v1/rescore", json={"image_ids": ["feedface"], "queries": ["x"]})
    assert r.status_code == 404 and "unknown image id 'feedface'" in r.json()["error"]
    r = detect(app, b"\0" * (2 << 20), query="red circle")
    assert r.status_code == 413 and "upload limit of 1 MiB" in r.json()["error"]


def test_path_like_fields_are_never_opened(app):
    r = call(app, "POST", "/v1/rescore", json={"image_ids": ["/etc/passwd"], "queries": ["x"]})
    assert r.status_code == 404


def test_foreign_host_and_origin_are_refused(app):
    assert call(app, "GET", "/healthz", headers={"host": "evil.example"}).status_code == 403
    r = call(
        app,
        "POST",
        "/v1/rescore",
        json={"image_ids": []},
        headers={"origin": "http://evil.example"},
    )
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


def test_models_health_and_openapi(app):
    assert call(app, "GET", "/v1/models").json()["models"][0]["name"] == "shapes-tiny"
    assert call(app, "GET", "/healthz").json()["ok"] is True
    paths = call(app, "GET", "/openapi.json").json()["paths"]
    assert {"/v1/detect", "/v1/rescore", "/v1/embed-query", "/v1/models", "/healthz"} <= set(paths)


def test_embed_query_matches_the_detector(app):
    r = detect(app, EXAMPLE.read_bytes())
    image_id = r.json()["image_ids"][0]
    box = [81, 100, 105, 125]
    r = call(
        app, "POST", "/v1/embed-query", json={"exemplars": [{"image_id": image_id, "box": box}]}
    )
    assert r.status_code == 200, r.text
    from owl.inference.queries import ImageQuery

    detector = app.state.server.detector
    expected = detector.embed_image_query(ImageQuery(((str(EXAMPLE), tuple(box)),)))
    assert r.json()["embedding"] == pytest.approx(expected.tolist(), rel=1e-5)


# POST /v1/search over a tiny `owl index` of examples/shapes/images: the records equal what
# POST /v1/detect gives the same image (scores equal `owl detect`'s), best image first.


@pytest.fixture(scope="module")
def app_with_index(tmp_path_factory):
    detector = Detector("shapes-tiny", batch_size=1)
    index = Index(tmp_path_factory.mktemp("idx") / "shapes.owlindex", model=detector)
    index.add(sorted(str(p) for p in IMAGES.glob("*.png")))
    application = create_app(detector, model_name="shapes-tiny", index=index)
    yield application
    application.state.server.store.close()
    index.close()


def test_search_ranks_the_image_with_the_red_circle_first_with_detect_s_records(app_with_index):
    r = call(app_with_index, "POST", "/v1/search", json={"queries": ["red circle@0.3"], "top": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["queries"] == ["red circle"] and body["image_ids"] == []
    first = body["results"][0]
    assert Path(first["image"]["path"]).name == "000000.png"
    assert (first["image"]["width"], first["image"]["height"]) == (128, 128)
    [best] = [
        d for d in first["detections"] if d["score"] == max(x["score"] for x in first["detections"])
    ]
    x0, y0, x1, y1 = best["box"]  # ground truth: bbox [81, 100, 24, 25]
    assert abs(x0 - 81) < 6 and abs(y0 - 100) < 6 and abs(x1 - 105) < 6 and abs(y1 - 125) < 6
    fresh = detect(app_with_index, (IMAGES / "000000.png").read_bytes(), query="red circle@0.3")
    expected = {
        (tuple(d["box"]), d["label"]): d["score"] for d in fresh.json()["results"][0]["detections"]
    }
    got = {(tuple(d["box"]), d["label"]): d["score"] for d in first["detections"]}
    assert got.keys() <= expected.keys() and got  # the index keeps K boxes per image
    for key, score in got.items():
        assert score == pytest.approx(expected[key], abs=1e-5)


def test_search_needs_a_query_and_an_index(app_with_index):
    r = call(app_with_index, "POST", "/v1/search", json={"queries": []})
    assert r.status_code == 400 and "at least one query" in r.json()["error"]
    detector = app_with_index.state.server.detector
    plain = create_app(detector, model_name="shapes-tiny")
    r = call(plain, "POST", "/v1/search", json={"queries": ["red circle"]})
    assert r.status_code == 404
    assert r.json()["error"] == "no index: start owl serve with --index PATH (built by owl index)"
    plain.state.server.store.close()


def test_page_coco_download_numbers_images_and_queries_as_owl_detect_does(app, tmp_path):
    """The page uploads one image at a time and downloads COCO with one POST /v1/rescore (the body
    app.js's download() sends): image_id is the upload position, category_id the query index,
    row for row what `owl detect a b -q ... -o x.coco.json` writes."""
    from click.testing import CliRunner

    from owl.cli.main import cli

    paths = [IMAGES / "000000.png", IMAGES / "000001.png"]
    ids = [detect(app, p.read_bytes(), name=p.name).json()["image_ids"][0] for p in paths]
    page_body = {
        "image_ids": ids,
        "queries": [{"text": "red circle", "threshold": None}, {"text": "red star", "threshold": None}],
        "exemplars": [],
        "threshold": 0.1,
        "format": "coco",
    }  # fmt: skip
    r = call(app, "POST", "/v1/rescore", json=page_body)
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == 'attachment; filename="detections.coco.json"'
    page = r.json()
    out = tmp_path / "x.coco.json"
    result = CliRunner().invoke(
        cli,
        ["detect", *map(str, paths), "-q", "red circle", "-q", "red star", "--batch-size", "1",
         "-o", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cli_rows = json.loads(out.read_text())
    # Not all zeros: 000001.png (image 1) holds the red star (query 1) and a red circle look-alike.
    assert {(row["image_id"], row["category_id"]) for row in page} == {(0, 0), (1, 0), (1, 1)}
    assert [(row["image_id"], row["category_id"]) for row in page] == [
        (row["image_id"], row["category_id"]) for row in cli_rows
    ]
    for got, want in zip(page, cli_rows, strict=True):
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
