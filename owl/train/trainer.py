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
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from owl.models.configs import ModelConfig, get_variant
from owl.models.owl_vit import OwlViT, param_shapes
from owl.train import init as init_lib
from owl.train import optim
from owl.train.checkpointing import Checkpointer, refuse_unless_resuming
from owl.train.logging import MetricAverager, MetricWriter, ProgressBar
from owl.train.step import (
    LossConfig,
    TrainState,
    dedup_queries,
    make_eval_step,
    make_train_step,
)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
DATA_AXIS = "data"
_log = logging.getLogger("owl.train")
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "OWL_COORDINATOR",
    "OWL_NUM_PROCESSES",
    "OWL_PROCESS_ID",
)


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------------------------
# Setup.


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Starts multi-process JAX when asked to, from arguments or OWL_* environment variables.

    Args:
      coordinator: "host:port" of process 0 (else $OWL_COORDINATOR).
      num_processes: number of processes (else $OWL_NUM_PROCESSES).
      process_id: this process's index (else $OWL_PROCESS_ID).

    Returns:
      Whether `jax.distributed.initialize` was called (False for a single-process run).

    Raises:
      TrainingError: only some of the three values are given.
    """
    env = os.environ
    coordinator = coordinator or env.get(ENV_COORDINATOR) or None
    if num_processes is None and env.get(ENV_NUM_PROCESSES):
        num_processes = int(env[ENV_NUM_PROCESSES])
    if process_id is None and env.get(ENV_PROCESS_ID):
        process_id = int(env[ENV_PROCESS_ID])
    given = [v is not None for v in (coordinator, num_processes, process_id)]
    if not any(given) or (num_processes == 1 and coordinator is None):
        return False
    if not all(given):
        raise TrainingError(
            "multi-process training needs the coordinator address, the process count and the "
            f"process id (flags or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID})"
        )
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    return True


def model_config_from(config: ml_collections.ConfigDict) -> ModelConfig:
    """The architecture: ``model.variant`` with ``model.image_size`` (0: the variant's)."""
    base = get_variant(config.model.variant)
    size = int(config.model.get("image_size", 0) or 0)
    return base.replace(image_size=size) if size and size != base.image_size else base


def make_mesh() -> Mesh:
    """A 1-D mesh named "data" over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def loss_config_from(config: ml_collections.ConfigDict) -> LossConfig:
    """`LossConfig` from ``config.loss``."""
    fields = {f.name for f in dataclasses.fields(LossConfig)}
    return LossConfig(**{k: float(v) for k, v in config.loss.items() if k in fields})


def _optim_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
    o = config.optim
    return dict(
        lr=float(o.lr),
        text_lr=float(o.text_lr),
        total_steps=int(config.train.num_steps),
        warmup_steps=int(o.warmup_steps),
        freeze_text=bool(o.freeze_text),
        clip=str(o.clip),
        clip_norm=float(o.clip_norm),
        b1=float(o.b1),
        b2=float(o.b2),
        eps=float(o.eps),
        text_regex=str(o.text_regex),
    )


def check_config(config: ml_collections.ConfigDict) -> None:
    """Checks values the loop depends on; raises `TrainingError` naming the key."""
    t = config.train
    problems = []
    for key in ("num_steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints"):
        if int(t[key]) < 1:
            problems.append(f"train.{key} must be >= 1 (got {t[key]})")
    if int(t.batch_size) % jax.device_count():
        problems.append(
            f"train.batch_size {t.batch_size} must be a multiple of the {jax.device_count()} "
            "devices (one share per device)"
        )
    warmup = int(config.optim.warmup_steps)
    if warmup < 0 or (warmup and warmup >= int(t.num_steps)):
        problems.append(
            f"optim.warmup_steps ({warmup}) must be >= 0 and below train.num_steps ({t.num_steps})"
        )
    if t.get("dedup_queries", False):
        if config.optim.clip == "per_example":
            problems.append(
                "train.dedup_queries shares one text encoding between the examples of a step, "
                "so it needs optim.clip 'global' or 'none' (not 'per_example')"
            )
        if float(config.model.text_drop_path):
            problems.append(
                "train.dedup_queries encodes the texts once per step, without stochastic "
                "depth: set model.text_drop_path = 0"
            )
    if config.optim.clip not in optim.CLIP_MODES:
        problems.append(f"optim.clip must be one of {', '.join(optim.CLIP_MODES)}")
    if problems:
        raise TrainingError("bad config: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------------
# Data.


def build_loaders(
    config: ml_collections.ConfigDict, model_config: ModelConfig
) -> tuple[Iterable[Mapping[str, np.ndarray]], Iterable[Mapping[str, np.ndarray]] | None]:
    """(train loader, validation loader or None) for this process, per ``data.kind``.

    Both yield this process's rows of each global batch (the training batch contract). The
    validation loader is a fixed, deterministic stream (no mosaics) of ``eval.num_batches``
    batches (0: one pass over the validation set).
    """
    d, pid, count = config.data, jax.process_index(), jax.process_count()
    common = dict(
        image_size=model_config.image_size,
        pad_value=model_config.pad_value,
        max_queries=int(d.max_queries),
        max_instances=int(d.max_instances),
        process_index=pid,
        process_count=count,
    )
    eval_batches = int(config.eval.num_batches) or None
    if d.kind == "synthetic":
        from owl.data.synthetic import SyntheticLoader

        kw = dict(common, max_boxes=int(d.synthetic_max_boxes))
        train = SyntheticLoader(
            num_examples=int(d.synthetic_examples),
            seed=int(d.seed),
            global_batch_size=int(config.train.batch_size),
            **kw,
        )
        val = None
        if int(config.eval.every):
            val = SyntheticLoader(
                num_examples=int(d.synthetic_examples),
                seed=int(d.seed) + 1,
                global_batch_size=int(config.eval.batch_size),
                num_batches=eval_batches or 1,
                **kw,
            )
        return train, val
    if d.kind != "coco":
        raise TrainingError(f"data.kind must be 'coco' or 'synthetic', got {d.kind!r}")
    from owl.data.formats import load_dataset
    from owl.data.pipeline import build_train_loader

    if not d.train_annotations:
        raise TrainingError(
            "data.train_annotations and data.train_images must name the training set "
            "(--set data.train_annotations=PATH.json --set data.train_images=DIR)"
        )
    removed = tuple(d.remove_categories)
    loader_kw = dict(common, num_negatives=int(d.num_negatives), worker_count=int(d.workers))
    train_set, line = load_dataset(
        d.train_annotations, d.train_images or None, format=str(d.get("format", "auto")),
        remove_categories=removed, min_score=float(d.get("min_score", 0.0)), log=pid == 0,
    )  # fmt: skip
    if pid == 0:
        print(line, file=sys.stderr)
    train = build_train_loader(
        train_set,
        seed=int(d.seed),
        global_batch_size=int(config.train.batch_size),
        mosaic_sizes=tuple(d.mosaic_sizes),
        mosaic_probs=tuple(d.mosaic_probs),
        prompt_templates=tuple(d.get("prompt_templates", ())),
        crop_area_range=tuple(d.get("crop_area_range", (0.3, 1.0))),
        **loader_kw,
    )
    val = None
    if d.eval_annotations and int(config.eval.every):
        val_set, _ = load_dataset(
            d.eval_annotations, d.eval_images or d.train_images or None,
            format=str(d.get("format", "auto")), split="val", log=pid == 0,
        )  # fmt: skip
        val = build_train_loader(
            val_set,
            seed=0,
            global_batch_size=int(config.eval.batch_size),
            mosaic_sizes=(1,),
            mosaic_probs=(1.0,),
            num_epochs=1,
            **loader_kw,
        )
        if eval_batches:
            val = _Take(val, eval_batches)
    return train, val


class _Take:
    """The first ``n`` batches of an iterable, every time it is iterated."""

    def __init__(self, iterable: Iterable[Any], n: int) -> None:
        self._iterable, self._n = iterable, n

    def __iter__(self) -> Iterator[Any]:
        for i, item in enumerate(self._iterable):
            if i >= self._n:
                return
            yield item


def global_batch(local: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded on the data axis."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()
    }


# ----------------------------------------------------------------------------------------------
# State and compiled steps.


@dataclasses.dataclass(frozen=True)
class _StepSpec:
    """Everything the compiled steps depend on (hashable, so compiled steps are reused)."""

    model: ModelConfig
    vision_drop_path: float
    text_drop_path: float
    loss: LossConfig
    optim: tuple[tuple[str, Any], ...]
    process_count: int


@functools.lru_cache(maxsize=8)
def _compiled_steps(spec: _StepSpec, mesh: Mesh) -> tuple[Any, Any, Any, Any]:
    """(optimizer, jitted train step, jitted eval step, trainable mask) for ``spec``."""
    kw = dict(spec.optim)
    optimizer = optim.make_optimizer(**kw)
    mask = optim.trainable_mask(
        abstract_params(spec.model), freeze_text=kw["freeze_text"], text_regex=kw["text_regex"]
    )
    module = OwlViT(spec.model, spec.vision_drop_path, spec.text_drop_path)
    schedules = optim.learning_rates(
        lr=kw["lr"],
        text_lr=kw["text_lr"],
        total_steps=kw["total_steps"],
        warmup_steps=kw["warmup_steps"],
        freeze_text=kw["freeze_text"],
    )
    train_step = make_train_step(
        module,
        optimizer,
        loss_config=spec.loss,
        mask=mask,
        clip=kw["clip"],
        clip_norm=kw["clip_norm"],
        process_count=spec.process_count,
        mesh=mesh,
        axis=DATA_AXIS,
        schedules=schedules,
    )
    eval_step = make_eval_step(OwlViT(spec.model), loss_config=spec.loss)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    train_jit = jax.jit(
        train_step,
        in_shardings=(replicated, data),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
    eval_jit = jax.jit(eval_step, in_shardings=(replicated, data), out_shardings=replicated)
    return optimizer, train_jit, eval_jit, mask


def _replicate(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays (equal on every process) -> global arrays replicated over the mesh."""

    def put(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree)


def to_host(tree: Any) -> Any:
    """Replicated global arrays -> numpy (this process's copy)."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), tree)


def create_train_state(
    config: ml_collections.ConfigDict, model_config: ModelConfig, optimizer: Any
) -> TrainState:
    """A fresh host-side state: initial parameters (`owl.train.init`), optimiser state, RNG."""
    seed = int(config.train.seed)
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    params = init_lib.initial_params(
        mode=config.init.mode, source=config.init.source, config=model_config, rng=init_key
    )
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    opt_state = jax.device_get(optimizer.init(params))
    return TrainState(step=np.int32(0), params=params, opt_state=opt_state, rng=np.asarray(run_key))


def abstract_params(model_config: ModelConfig) -> Any:
    """The parameter tree as float32 `jax.ShapeDtypeStruct`s."""
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s, jnp.float32),
        param_shapes(model_config),
        is_leaf=lambda x: isinstance(x, tuple),
    )


def abstract_train_state(
    model_config: ModelConfig, optimizer: Any, sharding: NamedSharding
) -> TrainState:
    """Shapes, dtypes and shardings of a `TrainState` (the restore target; no FLOPs)."""
    params = abstract_params(model_config)
    state = jax.eval_shape(
        lambda p: TrainState(
            step=jnp.int32(0),
            params=p,
            opt_state=optimizer.init(p),
            rng=jax.random.PRNGKey(0),
        ),
        params,
    )
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
    )


# ----------------------------------------------------------------------------------------------
# Evaluation.


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


# ----------------------------------------------------------------------------------------------
# The loop.


_INSTANT = ("lr", "text_lr")  # logged as their value at the step, not averaged


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
    workdir = Path(workdir).absolute()
    check_config(config)
    t = config.train
    num_steps, batch_size = int(t.num_steps), int(t.batch_size)
    is_main = jax.process_index() == 0
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

    checkpoints = Checkpointer(
        workdir / CHECKPOINT_DIR,
        max_to_keep=int(t.keep_checkpoints),
        async_save=bool(t.get("async_checkpoints", True)),
    )
    latest = refuse_unless_resuming(checkpoints, workdir, resume, TrainingError)
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")

    if train_loader is None or (eval_loader is None and int(config.eval.every)):
        own_train, own_eval = build_loaders(config, model_config)
        train_loader = own_train if train_loader is None else train_loader
        eval_loader = own_eval if eval_loader is None else eval_loader
    train_iter = iter(train_loader)

    if resume and latest is None:
        _log.warning("--resume: no checkpoint in %s; starting from step 0", checkpoints.directory)
    if latest is not None:
        _log.warning("resuming from step %d of %s", latest, checkpoints.directory)
        abstract = abstract_train_state(model_config, optimizer, replicated)
        state, data_state = checkpoints.restore(latest, abstract)
        train_iter.set_state(data_state)
        start = int(to_host(state.step))
    else:
        state = _replicate(create_train_state(config, model_config, optimizer), replicated)
        start = 0

    writer = MetricWriter(
        workdir,
        enabled=is_main,
        tensorboard=bool(t.get("tensorboard", True)),
        resume_step=start if latest is not None else None,
    )
    bar = ProgressBar(num_steps, start, enabled=is_main and bool(t.get("progress_bar", True)))
    averager = MetricAverager()
    eval_every = int(config.eval.every)
    log_every, ckpt_every = int(t.log_every), int(t.checkpoint_every)
    window = {"start": time.perf_counter(), "steps": 0}

    def record(step: int, metrics: Mapping[str, Any]) -> None:
        """Checks the step's loss, accumulates its metrics and writes a log record when due."""
        if not math.isfinite(float(metrics["loss"])):
            _stop_non_finite(step, metrics, checkpoints)
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
    try:
        for step in range(start + 1, num_steps + 1):
            try:
                local = next(train_iter)
            except StopIteration:
                raise TrainingError(
                    f"the training data ran out at step {step} of {num_steps}"
                ) from None
            if dedup:
                local = dict(local)
                local["query_table"], local["query_index"] = dedup_queries(
                    np.asarray(local.pop("queries")), jax.local_device_count()
                )
            state, metrics = train_step(state, global_batch(local, data_sharding))
            if pending is not None:
                record(*pending)
            pending = (step, metrics)
            if step % ckpt_every == 0 or step == num_steps:
                record(*pending)
                pending = None
                checkpoints.save(step, state, train_iter.get_state())
            if eval_every and (step % eval_every == 0 or step == num_steps):
                if pending is not None:
                    record(*pending)
                    pending = None
                _evaluate(
                    step,
                    state,
                    eval_loader,
                    eval_step,
                    data_sharding,
                    model_config,
                    config,
                    workdir,
                    writer,
                    bar,
                )
        if pending is not None:
            record(*pending)
        checkpoints.wait()
        if is_main:
            from owl.checkpoints.owl_format import save_owl

            save_owl(workdir / MODEL_FILE, model_config, to_host(state.params))
            writer.flush()
            write_training_plot(workdir)
    finally:
        bar.close()
        writer.close()
        checkpoints.close()
    return state


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
) -> None:
    """Validation loss on ``loader`` and, with COCO-format validation data, AP (process 0)."""
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


def write_training_plot(workdir: Path) -> None:
    """``<workdir>/training.png``: loss terms, LR and eval AP so far (`owl.plots`)."""
    from owl.plots import training_plot_of_run

    training_plot_of_run(workdir)
