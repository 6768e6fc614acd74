"""Training setup: multi-process start, the architecture, the mesh, the loss and optimiser settings,
config checks, and the errors the loop raises (phase 1 of `owl.train.trainer`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from owl.models.configs import ModelConfig, get_variant
from owl.train import optim
from owl.train.step import LossConfig

DATA_AXIS = "data"
ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID = (
    "OWL_COORDINATOR",
    "OWL_NUM_PROCESSES",
    "OWL_PROCESS_ID",
)


class TrainingError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
        freeze_regex=str(o.get("freeze_regex", "")),
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
