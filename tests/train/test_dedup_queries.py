"""Tests for `train.dedup_queries`: each distinct query text is encoded once per step and device,
and the step computes the same losses and updates as encoding every query row."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from owl.data.synthetic import make_example
from owl.train import trainer
from owl.train.config import load_config
from owl.train.step import dedup_queries

TINY = Path(__file__).resolve().parents[2] / "owl" / "configs" / "train_tiny.py"


def test_table_and_index_rebuild_every_shards_queries():
    rng = np.random.default_rng(0)
    vocab = rng.integers(1, 500, (5, 16)).astype(np.int32)
    vocab[:, 6:] = 0
    queries = vocab[rng.integers(0, 5, (6, 4))]  # [B=6, Q=4, 16] from 5 texts
    queries[:, -1] = 0  # a padding row in every example
    table, index = dedup_queries(queries, num_shards=3)
    size = len(table) // 3
    assert size == 8 and table.shape == (24, 16) and index.shape == (6, 4)
    for shard in range(3):
        rows = slice(2 * shard, 2 * shard + 2)
        own = table[shard * size : (shard + 1) * size]
        np.testing.assert_array_equal(own[index[rows]], queries[rows])
        distinct = {tuple(r) for r in queries[rows].reshape(-1, 16)}
        assert {tuple(r) for r in own} == distinct  # padding rows repeat the empty query
        assert len({tuple(r) for r in own[: len(distinct)]}) == len(distinct)


def test_table_grows_to_the_next_power_of_two():
    queries = np.arange(1, 1 + 2 * 10 * 16, dtype=np.int32).reshape(2, 10, 16)  # 20 distinct
    table, index = dedup_queries(queries, num_shards=1)
    assert table.shape == (32, 16)
    np.testing.assert_array_equal(table[index], queries)
    with pytest.raises(ValueError, match="does not split"):
        dedup_queries(queries, num_shards=3)


def _step_results(dedup: bool, batch: dict[str, np.ndarray]):
    config = load_config(
        TINY, ["optim.freeze_text=false", "optim.text_lr=1e-3", "optim.warmup_steps=0"]
    )
    model_config = trainer.model_config_from(config)
    mesh = trainer.make_mesh()
    spec = trainer._StepSpec(
        model=model_config,
        vision_drop_path=0.0,
        text_drop_path=0.0,
        loss=trainer.loss_config_from(config),
        optim=tuple(sorted(trainer._optim_kwargs(config).items())),
        process_count=1,
    )
    optimizer, step, _, _ = trainer._compiled_steps(spec, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec(trainer.DATA_AXIS))
    initial = trainer.create_train_state(config, model_config, optimizer)
    start = jax.tree_util.tree_map(np.array, initial.params)
    state = trainer._replicate(initial, replicated)
    local = dict(batch)
    if dedup:
        local["query_table"], local["query_index"] = dedup_queries(
            local.pop("queries"), jax.local_device_count()
        )
    state, metrics = step(state, trainer.global_batch(local, data))
    return start, trainer.to_host(state.params), {k: float(v) for k, v in metrics.items()}


def test_deduplicated_step_equals_the_per_row_step():
    config = load_config(TINY)
    examples = [
        make_example(i, seed=3, image_size=trainer.model_config_from(config).image_size,
                     max_queries=8, max_instances=4)
        for i in range(8)
    ]  # fmt: skip
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    distinct = {tuple(r) for r in batch["queries"].reshape(-1, 16)}
    assert len(distinct) < batch["queries"].shape[0] * batch["queries"].shape[1] / 2
    start, params_rows, metrics_rows = _step_results(False, batch)
    _, params_dedup, metrics_dedup = _step_results(True, batch)
    for key in ("loss", "loss_class", "loss_bbox", "loss_giou", "grad_norm"):
        assert metrics_dedup[key] == pytest.approx(metrics_rows[key], rel=1e-5, abs=1e-6), key
    leaves_rows = jax.tree_util.tree_leaves_with_path(params_rows)
    leaves_dedup = jax.tree_util.tree_leaves(params_dedup)
    leaves_start = jax.tree_util.tree_leaves(start)
    text_moved = 0.0
    for (path, a), b, s in zip(leaves_rows, leaves_dedup, leaves_start, strict=True):
        name = jax.tree_util.keystr(path)
        # Adam's first step is about lr * sign(grad) = 3e-3: allow float noise of 1e-5 in it.
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5, err_msg=name)
        if "text" in name:
            text_moved = max(text_moved, float(np.max(np.abs(b - s))))
    assert text_moved > 1e-4  # the text tower was trained through the shared encoding


def test_dedup_with_per_example_clipping_is_a_config_error():
    config = load_config(TINY, ["train.dedup_queries=true", "optim.clip=per_example"])
    with pytest.raises(trainer.TrainingError, match="dedup_queries"):
        trainer.check_config(config)
