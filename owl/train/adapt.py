"""The small-data front door: `owl train --data PATH --model NAME --out FILE.safetensors`.

Turns (data set, model) into the adapt recipe (owl/configs/adapt.py) with the defaults that depend
on them (the schedule scaled to the data set's size, the starting weights, the data paths), each
returned with its reason so the CLI prints every default at start. ``--config``/``--set`` values
are applied after these, so they override anything. Checks the inputs first: an empty data set,
a class without a box, and a model that cannot be trained (an export folder) are one-line
`AdaptError`s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from owl.train.config import RECIPES_DIR, load_config, resolve_config

ADAPT_RECIPE = RECIPES_DIR / "adapt.py"


class AdaptError(ValueError):
    """The front door's inputs cannot be trained on; the message names the input and the fix."""


def check_model(model: str) -> None:
    """Refuses a model that cannot be trained: an ONNX / StableHLO export folder."""
    from owl.export.manifest import MANIFEST_NAME

    path = Path(model)
    if path.is_dir() and ((path / MANIFEST_NAME).is_file() or any(path.glob("*.onnx"))):
        raise AdaptError(
            f"--model {model}: an export folder (ONNX/StableHLO graphs) cannot be trained; give "
            "the model it was exported from (a registry name or a checkpoint file)"
        )


def check_dataset(data: str | os.PathLike) -> Any:
    """Loads the data set (COCO, YOLO or VOC) and refuses one with nothing to learn from.

    Returns:
      The `owl.data.coco.DetectionDataset`.

    Raises:
      AdaptError: no images, no boxes, or a class that has no box.
    """
    from owl.data.formats import load_dataset

    dataset, _ = load_dataset(data, log=False)
    boxes = sum(dataset.label_counts.values())
    if len(dataset) == 0 or boxes == 0:
        raise AdaptError(
            f"--data {data}: the data set has {len(dataset)} usable image(s) and {boxes} box(es); "
            "label at least one box per class"
        )
    empty = [n for n in dataset.class_names if not dataset.label_counts.get(n)]
    if empty:
        raise AdaptError(
            f"--data {data}: class(es) without any box: {', '.join(sorted(empty))}; label some, "
            "or remove the class from the data set"
        )
    return dataset


def front_door(
    data: str | os.PathLike,
    model: str,
    *,
    config_spec: str | None = None,
    overrides: Sequence[str] = (),
) -> tuple[Any, list[tuple[str, str, str]]]:
    """The config for adapting ``model`` to ``data``, and the defaults set (key, value, why).

    Raises:
      AdaptError: bad inputs (see `check_model`, `check_dataset`).
      owl.train.config.ConfigError: a bad --config or --set.
    """
    import importlib.util
    import sys

    check_model(model)
    dataset = check_dataset(data)
    sys.path.insert(0, str(RECIPES_DIR))
    try:
        spec = importlib.util.spec_from_file_location("owl_adapt_recipe", ADAPT_RECIPE)
        recipe = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(recipe)
    finally:
        sys.path.remove(str(RECIPES_DIR))
    base = recipe.for_model(model)
    batch = int(base.train.batch_size)
    steps = recipe.steps_for(len(dataset), batch)
    n = len(dataset)
    defaults = [
        ("init.source", str(model), "--model"),
        ("model.variant", str(base.model.variant), f"the {recipe.family(model)} recipe"),
        ("data.train_annotations", str(data), "--data"),
        ("train.num_steps", str(steps), f"{n} images x 100 epochs / batch {batch}"),
        ("train.batch_size", str(batch), "recipe"),
        ("optim.lr", str(base.optim.lr), "recipe (a few dozen images)"),
        ("optim.freeze_text", str(base.optim.freeze_text), "recipe: keep the text tower"),
        ("cdc.enabled", "True", "CDC early stopping; --out holds CDC's pick"),
        ("cdc.patience", str(base.cdc.patience), "recipe"),
        ("train.ensemble_weight", str(base.train.ensemble_weight), "recipe"),
    ]
    flat = [f"{k}={v}" for k, v, _ in defaults]
    if config_spec:
        config = load_config(resolve_config(config_spec), [*flat, *overrides])
    else:
        config = _recipe_config(base, [*flat, *overrides])
    return config, defaults


def _recipe_config(base: Any, overrides: Sequence[str]) -> Any:
    from owl.train.config import apply_override

    base.lock()
    for item in overrides:
        apply_override(base, item)
    return base
