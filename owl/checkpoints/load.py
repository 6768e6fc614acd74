"""`owl.load`: one entry point from a name or a path to a ready `OwlModel`.

Sources, tried in this order:
  1. an existing path: an owl .safetensors file, an official Flax msgpack file, or a transformers
     directory (config.json + model.safetensors);
  2. a registry name (`owl models` lists them): the official checkpoint is downloaded once into the
     cache, or a model shipped inside the package is used.
The parameters are checked against the architecture's expected shapes before a model is built, so
a checkpoint that does not fit fails with the first mismatched parameter named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from owl.checkpoints import registry
from owl.checkpoints.formats import CheckpointError, check_params, read_checkpoint
from owl.models.configs import ModelConfig, get_variant
from owl.models.model import OwlModel
from owl.models.owl_vit import param_shapes


def load(
    source: str | os.PathLike,
    *,
    config: ModelConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
) -> OwlModel:
    """Loads a detector.

    Args:
      source: a path (owl .safetensors, official msgpack, transformers directory) or a registry
        name such as "owlvit-b32" or "owlv2-b16-ensemble".
      config: an explicit architecture, or field overrides (e.g. {"image_size": 640} together
        with {"native_grid_size": 60} for posemb truncation). Official files carry no config;
        theirs is inferred from parameter shapes unless given.
      progress: show a progress bar when a registry model is downloaded.

    Returns:
      An `OwlModel` holding the config and parameters.

    Raises:
      CheckpointError: unreadable, refused (pickle) or mismatched checkpoints.
      registry.UnknownModelError: `source` is neither a path nor a known name.
      owl.checkpoints.download.DownloadError: the file could not be downloaded.
    """
    path = Path(source)
    if path.exists():
        cfg, params = read_checkpoint(path, config=config)
        label = str(path)
    else:
        entry = registry.get_entry(str(source))  # raises UnknownModelError with suggestions
        path = registry.resolve(entry.name, progress=progress)
        explicit = config is not None
        if config is None:
            config = get_variant(entry.variant)
        try:
            cfg, params = read_checkpoint(path, config=config)
        except CheckpointError as e:  # a damaged cached file: say how to get a good one
            if explicit:
                raise
            hint = registry.redownload_hint(entry.name)
            raise CheckpointError(f"{e} (the cached file of model {entry.name}: {hint})") from None
        label = entry.name
    check_params(params, param_shapes(cfg))
    return OwlModel(cfg, params, source=label)


__all__ = ["load", "CheckpointError"]
