"""The training loop: `train_and_evaluate(config, workdir, resume=...)`, the one entry point.

A run is a row of small steps (flax-examples style):

1. `model_config_from` / `make_mesh`: the architecture and a 1-D device mesh named "data" over
   every device of every process (data parallelism: the batch is sharded on "data", parameters
   and optimiser state are replicated; `jax.jit` with `NamedSharding` inserts the all-reduce).
2. `build_loaders`: this process's share of each global batch (`owl.data.pipeline` for COCO/LVIS
   data, `owl.data.synthetic` for smoke tests), plus an optional validation loader.
3. A fresh `TrainState` (`owl.train.init`) or, with ``resume``, the latest checkpoint: step,
   parameters, optimiser state, RNG key and the loader position (`owl.train.checkpointing`).
4. The loop: jitted train step (`owl.train.step`), metrics averaged and logged every
   ``train.log_every`` steps (JSONL, TensorBoard, progress bar), a checkpoint every
   ``train.checkpoint_every`` steps, validation loss (and AP through `owl.eval`) every
   ``eval.every`` steps. A non-finite loss stops the run with `NonFiniteLossError` before any
   checkpoint holds the bad state.
5. The final parameters in owl's own format: ``<workdir>/model.safetensors`` (`owl.load`,
   `owl detect --model`).

Workdir: config.json, metrics.jsonl, training.png (curves, redrawn at each eval and at the end),
tensorboard/{train,eval}/, checkpoints/<step>/,
eval/step_<n>/ (AP predictions), model.safetensors.

Multi-host: call `initialize_distributed` first (the `owl train` CLI does); every process runs
the same program on its own data shard; only process 0 writes logs and the final model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from owl.models.owl_vit import OwlViT
from owl.train.checkpointing import (
    Checkpointer,
    decode_data_state,
    encode_data_state,
    refuse_unless_resuming,
)
from owl.train.evaluation import _evaluate, evaluate_ap, evaluate_loss, write_training_plot
from owl.train.loaders import _Take, build_loaders, global_batch
from owl.train.logging import MetricAverager, MetricWriter, ProgressBar
from owl.train.setup import (
    DATA_AXIS,
    ENV_COORDINATOR,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    NonFiniteLossError,
    TrainingError,
    _optim_kwargs,
    check_config,
    initialize_distributed,
    loss_config_from,
    make_mesh,
    model_config_from,
)
from owl.train.state import (
    _compiled_steps,
    _replicate,
    _StepSpec,
    abstract_params,
    abstract_train_state,
    create_train_state,
    start_params,
    to_host,
)
from owl.train.step import TrainState, dedup_queries
from owl.train.stopping import Patience

__all__ = [  # the loop, and the phases' names it has always offered
    "CHECKPOINT_DIR", "CONFIG_FILE", "DATA_AXIS", "ENV_COORDINATOR", "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID", "MODEL_FILE", "NonFiniteLossError", "TrainingError", "_StepSpec", "_Take",
    "_compiled_steps", "_evaluate", "_optim_kwargs", "_replicate", "abstract_params",
    "abstract_train_state", "build_loaders", "check_config", "create_train_state",
    "evaluate_ap", "evaluate_loss", "global_batch", "initialize_distributed", "loss_config_from",
    "make_mesh", "model_config_from", "to_host", "train_and_evaluate", "write_training_plot",
]  # fmt: skip

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
_log = logging.getLogger("owl.train")


_INSTANT = ("lr", "text_lr")  # logged as their value at the step, not averaged
LAST_MODEL_FILE = (
    "model_last.safetensors"  # with CDC: the last step's model (MODEL_FILE: CDC's pick)
)


def _stop_non_finite(step: int, metrics: Mapping[str, Any], checkpoints: Checkpointer) -> None:
    """Raises `NonFiniteLossError` after pending checkpoint writes are done."""
    checkpoints.wait()
    good = checkpoints.latest_step()
    kept = (
        f"the last good checkpoint is step {good} in {checkpoints.directory}"
        if good is not None
        else "no checkpoint was written yet"
    )
    terms = ", ".join(f"{k}={float(metrics[k])}" for k in ("loss_class", "loss_bbox", "loss_giou"))
    raise NonFiniteLossError(
        f"the loss became {float(metrics['loss'])} at step {step} ({terms}); stopping. {kept}. "
        "Lower optim.lr or check the data (boxes, labels), then continue with --resume"
    )


@dataclasses.dataclass
class _Run:
    """What the loop of one run works with (built by `_prepare`)."""

    config: ml_collections.ConfigDict
    workdir: Path
    model_config: Any
    spec: _StepSpec
    train_step: Any
    eval_step: Any
    data_sharding: NamedSharding
    replicated: NamedSharding
    checkpoints: Checkpointer
    train_iter: Any
    eval_loader: Iterable[Mapping[str, np.ndarray]] | None
    state: TrainState
    start: int
    resumed: bool
    cdc: Any  # owl.train.cdc.CDCMonitor or None
    patience: Patience


def _prepare(
    config: ml_collections.ConfigDict,
    workdir: Path,
    resume: bool,
    train_loader: Iterable[Mapping[str, np.ndarray]] | None,
    eval_loader: Iterable[Mapping[str, np.ndarray]] | None,
) -> _Run:
    """Phases 1-3: the architecture, the compiled steps, the loaders and the (restored) state."""
    check_config(config)
    model_config = model_config_from(config)
    mesh = make_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    data_sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    spec = _StepSpec(
        model=model_config,
        vision_drop_path=float(config.model.vision_drop_path),
        text_drop_path=float(config.model.text_drop_path),
        loss=loss_config_from(config),
        optim=tuple(sorted(_optim_kwargs(config).items())),
        process_count=jax.process_count(),
    )
    optimizer, train_step, eval_step, _ = _compiled_steps(spec, mesh)
    t = config.train
    checkpoints = Checkpointer(
        workdir / CHECKPOINT_DIR,
        max_to_keep=int(t.keep_checkpoints),
        async_save=bool(t.get("async_checkpoints", True)),
    )
    latest = refuse_unless_resuming(checkpoints, workdir, resume, TrainingError)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")

    if train_loader is None or (eval_loader is None and int(config.eval.every)):
        own_train, own_eval = build_loaders(config, model_config)
        train_loader = own_train if train_loader is None else train_loader
        eval_loader = own_eval if eval_loader is None else eval_loader
    train_iter = iter(train_loader)

    cdc = None
    fresh = None
    if _cdc_enabled(config) or latest is None:
        fresh = _replicate(create_train_state(config, model_config, optimizer), replicated)
    if _cdc_enabled(config):
        from owl.train.cdc import CDCMonitor

        cdc = CDCMonitor(
            config, OwlViT(model_config), spec.loss, model_config, fresh.params, replicated
        )
    patience = Patience(patience=int(config.eval.get("patience", 0)), mode="min")
    if resume and latest is None:
        _log.warning("--resume: no checkpoint in %s; starting from step 0", checkpoints.directory)
    if latest is not None:
        _log.warning("resuming from step %d of %s", latest, checkpoints.directory)
        abstract = abstract_train_state(model_config, optimizer, replicated)
        if cdc is not None:
            abstract = {"train": abstract, "cdc": cdc.abstract()}
        restored, data_state = checkpoints.restore(latest, abstract)
        state = restored
        if isinstance(data_state, dict) and "loader" in data_state:  # saved with the rules
            if cdc is not None:
                cdc.restore(restored["cdc"], data_state["cdc_rule"])
            patience = Patience.from_state(data_state["patience"])
            data_state = decode_data_state(data_state["loader"])
        if cdc is not None:
            state = restored["train"]
        train_iter.set_state(data_state)
        start = int(to_host(state.step))
    else:
        state, start = fresh, 0
    return _Run(
        config, workdir, model_config, spec, train_step, eval_step, data_sharding, replicated,
        checkpoints, train_iter, eval_loader, state, start, latest is not None, cdc, patience,
    )  # fmt: skip


def _cdc_enabled(config: ml_collections.ConfigDict) -> bool:
    return "cdc" in config and bool(config.cdc.enabled)


def _save_checkpoint(run: _Run, step: int) -> None:
    """The train state (with CDC: and its instances) and the loader and rule states."""
    data = run.train_iter.get_state()
    tree: Any = run.state
    if run.cdc is not None or run.patience.patience:
        data = {
            "loader": encode_data_state(data),
            "cdc_rule": run.cdc.rule.state_dict() if run.cdc is not None else None,
            "patience": run.patience.state_dict(),
        }
    if run.cdc is not None:
        tree = {"train": run.state, "cdc": run.cdc.state}
    run.checkpoints.save(step, tree, data)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    resume: bool = False,
    train_loader: Iterable[Mapping[str, np.ndarray]] | None = None,
    eval_loader: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> TrainState:
    """Trains a detector as ``config`` says and writes everything into ``workdir``.

    Args:
      config: a training config (see configs/finetune_owlvit_b32.py for every key).
      workdir: the run folder; it must hold no checkpoints unless ``resume``.
      resume: continue from the latest checkpoint in ``workdir`` (none: start fresh).
      train_loader: this process's batches instead of the config's ``data`` (an iterable whose
        iterator has ``get_state``/``set_state``; process p's row j of batch k must be global
        stream position ``k * G + j * P + p`` for exact multi-process equivalence).
      eval_loader: validation batches instead of the config's.

    Returns:
      The final `TrainState` (global arrays).

    Raises:
      TrainingError: a bad config, or checkpoints in ``workdir`` without ``resume``.
      NonFiniteLossError: the loss became NaN or infinite (last good checkpoint kept).
      CheckpointWriteError: a checkpoint could not be written (the previous one is kept).
    """
    run = _prepare(config, Path(workdir).absolute(), resume, train_loader, eval_loader)
    t = config.train
    is_main = jax.process_index() == 0
    writer = MetricWriter(
        run.workdir,
        enabled=is_main,
        tensorboard=bool(t.get("tensorboard", True)),
        resume_step=run.start if run.resumed else None,
    )
    bar = ProgressBar(
        int(t.num_steps), run.start, enabled=is_main and bool(t.get("progress_bar", True))
    )
    try:
        last = _loop(run, writer, bar)
        run.checkpoints.wait()
        if is_main:
            _write_models(run, last)
            writer.flush()
            write_training_plot(run.workdir)
    finally:
        bar.close()
        writer.close()
        run.checkpoints.close()
    return run.state


def _loop(run: _Run, writer: MetricWriter, bar: ProgressBar) -> int:
    """Phase 4: the steps, with logging, checkpoints, evaluation and the stopping rules.

    Returns:
      The last step done (``train.num_steps``, or where a stopping rule fired).
    """
    config, t = run.config, run.config.train
    num_steps, batch_size = int(t.num_steps), int(t.batch_size)
    averager = MetricAverager()
    eval_every = int(config.eval.every)
    log_every, ckpt_every = int(t.log_every), int(t.checkpoint_every)
    window = {"start": time.perf_counter(), "steps": 0}

    def record(step: int, metrics: Mapping[str, Any]) -> None:
        """Checks the step's loss, accumulates its metrics and writes a log record when due."""
        if not math.isfinite(float(metrics["loss"])):
            _stop_non_finite(step, metrics, run.checkpoints)
        averaged = {k: v for k, v in metrics.items() if k not in _INSTANT}
        averager.add(averaged)
        bar.update(1)
        window["steps"] += 1
        if step % log_every == 0 or step == num_steps:
            scalars = averager.compute()
            elapsed = time.perf_counter() - window["start"]
            scalars["images_per_sec"] = window["steps"] * batch_size / max(elapsed, 1e-9)
            scalars.update({k: float(metrics[k]) for k in _INSTANT if k in metrics})
            writer.write(step, scalars)
            bar.show(scalars)
            window.update(start=time.perf_counter(), steps=0)

    dedup = bool(t.get("dedup_queries", False))
    pending: tuple[int, Any] | None = None
    last = run.start
    if (run.cdc is not None and run.cdc.rule.stopped) or (
        run.patience.patience and run.patience.bad >= run.patience.patience
    ):
        return last  # a resumed run whose rule had already fired
    for step in range(run.start + 1, num_steps + 1):
        try:
            local = next(run.train_iter)
        except StopIteration:
            raise TrainingError(
                f"the training data ran out at step {step} of {num_steps}"
            ) from None
        raw = local
        if dedup:
            local = dict(local)
            local["query_table"], local["query_index"] = dedup_queries(
                np.asarray(local.pop("queries")), jax.local_device_count()
            )
        run.state, metrics = run.train_step(run.state, global_batch(local, run.data_sharding))
        last = step
        stop = False
        if run.cdc is not None:
            put = functools.partial(global_batch, sharding=run.data_sharding)
            distance = run.cdc.update(step, run.state.params, raw, put)
            writer.write(
                step,
                {"cdc_distance": distance, "cdc_smoothed": float(run.cdc.rule.ema)},
                split="cdc",
            )
            stop = run.cdc.rule.stopped
        if pending is not None:
            record(*pending)
        pending = (step, metrics)
        if eval_every and (step % eval_every == 0 or step == num_steps):
            record(*pending)
            pending = None
            scalars = _evaluate(
                step, run.state, run.eval_loader, run.eval_step, run.data_sharding,
                run.model_config, config, run.workdir, writer, bar,
            )  # fmt: skip
            if run.patience.patience and "loss" in (scalars or {}):
                stop = run.patience.update(step, scalars["loss"]) or stop
        if step % ckpt_every == 0 or step == num_steps or stop:
            if pending is not None:
                record(*pending)
                pending = None
            _save_checkpoint(run, step)
        if stop:
            bar.write(f"step {step}: early stop ({_stop_reason(run)})")
            break
    if pending is not None:
        record(*pending)
    return last


def _stop_reason(run: _Run) -> str:
    if run.cdc is not None and run.cdc.rule.stopped:
        r = run.cdc.rule
        return f"CDC: the distance grew {r.patience} steps past its minimum at step {r.best_step}"
    return f"no validation improvement in {run.patience.patience} evaluations"


def _write_models(run: _Run, last: int) -> None:
    """Phase 5: MODEL_FILE (CDC's pick when CDC is on), ensembled with the start if asked."""
    from owl.checkpoints.owl_format import save_owl

    weight = float(run.config.train.get("ensemble_weight", 1.0))
    final = to_host(run.state.params)
    chosen = final
    if run.cdc is not None:
        save_owl(run.workdir / LAST_MODEL_FILE, run.model_config, final)
        chosen = to_host(run.cdc.state.best_params)
        summary = {"cdc_step": run.cdc.rule.best_step, "last_step": last}
        (run.workdir / "stopping.json").write_text(json.dumps(summary) + "\n")
    if weight != 1.0:
        from owl.train.ensemble import average_params

        start = start_params(run.config, run.model_config)
        chosen = average_params(start, chosen, weight)
    save_owl(run.workdir / MODEL_FILE, run.model_config, chosen)
