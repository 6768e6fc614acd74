"""Tests for owl.train.pretrain (contrastive CLIP pretraining on ShapesWorld) and `owl pretrain`."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from click.testing import CliRunner

from owl.checkpoints.tree import flatten_params
from owl.cli.pretrain import pretrain as pretrain_cmd
from owl.data import shapes
from owl.models.configs import ModelConfig
from owl.models.owl_vit import param_shapes
from owl.text.tokenizer import get_tokenizer
from owl.train import pretrain as pt
from owl.train.checkpointing import Checkpointer
from owl.train.init import initial_params
from owl.train.logging import read_jsonl
from owl.train.step import TrainState

CONFIG_FILE = str(Path(__file__).parents[2] / "owl" / "configs" / "shapes_clip.py")

# A very small CLIP: 64 px input, patch 16 (4x4 grid).
TINY = ModelConfig(
    family="owlvit", image_size=64, patch_size=16,
    vision_width=64, vision_layers=1, vision_heads=2,
    text_width=32, text_layers=1, text_heads=2, embed_dim=32,
)  # fmt: skip

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])
FILL = {s: shapes.render_shape_mask(s, 40, 40).mean() for s in shapes.SHAPES}
CATEGORY_RE = re.compile(rf"({'|'.join(shapes.COLOUR_NAMES)}) ({'|'.join(shapes.SHAPES)})")


# -- captions and data --------------------------------------------------------------------------


def test_captions_use_the_longest_form_that_fits():
    orange_ring = 5 * 8 + 7
    assert shapes.fitting_caption([0]) == "a red circle"
    assert shapes.fitting_caption([0, orange_ring]) == "a red circle and an orange ring"
    # With articles, four objects take 4 x 3 + 2 commas + "and" = 15 > 14 BPE tokens.
    four = [0 * 8 + 0, 1 * 8 + 1, 2 * 8 + 3, 7 * 8 + 7]
    assert shapes.fitting_caption(four) == "red circle, green square, blue star and white ring"
    # "hexagon" is 2 tokens: 4 x 3 + 3 = 15 even without articles; only the bare list fits.
    hexagons = [c * 8 + 4 for c in range(4)]
    assert (
        shapes.fitting_caption(hexagons) == "red hexagon green hexagon blue hexagon yellow hexagon"
    )
    assert shapes.category_prompts()[orange_ring] == "an orange ring"
    assert shapes.category_prompts()[0] == "a red circle"


def _scene(seed, index, cats, size=64):
    return shapes.sample_scene(
        seed, index, image_size=size, categories=cats, min_objects=len(cats),
        max_objects=len(cats),
    )  # fmt: skip


def test_batches_match_the_world_and_every_caption_names_each_object():
    batch = pt.make_pair_batch(3, range(40), image_size=64, group_size=4)
    tokenizer = get_tokenizer()
    for i, (caption, ids) in enumerate(zip(batch.captions, batch.input_ids, strict=True)):
        cats = pt.scene_categories(3, i, group_size=4)
        scene = _scene(3, i, cats)
        expected = (scene.image / 255.0 - MEAN) / STD
        np.testing.assert_allclose(batch.images[i], expected, atol=1e-5)
        named = sorted(shapes.category_index(c, s) for c, s in CATEGORY_RE.findall(caption))
        assert named == sorted(o.category for o in scene.objects) == sorted(cats)
        assert tuple(named) == batch.categories[i]
        # Fits 16 positions: tokenizing without truncation gives the same ids.
        np.testing.assert_array_equal(ids, tokenizer.tokenize([caption])[0])
    assert max(len(c) for c in batch.categories) == 4
    assert batch.input_ids.shape == (40, 16) and batch.input_ids.dtype == np.int32


def test_groups_are_twins_that_differ_in_shape_colour_or_binding():
    counts = np.zeros(5, int)
    for group in range(200):
        a, shape_twin, colour_twin, binding_twin = (
            pt.scene_categories(0, 4 * group + m, group_size=4) for m in range(4)
        )
        counts[len(a)] += 1
        for twin in (a, shape_twin, colour_twin, binding_twin):
            assert len(set(twin)) == len(twin) == len(a)  # distinct categories, same count
        colours, shape_ids = np.divmod(a, 8)
        # Shape twin: object i keeps its colour and gets another shape.
        assert np.array_equal(np.asarray(shape_twin) // 8, colours)
        assert np.all(np.asarray(shape_twin) % 8 != shape_ids)
        # Colour twin: object i keeps its shape and gets another colour.
        assert np.all(np.asarray(colour_twin) // 8 != colours)
        assert np.array_equal(np.asarray(colour_twin) % 8, shape_ids)
        # Binding twin: the same colours dealt to the same shapes differently, when possible.
        b_colours, b_shapes = np.divmod(binding_twin, 8)
        if sorted(b_colours) == sorted(colours) and sorted(b_shapes) == sorted(shape_ids):
            assert set(binding_twin) != set(a)
        else:  # no other dealing exists (e.g. one object): a shape twin instead
            dealings = {
                frozenset(int(c) * 8 + int(s) for c, s in zip(perm, shape_ids, strict=True))
                for perm in itertools.permutations(colours)
            }
            assert {d for d in dealings if len(d) == len(a)} == {frozenset(a)}
            assert np.array_equal(b_colours, colours) and np.all(b_shapes != shape_ids)
    assert counts[0] == 0 and np.all(counts[1:] > 30)  # 1 to 4 objects, about uniform
    assert pt.scene_categories(0, 5, group_size=1) != pt.scene_categories(0, 4, group_size=1)


def test_iterator_is_deterministic_and_resumable():
    kw = dict(image_size=64, max_objects=2, group_size=2)
    a = list(pt.iterate_pair_batches(7, 4, num_steps=3, **kw))
    b = list(pt.iterate_pair_batches(7, 4, num_steps=3, prefetch=0, **kw))
    resumed = list(pt.iterate_pair_batches(7, 4, start_step=1, num_steps=2, **kw))
    other = next(pt.iterate_pair_batches(8, 4, num_steps=1, **kw))
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.input_ids, y.input_ids)
        assert x.captions == y.captions
    for x, y in zip(a[1:], resumed, strict=True):
        np.testing.assert_array_equal(x.images, y.images)
        assert x.captions == y.captions
    assert not np.array_equal(a[0].images, other.images)
    # Batch s holds scenes s*B .. s*B + B - 1.
    cats = pt.scene_categories(7, 9, group_size=2, max_objects=2)
    expected = (_scene(7, 9, cats).image / 255.0 - MEAN) / STD
    np.testing.assert_allclose(a[2].images[1], expected, atol=1e-5)


# -- training -----------------------------------------------------------------------------------


def _pretrain_config(*sets: str):
    from owl.train.config import load_config

    tiny = [
        "model.image_size=64", "model.vision_width=64", "model.vision_layers=1",
        "model.vision_heads=2", "model.text_width=32", "model.text_layers=1",
        "model.text_heads=2", "model.embed_dim=32", "batch_size=8", "tensorboard=False",
        "eval.images_per_category=1", "eval.caption_images=16", "eval.caption_batch=8",
    ]  # fmt: skip
    return load_config(CONFIG_FILE, [*tiny, *sets])


def test_training_lowers_the_contrastive_loss():
    config = _pretrain_config(
        "learning_rate=2e-3", "num_steps=80", "warmup_steps=5", "weight_decay=0.0"
    )
    params = pt.init_pretrainer(TINY, jax.random.PRNGKey(0))
    optimizer = pt.make_optimizer(config)
    step = pt.make_train_step(pt.ContrastivePretrainer(TINY), optimizer)
    state = TrainState(
        step=jnp.int32(0), params=params, opt_state=optimizer.init(params),
        rng=jax.random.PRNGKey(1),
    )  # fmt: skip
    losses = []
    # Fresh scenes every step: the loss can only fall by learning colours/shapes.
    for batch in pt.iterate_pair_batches(0, 32, num_steps=80, image_size=64, max_objects=1):
        state, metrics = step(state, batch.images, batch.input_ids)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 80
    start, end = np.mean(losses[:5]), np.mean(losses[-10:])
    assert start > np.log(32) - 0.3  # at init no pair stands out: at least about ln(batch)
    assert end < 0.7 * start, (start, end)


class _Stop(KeyboardInterrupt):
    pass


def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    """As the trainer's resume test: same logged losses and bit-identical final weights."""
    config = _pretrain_config(
        "num_steps=6", "warmup_steps=1", "log_every=2", "checkpoint_every=2",
        "vision_drop_path=0.1",  # stochastic depth: the resumed run must draw the same keys
    )  # fmt: skip
    whole = pt.pretrain(config, tmp_path / "whole", progress=False)

    real = pt.iterate_pair_batches

    def stops_before_step_6(seed, batch_size, *, start_step=0, **kwargs):
        for n, batch in enumerate(real(seed, batch_size, start_step=start_step, **kwargs)):
            if start_step + n == 5:  # steps 1-5 done, checkpoints at 2 and 4
                raise _Stop
            yield batch

    monkeypatch.setattr(pt, "iterate_pair_batches", stops_before_step_6)
    with pytest.raises(_Stop):
        pt.pretrain(config, tmp_path / "stopped", progress=False)
    monkeypatch.setattr(pt, "iterate_pair_batches", real)
    assert not (tmp_path / "stopped" / pt.BACKBONE_FILE).exists()
    with pytest.raises(pt.PretrainingError, match="latest step 4.*pass --resume"):
        pt.pretrain(config, tmp_path / "stopped", progress=False)
    resumed = pt.pretrain(config, tmp_path / "stopped", resume=True, progress=False)

    def train_log(workdir):
        return [
            (r["step"], r["loss"], r["grad_norm"], r["lr"])
            for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"
        ]  # fmt: skip

    assert [row[0] for row in train_log(tmp_path / "whole")] == [2, 4, 6]
    assert train_log(tmp_path / "stopped") == train_log(tmp_path / "whole")  # bit for bit
    assert resumed["final_loss"] == whole["final_loss"]
    _, a, _ = pt.read_backbone(tmp_path / "whole" / pt.BACKBONE_FILE)
    _, b, _ = pt.read_backbone(tmp_path / "stopped" / pt.BACKBONE_FILE)
    flat_a, flat_b = flatten_params(a), flatten_params(b)
    assert set(flat_a) == set(flat_b)
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


# -- retrieval evaluation -----------------------------------------------------------------------


def _objects_in(image: np.ndarray) -> list[int]:
    """Categories in a normalised ShapesWorld image, read off its exact object pixels."""
    pixels = np.rint((image * STD + MEAN) * 255).astype(np.int64)
    found = []
    for colour, rgb in shapes.COLOURS.items():
        labels, n = scipy.ndimage.label(np.all(pixels == rgb, axis=-1), np.ones((3, 3)))
        for sl in scipy.ndimage.find_objects(labels):
            crop = labels[sl] > 0
            h, w = crop.shape
            # Try shapes in order of their usual fill fraction; the first exact mask wins.
            candidates = sorted(shapes.SHAPES, key=lambda s: abs(FILL[s] - crop.mean()))
            shape = next(
                s for s in candidates if np.array_equal(shapes.render_shape_mask(s, w, h), crop)
            )
            found.append(shapes.category_index(colour, shape))
    return found


def _multi_hot(categories) -> np.ndarray:
    v = np.zeros(shapes.NUM_CATEGORIES)
    v[list(categories)] = 1
    return v


def _perfect_image_encoder(images):
    return np.stack([_multi_hot(_objects_in(x)) for x in images])


def _perfect_text_encoder(ids):
    tokenizer = get_tokenizer()
    texts = [tokenizer.decode(row) for row in ids]
    return np.stack([
        _multi_hot(shapes.category_index(c, s) for c, s in CATEGORY_RE.findall(t)) for t in texts
    ])  # fmt: skip


def _colour_only(encoder):
    """Keeps only which colours are present: shapes become indistinguishable."""
    return lambda x: encoder(x).reshape(len(x), 8, 8).max(axis=2)


EVAL_KW = dict(image_size=64, images_per_category=1, caption_images=64, caption_batch=32)


def test_retrieval_is_perfect_for_a_perfect_encoder():
    r = pt.evaluate_retrieval(_perfect_image_encoder, _perfect_text_encoder, seed=5, **EVAL_KW)
    assert r["category_top1_base"] == 1.0
    assert r["category_top1_novel"] == 1.0
    assert r["caption_i2t_top1"] == 1.0
    assert r["caption_t2i_top1"] == 1.0
    assert r["chance_category"] == 1 / 64 and r["chance_caption"] == 1 / 32


def test_retrieval_of_a_colour_blind_to_shape_encoder_is_one_in_eight():
    # All 8 shapes of the right colour tie; argmax takes the first, the circle: 1 in 8 for
    # base (6 circles of 48) and novel (2 of 16) alike.
    r = pt.evaluate_retrieval(
        _colour_only(_perfect_image_encoder), _colour_only(_perfect_text_encoder), seed=5,
        image_size=64, images_per_category=1, caption_images=0,
    )  # fmt: skip
    assert r["category_top1_base"] == 0.125
    assert r["category_top1_novel"] == 0.125
    assert r["colour_top1"] == 1.0 and r["shape_top1"] == 0.125


def test_retrieval_of_a_random_encoder_is_near_chance():
    rng = np.random.default_rng(0)
    rand = lambda x: rng.normal(size=(len(x), 16))  # noqa: E731
    r = pt.evaluate_retrieval(rand, rand, seed=5, **EVAL_KW)
    assert r["category_top1"] < 0.06
    assert r["caption_i2t_top1"] < 0.2 and r["caption_t2i_top1"] < 0.2


# -- checkpoints and the command ----------------------------------------------------------------


def test_cli_writes_a_backbone_the_detector_can_load(tmp_path):
    sets = [
        "model.image_size=64", "model.vision_width=64", "model.vision_layers=1",
        "model.vision_heads=2", "model.text_width=32", "model.text_layers=1",
        "model.text_heads=2", "model.embed_dim=32", "batch_size=8", "num_steps=3",
        "warmup_steps=1", "log_every=2", "checkpoint_every=2", "eval.images_per_category=1",
        "eval.caption_images=16", "eval.caption_batch=8",
    ]  # fmt: skip
    args = ["--config", CONFIG_FILE, "--workdir", str(tmp_path), "--no-progress"]
    result = CliRunner().invoke(pretrain_cmd, args + [a for s in sets for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    assert "zero-shot category top-1: base" in result.output

    config, params, metadata = pt.read_backbone(tmp_path / "backbone.safetensors")
    assert config == TINY
    assert metadata["format"] == "owl-clip-backbone" and metadata["step"] == "3"
    expected = flatten_params(param_shapes(config)["backbone"]["clip"])
    got = {k: tuple(v.shape) for k, v in flatten_params(params["clip"]).items()}
    assert got == expected
    assert set(params) == {"clip", "visual_projection"}
    assert params["visual_projection"].shape == (64, 32)

    log = read_jsonl(tmp_path / "metrics.jsonl")
    assert [(r["step"], r["split"]) for r in log] == [(2, "train"), (3, "train"), (3, "eval")]
    assert set(log[-1]) >= {"category_top1_base", "category_top1_novel"}
    assert Checkpointer(tmp_path / pt.CHECKPOINT_DIR, max_to_keep=2).all_steps() == [2]

    again = CliRunner().invoke(pretrain_cmd, args + [a for s in sets for a in ("--set", s)])
    assert again.exit_code == 2 and "latest step 2); pass --resume" in again.output


@pytest.mark.slow
def test_backbone_initialises_the_detector(tmp_path):
    # Stage 2's path (`owl train` with init.mode="clip"): the towers arrive unchanged.
    params = pt.init_pretrainer(TINY, jax.random.PRNGKey(0))
    path = pt.save_backbone(tmp_path / "backbone.safetensors", TINY, params, step=7)
    detector = initial_params(mode="clip", source=str(path), config=TINY, rng=jax.random.PRNGKey(1))
    loaded = flatten_params(detector["backbone"]["clip"])
    expected = flatten_params(params["clip"])
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(np.asarray(loaded[key]), np.asarray(value), err_msg=key)


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_stepz=3", "unknown config key 'num_stepz'; did you mean num_steps"),
        ("model.depth=3", "unknown config key 'model.depth'"),
        ("num_steps=many", "num_steps='many': expected an integer"),
        ("num_steps", "expected KEY=VALUE"),
    ],
)
def test_cli_rejects_bad_overrides(tmp_path, override, message):
    args = ["--config", CONFIG_FILE, "--workdir", str(tmp_path), "--set", override]
    result = CliRunner().invoke(pretrain_cmd, args)
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "metrics.jsonl").exists()


def test_cli_rejects_groups_split_across_batches(tmp_path):
    args = ["--config", CONFIG_FILE, "--workdir", str(tmp_path), "--set", "batch_size=6"]
    result = CliRunner().invoke(pretrain_cmd, args)
    assert result.exit_code == 2
    assert "batch_size 6 is not a multiple of data.group_size 4" in result.output


def test_reading_a_foreign_safetensors_file_names_it(tmp_path):
    import safetensors.numpy

    path = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"a": np.zeros(2, np.float32)}, str(path))
    with pytest.raises(ValueError, match="other.safetensors: not an owl CLIP backbone"):
        pt.read_backbone(path)


def test_cli_print_config_shows_overrides_and_trains_nothing(tmp_path):
    args = ["--config", CONFIG_FILE, "--workdir", str(tmp_path / "run"), "--print-config",
            "--set", "num_steps=77"]  # fmt: skip
    result = CliRunner().invoke(pretrain_cmd, args)
    assert result.exit_code == 0, result.output
    assert "num_steps: 77" in result.output
    assert "vision_width: 64" in result.output  # the shapes-tiny architecture
    assert not (tmp_path / "run").exists()


def test_pretraining_config_builds_the_shapes_tiny_architecture():
    from owl.models.configs import get_variant
    from owl.train.config import load_config
    from owl.train.pretrain import model_config_from

    assert model_config_from(load_config(CONFIG_FILE)) == get_variant("shapes-tiny")
