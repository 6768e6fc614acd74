"""Tests for owl/checkpoints/registry.py and the `owl models` command (cli/models.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from owl.checkpoints import registry
from owl.checkpoints.download import ChecksumError
from owl.cli.models import models

OFFICIAL_PREFIX = "https://storage.googleapis.com/scenic-bucket/owl_vit/checkpoints/"

# name -> (checkpoint file name, size in MiB, variant), copied from spec §7 and the task brief.
SPEC = {
    "owlvit-b32": ("clip_vit_b32_b0203fc", 583, "owlvit-b32"),
    "owlvit-b16": ("clip_vit_b16_6171dab", 581, "owlvit-b16"),
    "owlvit-l14": ("clip_vit_l14_d83d374", 1652, "owlvit-l14"),
    "owlv2-b16-st": ("owl2-b16-960-st-ngrams_c7e1b9a", 590, "owlv2-b16"),
    "owlv2-b16": ("owl2-b16-960-st-ngrams-ft-lvisbase_d368398", 590, "owlv2-b16"),
    "owlv2-b16-ensemble": (
        "owl2-b16-960-st-ngrams-curated-ft-lvisbase-ens-cold-weight-05_209b65b",
        590,
        "owlv2-b16",
    ),
    "owlv2-l14-st": ("owl2-l14-1008-st-ngrams_0881fd6", 1666, "owlv2-l14"),
    "owlv2-l14": ("owl2-l14-1008-st-ngrams-ft-lvisbase_8ca674c", 1666, "owlv2-l14"),
    "owlv2-l14-ensemble": (
        "owl2-l14-1008-st-ngrams-ft-lvisbase-ens-cold-weight-04_8ca674c",
        1666,
        "owlv2-l14",
    ),
}
PAYLOAD = bytes(range(256)) * 12  # a 3 KiB stand-in checkpoint


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
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.log = []
    threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty OWL_CACHE_DIR; the real URL prefix stays in place unless a test changes it."""
    monkeypatch.setenv("OWL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OWL_MODEL_BASE_URL", raising=False)
    return tmp_path / "cache"


def test_official_entries_match_spec():
    entries = [e for e in registry.list_entries() if e.package_file is None]
    assert [e.name for e in entries] == list(SPEC)
    shipped = [e.name for e in registry.list_entries() if e.package_file is not None]
    assert shipped == ["shapes-tiny"]
    for entry in entries:
        file, size, variant = SPEC[entry.name]
        assert entry.url == OFFICIAL_PREFIX + file
        assert entry.url.endswith("/" + file)
        assert (entry.size_mib, entry.variant, entry.sha256, entry.package_file) == (
            size,
            variant,
            None,
            None,
        )
        assert entry.file_name == file
    assert registry.MODEL_BASE_URL == OFFICIAL_PREFIX


def test_descriptions_quote_lvis_numbers_from_spec():
    assert "43.9" in registry.get_entry("owlv2-b16-ensemble").description
    assert "40.5" in registry.get_entry("owlv2-b16-ensemble").description
    assert "19.3" in registry.get_entry("owlvit-b32").description


def test_resolve_downloads_once_then_uses_cache(server, cache, monkeypatch):
    monkeypatch.setenv("OWL_MODEL_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/mirror")
    assert not registry.is_cached("owlvit-b32")
    path = registry.resolve("owlvit-b32", progress=False)
    assert path == cache / "checkpoints" / "clip_vit_b32_b0203fc"
    assert path.read_bytes() == PAYLOAD
    assert server.log == ["/mirror/clip_vit_b32_b0203fc"]
    assert registry.is_cached("owlvit-b32")
    assert registry.resolve("owlvit-b32", progress=False) == path
    assert server.log == ["/mirror/clip_vit_b32_b0203fc"]  # no second request


def test_resolve_verifies_known_checksum(server, cache, monkeypatch):
    monkeypatch.setenv("OWL_MODEL_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    good = dataclasses.replace(
        registry.get_entry("owlvit-b16"), sha256=hashlib.sha256(PAYLOAD).hexdigest()
    )
    bad = dataclasses.replace(registry.get_entry("owlvit-b32"), sha256="0" * 64)
    monkeypatch.setitem(registry._ENTRIES, "owlvit-b16", good)
    monkeypatch.setitem(registry._ENTRIES, "owlvit-b32", bad)
    assert registry.resolve("owlvit-b16", progress=False).read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError, match="0" * 64):
        registry.resolve("owlvit-b32", progress=False)
    assert not registry.cached_path("owlvit-b32").exists()


def test_entry_url_uses_mirror_prefix(monkeypatch):
    entry = registry.get_entry("owlv2-b16-ensemble")
    monkeypatch.delenv("OWL_MODEL_BASE_URL", raising=False)
    assert registry.entry_url(entry) == entry.url
    monkeypatch.setenv("OWL_MODEL_BASE_URL", "https://mirror.example/owl")
    assert registry.entry_url(entry) == (
        "https://mirror.example/owl/"
        "owl2-b16-960-st-ngrams-curated-ft-lvisbase-ens-cold-weight-05_209b65b"
    )


@pytest.mark.parametrize(
    "owl_cache, xdg, expected",
    [
        ("owl_dir", "xdg_dir", "owl_dir"),
        (None, "xdg_dir", "xdg_dir/owl"),
        ("", "xdg_dir", "xdg_dir/owl"),  # empty values count as unset
        (None, None, "home/.cache/owl"),
        (None, "", "home/.cache/owl"),
    ],
)
def test_cache_dir_precedence(tmp_path, monkeypatch, owl_cache, xdg, expected):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var, value in (("OWL_CACHE_DIR", owl_cache), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(tmp_path / value) if value else "")
    assert registry.cache_dir() == tmp_path / expected
    assert registry.cached_path("owlv2-l14") == (
        tmp_path / expected / "checkpoints" / "owl2-l14-1008-st-ngrams-ft-lvisbase_8ca674c"
    )


def test_unknown_name_suggests_close_match():
    with pytest.raises(KeyError) as excinfo:
        registry.get_entry("owlv2-b16-ensamble")
    message = str(excinfo.value)
    assert message.startswith(
        "unknown model 'owlv2-b16-ensamble'. Did you mean 'owlv2-b16-ensemble'?"
    )
    assert "owlvit-l14" in message  # lists the known names
    with pytest.raises(KeyError, match="Known models") as excinfo:
        registry.get_entry("resnet50")
    assert "Did you mean" not in str(excinfo.value)


def test_lookup_ignores_case_and_spaces():
    assert registry.get_entry(" OWLViT-B32 ").name == "owlvit-b32"


def test_package_file_entry_needs_no_download(cache, monkeypatch):
    shipped = registry.RegistryEntry(
        name="shipped",
        variant="tiny-owlvit",
        url=None,
        sha256=None,
        size_mib=None,
        description="test",
        package_file="assets/bpe_simple_vocab_16e6.txt.gz",  # any file that ships with owl
    )
    missing = dataclasses.replace(shipped, name="missing", package_file="assets/nope.safetensors")
    monkeypatch.setitem(registry._ENTRIES, "shipped", shipped)
    monkeypatch.setitem(registry._ENTRIES, "missing", missing)
    import owl

    expected = Path(owl.__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
    assert registry.resolve("shipped") == expected
    assert registry.is_cached("shipped")
    assert not registry.is_cached("missing")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        registry.resolve("missing")
    assert not cache.exists()  # nothing was downloaded


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(variant="owlv3-b16"), "unknown variant 'owlv3-b16'"),
        (dict(package_file="assets/x.safetensors"), "exactly one of url and package_file"),
        (dict(url=None), "exactly one of url and package_file"),
    ],
)
def test_entry_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(registry.get_entry("owlvit-b32"), **changes)


# --- `owl models` ---


def test_models_table_shows_cached_state(cache):
    target = cache / "checkpoints" / "owl2-b16-960-st-ngrams_c7e1b9a"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    result = CliRunner().invoke(models, [])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line}
    assert rows["NAME"][:8] == [
        "NAME", "VARIANT", "INPUT", "PARAMS", "AP/APr*", "FWD**", "SIZE", "CACHED",
    ]  # fmt: skip
    assert rows["owlv2-b16-st"][1:10] == [
        "owlv2-b16", "960", "px", "154.6M", "26.5/29.5", "5.66s", "590", "MiB", "yes",
    ]  # fmt: skip
    assert rows["owlvit-l14"][1:10] == [
        "owlvit-l14", "840", "px", "433.1M", "34.6/31.2", "-", "1652", "MiB", "no",
    ]  # fmt: skip
    assert [n for n in SPEC if rows[n][9] == "yes"] == ["owlv2-b16-st"]
    assert f"cache: {cache / 'checkpoints'}" in result.output


def test_models_json(cache):
    (cache / "checkpoints").mkdir(parents=True)
    (cache / "checkpoints" / "clip_vit_b16_6171dab").write_bytes(b"x")
    result = CliRunner().invoke(models, ["--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == [*SPEC, "shapes-tiny"]
    cached = {n: n == "owlvit-b16" for n in SPEC} | {"shapes-tiny": True}  # ships with owl
    assert {r["name"]: r["cached"] for r in rows} == cached
    by_name = {r["name"]: r for r in rows}
    assert by_name["owlvit-b16"]["path"] == str(cache / "checkpoints" / "clip_vit_b16_6171dab")
    assert by_name["owlvit-l14"]["size_mib"] == 1652
    assert by_name["owlvit-l14"]["url"] == OFFICIAL_PREFIX + "clip_vit_l14_d83d374"


def test_models_path(cache):
    result = CliRunner().invoke(models, ["--path", "owlv2-l14-ensemble"])
    assert result.exit_code == 0
    assert result.output == f"{cache / 'checkpoints' / SPEC['owlv2-l14-ensemble'][0]}\n"


def test_models_path_unknown_name_is_user_error(cache):
    result = CliRunner().invoke(models, ["--path", "owlvit-b23"])
    assert result.exit_code == 2
    assert "unknown model 'owlvit-b23'. Did you mean 'owlvit-b32'?" in result.output


def test_models_json_and_path_conflict(cache):
    result = CliRunner().invoke(models, ["--json", "--path", "owlvit-b32"])
    assert result.exit_code == 2
    assert "either --json or --path" in result.output


def test_models_command_does_not_import_jax(cache):
    code = (
        "import sys; from click.testing import CliRunner; from owl.cli.models import models; "
        "r = CliRunner().invoke(models, ['--json']); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in ('jax', 'flax', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- corrupt cached downloads (issue 13, item 13) ---


def _download_b32(server, cache, monkeypatch) -> Path:
    monkeypatch.setenv("OWL_MODEL_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    return registry.resolve("owlvit-b32", progress=False)


def test_a_damaged_cached_download_is_reported_before_use(server, cache, monkeypatch):
    path = _download_b32(server, cache, monkeypatch)
    damaged = bytearray(PAYLOAD)
    damaged[7] ^= 1  # same size: small files are hashed in full on every use
    path.write_bytes(bytes(damaged))
    with pytest.raises(registry.CorruptDownloadError) as info:
        registry.resolve("owlvit-b32", progress=False)
    message = str(info.value)
    assert message.startswith(f"{path}: the cached download of owlvit-b32 is corrupt (sha256 ")
    assert f"delete {path} and clip_vit_b32_b0203fc.download.json beside it" in message
    assert "run the command again to download it anew" in message
    assert server.log == ["/clip_vit_b32_b0203fc"]  # nothing fetched behind the user's back


def test_models_table_and_verify_show_a_truncated_download(server, cache, monkeypatch):
    path = _download_b32(server, cache, monkeypatch)
    path.write_bytes(PAYLOAD[:1000])
    table = CliRunner().invoke(models, [])
    assert table.exit_code == 0
    rows = {line.split()[0]: line.split() for line in table.output.splitlines() if line}
    assert rows["owlvit-b32"][9] == "corrupt"
    verify = CliRunner().invoke(models, ["--verify"])
    assert verify.exit_code == 1
    assert "verified 1 cached download(s): 0 ok, 1 corrupt" in verify.output
    assert f"corrupt: {path}: 1000 bytes, but {len(PAYLOAD)} were downloaded; delete {path}" in (
        verify.output
    )


def test_models_verify_passes_on_good_downloads(server, cache, monkeypatch):
    _download_b32(server, cache, monkeypatch)
    verify = CliRunner().invoke(models, ["--verify"])
    assert verify.exit_code == 0, verify.output
    assert "verified 1 cached download(s): 1 ok, 0 corrupt" in verify.output


def test_unreadable_cached_checkpoint_says_how_to_download_it_again(server, cache, monkeypatch):
    """The server sent bytes that are no checkpoint: the record matches, reading fails."""
    from owl.checkpoints.load import load
    from owl.checkpoints.tree import CheckpointError

    path = _download_b32(server, cache, monkeypatch)
    with pytest.raises(CheckpointError) as info:
        load("owlvit-b32", progress=False)
    message = str(info.value)
    assert message.startswith(f"{path}: unrecognised checkpoint")
    assert message.endswith(
        f"(the cached file of model owlvit-b32: delete {path} and "
        "clip_vit_b32_b0203fc.download.json beside it, then run the command again to download "
        "it anew (`owl models --verify` checks every cached model))"
    )
