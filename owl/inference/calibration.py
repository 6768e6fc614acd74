"""Calibrated scores: each query's raw logit -> the probability that the box is a true match.

OWL's scores are sigmoids of per-query logits whose scale differs from query to query, so one
threshold cannot fit every query. A `Calibration` maps each query's logit to a probability with
parameters of that query (fitted from labelled images by `owl calibrate`,
`owl.eval.calibration.fit_calibration`), and with a query-independent fit for queries it has
not seen. With it, a threshold of 0.5 means "more likely a true match than not" for every query,
and an image where nothing matches returns nothing. Method, measurements and the choice of the
default: docs/calibration.md.

Two mappings, both monotone in the logit (so a query's ranking of boxes never changes):
  * ``"platt"``: p = sigmoid(a * logit + b) per query (Platt scaling);
  * ``"isotonic"``: p = a non-decreasing step function of the logit, interpolated linearly
    between breakpoints (pool-adjacent-violators), per query.

The file is JSON (never pickle)::

    {"format": "owl-calibration", "version": 1, "method": "platt", "model": "shapes-tiny",
     "fit": {...how it was fitted...},
     "default": {"a": 1.2, "b": -3.4},
     "queries": {"red circle": {"a": 1.5, "b": -4.1, "positives": 31, "boxes": 1000}, ...}}

Query names are matched after `owl.text.prompts.canonicalize` ("Red Circle" = "red circle").
This module is numpy only: fitting from a data set (which needs a Detector) lives in
`owl.eval.calibration`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.ops.scores import sigmoid
from owl.text.prompts import canonicalize

FORMAT = "owl-calibration"
VERSION = 1
METHODS = ("platt", "isotonic")
#: Calibrations shipped inside the package, by registry name (docs/calibration.md).
SHIPPED = {
    "shapes-tiny": Path(__file__).resolve().parents[1] / "assets" / "shapes-tiny.calibration.json"
}
#: ECE bins used throughout (equal width on [0, 1]).
ECE_BINS = 15


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file and the problem."""


# ----------------------------------------------------------------------------------------------
# Fitting (numpy).


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    prior: Sequence[float] | None = None,
    strength: float = 0.0,
    max_iter: int = 100,
) -> np.ndarray:
    """Fits p = sigmoid(features @ w[:-1] + w[-1]) by maximum likelihood (Newton's method).

    Args:
      features: [N, F] inputs (an intercept is added).
      labels: [N] 0/1 (a true match or not).
      prior: [F + 1] weights to shrink towards (a query with few positives borrows the global
        fit); None shrinks towards 0 when ``strength`` > 0.
      strength: weight of the Gaussian penalty ``strength / 2 * |w - prior|^2``, in units of
        samples; 0 is plain maximum likelihood.
      max_iter: Newton steps at most.

    Returns:
      w [F + 1]. Separable data without a prior ends at large but finite values (each step is
      capped), never NaN.

    Raises:
      ValueError: empty input or mismatched lengths.
    """
    x = np.asarray(features, np.float64)
    x = x.reshape(len(x), -1) if x.ndim != 2 else x
    y = np.asarray(labels, np.float64).reshape(-1)
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need equal, non-empty features and labels, got {len(x)} and {len(y)}")
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    dim = design.shape[1]
    w0 = np.zeros(dim) if prior is None else np.asarray(prior, np.float64).reshape(dim)
    lam = float(strength) + 1e-9  # a whisper of ridge keeps the Hessian invertible
    w = w0.copy()
    for _ in range(max_iter):
        p = sigmoid(design @ w)
        grad = design.T @ (p - y) + lam * (w - w0)
        hess = (design * (p * (1 - p))[:, None]).T @ design + lam * np.eye(dim)
        step = np.linalg.solve(hess, grad)
        norm = float(np.linalg.norm(step))
        if norm > 5.0:
            step *= 5.0 / norm
        w = w - step
        if norm < 1e-10:
            break
    return w


def fit_platt(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    prior: tuple[float, float] | None = None,
    strength: float = 0.0,
) -> tuple[float, float]:
    """Platt scaling: fits p = sigmoid(a * logit + b) (`fit_logistic` with one feature).

    Returns:
      (a, b).
    """
    w = fit_logistic(np.asarray(logits).reshape(-1, 1), labels, prior=prior, strength=strength)
    return float(w[0]), float(w[1])


def fit_isotonic(logits: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    """Fits a non-decreasing map logit -> probability (pool-adjacent-violators).

    Returns:
      (x, y): breakpoints, x strictly increasing, y non-decreasing in [0, 1]; apply with
      `isotonic_apply` (linear in between, constant outside).

    Raises:
      ValueError: empty input or mismatched lengths.
    """
    x = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"need equal, non-empty logits and labels, got {x.size} and {y.size}")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    # Equal logits form one block first (they must get one value).
    ux, start = np.unique(x, return_index=True)
    sums = np.add.reduceat(y, start)
    counts = np.diff(np.append(start, len(x))).astype(np.float64)
    blocks: list[list[float]] = []  # [sum, count, x_lo, x_hi]
    for xs, s, c in zip(ux, sums, counts, strict=True):
        blocks.append([s, c, xs, xs])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s2, c2, _, hi = blocks.pop()
            blocks[-1][0] += s2
            blocks[-1][1] += c2
            blocks[-1][3] = hi
    bx: list[float] = []
    by: list[float] = []
    for s, c, lo, hi in blocks:
        value = s / c
        bx.append(float(lo))
        by.append(value)
        if hi > lo:
            bx.append(float(hi))
            by.append(value)
    return bx, by


def isotonic_apply(logits: np.ndarray, x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """The isotonic map at ``logits`` (linear between breakpoints, constant outside)."""
    return np.interp(np.asarray(logits, np.float64), np.asarray(x), np.asarray(y))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: sum over equal-width bins of (bin share) * |mean label - mean probability|.

    Bins are [0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1] (1.0 falls in the last bin); empty bins
    count nothing. Returns 0.0 for no samples.
    """
    p = np.asarray(probabilities, np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    if p.size == 0:
        return 0.0
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        if n:
            total += n / p.size * abs(float(y[members].mean()) - float(p[members].mean()))
    return total


# ----------------------------------------------------------------------------------------------
# The calibration and its file.


def rival_margins(
    logits: np.ndarray,
    labels: Sequence[str],
    contrast_logits: np.ndarray,
    contrast: Sequence[str],
) -> np.ndarray:
    """Per box and query: the query's logit minus the best logit of the contrast vocabulary.

    Entries of the vocabulary with the query's own (canonical) name are left out; a query with
    no other entry gets margin 0.

    Args:
      logits: [P, Q] the queries' logits.
      labels: [Q] the queries' names.
      contrast_logits: [P, V] the vocabulary's logits on the same boxes.
      contrast: [V] canonical vocabulary names.

    Returns:
      [P, Q] float64 margins.
    """
    logits = np.asarray(logits, np.float64)
    contrast_logits = np.asarray(contrast_logits, np.float64).reshape(len(logits), -1)
    names = np.array([canonicalize(c) for c in contrast], dtype=object)
    out = np.zeros_like(logits)
    if contrast_logits.shape[1] == 0:
        return out
    order = np.argsort(-contrast_logits, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(logits))
    best, second = order[:, 0], order[:, min(1, order.shape[1] - 1)]
    for q, label in enumerate(labels):
        name = canonicalize(label)
        own = names == name
        if own.all():
            continue
        pick = np.where(own[best], second, best)
        if own.sum() > 1:  # a repeated name: take the best entry of another name (rare)
            masked = np.where(own[None, :], -np.inf, contrast_logits)
            out[:, q] = logits[:, q] - masked.max(axis=1)
            continue
        out[:, q] = logits[:, q] - contrast_logits[rows, pick]
    return out


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Per-query maps from raw logits to probabilities (see the module docstring).

    Attributes:
      method: "platt" or "isotonic".
      default: the parameters for queries not in ``queries`` ({"a", "b"} and, with a contrast
        vocabulary, "c" for Platt; {"x", "y"} for isotonic), fitted on every query's boxes
        together.
      queries: canonical query name -> its parameters (plus counts: "positives", "boxes").
      contrast: a vocabulary scored on every box beside the queries (the background queries);
        Platt then uses p = sigmoid(a * logit + c * margin + b), where margin is the logit
        minus the best other vocabulary entry's logit on that box (`rival_margins`). Empty:
        p = sigmoid(a * logit + b).
      model: the model the logits came from (a calibration only fits that model).
      fit: how it was fitted (data, boxes, NMS IoU, match IoU, top-k): recorded, not used,
        except ``fit["nms_iou"]``, the NMS the probabilities assume (`owl detect --calibrated`
        turns per-query NMS on at it).
    """

    method: str
    default: Mapping[str, Any]
    queries: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    contrast: tuple[str, ...] = ()
    model: str | None = None
    fit: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not all(isinstance(c, str) and c.strip() for c in self.contrast):
            raise ValueError("contrast must be a list of non-empty names")
        object.__setattr__(self, "contrast", tuple(canonicalize(c) for c in self.contrast))
        if self.method == "isotonic" and self.contrast:
            raise ValueError("an isotonic calibration takes no contrast vocabulary")
        for name, params in [("default", self.default), *self.queries.items()]:
            _check_params(self.method, params, f"query {name!r}")

    @property
    def nms_iou(self) -> float | None:
        """The per-query NMS IoU the probabilities were fitted after (None: not recorded)."""
        value = self.fit.get("nms_iou")
        return None if value is None else float(value)

    def params_for(self, label: str) -> Mapping[str, Any]:
        """The parameters used for a query name (its own, else the default)."""
        return self.queries.get(canonicalize(label), self.default)

    def knows(self, label: str) -> bool:
        """Whether the query has parameters of its own (else the default is used)."""
        return canonicalize(label) in self.queries

    def probabilities(
        self,
        logits: np.ndarray,
        labels: Sequence[str],
        contrast_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        """Calibrated probabilities [P, Q] of logits [P, Q] for queries ``labels`` [Q].

        ``contrast_logits`` [P, V] are the logits of ``self.contrast`` on the same boxes;
        required when the calibration has a contrast vocabulary.
        """
        logits = np.asarray(logits, np.float64)
        if logits.ndim != 2 or logits.shape[1] != len(labels):
            raise ValueError(f"logits {logits.shape} do not fit {len(labels)} query labels")
        margins = None
        if self.contrast:
            if contrast_logits is None:
                raise ValueError("this calibration needs the contrast vocabulary's logits")
            margins = rival_margins(logits, labels, contrast_logits, self.contrast)
        out = np.empty_like(logits)
        for q, label in enumerate(labels):
            out[:, q] = self.apply(logits[:, q], label, None if margins is None else margins[:, q])
        return out

    def apply(
        self, logits: np.ndarray, label: str, margins: np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated probabilities of one query's logits (and margins, with a contrast)."""
        params = self.params_for(label)
        logits = np.asarray(logits, np.float64)
        if self.method == "isotonic":
            return isotonic_apply(logits, params["x"], params["y"])
        z = float(params["a"]) * logits + float(params["b"])
        if self.contrast:
            if margins is None:
                raise ValueError("this calibration needs the margins against its contrast")
            z = z + float(params.get("c", 0.0)) * np.asarray(margins, np.float64)
        return sigmoid(z)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (see the module docstring)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "model": self.model,
            "contrast": list(self.contrast),
            "fit": dict(self.fit),
            "default": dict(self.default),
            "queries": {k: dict(v) for k, v in self.queries.items()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the JSON file atomically; returns its path."""
        from owl.files import atomic_write

        path = Path(path)
        text = json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n"
        with atomic_write(path, "w") as f:
            f.write(text)
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "calibration") -> Calibration:
        """Builds a Calibration from the JSON document; raises `CalibrationError` naming
        ``source`` for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(
                f'{source}: not an owl calibration file (no "format": "{FORMAT}"); '
                "write one with `owl calibrate --data D --out FILE.json`"
            )
        if data.get("version") != VERSION:
            raise CalibrationError(
                f"{source}: calibration file version {data.get('version')!r}, this owl reads "
                f"version {VERSION}; write it again with `owl calibrate`"
            )
        queries = data.get("queries", {})
        if not isinstance(queries, dict):
            raise CalibrationError(f'{source}: "queries" must be an object of name -> params')
        contrast = data.get("contrast", [])
        if not isinstance(contrast, list):
            raise CalibrationError(f'{source}: "contrast" must be a list of names')
        try:
            return cls(
                method=data.get("method"),
                default=data.get("default"),
                queries={canonicalize(str(k)): v for k, v in queries.items()},
                contrast=tuple(contrast),
                model=data.get("model"),
                fit=data.get("fit") or {},
            )
        except (ValueError, TypeError, KeyError) as e:
            raise CalibrationError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Reads a calibration file; any problem is a `CalibrationError` naming the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CalibrationError(f"{path}: calibration file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise CalibrationError(f"{path}: cannot read the calibration file ({e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CalibrationError(
                f"{path}: not JSON (line {e.lineno}: {e.msg}); a calibration file is the JSON "
                "that `owl calibrate` writes"
            ) from None
        return cls.from_dict(data, str(path))

    @classmethod
    def for_model(cls, name: str) -> Calibration | None:
        """The calibration shipped for a registry model (``shapes-tiny``), else None."""
        if name != "shapes-tiny":
            return None
        return cls.load(SHIPPED[name])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_params(method: str, params: Any, what: str) -> None:
    if not isinstance(params, Mapping):
        raise ValueError(f"{what}: parameters must be an object, got {params!r}")
    if method == "platt":
        for key in ("a", "b", "c"):
            if key == "c" and key not in params:
                continue
            if not _finite(params.get(key)):
                raise ValueError(f"{what}: Platt parameter {key!r} must be a finite number")
        return
    x, y = params.get("x"), params.get("y")
    if not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y) or not x:
        raise ValueError(f"{what}: isotonic parameters need equal, non-empty lists 'x' and 'y'")
    if not all(_finite(v) for v in x + y):
        raise ValueError(f"{what}: isotonic breakpoints must be finite numbers")
    if any(b < a for a, b in zip(x, x[1:], strict=False)) or any(
        b < a for a, b in zip(y, y[1:], strict=False)
    ):
        raise ValueError(f"{what}: isotonic 'x' and 'y' must be non-decreasing")
    if min(y) < 0 or max(y) > 1:
        raise ValueError(f"{what}: isotonic 'y' must lie in [0, 1]")


def load_calibration(spec: Calibration | str | os.PathLike | None) -> Calibration | None:
    """A Calibration, a path to its file, or None -> a Calibration or None."""
    if spec is None or isinstance(spec, Calibration):
        return spec
    return Calibration.load(spec)


__all__ = [
    "ECE_BINS",
    "Calibration",
    "CalibrationError",
    "expected_calibration_error",
    "fit_isotonic",
    "fit_platt",
    "isotonic_apply",
    "fit_logistic",
    "load_calibration",
    "rival_margins",
]
