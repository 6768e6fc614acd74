"""Stopping rules: the cosine-distance criterion (CDC) without a validation set, and patience with one.

CDC (Vardasbi, de Rijke, Dehghani, "Intersection of Parallels as an Early Stopping Criterion",
CIKM 2022). Two parallel instances of a linear model, started from different random seeds, are
trained side by side. While they learn what generalises they turn towards the same direction and
the cosine distance between their weight vectors shrinks; once they fit the noise of what each
sees, they turn apart and it grows. The stopping point is where the distance stops shrinking and
starts to grow (the "intersection of parallels"); the model kept is the one of that step.

Here (docs/adapt.md says why):

* the "last layer" is the detector's last linear maps: the class head's projection into the query
  space (``class_head/Dense_0``), its ``logit_shift`` and ``logit_scale`` maps, and the box head's
  output layer (``obj_box_head/Dense_<last>``). The two instances are small linear heads on the
  trained model's current features (the backbone and the box head's hidden layers are shared,
  gradients stopped), so both read the same feature space and their weights are directly
  comparable: the paper's counterfactual weights are needed only when the two networks have
  different features;
* each instance learns from its own half of the training images (a fixed split by image), so
  what they share is the signal and what they fit apart is the noise of their halves; with the
  same examples in the same order the two linear fits are pulled to the same solution, noise
  included, and the distance can only shrink (tests/train/test_stopping.py shows both);
* the rule: the distance is smoothed with an exponential moving average; the step of its
  minimum is the pick; the run stops once the smoothed distance has stayed above ``(1 + tol)``
  times that minimum for ``patience`` consecutive steps (or at ``train.num_steps``).

Every function here is pure or a small state machine whose state is a JSON-able dict, so a resumed
run continues the rule exactly (`CDCRule.state_dict` / `from_state`).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def cosine_distance(a: Any, b: Any) -> jax.Array:
    """1 - cos(a, b) of two parameter trees, each flattened and concatenated into one vector.

    Args:
      a, b: trees of arrays with the same structure and shapes.

    Returns:
      A float32 scalar in [0, 2] (1 when either vector is zero).
    """
    va = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree_util.tree_leaves(a)])
    vb = jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree_util.tree_leaves(b)])
    denom = jnp.linalg.norm(va) * jnp.linalg.norm(vb)
    return jnp.where(denom > 0, 1.0 - jnp.dot(va, vb) / jnp.where(denom > 0, denom, 1.0), 1.0)


def instance_of(key: bytes | str | int, seed: int) -> int:
    """Which of the two CDC instances (0 or 1) learns from the example named ``key``.

    A fixed, seeded split by example (a hash), so each instance sees the same half of the data in
    every epoch, whatever the order or the batch.
    """
    data = key if isinstance(key, bytes) else str(key).encode()
    return zlib.crc32(data, zlib.crc32(str(int(seed)).encode())) & 1


@dataclasses.dataclass
class CDCRule:
    """The CDC stopping rule over a stream of (step, distance) values.

    Attributes:
      patience: consecutive steps the smoothed distance must stay above the threshold to stop.
      tol: relative rise over the minimum that counts as "growing" (0.02: 2% above).
      smoothing: EMA factor of the previous value (0: raw distances).
      min_steps: no stop before this step (the first steps of a fresh head are transient).
    """

    patience: int = 20
    tol: float = 0.02
    smoothing: float = 0.9
    min_steps: int = 0
    ema: float | None = None
    best: float = math.inf
    best_step: int = 0
    above: int = 0
    last_step: int = 0

    def update(self, step: int, distance: float) -> bool:
        """Feeds the distance after ``step``; returns True when the run should stop now."""
        d = float(distance)
        self.ema = d if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * d
        self.last_step = int(step)
        if self.ema < self.best:
            self.best, self.best_step, self.above = self.ema, int(step), 0
        elif self.ema > self.best * (1.0 + self.tol):
            self.above += 1
        else:
            self.above = 0
        return self.stopped

    @property
    def stopped(self) -> bool:
        """Whether the rule has fired."""
        return self.last_step >= self.min_steps and self.above >= self.patience

    @property
    def is_best(self) -> bool:
        """Whether the last update set a new minimum (the step to keep)."""
        return self.best_step == self.last_step and self.ema is not None

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state (settings and progress)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CDCRule:
        """The rule as `state_dict` saved it."""
        return cls(**dict(state))


def cdc_stop_step(
    distances: np.ndarray | list[float], rule: CDCRule | None = None, start_step: int = 1
) -> tuple[int, int]:
    """Runs ``rule`` over a distance curve: (picked step, step at which it stopped or the last).

    ``distances[i]`` belongs to step ``start_step + i``.
    """
    rule = rule or CDCRule()
    step = start_step - 1
    for i, d in enumerate(distances):
        step = start_step + i
        if rule.update(step, float(d)):
            break
    return rule.best_step, step


@dataclasses.dataclass
class Patience:
    """Ordinary early stopping on a validation metric: stop after ``patience`` evaluations
    without an improvement of more than ``min_delta``.

    Attributes:
      patience: evaluations without improvement before stopping (0: never stop).
      mode: "min" (a loss) or "max" (AP).
      min_delta: the smallest change that counts as an improvement.
    """

    patience: int = 0
    mode: str = "min"
    min_delta: float = 0.0
    best: float | None = None
    best_step: int = 0
    bad: int = 0

    def update(self, step: int, value: float) -> bool:
        """Feeds one evaluation; returns True when the run should stop."""
        v = float(value)
        better = (
            self.best is None
            or (self.mode == "min" and v < self.best - self.min_delta)
            or (self.mode == "max" and v > self.best + self.min_delta)
        )
        if better:
            self.best, self.best_step, self.bad = v, int(step), 0
        else:
            self.bad += 1
        return bool(self.patience) and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state."""
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Patience:
        """The rule as `state_dict` saved it."""
        return cls(**dict(state))
