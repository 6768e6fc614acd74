"""Issue 25's probes, each one a behaviour that could break:

- the body-size rule over a raw socket (Content-Length with Transfer-Encoding, chunked without a
  length, a length over the cap) on /v1/detect and a JSON route, and the byte count in the ASGI
  receive path whatever the headers say;
- lone surrogates, non-finite numbers and over-long text on every JSON route: 400 naming the field;
- a 30 MB query is refused before the tokenizer sees it, and a query over the token limit is
  refused without waiting for the model lock;
- one access line per request, none with --quiet.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from serving import EXAMPLE, call, raw_exchange, status_and_body, threaded_server

from owl.inference.detector import Detector
from owl.search.index import Index
from owl.serve.app import create_app
from owl.serve.requests import MAX_TEXT_CHARS
from owl.text.tokenizer import ClipTokenizer

CAP = 1 << 20  # the apps' upload cap: 1 MiB


@pytest.fixture(scope="module")
def detector():
    return Detector("shapes-tiny", batch_size=1)


@pytest.fixture(scope="module")
def app(detector):
    application = create_app(detector, model_name="shapes-tiny", max_upload_bytes=CAP)
    yield application
    application.state.server.store.close()


@pytest.fixture(scope="module")
def big_app(detector, tmp_path_factory):
    """A 64 MiB cap (a 30 MB query fits in the body) and an index, so /v1/search runs."""
    index = Index(tmp_path_factory.mktemp("idx") / "one.owlindex", model=detector)
    index.add([str(EXAMPLE)])
    application = create_app(
        detector, model_name="shapes-tiny", max_upload_bytes=64 << 20, index=index
    )
    yield application
    application.state.server.store.close()
    index.close()


@pytest.fixture(scope="module")
def port(app):
    with threaded_server(app) as p:
        yield p


def chunks(total: int, size: int = 1 << 16):
    """A chunked-encoded body of `total` bytes of JSON-ish filler, then the last chunk."""
    for _ in range(total // size):
        yield f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"
    yield b"0\r\n\r\n"


def head(path: str, port: int, *lines: str) -> bytes:
    return "\r\n".join(
        [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *lines, "", ""]
    ).encode()


# -- 1. the body-size rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,content_type",
    [("/v1/detect", "multipart/form-data; boundary=x"), ("/v1/rescore", "application/json")],
)
def test_chunked_body_with_a_small_content_length_is_refused_unread(app, port, path, content_type):
    """The probe of issue 25: Content-Length 10 and Transfer-Encoding chunked, then 3 MiB."""
    calls = app.state.server.detect_calls
    answer = raw_exchange(
        port,
        head(path, port, f"Content-Type: {content_type}", "Content-Length: 10",
             "Transfer-Encoding: chunked"),
        chunks(3 * CAP),
    )  # fmt: skip
    status, body = status_and_body(answer)
    assert status == 400
    assert json.loads(body) == {
        "error": "a request with both Transfer-Encoding and Content-Length is refused (RFC 9112); "
        "send Content-Length only"
    }
    assert b"connection: close" in answer.lower()
    assert app.state.server.detect_calls == calls  # the route never ran
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["ok"] is True


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/rescore"])
def test_chunked_without_length_is_411_and_a_length_over_the_cap_is_413_before_the_body(port, path):
    status, body = status_and_body(
        raw_exchange(port, head(path, port, "Transfer-Encoding: chunked"), chunks(3 * CAP))
    )
    assert status == 411 and "send a Content-Length header" in json.loads(body)["error"]
    # Only the head is sent: the 413 comes without the server waiting for any body byte.
    status, body = status_and_body(
        raw_exchange(port, head(path, port, f"Content-Length: {3 * CAP}"))
    )
    assert status == 413
    assert json.loads(body)["error"].startswith(
        f"request body of {3 * CAP} bytes is over the upload limit of 1 MiB"
    )


def test_receive_path_counts_bytes_whatever_content_length_says(app):
    """A server that framed the body differently from its Content-Length (the bypass of issue
    25): the Guard counts what `receive` delivers, answers 413 at the cap, and the route reads no
    further; nothing raises out of the app."""
    part = b'--x\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n'
    for path, kind, first in [
        ("/v1/rescore", b"application/json", b'{"image_ids": ["'),
        ("/v1/detect", b"multipart/form-data; boundary=x", part),
    ]:
        delivered = 0
        sent: list[dict] = []

        async def receive(first=first):
            nonlocal delivered
            body = first + b"a" * ((1 << 16) - len(first)) if delivered == 0 else b"a" * (1 << 16)
            delivered += len(body)
            return {"type": "http.request", "body": body, "more_body": True}

        async def send(message, sent=sent):
            sent.append(message)

        scope = {
            "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
            "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"10"),
                        (b"content-type", kind)],
        }  # fmt: skip
        asyncio.run(app(scope, receive, send))
        assert CAP < delivered <= CAP + (1 << 16), (path, delivered, sent)
        starts = [m for m in sent if m["type"] == "http.response.start"]
        assert [m["status"] for m in starts] == [413], path
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        assert json.loads(body)["error"].startswith("request body is over the upload limit")


# -- 2., 3., 4. values at the boundary ---------------------------------------------------------


def post_json(app, path: str, text: str) -> httpx.Response:
    return call(app, "POST", path, content=text, headers={"content-type": "application/json"})


def detect_options(app, options: str) -> httpx.Response:
    files = {"images": ("a.png", EXAMPLE.read_bytes())}
    return call(app, "POST", "/v1/detect", files=files, data={"options": options})


# (route, body with a marker X, the field the error must name): every JSON route and every
# text or number field; X becomes a lone surrogate, NaN, Infinity or 1e308.
TEXT_FIELDS = [
    ("/v1/rescore", '{"image_ids": [], "queries": [X]}', "queries.0"),
    ("/v1/rescore", '{"image_ids": [X]}', "image_ids.0"),
    ("/v1/rescore", '{"image_ids": [], "queries": [{"text": X}]}', "queries.0.text"),
    ("/v1/search", '{"queries": [X]}', "queries.0"),
    ("/v1/search", '{"queries": ["a"], "negatives": [X]}', "negatives.0"),
    ("/v1/embed-query", '{"exemplars": [{"image_id": X, "box": [0, 0, 9, 9]}]}',
     "exemplars.0.image_id"),
    ("/v1/embed-query", '{"exemplars": [{"image_id": "a", "box": [0, 0, 9, 9]}], "label": X}',
     "label"),
    ("options", '{"embeddings": [{"embedding": [1.0], "label": X}]}', "embeddings.0.label"),
]  # fmt: skip
NUMBER_FIELDS = [
    ("/v1/rescore", '{"image_ids": [], "exemplars": [{"image_id": "a", "box": [0, 0, X, 9]}]}',
     "exemplars.0.box.2"),
    ("/v1/rescore", '{"image_ids": [], "embeddings": [{"embedding": [0.5, X], "label": "e"}]}',
     "embeddings.0.embedding.1"),
    ("/v1/rescore", '{"image_ids": [], "threshold": X}', "threshold"),
    ("/v1/search", '{"embeddings": [{"embedding": [X], "label": "e"}]}',
     "embeddings.0.embedding.0"),
    ("/v1/search", '{"queries": [{"text": "a", "threshold": X}]}', "queries.0.threshold"),
    ("/v1/embed-query", '{"exemplars": [{"image_id": "a", "box": [X, 0, 9, 9]}]}',
     "exemplars.0.box.0"),
    ("options", '{"exemplars": [{"image_id": "a", "box": [0, X, 9, 9]}]}', "exemplars.0.box.1"),
    ("options", '{"embeddings": [{"embedding": [X], "label": "e"}]}', "embeddings.0.embedding.0"),
]  # fmt: skip


def test_every_json_route_and_the_detect_options_are_probed(app):
    """The surrogate and non-finite probes cover every route whose body is JSON (taken from
    /openapi.json, so a new route must be added to them) and /v1/detect's `options` field."""
    paths = call(app, "GET", "/openapi.json").json()["paths"]
    json_routes = {
        path
        for path, methods in paths.items()
        for op in methods.values()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    }
    assert json_routes == {"/v1/rescore", "/v1/search", "/v1/embed-query"}
    assert {route for route, _, _ in TEXT_FIELDS} == json_routes | {"options"}
    assert {route for route, _, _ in NUMBER_FIELDS} == json_routes | {"options"}


def send(app, route: str, body: str) -> httpx.Response:
    return detect_options(app, body) if route == "options" else post_json(app, route, body)


@pytest.mark.parametrize("route,body,field", TEXT_FIELDS)
def test_lone_surrogate_is_400_naming_the_field(big_app, route, body, field):
    r = send(big_app, route, body.replace("X", '"a\\ud800b"'))
    assert r.status_code == 400, r.text
    prefix = "options: " if route == "options" else ""
    assert r.json()["error"].startswith(f"{prefix}{field}: "), r.text
    assert "Unicode" in r.json()["error"] or "surrogate" in r.json()["error"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e308"])
@pytest.mark.parametrize("route,body,field", NUMBER_FIELDS)
def test_non_finite_numbers_are_400_naming_the_field(big_app, route, body, field, value):
    if value == "1e308" and ".embedding." not in field:
        value = "1e999"  # finite numbers are fine outside embeddings; 1e999 parses as inf
    r = send(big_app, route, body.replace("X", value))
    assert r.status_code == 400, r.text
    prefix = "options: " if route == "options" else ""
    assert r.json()["error"].startswith(f"{prefix}{field}: "), r.text


def test_form_query_cannot_carry_a_surrogate(big_app):
    """A multipart field carries bytes, and a surrogate sent as UTF-8 would be (CESU-8) is not
    UTF-8: Starlette reads such a field as Latin-1, so the query is valid Unicode, runs, and its
    echo encodes (no 500)."""
    files = {"images": ("a.png", EXAMPLE.read_bytes())}
    query = "x\ud800".encode("utf-8", "surrogatepass")
    r = call(big_app, "POST", "/v1/detect", files=files, data={"query": query})
    assert r.status_code == 200, r.text
    assert r.json()["queries"] == [query.decode("latin-1")]


@pytest.fixture
def tokenizer_calls(monkeypatch):
    """Every text the tokenizer is asked to encode (the spy keeps the real behaviour)."""
    seen: list[str] = []
    encode = ClipTokenizer.encode

    def spy(self, text, **kwargs):
        seen.append(text)
        return encode(self, text, **kwargs)

    monkeypatch.setattr(ClipTokenizer, "encode", spy)
    return seen


@pytest.mark.parametrize(
    "route,body",
    [
        ("/v1/rescore", {"image_ids": [], "queries": ["HUGE"]}),
        ("/v1/rescore", {"image_ids": [], "queries": [{"text": "HUGE"}]}),
        ("/v1/search", {"queries": ["a cat"], "negatives": ["HUGE"]}),
        ("options", {"queries": ["HUGE"]}),
    ],
)
def test_30_mb_query_is_refused_before_the_tokenizer(big_app, tokenizer_calls, route, body):
    huge = "a photo of a cat " * (30_000_000 // 17)
    text = json.dumps(body).replace("HUGE", huge)
    r = send(big_app, route, text)
    assert r.status_code == 400, r.text[:300]
    if route == "options":  # a form field is at most 1 MiB (Starlette's limit)
        assert r.json()["error"] == "the form cannot be read: Part exceeded maximum size of 1024KB."
        r = send(big_app, route, json.dumps(body).replace("HUGE", huge[:500_000]))
        assert r.status_code == 400, r.text[:300]
    assert f"at most {MAX_TEXT_CHARS} characters" in r.json()["error"]
    assert tokenizer_calls == []  # refused at the boundary: nothing was tokenised
    # The spy does see what is tokenised: the same request with a short query runs through it.
    r = send(big_app, route, json.dumps(body).replace("HUGE", "a red circle"))
    assert r.status_code == 200, r.text[:300]
    assert "a red circle" in tokenizer_calls
    assert all(len(t) <= MAX_TEXT_CHARS for t in tokenizer_calls)


def test_form_query_over_the_character_cap_never_reaches_the_tokenizer(big_app, tokenizer_calls):
    files = {"images": ("a.png", EXAMPLE.read_bytes())}
    r = call(big_app, "POST", "/v1/detect", files=files, data={"query": "x" * 500_000})
    assert r.status_code == 400 and r.json()["error"].startswith("query.0: String should have")
    assert all(len(t) <= MAX_TEXT_CHARS for t in tokenizer_calls)


def test_over_long_query_is_refused_while_the_model_is_busy(app, port):
    """Text is checked outside the model lock: with the lock held (a long model call), an
    over-long query still gets its 400 at once instead of waiting."""
    lock = app.state.server.lock
    text = "red circle " * 40  # 440 characters, 80 tokens: within the cap, over the context
    assert lock.acquire(timeout=10)
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/rescore",
            json={"image_ids": [], "queries": [text]},
            timeout=10,
        )
    finally:
        lock.release()
    assert r.status_code == 400
    assert "has more than 16 BPE tokens, but at most 14 fit" in r.json()["error"]


# -- 5. the access log -------------------------------------------------------------------------


@pytest.mark.parametrize("quiet", [False, True])
def test_one_access_line_per_request_unless_quiet(app, capfd, quiet):
    capfd.readouterr()
    with threaded_server(app, quiet=quiet) as p:
        url = f"http://127.0.0.1:{p}"
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.post(f"{url}/v1/rescore", json={"image_ids": ["feed"]}).status_code == 404
        assert httpx.get(f"{url}/healthz", headers={"host": "evil.example"}).status_code == 403
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if '"' in line]
    if quiet:
        assert lines == []
    else:
        assert [line.split(" - ", 1)[1] for line in lines] == [
            '"GET /healthz HTTP/1.1" 200 OK',
            '"POST /v1/rescore HTTP/1.1" 404 Not Found',
            '"GET /healthz HTTP/1.1" 403 Forbidden',
        ]
        assert all(line.startswith("127.0.0.1:") for line in lines)
        assert out == ""  # stdout stays clean: the log is on stderr
