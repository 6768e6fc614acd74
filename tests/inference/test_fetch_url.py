"""Images given as http(s) URLs: fetched with a size cap and a timeout (server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from owl.inference.inputs import InputError, expand_images, fetch_image_url, url_file_name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images" / "000000.png"
PNG = EXAMPLE.read_bytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server
        if self.path.startswith("/stall"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            srv.release.wait(10)
            return
        if self.path.startswith("/endless"):  # no Content-Length, more than the cap
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * 5000)
            return
        if not self.path.startswith("/img/"):
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.release = threading.Event()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def test_urls_are_kept_by_expansion_even_with_glob_characters():
    specs = ["https://example.org/a.png?size=2", "http://h/b[1].jpg"]
    assert expand_images(specs) == specs
    assert url_file_name("https://h/p/cat%20one.jpg?s=2") == "cat one.jpg"
    assert url_file_name("https://h/") == "image"


def test_fetch_writes_the_served_bytes(server, tmp_path):
    dest = fetch_image_url(f"{server.base}/img/x.png", tmp_path / "x.png")
    assert dest.read_bytes() == PNG


def test_fetch_http_error_names_the_url(server, tmp_path):
    url = f"{server.base}/missing.png"
    message = rf"^{url}: cannot fetch the image \(HTTP 404 Not Found\)$"
    with pytest.raises(InputError, match=message):
        fetch_image_url(url, tmp_path / "m.png")


def test_fetch_refuses_a_declared_size_over_the_cap(server, tmp_path):
    url = f"{server.base}/img/x.png"
    with pytest.raises(InputError) as info:
        fetch_image_url(url, tmp_path / "x.png", max_bytes=1000)
    assert str(info.value) == (
        f"{url}: the image is {len(PNG)} bytes, more than 0.000953674 MiB; download it and pass "
        "the file"
    )
    assert not (tmp_path / "x.png").exists()


def test_fetch_stops_an_undeclared_body_at_the_cap(server, tmp_path):
    with pytest.raises(InputError, match="the image is more than"):
        fetch_image_url(f"{server.base}/endless", tmp_path / "e.png", max_bytes=4096)
    assert not (tmp_path / "e.png").exists()


def test_fetch_times_out(server, tmp_path):
    url = f"{server.base}/stall.png"
    message = rf"^{url}: cannot fetch the image \(no answer within 0.3 s\)$"
    with pytest.raises(InputError, match=message):
        fetch_image_url(url, tmp_path / "s.png", timeout=0.3)


def test_detect_fetches_url_images_and_goes_on_past_a_bad_one(server, tmp_path):
    from owl.cli.detect import detect

    good, bad = f"{server.base}/img/000000.png", f"{server.base}/nope.png"
    out = tmp_path / "d.json"
    result = CliRunner().invoke(detect, [good, bad, "-q", "red circle", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert f"  failed: {bad}: cannot fetch the image (HTTP 404 Not Found)" in result.stderr
    [record] = json.loads(out.read_text())["results"]
    assert record["image"] == {"path": good, "width": 128, "height": 128}
    local = CliRunner().invoke(detect, [str(EXAMPLE), "-q", "red circle", "-o", "-", "--quiet"])
    [same] = json.loads(local.stdout)["results"]
    assert record["detections"] == same["detections"]  # the URL's pixels are the file's
