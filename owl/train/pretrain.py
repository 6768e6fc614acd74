"""Contrastive image-text pretraining of a tiny CLIP on ShapesWorld (stage 1 of the OWL recipe).

OWL-ViT starts from a CLIP backbone trained contrastively on image-caption pairs, then fine-tunes
it into a detector. This module is the first stage at toy scale: a `ContrastivePretrainer` (the
CLIP towers of `owl.models.clip.CLIP` under `clip/` plus OpenAI CLIP's bias-free visual
projection), an endless, deterministic stream of ShapesWorld image-caption pairs, a jitted
train step on CLIP's symmetric InfoNCE loss, the training loop and a zero-shot retrieval
evaluation. The loop is built from the detector trainer's parts: the optimiser of
`owl.train.optim`, the logs of `owl.train.logging` and the orbax checkpoints of
`owl.train.checkpointing`, so `owl pretrain --resume` continues a stopped run exactly as
`owl train --resume` does.

The saved backbone is a safetensors file whose keys are the "/"-joined parameter paths:
`clip/visual/...`, `clip/text/...`, `clip/logit_scale` (exactly the detector's
`backbone/clip/...` subtree) and `visual_projection` (the [W, E] CLIP projection of the class
token, which OWL drops, spec §1.2 step 8). Its metadata holds {"format": "owl-clip-backbone",
"config": <ModelConfig JSON>, "step": ...}.

Captions (`owl.data.shapes.fitting_caption`) name every object as "colour shape" in a random
order, in the longest form that fits the 16-position text context of the detector.

Colour alone tells almost every multi-object caption in a batch apart, so a model trained on
plain random scenes learns colours and stalls on shapes. Scenes therefore come in groups of
hard negatives (`scene_categories`): a scene, a twin with the same colours but other shapes,
one with the same shapes but other colours, and one with the colours dealt to other shapes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from owl.checkpoints.tree import flatten_params, unflatten_params
from owl.data import shapes
from owl.files import atomic_path, atomic_write
from owl.models.clip import CLIP
from owl.models.configs import ModelConfig
from owl.ops.image import normalize_pixels
from owl.text.tokenizer import get_tokenizer
from owl.train import optim
from owl.train.checkpointing import Checkpointer, refuse_unless_resuming
from owl.train.logging import MetricAverager, MetricWriter, ProgressBar, read_jsonl
from owl.train.losses import contrastive_loss
from owl.train.step import TrainState

BACKBONE_FORMAT = "owl-clip-backbone"
BACKBONE_FILE = "backbone.safetensors"
CHECKPOINT_DIR = "checkpoints"
RETRIEVAL_FILE = "retrieval.json"
#: The text tower's parameters in the pretrainer's tree (its own learning-rate group).
TEXT_TOWER_REGEX = r"clip/text/.*"
_CAPTION_STREAM = 1  # third key of the caption-order rng
_GROUP_STREAM = 2  # third key of the scene-content rng (keyed by group, not scene)

Params = dict[str, Any]
Encoder = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class ContrastivePretrainer(nn.Module):
    """CLIP for contrastive pretraining: the towers under `clip/` plus `visual_projection`.

    The image embedding is `ln_post(class token) @ visual_projection` (OpenAI CLIP), the text
    embedding is the text tower's projected end-token feature, and `clip/logit_scale` is the
    learnable log-temperature.

    Attributes:
      config: the architecture; `embed_dim` is the shared embedding size E.
      vision_drop_path, text_drop_path: stochastic depth rates (training only).
    """

    config: ModelConfig
    vision_drop_path: float = 0.0
    text_drop_path: float = 0.0

    def setup(self) -> None:
        self.clip = CLIP(self.config, self.vision_drop_path, self.text_drop_path)
        width = self.config.vision_width
        self.visual_projection = self.param(
            "visual_projection", nn.initializers.normal(width**-0.5),
            (width, self.config.embed_dim),
        )  # fmt: skip

    def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        """[B, S, S, 3] CLIP-normalised pixels -> unnormalised image embeddings [B, E]."""
        tokens = self.clip.encode_image(images, train=train)
        return tokens[:, 0] @ self.visual_projection

    def encode_text(self, input_ids: jax.Array, train: bool = False) -> jax.Array:
        """[N, 16] token ids -> unnormalised text embeddings [N, E]."""
        return self.clip.encode_text(input_ids, train=train)

    def __call__(self, images: jax.Array, input_ids: jax.Array, train: bool = False):
        """Returns (image embeddings [B, E], text embeddings [B, E], logit_scale)."""
        return (
            self.encode_image(images, train),
            self.encode_text(input_ids, train),
            self.clip.logit_scale,
        )


def init_pretrainer(config: ModelConfig, rng: jax.Array) -> Params:
    """Freshly initialised parameters {"clip": ..., "visual_projection": ...}."""
    model = ContrastivePretrainer(config)
    images = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    ids = jnp.zeros((1, config.context_length), jnp.int32)
    return jax.jit(model.init)(rng, images, ids)["params"]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def normalize_images(images: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] RGB -> float32 (x / 255 - CLIP_MEAN) / CLIP_STD."""
    return normalize_pixels(images.astype(np.float32) / 255.0)


@dataclasses.dataclass(frozen=True)
class PairBatch:
    """A batch of image-caption pairs.

    Attributes:
      images: float32 [B, S, S, 3], CLIP-normalised.
      input_ids: int32 [B, 16] caption token ids.
      captions: the B captions.
      categories: per example, the sorted tuple of its object categories.
    """

    images: np.ndarray
    input_ids: np.ndarray
    captions: tuple[str, ...]
    categories: tuple[tuple[int, ...], ...]


def _redraw(rng: np.random.Generator, cats: list[int], axis: int) -> list[int]:
    """Changes every object's colour (axis 0) or shape (axis 1), keeping categories distinct."""
    n = len(shapes.SHAPES)
    out: list[int] = []
    for cat in cats:
        colour, shape = divmod(cat, n)
        if axis == 0:
            candidates = [v * n + shape for v in range(n) if v != colour]
        else:
            candidates = [colour * n + v for v in range(n) if v != shape]
        out.append(int(rng.choice([c for c in candidates if c not in out])))
    return out


def _swap_colours(rng: np.random.Generator, cats: list[int]) -> list[int] | None:
    """Deals the objects' colours out again so that some colour-shape pairs change, or None."""
    n = len(shapes.SHAPES)
    colours, shape_ids = [c // n for c in cats], [c % n for c in cats]
    for _ in range(8):
        new = [c * n + s for c, s in zip(rng.permutation(colours), shape_ids, strict=True)]
        if len(set(new)) == len(new) and set(new) != set(cats):
            return [int(c) for c in new]
    return None


def scene_categories(
    seed: int, index: int, *, group_size: int = 1, min_objects: int = 1, max_objects: int = 4
) -> list[int]:
    """The categories of pretraining scene `index`: groups of hard negatives for each other.

    Scenes come in consecutive groups of `group_size`. The first of a group draws 1 to 4
    distinct categories uniformly; member m > 0 is a twin of it that a model can tell apart
    only by what the first does not share: (m - 1) % 3 == 0 redraws every shape (same
    colours), 1 redraws every colour (same shapes), 2 deals the same colours to different
    shapes (binding; a shape redraw when that changes nothing). With twins in one batch,
    colour alone no longer identifies a caption, so shapes and their binding must be learnt.
    """
    group, member = divmod(int(index), group_size)
    rng = np.random.default_rng([seed, group, _GROUP_STREAM])
    count = int(rng.integers(min_objects, max_objects + 1))
    cats = [int(c) for c in rng.choice(shapes.NUM_CATEGORIES, size=count, replace=False)]
    if member == 0:
        return cats
    rng = np.random.default_rng([seed, group, _GROUP_STREAM, member])
    kind = (member - 1) % 3
    if kind == 2:
        swapped = _swap_colours(rng, cats)
        if swapped is not None:
            return swapped
    return _redraw(rng, cats, axis=0 if kind == 1 else 1)


def make_pair_batch(
    seed: int,
    indices: Sequence[int],
    *,
    image_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 4,
    group_size: int = 1,
    context_length: int = 16,
) -> PairBatch:
    """Renders pretraining scenes `indices` of world `seed` with their captions.

    Scene `index` holds the categories `scene_categories` gives (any of the 64, novel ones
    included: the image-text stage sees all concepts), laid out by ShapesWorld's own stream
    for `index`. The caption names the objects in a random order drawn from the stream
    `default_rng([seed, index, 1])`, so a batch depends only on its arguments.
    """
    images, captions, categories = [], [], []
    for index in indices:
        cats = scene_categories(
            seed, index, group_size=group_size, min_objects=min_objects, max_objects=max_objects
        )
        kwargs = dict(image_size=image_size, categories=cats, max_objects=len(cats))
        try:
            scene = shapes.sample_scene(seed, int(index), min_objects=len(cats), **kwargs)
        except ValueError:  # could not place them all: fewer objects (rare)
            scene = shapes.sample_scene(seed, int(index), **kwargs)
        order = np.random.default_rng([seed, int(index), _CAPTION_STREAM]).permutation(
            len(scene.objects)
        )
        cats = [scene.objects[i].category for i in order]
        images.append(scene.image)
        captions.append(shapes.fitting_caption(cats, context_length))
        categories.append(tuple(sorted(cats)))
    ids = get_tokenizer().tokenize(captions, context_length=context_length, truncate=True)
    return PairBatch(
        images=normalize_images(np.stack(images)),
        input_ids=ids,
        captions=tuple(captions),
        categories=tuple(categories),
    )


def iterate_pair_batches(
    seed: int,
    batch_size: int,
    *,
    start_step: int = 0,
    num_steps: int | None = None,
    prefetch: int = 2,
    **scene_kwargs: Any,
) -> Iterator[PairBatch]:
    """Endless (or `num_steps`-long) stream of batches; batch s holds scenes s*B .. (s+1)*B - 1.

    Batches are rendered in a background thread, `prefetch` ahead, so rendering overlaps the
    train step; the output depends only on the arguments, so a run that restarts at
    `start_step` sees exactly the batches an uninterrupted one would.

    Args:
      seed: ShapesWorld world seed.
      batch_size: pairs per batch B.
      start_step: first batch to yield.
      num_steps: number of batches (None: endless).
      prefetch: batches rendered ahead (0: render in the caller's thread).
      **scene_kwargs: `image_size`, `min_objects`, `max_objects`, `group_size`,
        `context_length` for `make_pair_batch`.
    """
    stop = None if num_steps is None else start_step + num_steps

    def batch(step: int) -> PairBatch:
        first = step * batch_size
        return make_pair_batch(seed, range(first, first + batch_size), **scene_kwargs)

    def steps() -> Iterator[int]:
        step = start_step
        while stop is None or step < stop:
            yield step
            step += 1

    if prefetch <= 0:
        for step in steps():
            yield batch(step)
        return

    buffer: queue.Queue = queue.Queue(maxsize=prefetch)
    done = threading.Event()

    def produce() -> None:
        try:
            for step in steps():
                item = batch(step)
                while not done.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if done.is_set():
                    return
            buffer.put(StopIteration())
        except BaseException as err:  # surfaced in the consumer
            buffer.put(err)

    worker = threading.Thread(target=produce, name="shapes-pairs", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if isinstance(item, StopIteration):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        done.set()


# ---------------------------------------------------------------------------------------------
# Optimisation
# ---------------------------------------------------------------------------------------------


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """The trainer's optimiser (`owl.train.optim`) with pretraining's settings.

    AdamW: linear warmup then cosine decay to 0, decoupled weight decay on matrices only, the
    averaged gradient clipped to ``grad_clip`` (0: no clipping); one learning rate for both
    towers.
    """
    return optim.make_optimizer(
        lr=config.learning_rate, text_lr=config.learning_rate, total_steps=config.num_steps,
        warmup_steps=config.warmup_steps, clip="global" if config.grad_clip else "none",
        clip_norm=float(config.grad_clip or 1.0), b2=config.adam_b2,
        weight_decay=config.weight_decay, text_regex=TEXT_TOWER_REGEX,
    )  # fmt: skip


def make_train_step(
    model: ContrastivePretrainer, optimizer: optax.GradientTransformation
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Returns a jitted step (state, images, input_ids) -> (state, metrics) on the symmetric
    InfoNCE loss; metrics: loss, logit_scale, grad_norm. The step's dropout key is
    ``fold_in(state.rng, step)``, so a resumed run draws the same keys."""

    def loss_fn(params, images, input_ids, rng):
        image_embeds, text_embeds, logit_scale = model.apply(
            {"params": params}, images, input_ids, train=True, rngs={"dropout": rng}
        )
        loss = contrastive_loss(
            image_embeds=image_embeds, text_embeds=text_embeds, logit_scale=logit_scale
        )
        return loss, logit_scale

    @jax.jit
    def step(state: TrainState, images, input_ids):
        number = state.step + 1
        rng = jax.random.fold_in(state.rng, number)
        (loss, logit_scale), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, images, input_ids, rng
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "logit_scale": logit_scale, "grad_norm": optax.tree.norm(grads)}
        return TrainState(step=number, params=params, opt_state=opt_state, rng=state.rng), metrics

    return step


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def _normalised(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _encode_in_chunks(encode: Encoder, x: np.ndarray, chunk: int) -> np.ndarray:
    return np.concatenate([np.asarray(encode(x[i : i + chunk])) for i in range(0, len(x), chunk)])


def evaluate_retrieval(
    encode_images: Encoder,
    encode_texts: Encoder,
    *,
    seed: int = 1,
    image_size: int = 128,
    images_per_category: int = 4,
    caption_images: int = 256,
    caption_batch: int = 64,
    max_objects: int = 4,
    chunk: int = 128,
) -> dict[str, float]:
    """Zero-shot retrieval accuracy on held-out ShapesWorld scenes.

    * Category retrieval: `images_per_category` one-object scenes of every category (world
      `seed`, scene i shows category i % 64); each image is matched against the 64 prompts
      "a {colour} {shape}" by cosine similarity; top-1 accuracy over base and novel images.
    * Caption retrieval: `caption_images` scenes with 1..`max_objects` objects (world
      `seed + 1`), split into groups of `caption_batch`; within a group, image->text and
      text->image top-1 accuracy. A hit is a retrieved item naming the same set of categories
      (captions of equal sets are interchangeable).

    Args:
      encode_images: CLIP-normalised float32 [N, S, S, 3] -> embeddings [N, E].
      encode_texts: int32 token ids [N, 16] -> embeddings [N, E].
      seed: evaluation world seed; keep it apart from the training seed.
      image_size, images_per_category, caption_images, caption_batch, max_objects: the sets.
      chunk: images per encoder call.

    Returns:
      {"category_top1_base", "category_top1_novel", "category_top1", "colour_top1",
       "shape_top1" (whether the best prompt has the right colour / shape, all categories),
       "caption_i2t_top1", "caption_t2i_top1", "chance_category", "chance_caption"}.
    """
    tokenizer = get_tokenizer()
    prompt_embeds = _normalised(encode_texts(tokenizer.tokenize(shapes.category_prompts())))

    n = images_per_category * shapes.NUM_CATEGORIES
    truth = np.arange(n) % shapes.NUM_CATEGORIES
    scenes = [
        shapes.sample_scene(seed, i, image_size=image_size, categories=[int(c)], max_objects=1)
        for i, c in enumerate(truth)
    ]
    images = np.stack([scene.image for scene in scenes])
    image_embeds = _normalised(_encode_in_chunks(encode_images, normalize_images(images), chunk))
    predicted = np.argmax(image_embeds @ prompt_embeds.T, axis=1)
    hits = predicted == truth
    num_shapes = len(shapes.SHAPES)
    novel = np.isin(truth, shapes.NOVEL_CATEGORY_INDICES)

    i2t, t2i = [], []
    for start in range(0, caption_images, caption_batch):
        size = min(caption_batch, caption_images - start)
        batch = make_pair_batch(
            seed + 1, range(start, start + size), image_size=image_size, max_objects=max_objects
        )
        same = np.array([[a == b for b in batch.categories] for a in batch.categories])
        sims = (
            _normalised(encode_images(batch.images)) @ _normalised(encode_texts(batch.input_ids)).T
        )
        i2t.append(same[np.arange(size), np.argmax(sims, axis=1)])
        t2i.append(same[np.argmax(sims, axis=0), np.arange(size)])
    return {
        "category_top1_base": float(hits[~novel].mean()),
        "category_top1_novel": float(hits[novel].mean()),
        "category_top1": float(hits.mean()),
        "colour_top1": float(np.mean(predicted // num_shapes == truth // num_shapes)),
        "shape_top1": float(np.mean(predicted % num_shapes == truth % num_shapes)),
        "caption_i2t_top1": float(np.concatenate(i2t).mean()) if i2t else math.nan,
        "caption_t2i_top1": float(np.concatenate(t2i).mean()) if t2i else math.nan,
        "chance_category": 1.0 / shapes.NUM_CATEGORIES,
        "chance_caption": 1.0 / caption_batch,
    }


def model_encoders(config: ModelConfig, params: Params) -> tuple[Encoder, Encoder]:
    """(encode_images, encode_texts) numpy functions of a trained `ContrastivePretrainer`."""
    model = ContrastivePretrainer(config)
    images_fn = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode_image"))
    texts_fn = jax.jit(lambda p, t: model.apply({"params": p}, t, method="encode_text"))
    return (
        lambda x: np.asarray(images_fn(params, jnp.asarray(x))),
        lambda t: np.asarray(texts_fn(params, jnp.asarray(t))),
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def save_backbone(
    path: str | os.PathLike, config: ModelConfig, params: Mapping[str, Any], *, step: int = 0
) -> Path:
    """Writes pretrainer params as float32 safetensors with "/"-joined keys (atomically)."""
    import safetensors.numpy

    path = Path(path)
    tensors = {k: np.asarray(v, np.float32, order="C") for k, v in flatten_params(params).items()}
    metadata = {"format": BACKBONE_FORMAT, "config": config.to_json(), "step": str(int(step))}
    with atomic_path(path) as tmp:
        safetensors.numpy.save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_backbone(path: str | os.PathLike) -> tuple[ModelConfig, Params, dict[str, str]]:
    """Reads a file written by `save_backbone`.

    Returns:
      (config, params, metadata); params is the nested tree {"clip": ..., "visual_projection"}.

    Raises:
      ValueError: the file is not an owl CLIP backbone.
    """
    import safetensors
    import safetensors.numpy

    path = Path(path)
    with safetensors.safe_open(path, framework="numpy") as f:
        metadata = dict(f.metadata() or {})
    if metadata.get("format") != BACKBONE_FORMAT:
        raise ValueError(
            f"{path}: not an owl CLIP backbone (metadata format is {metadata.get('format')!r}); "
            "write one with `owl pretrain`"
        )
    config = ModelConfig.from_dict(json.loads(metadata["config"]))
    return config, unflatten_params(safetensors.numpy.load_file(path)), metadata


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def model_config_from(config: Any) -> ModelConfig:
    """The `ModelConfig` of a pretraining ConfigDict's `model` section."""
    return ModelConfig.from_dict(dict(config.model))


class PretrainingError(ValueError):
    """A pretraining run cannot start as asked (bad config, or checkpoints without resume)."""


def pretrain(
    config: Any, workdir: str | os.PathLike, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Runs contrastive pretraining and writes everything to `workdir`.

    Writes what `owl train` writes, with the trainer's parts: `metrics.jsonl` (+ TensorBoard
    events) through `owl.train.logging`, orbax checkpoints of (step, params, optimiser state,
    RNG key) every `config.checkpoint_every` steps in `checkpoints/<step>/`
    (`owl.train.checkpointing`), and at the end `backbone.safetensors` and `retrieval.json`.
    The pair stream is a function of the step, so the data position is the step itself; a run
    resumed from a checkpoint logs and ends exactly as an uninterrupted one.

    Args:
      config: a ConfigDict as `configs/shapes_clip.py` returns.
      workdir: output directory (created if missing); it must hold no checkpoints unless
        ``resume``.
      resume: continue from the latest checkpoint in ``workdir`` (none: start fresh).
      progress: show a progress bar.

    Returns:
      Summary: steps, wall_s, final_loss (mean of the last logged window), retrieval results
      and the backbone path.

    Raises:
      PretrainingError: a batch that splits a group of twins, or checkpoints without ``resume``.
    """
    if config.batch_size % config.data.group_size:
        raise PretrainingError(
            f"batch_size {config.batch_size} is not a multiple of data.group_size "
            f"{config.data.group_size}; twins of one group must share a batch"
        )
    workdir = Path(workdir).absolute()
    model_config = model_config_from(config)
    model = ContrastivePretrainer(model_config, config.vision_drop_path, config.text_drop_path)
    optimizer = make_optimizer(config)
    train_step = make_train_step(model, optimizer)
    lr = optim.learning_rates(
        lr=config.learning_rate, text_lr=config.learning_rate, total_steps=config.num_steps,
        warmup_steps=config.warmup_steps,
    )["lr"]  # fmt: skip

    checkpoints = Checkpointer(workdir / CHECKPOINT_DIR, max_to_keep=int(config.keep_checkpoints))
    latest = refuse_unless_resuming(checkpoints, workdir, resume, PretrainingError)
    init_rng, rng = jax.random.split(jax.random.PRNGKey(config.seed))
    params = init_pretrainer(model_config, init_rng)
    state = TrainState(step=jnp.int32(0), params=params, opt_state=optimizer.init(params), rng=rng)
    if latest is not None:
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
        )
        state, data_state = checkpoints.restore(latest, abstract)
        if int(data_state["step"]) != int(state.step):
            raise PretrainingError(f"{checkpoints.directory / str(latest)}: inconsistent step")
    start = int(state.step)

    batches = iterate_pair_batches(
        config.seed, config.batch_size, start_step=start, num_steps=config.num_steps - start,
        image_size=model_config.image_size, min_objects=config.data.min_objects,
        max_objects=config.data.max_objects, group_size=config.data.group_size,
        context_length=model_config.context_length,
    )  # fmt: skip
    writer = MetricWriter(
        workdir, tensorboard=bool(config.tensorboard),
        resume_step=start if latest is not None else None,
    )  # fmt: skip
    bar = ProgressBar(config.num_steps, start, enabled=progress)
    averager = MetricAverager()
    began = window_start = time.perf_counter()
    window_steps = 0
    final_loss = math.nan
    try:
        for step, batch in enumerate(batches, start=start + 1):
            state, metrics = train_step(
                state, jnp.asarray(batch.images), jnp.asarray(batch.input_ids)
            )
            averager.add(metrics)
            bar.update(1)
            window_steps += 1
            if step % config.log_every == 0 or step == config.num_steps:
                scalars = averager.compute()
                elapsed = time.perf_counter() - window_start
                scalars["lr"] = float(lr(step))
                scalars["pairs_per_sec"] = window_steps * config.batch_size / max(elapsed, 1e-9)
                writer.write(step, scalars)
                bar.show(scalars)
                final_loss = scalars["loss"]
                window_start, window_steps = time.perf_counter(), 0
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                checkpoints.save(step, state, {"step": step})
        checkpoints.wait()
        wall_s = time.perf_counter() - began
        params = jax.device_get(state.params)
        backbone = save_backbone(
            workdir / BACKBONE_FILE, model_config, params, step=config.num_steps
        )
        encode_images, encode_texts = model_encoders(model_config, params)
        retrieval = evaluate_retrieval(
            encode_images, encode_texts, seed=config.eval.seed,
            image_size=model_config.image_size,
            images_per_category=config.eval.images_per_category,
            caption_images=config.eval.caption_images, caption_batch=config.eval.caption_batch,
            max_objects=config.data.max_objects,
        )  # fmt: skip
        writer.write(config.num_steps, retrieval, split="eval")
    finally:
        bar.close()
        writer.close()
        checkpoints.close()
    if math.isnan(final_loss):  # a finished run resumed: the last logged loss
        train = [r for r in read_jsonl(writer.path) if r.get("split") == "train"]
        final_loss = float(train[-1]["loss"]) if train else math.nan
    summary = {
        "steps": config.num_steps,
        "wall_s": round(wall_s, 1),
        "final_loss": final_loss,
        "retrieval": retrieval,
        "backbone": str(backbone),
    }
    with atomic_write(workdir / RETRIEVAL_FILE) as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    if jax.process_index() == 0:  # the process that writes the logs (the writer is closed)
        from owl.plots import training_plot_of_run

        training_plot_of_run(workdir, title="pretrain")  # loss, LR, retrieval: training.png
    return summary
