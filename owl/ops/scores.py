"""Score arithmetic shared by post-processing, calibration and search (pure numpy)."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64; very negative logits (masked: -1e6) give exactly 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


__all__ = ["sigmoid"]
