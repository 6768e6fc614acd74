"""The train state (fresh, abstract for restores, replicated) and the compiled steps
(phase 3 of `owl.train.trainer`)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from owl.models.configs import ModelConfig
from owl.models.owl_vit import OwlViT, param_shapes
from owl.train import init as init_lib
from owl.train import optim
from owl.train.setup import DATA_AXIS
from owl.train.step import LossConfig, TrainState, make_eval_step, make_train_step


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
    freeze_regex = kw.get("freeze_regex", "")
    optimizer = optim.make_optimizer(**kw)
    mask = optim.trainable_mask(
        abstract_params(spec.model),
        freeze_text=kw["freeze_text"],
        text_regex=kw["text_regex"],
        freeze_regex=freeze_regex,
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
    params = start_params(config, model_config)
    run_key = jax.random.split(jax.random.PRNGKey(int(config.train.seed)))[1]
    opt_state = jax.device_get(optimizer.init(params))
    return TrainState(step=np.int32(0), params=params, opt_state=opt_state, rng=np.asarray(run_key))


def start_params(config: ml_collections.ConfigDict, model_config: ModelConfig) -> Any:
    """The run's initial parameters as float32 host arrays (``init.*``, seeded by train.seed)."""
    init_key = jax.random.split(jax.random.PRNGKey(int(config.train.seed)))[0]
    params = init_lib.initial_params(
        mode=config.init.mode, source=config.init.source, config=model_config, rng=init_key
    )
    return jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)


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
