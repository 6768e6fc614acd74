"""The persistent compilation cache: a second process loads executables instead of compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "shapes" / "images" / "000000.png"

# Detects in one image and reports the compilation-cache events of this process.
_SCRIPT = r"""
import json, sys
import jax
from jax import monitoring
events = {"hits": 0, "misses": 0}
def listen(name, **kwargs):
    if name == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
    elif name == "/jax/compilation_cache/cache_misses":
        events["misses"] += 1
monitoring.register_event_listener(listen)
import owl
[dets] = owl.Detector("shapes-tiny").detect(sys.argv[1], ["red circle"])
events["boxes"] = [[round(float(v), 3) for v in box] for box in dets.xyxy]
print(json.dumps(events))
"""


def _run(cache: Path, switch: str) -> dict:
    env = dict(os.environ, OWL_CACHE_DIR=str(cache), OWL_COMPILATION_CACHE=switch)
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(EXAMPLE)], env=env, capture_output=True, text=True,
        check=True, timeout=300,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path):
    first = _run(tmp_path, "1")
    assert first["misses"] > 0 and first["hits"] == 0
    assert any((tmp_path / "xla").iterdir())
    second = _run(tmp_path, "1")
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert second["boxes"] == first["boxes"]


def test_switched_off_writes_no_cache(tmp_path):
    events = _run(tmp_path, "0")
    assert events["hits"] == events["misses"] == 0
    assert not (tmp_path / "xla").exists()


def test_entries_live_in_one_folder_per_jaxlib_version(tmp_path):
    """A floor venv and a newest one sharing OWL_CACHE_DIR never read each other's executables."""
    from importlib import metadata

    first = _run(tmp_path, "1")
    assert first["misses"] > 0
    version = metadata.version("jaxlib")
    assert [p.name for p in (tmp_path / "xla").iterdir()] == [f"jaxlib-{version}"]
    assert any((tmp_path / "xla" / f"jaxlib-{version}").iterdir())
