"""CDC inside the training loop: the distance in metrics.jsonl every step, exact resume, the
picked model, freezing, and that watching changes nothing of what is watched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from owl.checkpoints.owl_format import read_owl
from owl.train import trainer
from owl.train.config import load_config
from owl.train.logging import read_jsonl
from owl.train.stopping import CDCRule, cdc_stop_step

TINY = Path(__file__).resolve().parents[2] / "owl" / "configs" / "train_tiny.py"
STEPS = 40
SHARED = [
    "train.progress_bar=false",
    "train.tensorboard=false",
    "eval.every=0",
    f"train.num_steps={STEPS}",
    "train.log_every=10",
    "train.checkpoint_every=10",
    "train.keep_checkpoints=10",
    "train.async_checkpoints=false",
    "optim.warmup_steps=5",
]
CDC = ["cdc.enabled=true", "cdc.patience=1000", "cdc.smoothing=0.5"]


def _config(*extra: str):
    return load_config(TINY, [*SHARED, *extra])


def _records(workdir: Path, split: str) -> list[dict]:
    return [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == split]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    plain = tmp_path_factory.mktemp("plain")
    trainer.train_and_evaluate(_config(), plain)
    watched = tmp_path_factory.mktemp("cdc")
    trainer.train_and_evaluate(_config(*CDC), watched)
    return plain, watched


def test_distance_is_logged_every_step_and_the_rule_replays_from_it(runs):
    _, watched = runs
    cdc = _records(watched, "cdc")
    assert [r["step"] for r in cdc] == list(range(1, STEPS + 1))
    d = np.array([r["cdc_distance"] for r in cdc])
    assert np.all((d >= 0) & (d <= 2)) and np.ptp(d) > 0
    # The smoothed value is the EMA (0.5) of the logged distances, recomputed here.
    ema, want = None, []
    for x in d:
        ema = x if ema is None else 0.5 * ema + 0.5 * x
        want.append(ema)
    np.testing.assert_allclose([r["cdc_smoothed"] for r in cdc], want, rtol=1e-6)
    pick, _ = cdc_stop_step(d, CDCRule(patience=1000, smoothing=0.5))
    assert json.loads((watched / "stopping.json").read_text()) == {
        "cdc_step": pick,
        "last_step": STEPS,
    }


def test_watching_changes_nothing_of_the_model(runs):
    plain, watched = runs
    keys = ("step", "loss", "loss_class", "loss_bbox", "loss_giou")
    rows = lambda w: [tuple(r[k] for k in keys) for r in _records(w, "train")]  # noqa: E731
    assert rows(plain) == rows(watched)
    _, last = read_owl(watched / trainer.LAST_MODEL_FILE)
    _, final = read_owl(plain / trainer.MODEL_FILE)
    for a, b in zip(jax.tree_util.tree_leaves(last), jax.tree_util.tree_leaves(final), strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_file_holds_the_picked_step(runs, tmp_path):
    """MODEL_FILE is the model at CDC's step: equal to a plain run stopped at that step."""
    _, watched = runs
    pick = json.loads((watched / "stopping.json").read_text())["cdc_step"]
    assert 1 <= pick <= STEPS
    if pick == STEPS:
        pytest.skip("the minimum fell on the last step")
    restored = trainer.Checkpointer(watched / "checkpoints", max_to_keep=10)
    steps = restored.all_steps()
    restored.close()
    assert steps == list(range(10, STEPS + 1, 10))
    _, picked = read_owl(watched / trainer.MODEL_FILE)
    _, last = read_owl(watched / trainer.LAST_MODEL_FILE)
    differs = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(picked), jax.tree_util.tree_leaves(last), strict=True
        )
    ]
    assert any(differs)


def test_resumed_run_continues_the_distance_and_the_pick_exactly(runs, tmp_path):
    _, watched = runs
    copy = tmp_path / "run"
    shutil.copytree(watched, copy)
    for step in range(20, STEPS + 1, 10):  # as if killed just after the checkpoint of step 10
        shutil.rmtree(copy / "checkpoints" / str(step))
    for name in (trainer.MODEL_FILE, trainer.LAST_MODEL_FILE, "stopping.json"):
        (copy / name).unlink()
    trainer.train_and_evaluate(_config(*CDC), copy, resume=True)
    assert _records(copy, "cdc") == _records(watched, "cdc")  # bit for bit, steps 1..40
    assert (copy / "stopping.json").read_text() == (watched / "stopping.json").read_text()
    for name in (trainer.MODEL_FILE, trainer.LAST_MODEL_FILE):
        _, a = read_owl(copy / name)
        _, b = read_owl(watched / name)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)


def test_rule_stops_the_run_and_a_resume_does_not_train_on(tmp_path):
    trainer.train_and_evaluate(_config(*CDC[:1], "cdc.patience=3", "cdc.tol=0"), tmp_path)
    summary = json.loads((tmp_path / "stopping.json").read_text())
    cdc = _records(tmp_path, "cdc")
    assert summary["last_step"] == cdc[-1]["step"]
    if summary["last_step"] == STEPS:
        pytest.skip("the distance never grew three steps in a row")
    assert summary["last_step"] < STEPS
    trainer.train_and_evaluate(
        _config(*CDC[:1], "cdc.patience=3", "cdc.tol=0"), tmp_path, resume=True
    )
    assert _records(tmp_path, "cdc") == cdc


def test_freeze_regex_trains_the_heads_only(tmp_path):
    trainer.train_and_evaluate(
        _config("optim.freeze_regex=backbone/.*", "train.num_steps=5", "optim.warmup_steps=1"),
        tmp_path,
    )
    _, trained = read_owl(tmp_path / trainer.MODEL_FILE)
    start = trainer.start_params(_config(), trainer.model_config_from(_config()))
    for name in ("backbone", "class_head", "obj_box_head"):
        same = [
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree_util.tree_leaves(trained[name]),
                jax.tree_util.tree_leaves(start[name]),
                strict=True,
            )
        ]
        assert all(same) == (name == "backbone"), name
