"""Weight-space ensembling: the average of two detectors' parameters, as one detector.

OWLv2's ``*-ensemble`` checkpoints are the weight-space average of a self-trained detector
(ST, open-vocabulary) and the same detector fine-tuned on human boxes (ST+FT, better on the
fine-tuning classes): averaging recovers most of both (Minderer et al. 2023, §4.4; the "WiSE-FT"
idea). Both inputs must have one architecture, as fine-tuning from the other guarantees.

``weight`` is B's share: the result is ``(1 - weight) * A + weight * B``, computed in float64 and
written in float32, so ``weight`` 0 gives A bit for bit, 1 gives B, and a model averaged with
itself is itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from owl.checkpoints.tree import CheckpointError, flatten_params, unflatten_params


def average_params(a: Any, b: Any, weight: float) -> Any:
    """``(1 - weight) * a + weight * b`` leaf by leaf, for two trees of the same structure.

    Raises:
        ValueError: ``weight`` outside [0, 1], or trees whose names or shapes differ.
    """
    if not 0.0 <= float(weight) <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    flat_a, flat_b = flatten_params(a), flatten_params(b)
    if flat_a.keys() != flat_b.keys():
        only = sorted(set(flat_a) ^ set(flat_b))
        raise ValueError(f"the models have different parameters: {', '.join(only[:5])}")
    out = {}
    w = float(weight)
    for name, x in flat_a.items():
        x, y = np.asarray(x), np.asarray(flat_b[name])
        if x.shape != y.shape:
            raise ValueError(f"parameter {name} has shape {x.shape} in A but {y.shape} in B")
        mixed = (1.0 - w) * x.astype(np.float64) + w * y.astype(np.float64)
        out[name] = mixed.astype(x.dtype)
    return unflatten_params(out)


def ensemble_checkpoints(
    a: str | os.PathLike, b: str | os.PathLike, weight: float, out: str | os.PathLike
) -> Path:
    """Reads two checkpoints (any format `owl.checkpoints.load` reads), writes their average.

    Returns:
        ``out``, an owl checkpoint (``.safetensors``, or ``.safetensors.gz`` compressed) with A's
        config.

    Raises:
        CheckpointError: an unreadable input, or inputs of different architectures.
        ValueError: ``weight`` outside [0, 1].
    """
    from owl.checkpoints.load import read_checkpoint
    from owl.checkpoints.owl_format import save_owl

    config_a, params_a = read_checkpoint(a)
    config_b, params_b = read_checkpoint(b)
    if config_a != config_b:
        diff = [
            f"{k}: {getattr(config_a, k)!r} vs {getattr(config_b, k)!r}"
            for k in config_a.__dataclass_fields__
            if getattr(config_a, k) != getattr(config_b, k)
        ]
        raise CheckpointError(
            f"{a} and {b} have different architectures ({'; '.join(diff[:3])}); only models "
            "fine-tuned from one another can be averaged"
        )
    try:
        params = average_params(params_a, params_b, weight)
    except ValueError as e:
        if "weight" in str(e):
            raise
        raise CheckpointError(f"{a} and {b}: {e}") from None
    return save_owl(out, config_a, params)
