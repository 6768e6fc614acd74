"""Expected calibration error written independently of owl's (numpy.histogram's bins), the
reference both calibration test files compare owl's ECE with."""

from __future__ import annotations

import numpy as np


def ece_by_histogram(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width bins of [0, 1] ([a, b), the last [a, 1]): the mean over boxes of
    |bin accuracy - bin confidence|, each bin weighted by its share of the boxes."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    n, _ = np.histogram(p, bins=edges)
    sum_p, _ = np.histogram(p, bins=edges, weights=p)
    sum_y, _ = np.histogram(p, bins=edges, weights=y.astype(float))
    used = n > 0
    return float(np.sum(np.abs(sum_y[used] - sum_p[used])) / len(p))
