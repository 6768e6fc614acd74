"""owl: open-vocabulary object detection with OWL-ViT and OWLv2 in JAX/Flax.

The public API is small and imported lazily, so `import owl` (and `owl --help`) stays fast:

    model = owl.load("owlvit-b32")          # a registry name, a path, or a transformers directory
    out = model.predict_raw(pixels, input_ids)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it; resolved on first attribute access.
_LAZY = {
    "load": "owl.checkpoints.load",
    "OwlModel": "owl.models.model",
    "ModelConfig": "owl.models.configs",
    "Detector": "owl.inference.detector",
    "Detections": "owl.inference.detections",
    "Index": "owl.search.index",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'owl' has no attribute {name!r}")
