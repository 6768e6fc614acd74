"""Tests-only access to the official LVIS API (``lvis`` 0.5.3) as the reference for owl's metrics.

``import lvis`` fails without OpenCV (its ``__init__`` imports the visualiser) and
``LVISEval.accumulate`` uses ``np.float``, removed in numpy 2. :func:`official_lvis` therefore
imports only ``lvis.lvis``, ``lvis.results`` and ``lvis.eval`` under a bare package module, with
``np.float = float`` set for the duration and everything undone afterwards. Install the reference
with ``pip install --no-deps lvis==0.5.3``; tests that need it are skipped when it is missing.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import logging
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest


@contextlib.contextmanager
def official_lvis() -> Iterator[types.SimpleNamespace]:
    """Yields the official ``LVIS``, ``LVISResults`` and ``LVISEval`` classes (numpy 2 shimmed)."""
    spec = importlib.util.find_spec("lvis")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("official LVIS API not installed: pip install --no-deps lvis==0.5.3")
    saved = {k: v for k, v in sys.modules.items() if k == "lvis" or k.startswith("lvis.")}
    for k in saved:
        del sys.modules[k]
    package = types.ModuleType("lvis")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["lvis"] = package
    had_float = "float" in np.__dict__
    np.float = float  # removed in numpy 2; used by LVISEval.accumulate
    level = logging.getLogger("lvis").level
    logging.getLogger("lvis").setLevel(logging.ERROR)
    try:
        yield types.SimpleNamespace(
            LVIS=importlib.import_module("lvis.lvis").LVIS,
            LVISResults=importlib.import_module("lvis.results").LVISResults,
            LVISEval=importlib.import_module("lvis.eval").LVISEval,
        )
    finally:
        logging.getLogger("lvis").setLevel(level)
        if not had_float:
            del np.float
        for k in [k for k in sys.modules if k == "lvis" or k.startswith("lvis.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def official_lvis_eval(
    annotations_path: str,
    detections: list[dict[str, Any]],
    *,
    max_dets: int = 300,
    cat_ids: list[int] | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Runs the official LVISEval (bbox) and returns its results dict and precision [T,R,K,A].

    Args:
        annotations_path: the LVIS-style annotation JSON file.
        detections: result rows (deep-copied: the official code modifies them).
        max_dets: detections kept per image (LVISResults) and the AR key (Params.max_dets).
        cat_ids: restrict the evaluation to these categories (Params.cat_ids).
    """
    with official_lvis() as api, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its logger.warn
        gt = api.LVIS(annotations_path)
        dt = api.LVISResults(gt, copy.deepcopy(detections), max_dets=max_dets)
        ev = api.LVISEval(gt, dt, iou_type="bbox")
        ev.params.max_dets = max_dets
        if cat_ids is not None:
            ev.params.cat_ids = sorted(cat_ids)
        ev.run()
        return dict(ev.results), ev.eval["precision"]
