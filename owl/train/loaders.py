"""Training and validation loaders for this process, and host batches -> global arrays
(phase 2 of `owl.train.trainer`)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

from owl.models.configs import ModelConfig
from owl.train.setup import TrainingError


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
    # COCO, YOLO or VOC (`owl.data.formats`): a COCO JSON with its image folder, or a folder.
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
