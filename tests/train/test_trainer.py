"""Tests for owl/train/trainer.py and its parts: overfitting, logs, checkpoints, resume after
SIGKILL, NaN stop, failed checkpoint writes, initialisation, and `owl train` config handling."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from click.testing import CliRunner
from jax.sharding import NamedSharding, PartitionSpec

from owl.checkpoints.owl_format import read_owl
from owl.cli.train import train
from owl.data.synthetic import make_example
from owl.models.configs import get_variant
from owl.train import trainer
from owl.train.checkpointing import Checkpointer, CheckpointWriteError
from owl.train.config import ConfigError, load_config
from owl.train.logging import read_jsonl
from owl.train.optim import make_optimizer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "owl" / "configs" / "train_tiny.py"
# Every run below shares these settings, so the train step is compiled once.
SHARED = [
    "model.vision_drop_path=0.1",  # stochastic depth: a resumed run must restore the RNG too
    "train.progress_bar=false",
    "eval.every=0",
    "train.num_steps=200",
    "train.log_every=25",
    "train.checkpoint_every=50",
    "train.keep_checkpoints=2",
]


def _config(*extra: str):
    return load_config(TINY, [*SHARED, *extra])


# Trains like `overfit_run` but slowly after step 50, so that it can be killed between the
# checkpoints of steps 50 and 100.
_SLOW_ENTRY = """
import sys, time
from owl.train import trainer
from owl.train.config import load_config

class Slow:
    def __init__(self, loader): self.loader = loader
    def __iter__(self): return SlowIterator(iter(self.loader))

class SlowIterator:
    def __init__(self, it): self.it = it
    def __next__(self):
        if self.it.get_state()["next_batch"] >= 50:
            time.sleep(0.5)
        return next(self.it)
    def get_state(self): return self.it.get_state()
    def set_state(self, state): self.it.set_state(state)

config = load_config(sys.argv[1], sys.argv[3:])
loader, _ = trainer.build_loaders(config, trainer.model_config_from(config))
trainer.train_and_evaluate(config, sys.argv[2], train_loader=Slow(loader))
"""


@pytest.fixture(scope="module")
def victim(tmp_path_factory):
    """A subprocess training like `overfit_run`, slowly after step 50; the SIGKILL test kills it.

    `overfit_run` starts it first, so that the two compile at the same time.
    """
    folder = tmp_path_factory.mktemp("victim")
    entry = folder / "slow_train.py"
    entry.write_text(_SLOW_ENTRY)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    workdir = folder / "run"
    log = folder / "stderr.txt"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(entry), str(TINY), str(workdir), *SHARED],
            env=env,
            stderr=stderr,
        )
    yield process, workdir, log
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, victim):
    """The tiny config trained for 200 steps on its 8 synthetic images."""
    workdir = tmp_path_factory.mktemp("overfit")
    config = _config()
    state = trainer.train_and_evaluate(config, workdir)
    return workdir, config, state


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two cxcywh boxes (independent of owl.ops)."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_tiny_model_overfits_eight_images(overfit_run):
    """The saved model finds every training box: top-scoring box per class has IoU > 0.8."""
    import owl

    workdir, config, _ = overfit_run
    model = owl.load(workdir / trainer.MODEL_FILE)
    d = config.data
    ious = []
    for index in range(int(d.synthetic_examples)):
        ex = make_example(
            index,
            seed=int(d.seed),
            image_size=128,
            max_queries=int(d.max_queries),
            max_instances=int(d.max_instances),
            max_boxes=int(d.synthetic_max_boxes),
        )
        out = model.predict_raw(ex["image"][None], ex["queries"])
        for m in np.flatnonzero(ex["instance_mask"]):
            query = int(np.flatnonzero(ex["labels"][m])[0])
            best = int(np.argmax(out["logits"][0, :, query]))
            ious.append(_iou(out["pred_boxes"][0, best], ex["boxes"][m]))
    assert len(ious) >= 8
    assert np.mean(ious) > 0.8, ious
    assert min(ious) > 0.5, ious
    records = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in records] == list(range(25, 201, 25))
    assert records[-1]["loss"] < records[0]["loss"] / 10


def _write_synthetic_coco(folder: Path, config) -> Path:
    """The 8 training images of `overfit_run` as a COCO dataset (PNG files + annotations)."""
    from PIL import Image

    from owl.data.synthetic import CLASS_NAMES
    from owl.ops.image import CLIP_MEAN, CLIP_STD

    d = config.data
    images, annotations = [], []
    for index in range(int(d.synthetic_examples)):
        ex = make_example(
            index,
            seed=int(d.seed),
            image_size=128,
            max_queries=int(d.max_queries),
            max_instances=int(d.max_instances),
            max_boxes=int(d.synthetic_max_boxes),
        )
        pixels = ex["image"] * np.asarray(CLIP_STD) + np.asarray(CLIP_MEAN)
        Image.fromarray(np.round(pixels * 255).clip(0, 255).astype(np.uint8)).save(
            folder / f"{index}.png"
        )
        images.append({"id": index + 1, "file_name": f"{index}.png", "width": 128, "height": 128})
        for m in np.flatnonzero(ex["instance_mask"]):
            cx, cy, w, h = (ex["boxes"][m] * 128).tolist()
            category = int(np.flatnonzero(ex["labels"][m])[0])  # query q = class q - 1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": category,
                    "bbox": [cx - w / 2, cy - h / 2, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(CLASS_NAMES)]
    path = folder / "annotations.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def test_periodic_ap_goes_through_owl_eval(overfit_run, tmp_path):
    """AP of the overfit model on its own training images, computed the way `owl eval` does."""
    workdir, _, state = overfit_run
    annotations = _write_synthetic_coco(tmp_path, _config())
    config = _config(
        f"data.eval_annotations={annotations}",
        f"data.eval_images={tmp_path}",
        "eval.ap_prompts=none",  # the class names alone, as the queries were in training
    )
    params = trainer.to_host(state.params)
    stats = trainer.evaluate_ap(params, trainer.model_config_from(config), config, tmp_path / "ap")
    assert stats["AP50"] > 0.9, stats
    assert (tmp_path / "ap" / "detections.json").is_file()


def test_coco_format_data_flows_through_the_pipeline(tmp_path):
    """`data.kind=coco` builds `owl.data.pipeline` loaders whose batches follow the contract."""
    from owl.data.shapes import write_coco_dataset

    annotations = write_coco_dataset(tmp_path, 4, seed=0, progress=False)
    config = _config(
        "data.kind=coco",
        f"data.train_annotations={annotations}",
        f"data.train_images={tmp_path / 'images'}",
        f"data.eval_annotations={annotations}",
        "eval.every=10",
        "eval.num_batches=1",
        "train.batch_size=2",
        "eval.batch_size=2",
    )
    train_loader, eval_loader = trainer.build_loaders(config, trainer.model_config_from(config))
    batch = next(iter(train_loader))
    assert batch["image"].shape == (2, 128, 128, 3) and batch["image"].dtype == np.float32
    assert batch["queries"].shape == (2, 8, 16) and batch["queries"].dtype == np.int32
    assert batch["labels"].shape == (2, 4, 8)
    assert batch["boxes"].shape == (2, 4, 4)
    np.testing.assert_array_equal(batch["instance_mask"], batch["labels"][:, :, 0] == 0)
    assert len(list(eval_loader)) == 1


def _tensorboard_scalars(folder: Path, tag: str) -> dict[int, float]:
    """Reads scalars from TFRecord event files with tensorboardX's protobufs (no TensorFlow)."""
    from tensorboardX.proto import event_pb2

    values = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = value.simple_value
    return values


def test_jsonl_and_tensorboard_hold_the_same_losses(overfit_run):
    workdir, _, _ = overfit_run
    records = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]
    tb = _tensorboard_scalars(workdir / "tensorboard" / "train", "loss")
    assert sorted(tb) == [r["step"] for r in records]
    for r in records:
        assert tb[r["step"]] == pytest.approx(r["loss"], rel=1e-6)
        assert {"loss_class", "loss_bbox", "loss_giou", "lr", "images_per_sec"} <= set(r)
    # "lr" is the rate of that step's update, lr(t = step - 1): warmup 20, cosine to step 200.
    for r in records:
        t = r["step"] - 1
        want = 3e-3 * min(1, t / 20) * 0.5 * (1 + np.cos(np.pi * max(0, t - 20) / 180))
        assert r["lr"] == pytest.approx(want, rel=1e-5, abs=3e-9)  # float32 cos near -1


def test_training_png_draws_the_logged_losses_lr_and_eval(overfit_run):
    workdir, _, _ = overfit_run
    records = read_jsonl(workdir / "metrics.jsonl")
    assert (workdir / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = json.loads((workdir / "training.json").read_text())
    train = [r for r in records if r["split"] == "train"]
    for key in ("loss", "loss_class", "loss_bbox", "loss_giou"):
        assert drawn["loss"][key]["x"] == [r["step"] for r in train]
        assert drawn["loss"][key]["y"] == pytest.approx([r[key] for r in train])
    assert drawn["lr"]["lr"]["y"] == pytest.approx([r["lr"] for r in train])
    assert drawn["loss"]["loss"]["x"][-1] == 200  # redrawn at the end, last step included
    evals = [r for r in records if r["split"] == "eval" and "loss" in r]
    assert drawn["loss"].get("eval loss", {"x": []})["x"] == [r["step"] for r in evals]


def test_last_checkpoints_are_kept_and_restore_the_final_state(overfit_run):
    workdir, config, state = overfit_run
    checkpoints = Checkpointer(workdir / trainer.CHECKPOINT_DIR, max_to_keep=2)
    assert checkpoints.all_steps() == [150, 200]
    optimizer = make_optimizer(**trainer._optim_kwargs(config))
    replicated = NamedSharding(trainer.make_mesh(), PartitionSpec())
    abstract = trainer.abstract_train_state(
        trainer.model_config_from(config), optimizer, replicated
    )
    restored, data_state = checkpoints.restore(200, abstract)
    checkpoints.close()
    assert int(trainer.to_host(restored.step)) == 200
    assert data_state == {"next_batch": 200}
    for a, b in zip(
        jax.tree_util.tree_leaves(trainer.to_host(restored.params)),
        jax.tree_util.tree_leaves(trainer.to_host(state.params)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_workdir_with_checkpoints_needs_resume(overfit_run):
    workdir, config, _ = overfit_run
    with pytest.raises(trainer.TrainingError, match="latest step 200.*pass --resume"):
        trainer.train_and_evaluate(config, workdir)


class _NaNAt:
    """Wraps a loader; the batch of step ``step`` gets NaN pixels."""

    def __init__(self, loader, step: int) -> None:
        self._loader, self._step = loader, step

    def __iter__(self):
        return _NaNIterator(iter(self._loader), self._step)


class _NaNIterator:
    def __init__(self, it, step: int) -> None:
        self._it, self._step = it, step

    def __next__(self):
        batch = dict(next(self._it))
        if self._it.get_state()["next_batch"] == self._step:
            batch["image"] = np.full_like(batch["image"], np.nan)
        return batch

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state) -> None:
        self._it.set_state(state)


@pytest.mark.parametrize("bad_step, good_step", [(7, 6), (8, 6)])
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, bad_step, good_step):
    config = _config("train.checkpoint_every=2")
    loader, _ = trainer.build_loaders(config, trainer.model_config_from(config))
    with pytest.raises(
        trainer.NonFiniteLossError, match=f"at step {bad_step}.*checkpoint is step {good_step}"
    ):
        trainer.train_and_evaluate(config, tmp_path, train_loader=_NaNAt(loader, bad_step))
    checkpoints = Checkpointer(tmp_path / trainer.CHECKPOINT_DIR, max_to_keep=2)
    assert checkpoints.latest_step() == good_step
    checkpoints.close()
    assert not (tmp_path / trainer.MODEL_FILE).exists()
    # The kept checkpoint is usable: resuming with clean data continues from it.
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(r["loss"]) for r in records)


class _FailingWrite:
    """An orbax commit future whose background write fails."""

    def result(self, timeout=None):
        raise OSError("No space left on device")


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    original = ocp.StandardCheckpointHandler.async_save
    calls = []

    async def flaky(self, *args, **kwargs):
        """The second checkpoint's array write fails in the background."""
        futures = await original(self, *args, **kwargs)
        calls.append(1)
        return [*(futures or []), _FailingWrite()] if len(calls) == 2 else futures

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", flaky)
    config = _config("train.checkpoint_every=2")
    with pytest.raises(
        CheckpointWriteError, match="step 4.*No space left.*last good checkpoint is step 2"
    ):
        trainer.train_and_evaluate(config, tmp_path)
    monkeypatch.setattr(ocp.StandardCheckpointHandler, "async_save", original)
    checkpoints = Checkpointer(tmp_path / trainer.CHECKPOINT_DIR, max_to_keep=2)
    assert checkpoints.all_steps() == [2]
    checkpoints.close()
    # The run continues from step 2 and finishes.
    state = trainer.train_and_evaluate(_config("train.checkpoint_every=100"), tmp_path, resume=True)
    assert int(trainer.to_host(state.step)) == 200
    steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(25, 201, 25))


# -- SIGKILL and resume ------------------------------------------------------------------------


def test_sigkill_then_resume_gives_the_uninterrupted_losses(overfit_run, victim):
    full, config, final_state = overfit_run
    process, killed, log = victim
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "50").is_dir():
        assert process.poll() is None, log.read_text()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint at step 50"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (killed / trainer.MODEL_FILE).exists()
    assert Checkpointer(killed / "checkpoints", max_to_keep=2).all_steps() == [50]

    state = trainer.train_and_evaluate(config, killed, resume=True)

    def losses(workdir: Path) -> list[tuple]:
        keys = ("step", "loss", "loss_class", "loss_bbox", "loss_giou", "matched_iou", "lr")
        records = read_jsonl(workdir / "metrics.jsonl")
        return [tuple(r[k] for k in keys) for r in records if r["split"] == "train"]

    expected = losses(full)
    assert [row[0] for row in expected] == list(range(25, 201, 25))
    assert losses(killed) == expected  # bit for bit
    _, params = read_owl(killed / trainer.MODEL_FILE)
    flat_a = jax.tree_util.tree_leaves(params)
    flat_b = jax.tree_util.tree_leaves(trainer.to_host(final_state.params))
    for a, b in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(trainer.to_host(state.step)) == 200


# -- initialisation ----------------------------------------------------------------------------


def test_resize_posemb_interpolates_linearly_and_keeps_the_class_row():
    from owl.train.init import resize_posemb

    # A 2x2 grid holding f(i, j) = 10 i + j; zoomed to 3x3 (corners aligned) it holds
    # f(i / 2, j / 2) = 5 i + j / 2, which bilinear interpolation reproduces exactly.
    grid = np.array([[0.0, 1.0], [10.0, 11.0]], np.float32)
    posemb = np.concatenate([[[-7.0, 3.0]], np.stack([grid, -grid], -1).reshape(4, 2)])
    out = resize_posemb(posemb, 3)
    expected = np.array([[5 * i + j / 2 for j in range(3)] for i in range(3)], np.float32)
    np.testing.assert_allclose(out[0], [-7.0, 3.0])
    np.testing.assert_allclose(out[1:, 0].reshape(3, 3), expected, atol=1e-5)
    np.testing.assert_allclose(out[1:, 1].reshape(3, 3), -expected, atol=1e-5)


def test_clip_backbone_file_init_resizes_cuts_and_adds_new_heads(tmp_path):
    """A pretraining backbone file (clip/... keys plus a visual projection) starts a detector."""
    import safetensors.numpy

    from owl.checkpoints.tree import flatten_params
    from owl.models.owl_vit import PRIOR_PROB
    from owl.train.init import init_params, initial_params

    config = get_variant("tiny-owlvit")
    donor = init_params(config, jax.random.PRNGKey(3))["backbone"]["clip"]
    rng = np.random.default_rng(0)
    clip = jax.tree_util.tree_map(np.asarray, donor)
    clip["visual"]["positional_embedding"] = rng.standard_normal((2 * 2 + 1, 64)).astype(np.float32)
    clip["visual"]["proj"] = np.ones((64, 32), np.float32)  # CLIP's projection, dropped
    clip["text"]["positional_embedding"] = rng.standard_normal((77, 32)).astype(np.float32)
    flat = flatten_params({"clip": clip, "visual_projection": np.ones((64, 32), np.float32)})
    safetensors.numpy.save_file(flat, tmp_path / "backbone.safetensors")
    params = initial_params(
        mode="clip",
        source=str(tmp_path / "backbone.safetensors"),
        config=config,
        rng=jax.random.PRNGKey(1),
    )
    visual, text = params["backbone"]["clip"]["visual"], params["backbone"]["clip"]["text"]
    assert "proj" not in visual
    assert visual["positional_embedding"].shape == (4 * 4 + 1, 64)
    np.testing.assert_array_equal(
        visual["positional_embedding"][0], clip["visual"]["positional_embedding"][0]
    )
    np.testing.assert_array_equal(
        text["positional_embedding"], clip["text"]["positional_embedding"][:16]
    )
    np.testing.assert_array_equal(visual["conv1"]["kernel"], clip["visual"]["conv1"]["kernel"])
    prior = np.log(PRIOR_PROB / (1 - PRIOR_PROB))
    np.testing.assert_allclose(params["class_head"]["logit_shift"]["bias"], [prior], rtol=1e-6)
    assert not np.any(params["obj_box_head"]["Dense_2"]["kernel"])


def test_params_from_clip_names_a_backbone_that_does_not_fit():
    from owl.checkpoints.tree import CheckpointError
    from owl.train.init import params_from_clip

    with pytest.raises(CheckpointError, match="not a CLIP-style backbone"):
        params_from_clip({"encoder": {}}, get_variant("tiny-owlvit"), jax.random.PRNGKey(0))


def test_params_from_owl_adapts_size_and_adds_objectness(tmp_path):
    from owl.checkpoints.owl_format import save_owl
    from owl.train.init import init_params, params_from_owl, resize_posemb

    v1 = get_variant("tiny-owlvit")
    source = init_params(v1, jax.random.PRNGKey(5))
    path = save_owl(tmp_path / "v1.safetensors", v1, source)
    target = get_variant("tiny-owlv2").replace(image_size=64)  # 2x2 grid
    params = params_from_owl(path, target, jax.random.PRNGKey(0))
    posemb = params["backbone"]["clip"]["visual"]["positional_embedding"]
    want = resize_posemb(source["backbone"]["clip"]["visual"]["positional_embedding"], 2)
    np.testing.assert_array_equal(posemb, want)
    assert "objectness_head" in params
    np.testing.assert_array_equal(
        params["class_head"]["Dense_0"]["kernel"], source["class_head"]["Dense_0"]["kernel"]
    )


# -- config files and the CLI ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["train_tiny.py", "finetune_owlvit_b32.py", "finetune_owlv2_b16.py"]
)
def test_every_training_config_loads(name):
    config = load_config(REPO / "owl" / "configs" / name)
    model = trainer.model_config_from(config)
    assert config.loss.focal_alpha == 0.3 and config.loss.focal_gamma == 2.0
    assert model.family in ("owlvit", "owlv2")


def test_variant_config_overrides_its_base():
    v2 = load_config(REPO / "owl" / "configs" / "finetune_owlv2_b16.py")
    assert (v2.model.variant, v2.init.source) == ("owlv2-b16", "owlv2-b16")
    assert (v2.optim.lr, v2.optim.text_lr, v2.optim.clip) == (5e-5, 2e-6, "per_example")


def test_overrides_are_converted_to_the_key_types():
    config = load_config(
        TINY,
        [
            "optim.lr=1e-4",
            "train.num_steps=12",
            "optim.freeze_text=false",
            "data.mosaic_sizes=1,2",
            "data.remove_categories=cat, dog",
            "init.source=/tmp/x.safetensors",
            "loss.cost_bbox=5",
        ],
    )
    assert config.optim.lr == 1e-4 and isinstance(config.optim.lr, float)
    assert config.train.num_steps == 12 and isinstance(config.train.num_steps, int)
    assert config.optim.freeze_text is False
    assert config.data.mosaic_sizes == (1, 2)
    assert config.data.remove_categories == ("cat", "dog")
    assert config.init.source == "/tmp/x.safetensors"
    assert config.loss.cost_bbox == 5.0 and isinstance(config.loss.cost_bbox, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", r"unknown config key 'optim.lrr'; did you mean optim.lr\b"),
        ("trian.num_steps=3", r"did you mean train.num_steps"),
        ("train.num_steps=abc", r"train.num_steps='abc': expected an integer"),
        ("optim.freeze_text=maybe", r"expected a boolean"),
        ("optim=1", r"optim is a group; set one of its keys: optim.b1, .*optim.lr, "),
        ("optim.lr", r"expected KEY=VALUE"),
    ],
)
def test_bad_overrides_fail_clearly(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_cli_unknown_key_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(
        train, ["--config", str(TINY), "--workdir", str(tmp_path), "--set", "optim.lrr=1"]
    )
    assert result.exit_code == 2
    assert "did you mean optim.lr" in result.output


def test_cli_print_config(tmp_path):
    result = CliRunner().invoke(
        train,
        [
            "--config",
            str(TINY),
            "--workdir",
            str(tmp_path),
            "--set",
            "optim.lr=0.25",
            "--print-config",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lr: 0.25" in result.output
    assert not tmp_path.joinpath("checkpoints").exists()


def test_cli_reports_a_non_finite_loss_and_exits_1(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise trainer.NonFiniteLossError("the loss became nan at step 7; last good checkpoint 6")

    monkeypatch.setattr(trainer, "train_and_evaluate", boom)
    result = CliRunner().invoke(train, ["--config", str(TINY), "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    assert "the loss became nan at step 7" in result.output


def test_cli_config_file_without_get_config(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    result = CliRunner().invoke(train, ["--config", str(bad), "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert "defines no get_config()" in result.output


def test_distributed_settings_must_be_complete(monkeypatch):
    for name in (trainer.ENV_COORDINATOR, trainer.ENV_NUM_PROCESSES, trainer.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    assert trainer.initialize_distributed() is False
    monkeypatch.setenv(trainer.ENV_COORDINATOR, "127.0.0.1:1234")
    with pytest.raises(
        trainer.TrainingError, match="needs the coordinator address, the process count"
    ):
        trainer.initialize_distributed()


def test_bad_loop_settings_are_named():
    config = _config("train.log_every=0", "optim.warmup_steps=500")
    with pytest.raises(
        trainer.TrainingError, match=r"train.log_every must be >= 1.*warmup_steps \(500\)"
    ):
        trainer.check_config(config)
