"""`owl search` never creates or changes an index, and checks the index's model before loading.

The model check runs against a local HTTP server standing in for the model host (as
tests/checkpoints/test_download.py and test_registry.py do): a search with another registry
model must be refused without a single request.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import owl
from owl.checkpoints import registry
from owl.cli.main import cli
from owl.search.index import Index
from owl.search.store import IndexStoreError

pytest.importorskip("faiss")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images"
N_EXAMPLES = len(list(EXAMPLES.glob("*.png")))
PAYLOAD = bytes(range(256)) * 12  # what the stand-in host serves for any checkpoint


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.log.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A local model host ($OWL_MODEL_BASE_URL) logging every request, and an empty cache."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.log = []
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    monkeypatch.setenv("OWL_MODEL_BASE_URL", f"http://127.0.0.1:{srv.server_address[1]}/")
    monkeypatch.setenv("OWL_CACHE_DIR", str(tmp_path / "cache"))
    yield srv
    srv.shutdown()
    srv.server_close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _search(index: Path, *args: str):
    return CliRunner().invoke(cli, ["search", "--index", str(index), "-q", "red circle", *args])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A shapes-tiny index of the shipped examples, checkpointed into one file."""
    path = tmp_path_factory.mktemp("idx") / "shapes.owlindex"
    result = CliRunner().invoke(cli, ["index", str(EXAMPLES), "--index", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


def test_search_on_an_empty_or_foreign_file_changes_nothing(tmp_path):
    empty = tmp_path / "empty.owlindex"
    empty.touch()
    result = _search(empty)
    assert result.exit_code == 2, result.output
    assert f"{empty} holds no owl index; build it with `owl index`" in result.stderr
    assert empty.stat().st_size == 0  # before: a 28 KiB schema was written into it
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes (x TEXT)")
    db.commit()
    db.close()
    before = _digest(other)
    result = _search(other)
    assert result.exit_code == 2 and "holds no owl index" in result.stderr
    assert _digest(other) == before
    result = _search(tmp_path / "missing.owlindex")
    assert result.exit_code == 2 and "no such index" in result.stderr
    assert not (tmp_path / "missing.owlindex").exists()


def test_search_leaves_the_index_file_unchanged(built, tmp_path):
    copy = Path(shutil.copyfile(built, tmp_path / "copy.owlindex"))
    before = _digest(copy)
    result = _search(copy, "-o", str(tmp_path / "found.json"))
    assert result.exit_code == 0, result.output
    assert f"of {N_EXAMPLES} indexed" in result.stderr
    assert json.loads((tmp_path / "found.json").read_text())["results"]  # it did search
    assert _digest(copy) == before


def test_a_read_only_index_refuses_writes(built, tmp_path):
    copy = Path(shutil.copyfile(built, tmp_path / "copy.owlindex"))
    before = _digest(copy)
    with Index(copy, read_only=True) as index:
        assert len(index) == N_EXAMPLES
        with pytest.raises(IndexStoreError, match="opened read-only"):
            index.remove(index.paths())
        assert len(index) == N_EXAMPLES
    assert _digest(copy) == before


def test_another_registry_model_is_refused_before_any_download(built, host):
    result = _search(built, "--model", "owlvit-b32")
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert "was built with model 'shapes-tiny'" in line and "not 'owlvit-b32'" in line
    assert "nothing was loaded or downloaded" in line
    assert host.log == []
    # The stand-in host is really in use: resolving the name does request it.
    registry.resolve("owlvit-b32", progress=False)
    assert host.log == ["/clip_vit_b32_b0203fc"]


def test_an_index_built_from_a_file_refuses_an_uncached_registry_name(tmp_path, host):
    # Built from a file path: a registry name might be a copy of it, so only an uncached one
    # (which would be downloaded) is refused by name; a cached one is loaded and hash-checked.
    model_file = tmp_path / "st.safetensors"
    assert CliRunner().invoke(cli, ["convert", "shapes-tiny", str(model_file)]).exit_code == 0
    index = tmp_path / "file.owlindex"
    result = CliRunner().invoke(
        cli, ["index", str(EXAMPLES), "--index", str(index), "--model", str(model_file), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    result = _search(index, "--model", "owlv2-b16")
    assert result.exit_code == 2 and "nothing was loaded or downloaded" in result.stderr
    assert host.log == []
    # shapes-tiny ships with owl (cached): same weights as the file, so the search runs.
    result = _search(index, "--model", "shapes-tiny", "-o", str(tmp_path / "f.json"))
    assert result.exit_code == 0, result.output
    assert host.log == []
    with pytest.raises(owl.search.index.IndexMismatchError, match="not 'owlvit-b16'"):
        Index(index, model="owlvit-b16")
    assert host.log == []
