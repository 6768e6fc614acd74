"""The published contract of `owl serve` (/openapi.json) says exactly what the handlers do: the
six mismatches schemathesis found (issue 24), each pinned in the schema and in the answer; every
route lists every status it can give, each error with the one error model; and the page calls
only documented routes with documented methods.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from serving import EXAMPLE, call

from owl.inference.detector import Detector
from owl.serve.app import create_app

STATIC = Path(__file__).resolve().parents[2] / "owl/serve/static"
ERROR = {"$ref": "#/components/schemas/ErrorBody"}
# Every status each route can answer: 403 (Host/Origin), 400/411/413 (the body-size rule) on
# every route, since the Guard checks them before routing; 404/422 where a body is read.
STATUSES = {
    ("get", "/healthz"): {"200", "400", "403", "411", "413"},
    ("get", "/v1/models"): {"200", "400", "403", "411", "413"},
    ("post", "/v1/detect"): {"200", "400", "403", "404", "411", "413", "422"},
    ("post", "/v1/rescore"): {"200", "400", "403", "404", "411", "413", "422"},
    ("post", "/v1/search"): {"200", "400", "403", "404", "411", "413", "422"},
    ("post", "/v1/embed-query"): {"200", "400", "403", "404", "411", "413", "422"},
    # 503: the server has no [video] extra
    ("post", "/v1/detect-video"): {"200", "400", "403", "404", "411", "413", "422", "503"},
    ("get", "/v1/videos/{video_id}"): {"200", "400", "403", "404", "411", "413", "422"},
}


@pytest.fixture(scope="module")
def app():
    application = create_app(Detector("shapes-tiny", batch_size=1), model_name="shapes-tiny")
    yield application
    application.state.server.store.close()


@pytest.fixture(scope="module")
def schema(app) -> dict:
    return call(app, "GET", "/openapi.json").json()


@pytest.fixture(scope="module")
def image_id(app) -> str:
    r = call(app, "POST", "/v1/detect", files={"images": ("000000.png", EXAMPLE.read_bytes())})
    return r.json()["image_ids"][0]


def body_schema(schema: dict, path: str, media: str = "application/json") -> dict:
    ref = schema["paths"][path]["post"]["requestBody"]["content"][media]["schema"]["$ref"]
    return schema["components"]["schemas"][ref.rsplit("/", 1)[1]]


def documented(schema: dict, method: str, path: str, status: int) -> dict:
    return schema["paths"][path][method]["responses"][str(status)]


def test_every_route_lists_every_status_with_the_error_model(schema):
    operations = {(m, p) for p, ms in schema["paths"].items() for m in ms}
    assert operations == set(STATUSES)
    for (method, path), statuses in STATUSES.items():
        responses = schema["paths"][path][method]["responses"]
        assert set(responses) == statuses, (method, path)
        for status in statuses - {"200"}:
            assert responses[status]["content"]["application/json"]["schema"] == ERROR
        media = "video/mp4" if path.startswith("/v1/videos/") else "application/json"
        assert responses["200"]["content"][media]["schema"]  # a model, not {}
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's 422 shape
    assert schema["components"]["schemas"]["ErrorBody"]["required"] == ["error"]


def test_1_detect_requires_images(app, schema):
    form = body_schema(schema, "/v1/detect", "multipart/form-data")
    assert form["required"] == ["images"] and form["properties"]["images"]["minItems"] == 1
    r = call(app, "POST", "/v1/detect", data={"query": "red circle"})
    assert (r.status_code, r.json()) == (422, {"error": "images: Field required"})
    assert documented(schema, "post", "/v1/detect", 422)
    assert form["properties"]["images"]["items"]["minLength"] == 1  # no empty file
    r = call(app, "POST", "/v1/detect", files={"images": ("a.png", b"")})
    assert r.status_code == 400 and "the file is empty (0 bytes)" in r.json()["error"]


def test_2_embed_query_needs_one_exemplar(app, schema):
    assert body_schema(schema, "/v1/embed-query")["properties"]["exemplars"]["minItems"] == 1
    r = call(app, "POST", "/v1/embed-query", json={"exemplars": []})
    assert r.status_code == 422
    assert r.json()["error"].startswith("exemplars: List should have at least 1 item")


def test_3_embed_query_unknown_image_is_a_documented_404(app, schema):
    exemplar = {"image_id": "feedface", "box": [0, 0, 9, 9]}
    r = call(app, "POST", "/v1/embed-query", json={"exemplars": [exemplar]})
    assert r.status_code == 404 and r.json()["error"].startswith("unknown image id 'feedface'")
    assert "image id" in documented(schema, "post", "/v1/embed-query", 404)["description"]


@pytest.mark.parametrize("path", ["/v1/rescore", "/v1/search", "/v1/embed-query"])
@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"", b"[1, 2"])
def test_4_a_body_that_is_not_json_is_a_documented_400_in_the_error_shape(
    app, schema, path, content
):
    r = call(app, "POST", path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}  # not FastAPI's {"detail": ...}
    assert "not JSON" in documented(schema, "post", path, 400)["description"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_detections", False),
        ("max_detections", "100"),
        ("max_detections", 10.5),
        ("threshold", True),
        ("threshold", "0.3"),
        ("nms", 0),
        ("multi_label", "yes"),
    ],
)
def test_5_strict_types_no_bool_for_a_number_no_string_for_a_number(app, field, value):
    r = call(app, "POST", "/v1/rescore", json={"image_ids": [], field: value})
    assert r.status_code == 422, r.text
    assert r.json()["error"].startswith(f"{field}: Input should be a valid")


def test_5_an_integer_is_what_json_schema_calls_one(app, image_id):
    """JSON has one number type: `2.0` is the integer 2 (the schema's `type: integer` says so)."""
    body = {"image_ids": [image_id], "queries": ["red circle@0.01"], "max_detections": 2.0}
    r = call(app, "POST", "/v1/rescore", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"][0]["detections"]) == 2


@pytest.mark.parametrize(
    "path,body,field",
    [
        ("/v1/rescore", {"image_ids": [], "queries": [" "]}, "queries.0"),
        ("/v1/rescore", {"image_ids": [], "queries": [{"text": "\t\n"}]}, "queries.0.text"),
        ("/v1/search", {"queries": ["a"], "negatives": [""]}, "negatives.0"),
    ],
)
def test_a_blank_query_is_refused_as_the_schema_says(app, schema, path, body, field):
    """The schema's pattern (a character other than ASCII white space) is the handler's rule."""
    r = call(app, "POST", path, json=body)
    assert (r.status_code, r.json()) == (
        422,
        {"error": f"{field}: text is empty or only spaces; give some text such as 'a red car'"},
    )
    text = schema["components"]["schemas"]["TextSpec"]["properties"]["text"]
    assert text["pattern"] == "[^\\t\\n\\v\\f\\r ]" and text["maxLength"] == 1000
    r = call(app, "POST", "/v1/detect", files={"images": ("a.png", EXAMPLE.read_bytes())},
             data={"query": " "})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"].startswith("query.0: text is empty")


def test_a_search_needs_a_query_of_some_kind_as_the_schema_says(schema):
    search = body_schema(schema, "/v1/search")
    assert search["anyOf"] == [
        {"required": [f], "properties": {f: {"minItems": 1}}}
        for f in ("queries", "exemplars", "embeddings")
    ]  # the handler's 400 "give at least one query": tests/serve/test_api.py
    assert "no query" in documented(schema, "post", "/v1/search", 400)["description"]


def test_6_search_without_an_index_is_a_documented_404(app, schema):
    r = call(app, "POST", "/v1/search", json={"queries": ["red circle"]})
    assert r.status_code == 404
    assert r.json() == {"error": "no index: start owl serve with --index PATH (built by owl index)"}
    assert "--index" in documented(schema, "post", "/v1/search", 404)["description"]


def page_calls(source: str) -> list[tuple[str, str]]:
    """(method, path) of every request a page script makes: each `fetch(` and each call of its
    `api(path, init)` wrapper with a literal path; the method is GET unless `method:` says."""
    calls = []
    for m in re.finditer(r"(?<!function )\b(fetch|api)\(([^)]*)", source):
        args = m.group(2)
        if m.group(1) == "fetch" and args.strip() == "path, init":  # inside api() itself
            continue
        literal = re.match(r'\s*"([^"]+)"', args)
        assert literal, f"a request whose path is not a literal: {m.group(0)!r}"
        rest = source[m.end() : m.end() + 200]
        method = re.match(r'[^;]*?method:\s*"(\w+)"', args + rest)
        calls.append(((method.group(1) if method else "GET").lower(), literal.group(1)))
    return calls


def test_the_page_uses_only_documented_routes_and_methods(schema):
    calls = page_calls((STATIC / "app.js").read_text(encoding="utf-8"))
    assert set(calls) == {
        ("post", "/v1/detect"),
        ("post", "/v1/rescore"),
        ("post", "/v1/detect-video"),
        ("get", "/v1/models"),
    }  # the page's four requests, each found
    for method, path in calls:
        assert method in schema["paths"].get(path, {}), (method, path)
    # The review page (owl serve --review) talks to its own app, never to this API.
    review = page_calls((STATIC / "review.js").read_text(encoding="utf-8"))
    assert review and all(path.startswith("/review/v1/") for _, path in review)
