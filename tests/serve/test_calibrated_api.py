"""`owl serve --calibrated`: "calibrated": true in a request scores with the server's calibration."""

from __future__ import annotations

import pytest
from serving import EXAMPLE, call

from owl.inference.calibration import Calibration
from owl.inference.detector import Detector
from owl.serve.app import create_app


@pytest.fixture(scope="module")
def apps():
    detector = Detector("shapes-tiny", batch_size=1)
    calibrated = create_app(detector, model_name="shapes-tiny",
                            calibration=Calibration.for_model("shapes-tiny"))  # fmt: skip
    plain = create_app(detector, model_name="shapes-tiny")
    yield calibrated, plain
    for app in (calibrated, plain):
        app.state.server.store.close()


def test_calibrated_rescore_drops_the_absent_category(apps):
    app, _ = apps
    # examples/shapes/images/000000.png holds a red circle, no purple circle
    r = call(app, "POST", "/v1/detect", files={"images": ("000000.png", EXAMPLE.read_bytes())},
             data={"query": "red circle"})  # fmt: skip
    assert r.status_code == 200, r.text
    image_id = r.json()["image_ids"][0]
    body = {"image_ids": [image_id], "queries": ["red circle", "purple circle"]}
    raw = call(app, "POST", "/v1/rescore", json=body).json()["results"][0]["detections"]
    assert "purple circle" in {d["label"] for d in raw}  # raw scores at 0.1
    r = call(app, "POST", "/v1/rescore", json={**body, "calibrated": True})
    assert r.status_code == 200, r.text
    [only] = r.json()["results"][0]["detections"]
    assert only["label"] == "red circle" and only["score"] >= 0.5 and "raw_score" in only["data"]


def test_calibrated_without_a_calibration_is_a_400(apps):
    _, plain = apps
    r = call(plain, "POST", "/v1/detect", files={"images": ("000000.png", EXAMPLE.read_bytes())},
             data={"query": "red circle"})  # fmt: skip
    image_id = r.json()["image_ids"][0]
    r = call(plain, "POST", "/v1/rescore",
             json={"image_ids": [image_id], "queries": ["red circle"], "calibrated": True})  # fmt: skip
    assert r.status_code == 400 and "owl serve --calibrated" in r.json()["error"]


def test_calibrated_search(tmp_path):
    from owl.search.index import Index

    detector = Detector("shapes-tiny", batch_size=1)
    index = Index(tmp_path / "shapes.owlindex", model=detector)
    index.add(sorted(str(p) for p in EXAMPLE.parent.glob("*.png")))
    app = create_app(detector, model_name="shapes-tiny", index=index,
                     calibration=Calibration.for_model("shapes-tiny"))  # fmt: skip
    try:
        body = {"queries": ["purple circle"], "top": 3}
        raw = call(app, "POST", "/v1/search", json=body)
        assert raw.status_code == 200 and raw.json()["results"], raw.text
        calibrated = call(app, "POST", "/v1/search", json={**body, "calibrated": True})
        assert calibrated.status_code == 200 and calibrated.json()["results"] == []
    finally:
        app.state.server.store.close()
        index.close()
