"""Evaluation during training: validation loss, AP through owl eval's code, the training plot
(phase 5 of `owl.train.trainer`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from owl.models.configs import ModelConfig
from owl.train.loaders import global_batch
from owl.train.logging import MetricAverager, MetricWriter, ProgressBar
from owl.train.state import to_host
from owl.train.step import TrainState


def evaluate_loss(
    eval_step: Any, params: Any, loader: Iterable[Mapping[str, np.ndarray]], sharding: Any
) -> dict[str, float]:
    """Validation losses averaged over the loader's batches."""
    averager = MetricAverager()
    for local in loader:
        metrics = eval_step(params, global_batch(local, sharding))
        averager.add(jax.device_get(metrics))
    return averager.compute() if len(averager) else {}


def evaluate_ap(
    params: Any,
    model_config: ModelConfig,
    config: ml_collections.ConfigDict,
    output_dir: Path,
) -> dict[str, float]:
    """AP of ``params`` on the validation set through owl eval's code (this process only).

    Predicts ``eval.ap_max_images`` images of ``data.eval_annotations`` with the prompt ensemble
    into ``output_dir`` and scores them (`owl.eval.evaluation.evaluate`).

    Returns:
      {"AP": ..., "AP50": ..., ...} (the metrics' "stats").
    """
    from owl.eval.evaluation import evaluate
    from owl.inference.detector import Detector
    from owl.models.model import OwlModel

    e, d = config.eval, config.data
    model = OwlModel(model_config, params, source="training")
    detector = Detector(model, batch_size=int(e.batch_size), resize_method=e.ap_resize)
    result = evaluate(
        detector,
        d.eval_annotations,
        d.eval_images or d.train_images,
        output_dir,
        prompts=e.ap_prompts,
        top_k=int(e.ap_top_k),
        max_images=int(e.ap_max_images) or None,
        overwrite=True,
    )
    return result.stats


def _evaluate(
    step: int,
    state: TrainState,
    loader: Iterable[Mapping[str, np.ndarray]] | None,
    eval_step: Any,
    sharding: NamedSharding,
    model_config: ModelConfig,
    config: ml_collections.ConfigDict,
    workdir: Path,
    writer: MetricWriter,
    bar: ProgressBar,
) -> dict[str, float]:
    """Validation loss on ``loader`` and, with COCO-format validation data, AP (process 0).

    Returns the logged scalars ({} when there was nothing to evaluate)."""
    scalars: dict[str, float] = {}
    if loader is not None:
        scalars.update(evaluate_loss(eval_step, state.params, loader, sharding))
    wants_ap = bool(config.eval.ap) and config.data.kind == "coco" and config.data.eval_annotations
    if wants_ap and jax.process_index() == 0:
        out = workdir / "eval" / f"step_{step}"
        scalars.update(evaluate_ap(to_host(state.params), model_config, config, out))
    if scalars:
        writer.write(step, scalars, split="eval")
        bar.write(f"step {step} eval: " + json.dumps({k: round(v, 4) for k, v in scalars.items()}))
    if writer.enabled:
        write_training_plot(workdir)
    return scalars


def write_training_plot(workdir: Path) -> None:
    """``<workdir>/training.png``: loss terms, LR and eval AP so far (`owl.plots`)."""
    from owl.plots import training_plot_of_run

    training_plot_of_run(workdir)
