"""Tests for owl/checkpoints/download.py, against a local HTTP server that supports Range."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from owl.checkpoints.download import (
    ChecksumError,
    DownloadError,
    check_download,
    download,
    read_record,
    record_path,
)

PAYLOAD = np.random.default_rng(0).integers(0, 256, size=5000, dtype=np.uint8).tobytes()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files`; logs (path, Range header); can misbehave on request."""

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.log.append((self.path, rng))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng is not None and srv.honor_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # send a prefix, then drop the connection (once)
            cut, srv.cut_after = srv.cut_after, None
            self.wfile.write(body[:cut])
            self.close_connection = True
            return
        if srv.stall is not None:  # send a prefix, then hang until the test ends
            self.wfile.write(body[: len(body) // 2])
            srv.stall.wait(10)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files = {"/ckpt.bin": PAYLOAD}
    srv.log = []
    srv.honor_range = True
    srv.cut_after = None
    srv.stall = None
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/ckpt.bin"
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    if srv.stall is not None:
        srv.stall.set()
    srv.shutdown()
    srv.server_close()


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def test_fresh_download_equals_served_bytes(server, tmp_path):
    dest = tmp_path / "sub" / "ckpt.bin"
    assert download(server.url, dest, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()
    # no .part, no .lock; the record of what was downloaded
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ckpt.bin", "ckpt.bin.download.json"]
    assert server.log == [("/ckpt.bin", None)]


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    server.cut_after = 1234
    with pytest.raises(DownloadError) as excinfo:
        download(server.url, dest, progress=False, chunk_size=512)
    assert "1234 of 5000 bytes" in str(excinfo.value)
    assert str(dest) in str(excinfo.value)
    assert not dest.exists()
    assert _part(dest).read_bytes() == PAYLOAD[:1234]

    download(server.url, dest, progress=False, chunk_size=512)
    assert server.log == [("/ckpt.bin", None), ("/ckpt.bin", "bytes=1234-")]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    _part(dest).write_bytes(b"\x00" * 700)  # garbage that must not survive
    server.honor_range = False
    download(server.url, dest, progress=False)
    assert server.log == [("/ckpt.bin", "bytes=700-")]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_complete_part_file_answered_416_is_finished(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    _part(dest).write_bytes(PAYLOAD)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    download(server.url, dest, sha256=sha, progress=False)
    assert server.log == [("/ckpt.bin", f"bytes={len(PAYLOAD)}-")]
    assert dest.read_bytes() == PAYLOAD
    assert not _part(dest).exists()


def test_part_file_longer_than_remote_starts_over(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    _part(dest).write_bytes(PAYLOAD + b"extra")
    download(server.url, dest, progress=False)
    assert server.log == [("/ckpt.bin", f"bytes={len(PAYLOAD) + 5}-"), ("/ckpt.bin", None)]
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_rejected(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    wrong = hashlib.sha256(b"something else").hexdigest()
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(ChecksumError) as excinfo:
        download(server.url, dest, sha256=wrong, progress=False)
    message = str(excinfo.value)
    assert server.url in message and wrong in message and actual in message
    assert not dest.exists()
    assert not _part(dest).exists()


def test_checksum_match_passes(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    sha = hashlib.sha256(PAYLOAD).hexdigest().upper()  # case does not matter
    download(server.url, dest, sha256=sha, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_checksum_checked_over_resumed_file(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    _part(dest).write_bytes(b"\xff" * 100)  # wrong prefix; the server resumes after it
    with pytest.raises(ChecksumError):
        download(server.url, dest, sha256=hashlib.sha256(PAYLOAD).hexdigest(), progress=False)
    assert server.log == [("/ckpt.bin", "bytes=100-")]
    assert not dest.exists() and not _part(dest).exists()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_names_url_and_destination(tmp_path):
    url = f"http://127.0.0.1:{_unused_port()}/clip_vit_b32_b0203fc"
    dest = tmp_path / "checkpoints" / "clip_vit_b32_b0203fc"
    with pytest.raises(DownloadError) as excinfo:
        download(url, dest, progress=False, timeout=5)
    message = str(excinfo.value)
    assert url in message
    assert f"place it at {dest}" in message
    assert "connection refused" in message
    assert "OWL_CACHE_DIR" in message and "OWL_MODEL_BASE_URL" in message
    assert "\n" not in message
    assert not dest.exists()


def test_http_error_is_download_error(server, tmp_path):
    url = server.url.replace("ckpt.bin", "missing.bin")
    with pytest.raises(DownloadError, match=r"HTTP 404") as excinfo:
        download(url, tmp_path / "missing.bin", progress=False)
    assert url in str(excinfo.value)
    assert not (tmp_path / "missing.bin.part").exists()


def test_read_timeout_keeps_part_file(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    server.stall = threading.Event()
    with pytest.raises(DownloadError, match="timed out"):
        download(server.url, dest, progress=False, timeout=0.5, chunk_size=256)
    kept = _part(dest).read_bytes()
    assert 0 < len(kept) <= len(PAYLOAD) // 2 and PAYLOAD.startswith(kept)
    server.stall.set()
    server.stall = None
    download(server.url, dest, progress=False)
    assert server.log[-1] == ("/ckpt.bin", f"bytes={len(kept)}-")
    assert dest.read_bytes() == PAYLOAD


def test_progress_bar_on_stderr(server, tmp_path, capsys):
    download(server.url, tmp_path / "ckpt.bin", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ckpt.bin" in captured.err and "100%" in captured.err
    download(server.url, tmp_path / "again.bin", progress=False)
    assert capsys.readouterr().err == ""


def test_live_lock_refuses_second_download(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    lock = dest.with_name("ckpt.bin.lock")
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # this (running) process holds it
    with pytest.raises(DownloadError, match="another process is downloading") as excinfo:
        download(server.url, dest, progress=False)
    assert str(lock) in str(excinfo.value)
    assert server.log == []
    assert lock.exists()  # someone else's lock is left alone


def test_stale_lock_from_dead_process_is_taken_over(server, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dest = tmp_path / "ckpt.bin"
    lock = dest.with_name("ckpt.bin.lock")
    lock.write_text(f"{socket.gethostname()} {dead.pid}")
    download(server.url, dest, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not lock.exists()


# -- the download record -----------------------------------------------------------------------


def test_completed_download_records_url_size_and_sha256(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    download(server.url, dest, progress=False)
    assert record_path(dest) == tmp_path / "ckpt.bin.download.json"
    assert read_record(dest) == {
        "url": server.url, "size": 5000, "sha256": hashlib.sha256(PAYLOAD).hexdigest(),
    }  # fmt: skip
    assert check_download(dest, full=True) is None


def test_failed_download_leaves_no_record(server, tmp_path):
    dest = tmp_path / "ckpt.bin"
    server.cut_after = 100
    with pytest.raises(DownloadError):
        download(server.url, dest, progress=False)
    assert read_record(dest) is None and not record_path(dest).exists()


def test_check_download_finds_a_truncated_file_by_size(server, tmp_path):
    dest = download(server.url, tmp_path / "ckpt.bin", progress=False)
    dest.write_bytes(PAYLOAD[:4000])
    assert check_download(dest) == "4000 bytes, but 5000 were downloaded"


def test_check_download_finds_a_changed_byte_only_with_the_full_hash(server, tmp_path):
    dest = download(server.url, tmp_path / "ckpt.bin", progress=False)
    damaged = bytearray(PAYLOAD)
    damaged[2500] ^= 0xFF
    dest.write_bytes(bytes(damaged))
    assert check_download(dest) is None  # same size: the cheap check cannot tell
    want, got = hashlib.sha256(PAYLOAD).hexdigest(), hashlib.sha256(damaged).hexdigest()
    assert check_download(dest, full=True) == f"sha256 {got}, but {want} was downloaded"


def test_check_download_compares_the_hash_known_in_advance(server, tmp_path):
    dest = download(server.url, tmp_path / "ckpt.bin", progress=False)
    good = hashlib.sha256(PAYLOAD).hexdigest()
    assert check_download(dest, sha256=good.upper()) is None
    problem = check_download(dest, sha256="ab" * 32)
    assert problem == f"downloaded with sha256 {good}, expected {'ab' * 32}"
    record_path(dest).unlink()  # a file placed by hand: the known hash is checked on the file
    assert check_download(dest, sha256="ab" * 32) == f"sha256 {good}, expected {'ab' * 32}"
    assert check_download(dest) is None  # nothing to compare with
