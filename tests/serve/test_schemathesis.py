"""schemathesis fuzzes `owl serve`'s published contract (/openapi.json) against the ASGI app, in
process, with every check (issue 24): a request the schema calls valid is accepted, one it calls
invalid is refused with a 4xx, every status and answer is the one the schema documents (each
error in the `{"error": ...}` shape), on every route, with and without an index.

Settings: tests/serve/schemathesis.toml (a fixed seed, derandomized, a few examples per route,
no example database or cache folder), also used for the run by hand (docs/serve.md, API).
Hypothesis's own folder goes to the temporary directory, not the repository.

Random bytes are never an image and random strings never name an image the server holds, so in
the schema-valid cases the uploads are replaced by the example image and the image ids by the
id of an image the server holds: the answers of the 200 paths are checked too.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
import schemathesis
from hypothesis import configuration
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from serving import EXAMPLE, call

from owl.inference.detector import Detector
from owl.search.index import Index
from owl.serve.app import create_app

# Hypothesis caches what it reads from source files in ./.hypothesis, already while this module's
# tests are collected: keep it in the temporary folder, not in the repository.
configuration.set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "owl-tests-hypothesis")

CONFIG = Path(__file__).with_name("schemathesis.toml")
ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/v1/models"),
    ("POST", "/v1/detect"),
    ("POST", "/v1/rescore"),
    ("POST", "/v1/search"),
    ("POST", "/v1/embed-query"),
    ("POST", "/v1/detect-video"),
    ("GET", "/v1/videos/{video_id}"),
}
PNG = EXAMPLE.read_bytes()


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request):
    """schemathesis 4.32.5's fixture-loaded schemas read and rename `request.node._nodeid` (to
    name each route in reports), an attribute pytest 9 no longer has: give it one to read."""
    request.node._nodeid = request.node.nodeid


@pytest.fixture(scope="module")
def detector():
    return Detector("shapes-tiny", batch_size=1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    """A short ShapesWorld video (10 frames at 10 fps), as an upload's bytes."""
    from owl.data import shapes_video

    spec = shapes_video.sample_video(3, num_frames=10, fps=10.0)
    video, _ = shapes_video.write_video(spec, tmp_path_factory.mktemp("clip"))
    return video.read_bytes()


@pytest.fixture(scope="module", params=["no index", "index"])
def served(request, detector, tmp_path_factory, clip):
    """(app, id of an image it holds): the app as `owl serve` builds it, answering to
    schemathesis's ASGI host name, with or without an `owl index`."""
    index = None
    if request.param == "index":
        index = Index(tmp_path_factory.mktemp("idx") / "shapes.owlindex", model=detector)
        index.add(sorted(str(p) for p in EXAMPLE.parent.glob("*.png"))[:4])
    app = create_app(detector, model_name="shapes-tiny", allowed_hosts=[asgi.HOST], index=index)
    r = call(app, "POST", "/v1/detect", files={"images": ("000000.png", PNG)})
    [image_id] = r.json()["image_ids"]
    video = {"video": ("clip.mp4", clip)}
    r = call(app, "POST", "/v1/detect-video", files=video, data={"query": "red circle"})
    app.state.video_id = r.json()["video_id"]  # a drawn video the server holds
    yield app, image_id
    app.state.server.close()
    if index is not None:
        index.close()


@pytest.fixture(scope="module")
def api_schema(served):
    return schemathesis.openapi.from_asgi(
        "/openapi.json", served[0], config=SchemathesisConfig.from_path(CONFIG)
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture
def seen(served):
    """(route, status) -> how many generated requests got it; after the run: every route was
    fuzzed, and answered 200 where a generated request can get one (not /v1/detect: random
    bytes are no image or video; not /v1/search without an index)."""
    counts: Counter = Counter()
    yield counts
    assert {route for route, _ in counts if route in ROUTES} == ROUTES, counts
    others = {status for route, status in counts if route not in ROUTES}
    assert others <= {405}, counts  # schemathesis's unsupported-method probes
    ok = {route for route, status in counts if status == 200}
    expected = ROUTES - {("POST", "/v1/detect"), ("POST", "/v1/detect-video")}
    if served[0].state.server.index is None:
        expected -= {("POST", "/v1/search")}
    assert expected <= ok, counts


def held_ids(value, image_id: str):
    """`value` with every image id (`image_ids` items, `image_id` values) replaced by one the
    server holds; other values unchanged."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "image_id" and isinstance(item, str):
                out[key] = image_id
            elif key == "image_ids" and isinstance(item, list):
                out[key] = [image_id if isinstance(i, str) else i for i in item]
            else:
                out[key] = held_ids(item, image_id)
        return out
    if isinstance(value, list):
        return [held_ids(item, image_id) for item in value]
    return value


@schema.parametrize()
def test_the_api_keeps_its_published_contract(case, served, seen):
    """Every check of schemathesis on every generated request (schemathesis re-validates an
    edited body, so a case stays positive or negative as its body really is)."""
    if isinstance(case.body, dict) and case.path not in ("/v1/detect", "/v1/detect-video"):
        case.body = held_ids(case.body, served[1])
    if case.path == "/v1/videos/{video_id}":  # the id of a video the server holds
        case.path_parameters = {"video_id": served[0].state.video_id}
    response = case.call()
    seen[(case.method.upper(), case.path), response.status_code] += 1
    case.validate_response(response)


def test_real_answers_match_the_published_schema(served, api_schema, clip):
    """The 200 answers generated requests cannot reach (an upload of a real image, each format
    of /v1/rescore, a search that finds something) and the errors, checked against the schema."""
    app, image_id = served
    has_index = app.state.server.index is not None
    paths = call(app, "GET", "/openapi.json").json()["paths"]

    def check(method: str, path: str, expected: int, route: str | None = None, **kwargs) -> None:
        route = route or path  # the schema's path template
        response = call(app, method, path, **kwargs)
        assert response.status_code == expected, response.text
        assert str(expected) in paths[route][method.lower()]["responses"]  # documented
        response.request.read()  # a multipart body is a stream until read
        api_schema[route][method].validate_response(response)
        if expected != 200:
            assert set(response.json()) == {"error"}

    files = {"images": ("000000.png", PNG)}
    check("POST", "/v1/detect", 200, files=files, data={"query": "red circle"})
    check("POST", "/v1/detect", 400, files={"images": ("a.png", b"not an image")})
    check("POST", "/v1/detect", 422, data={"query": "red circle"})
    for fmt in ("api", "json", "csv", "coco"):
        body = {"image_ids": [image_id], "queries": ["red circle@0.05"], "format": fmt}
        check("POST", "/v1/rescore", 200, json=body)
    check("POST", "/v1/rescore", 404, json={"image_ids": ["feedface"]})
    json_type = {"content-type": "application/json"}
    check("POST", "/v1/rescore", 400, content=b"{not json", headers=json_type)
    exemplar = {"image_id": image_id, "box": [81, 100, 105, 125]}
    check("POST", "/v1/embed-query", 200, json={"exemplars": [exemplar]})
    check("POST", "/v1/embed-query", 422, json={"exemplars": []})
    check("POST", "/v1/search", 200 if has_index else 404, json={"queries": ["red circle"]})
    video = {"video": ("clip.mp4", clip)}
    check("POST", "/v1/detect-video", 200, files=video, data={"query": ["red circle", "blue"]})
    check("POST", "/v1/detect-video", 400, files={"video": ("a.mp4", b"not a video")},
          data={"query": "red circle"})  # fmt: skip
    check("POST", "/v1/detect-video", 400, files=video)  # no query
    check("POST", "/v1/detect-video", 422, files=video, data={"query": "x", "fps": "0"})
    drawn = "/v1/videos/{video_id}"
    check("GET", f"/v1/videos/{app.state.video_id}", 200, drawn)
    check("GET", "/v1/videos/0123456789abcdef", 404, drawn)
    check("GET", "/v1/videos/not-an-id", 422, drawn)
    check("GET", "/healthz", 200)
    check("GET", "/v1/models", 200)
