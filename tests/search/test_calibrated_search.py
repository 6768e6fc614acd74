"""Calibrated search: `Index.search(calibration=)`, `owl search --calibrated`, /v1/search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from owl.cli.main import cli
from owl.inference.calibration import Calibration
from owl.inference.detector import Detector
from owl.search.index import Index

IMAGES = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images"
# examples/shapes: 000000.png holds a red circle (and a purple hexagon, a purple triangle);
# no image holds a purple circle.


@pytest.fixture(scope="module")
def index_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("idx") / "shapes.owlindex"
    with Index(path, model=Detector("shapes-tiny")) as index:
        index.add(sorted(str(p) for p in IMAGES.glob("*.png")))
    return path


def test_index_search_calibrated_equals_detect(index_path):
    shipped = Calibration.for_model("shapes-tiny")
    with Index(index_path) as index:
        raw = index.search(["purple circle"], top=3)
        assert raw, "raw scores at 0.1 find a purple circle on the purple hexagon"
        assert index.search(["purple circle"], top=3, calibration=shipped) == []
        [first, *_] = index.search(["red circle"], top=3, calibration=shipped)
        assert Path(first.metadata["path"]).name == "000000.png"
        [dets] = index.detector.detect(str(IMAGES / "000000.png"), ["red circle"],
                                       calibration=shipped)  # fmt: skip
        assert first.confidence.max() == pytest.approx(dets.confidence.max(), rel=1e-5)


def test_owl_search_calibrated(index_path, tmp_path):
    out = tmp_path / "found.json"
    result = CliRunner().invoke(cli, ["search", "--index", str(index_path), "-q", "red circle",
                                      "-q", "purple circle", "--calibrated", "-o", str(out),
                                      "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())["results"]
    labels = {d["label"] for r in records for d in r["detections"]}
    assert labels == {"red circle"}
    assert Path(records[0]["image"]["path"]).name == "000000.png"
