"""Training logs: metric averages (clu.metrics), a JSONL file, TensorBoard events, a progress bar.

* `MetricAverager` averages step metrics over a logging window with `clu.metrics.Average`.
* `MetricWriter` appends one JSON object per logged step to ``<workdir>/metrics.jsonl`` (flushed
  at once, so a killed run keeps every line it wrote) and writes the same scalars as TensorBoard
  event files under ``<workdir>/tensorboard/<split>`` with tensorboardX (no TensorFlow needed).
  On resume, lines after the restored step are dropped and TensorBoard is told to purge them, so
  the logs read as if the run had never stopped.
* `ProgressBar` shows step, loss terms, learning rate, images/s and the ETA on stderr.

Only process 0 writes logs; the others get writers that do nothing.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
from clu import metrics as clu_metrics

from owl.files import atomic_write

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


@functools.lru_cache(maxsize=16)
def _collection(names: tuple[str, ...]) -> tuple[type, Any]:
    """A clu `Collection` class averaging ``names``, and a jitted ``merge(collection, values)``."""
    cls = clu_metrics.Collection.create(**{n: clu_metrics.Average.from_output(n) for n in names})

    @jax.jit
    def merge(collection: Any, values: dict[str, jax.Array]) -> Any:
        return collection.merge(cls.single_from_model_output(**values))

    return cls, merge


class MetricAverager:
    """Averages named scalars over the steps since the last `compute` (clu `Average`).

    Accumulation is one jitted clu merge per step on the device (no host round trip); only
    `compute` reads values back.
    """

    def __init__(self) -> None:
        self._names: tuple[str, ...] | None = None
        self._state: Any = None

    def add(self, values: Mapping[str, Any]) -> None:
        """Adds one step's scalars (device or host); the names must stay the same in a window."""
        names = tuple(sorted(values))
        if self._names is not None and names != self._names:
            raise ValueError(f"metric names changed within a window: {self._names} -> {names}")
        cls, merge = _collection(names)
        if self._state is None:
            self._names, self._state = names, cls.empty()
        self._state = merge(self._state, {n: values[n] for n in names})

    def compute(self) -> dict[str, float]:
        """The averages, as Python floats; then starts a new window."""
        if self._state is None:
            return {}
        out = jax.device_get(self._state.compute())
        self._names, self._state = None, None
        return {name: float(np.asarray(value)) for name, value in out.items()}

    def __len__(self) -> int:
        """Number of metrics in the current window."""
        return 0 if self._names is None else len(self._names)


def truncate_jsonl(path: str | os.PathLike, max_step: int) -> None:
    """Drops lines whose "step" is above ``max_step`` (and a torn last line); atomic rewrite."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
        if int(record.get("step", 0)) <= max_step:
            keep.append(line)
    with atomic_write(path) as f:
        f.write("".join(line + "\n" for line in keep))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record of a metrics JSONL file."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class MetricWriter:
    """JSONL + TensorBoard scalar writer (a no-op when ``enabled`` is False).

    Args:
      workdir: the run folder.
      enabled: write anything at all (process 0 only).
      tensorboard: also write event files.
      resume_step: the step a resumed run restarts from; later log entries are dropped.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        enabled: bool = True,
        tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = enabled
        self.path = Path(workdir) / METRICS_FILE
        self._tb: dict[str, Any] = {}
        self._tb_root = Path(workdir) / TENSORBOARD_DIR if tensorboard else None
        self._purge = None if resume_step is None else resume_step + 1
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is not None:
                truncate_jsonl(self.path, resume_step)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, step: int, scalars: Mapping[str, float], split: str = "train") -> None:
        """Writes one record {"step", "split", **scalars}; non-finite values become strings."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": split}
        for name, value in scalars.items():
            value = float(value)
            record[name] = value if math.isfinite(value) else str(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        writer = self._writer(split)
        if writer is not None:
            for name, value in scalars.items():
                writer.add_scalar(name, float(value), global_step=int(step))

    def _writer(self, split: str) -> Any:
        if self._tb_root is None:
            return None
        if split not in self._tb:
            from tensorboardX import SummaryWriter

            self._tb[split] = SummaryWriter(
                str(self._tb_root / split), purge_step=self._purge, flush_secs=30
            )
        return self._tb[split]

    def flush(self) -> None:
        """Pushes buffered records to disk."""
        if self.enabled:
            self._file.flush()
            for writer in self._tb.values():
                writer.flush()

    def close(self) -> None:
        """Flushes and closes the files; later writes do nothing."""
        if self.enabled:
            self._file.close()
            for writer in self._tb.values():
                writer.close()
            self._tb = {}
            self.enabled = False


class ProgressBar:
    """A tqdm bar over the training steps with the latest averaged metrics as postfix.

    Args:
      total: last step.
      initial: first step (resume).
      enabled: show it at all.
    """

    SHOWN = {
        "loss": "loss",
        "loss_class": "cls",
        "loss_bbox": "l1",
        "loss_giou": "giou",
        "lr": "lr",
        "images_per_sec": "img/s",
    }

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="step", desc="train", dynamic_ncols=True
            )

    def update(self, n: int = 1) -> None:
        """Advances the bar by ``n`` steps."""
        if self._bar is not None:
            self._bar.update(n)

    def show(self, scalars: Mapping[str, float]) -> None:
        """Shows the loss terms, learning rate and images/s of ``scalars``."""
        if self._bar is None:
            return
        postfix = {}
        for key, label in self.SHOWN.items():
            if key in scalars:
                value = scalars[key]
                postfix[label] = f"{value:.3g}" if key == "lr" else f"{value:.4f}"
                if key == "images_per_sec":
                    postfix[label] = f"{value:.1f}"
        self._bar.set_postfix(postfix, refresh=False)

    def write(self, message: str) -> None:
        """Prints a line above the bar."""
        if self._bar is not None:
            self._bar.write(message)

    def close(self) -> None:
        """Removes the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
