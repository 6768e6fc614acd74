"""`owl.load`: one entry point from a name or a path to a ready `OwlModel`.

Sources, tried in this order:
  1. an existing path: an owl .safetensors file, an official Flax msgpack file, or a transformers
     directory (config.json + model.safetensors);
  2. a registry name (`owl models` lists them): the official checkpoint is downloaded once into the
     cache, or a model shipped inside the package is used.
The parameters are checked against the architecture's expected shapes before a model is built, so
a checkpoint that does not fit fails with the first mismatched parameter named.

This module also says which format a path holds (`sniff_format`) and dispatches to that format's
reader (`read_checkpoint`); the readers import only the shared tree module
(`owl.checkpoints.tree`), never this one, so there is no import circle.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from owl import compilation_cache
from owl.checkpoints import registry
from owl.checkpoints.official import read_official
from owl.checkpoints.owl_format import is_owl_file, read_owl
from owl.checkpoints.transformers_format import read_transformers
from owl.checkpoints.tree import (
    PICKLE_HINT,
    PICKLE_SUFFIXES,
    CheckpointError,
    Params,
    check_params,
    config_mismatches,
    infer_config,
)
from owl.jax_support import check_jax
from owl.models.configs import ModelConfig, get_variant
from owl.models.model import OwlModel
from owl.models.owl_vit import param_shapes

# -- which format is this? ---------------------------------------------------------------------


def sniff_format(path: str | Path) -> str:
    """Says which format a checkpoint path holds: "owl", "official", "transformers" or "pickle".

    A directory with config.json (or a safetensors file next to one) is transformers; a
    safetensors file whose metadata says format "owl" is owl's (also gzip-compressed, named
    ".safetensors.gz"); a file that starts with a msgpack
    map is an official Flax checkpoint; pickle or zip (torch.save) magic, or a .bin/.pt/.pth/...
    suffix, is a pickle, which the readers refuse.

    Raises:
      CheckpointError: missing path or an unrecognised file.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "transformers"
        raise CheckpointError(f"{path}: directory has no config.json (not a transformers model)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return "pickle"
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"\x1f\x8b") and path.name.lower().endswith(".safetensors.gz"):
        if is_owl_file(path):
            return "owl"
        raise CheckpointError(f"{path}: gzip file that is not an owl checkpoint")
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "pickle"  # zip: torch.save; 0x80 0x02..0x05: a pickle protocol header
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        if is_owl_file(path):
            return "owl"
        damage = safetensors_damage(path)
        if damage is not None:
            raise CheckpointError(
                f"{path}: truncated or corrupt safetensors file ({damage}); copy or download it "
                "again (a registry model: delete the file and run again to re-download it)"
            )
        if (path.parent / "config.json").is_file():
            return "transformers"
        raise CheckpointError(
            f"{path}: safetensors file without owl metadata and no config.json beside it; "
            "pass the transformers model directory, or convert with `owl convert`"
        )
    if head[:1] and (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):
        return "official"  # msgpack fixmap / map16 / map32
    raise CheckpointError(
        f"{path}: unrecognised checkpoint (expected an owl .safetensors file, an official Flax "
        "msgpack checkpoint or a transformers model directory)"
    )


def safetensors_damage(path: str | Path) -> str | None:
    """Why a file that starts like a safetensors file cannot be one, or None if it looks whole.

    Reads only the header: an 8-byte little-endian header length, that much JSON, then the
    tensor data, whose end (the largest `data_offsets` end) must be the end of the file. Used so
    that a cut-off download is called truncated, not "without owl metadata".
    """
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            return f"the header needs {8 + header_len} bytes but the file has {size}"
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, ValueError):
            return "the header is not valid JSON"
    if not isinstance(header, dict):
        return "the header is not a JSON object"
    ends = [
        v["data_offsets"][1]
        for k, v in header.items()
        if k != "__metadata__" and isinstance(v, dict) and len(v.get("data_offsets") or ()) == 2
    ]
    expected = 8 + header_len + max(ends, default=0)
    if expected != size:
        return f"its header describes {expected} bytes but the file has {size}"
    return None


def read_checkpoint(
    path: str | Path, *, config: ModelConfig | Mapping[str, Any] | None = None
) -> tuple[ModelConfig, Params]:
    """Reads any supported checkpoint path into (config, canonical params).

    Args:
      path: an owl .safetensors file, an official msgpack file, or a transformers directory
        (or the safetensors file inside one).
      config: explicit architecture (or field overrides) for official files, which carry no
        config; for the other formats it must agree with the stored config.

    Raises:
      CheckpointError: unreadable, refused (pickle) or inconsistent checkpoints.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt == "pickle":
        raise CheckpointError(f"{path}: refusing to read a pickled checkpoint; {PICKLE_HINT}")
    if fmt == "official":
        params = read_official(path)
        stored = infer_config(params)
    elif fmt == "owl":
        stored, params = read_owl(path)
    else:
        stored, params = read_transformers(path if path.is_dir() else path.parent)
    if config is None:
        return stored, params
    if isinstance(config, ModelConfig):
        wanted = config
    elif fmt == "official":
        wanted = infer_config(params, overrides=config)
    else:
        wanted = stored.replace(**dict(config))
    bad = config_mismatches(wanted, params)
    if bad:
        raise CheckpointError(f"{path}: the given config does not fit the weights: {bad[0]}")
    return wanted, params


# -- a ready model ---------------------------------------------------------------------------


def load(
    source: str | os.PathLike,
    *,
    config: ModelConfig | Mapping[str, Any] | None = None,
    progress: bool = True,
    precision: str = "f32",
) -> OwlModel:
    """Loads a detector.

    Args:
      source: a path (owl .safetensors, official msgpack, transformers directory) or a registry
        name such as "owlvit-b32" or "owlv2-b16-ensemble".
      config: an explicit architecture, or field overrides (e.g. {"image_size": 640} together
        with {"native_grid_size": 60} for posemb truncation). Official files carry no config;
        theirs is inferred from parameter shapes unless given.
      progress: show a progress bar when a registry model is downloaded.
      precision: "f32" (default) or "bf16", the image tower's compute precision (see
        `owl.models.model.PRECISIONS`; docs/detect.md gives the measured agreement).

    Returns:
      An `OwlModel` holding the config and parameters.

    Raises:
      CheckpointError: unreadable, refused (pickle) or mismatched checkpoints.
      registry.UnknownModelError: `source` is neither a path nor a known name.
      owl.checkpoints.download.DownloadError: the file could not be downloaded.
    """
    check_jax()  # one line if this JAX is outside the supported range (a PYTHONPATH run)
    compilation_cache.enable(registry.cache_dir() / "xla")
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
    _move_to_device(params)
    return OwlModel(cfg, params, source=label, precision=precision)


def _move_to_device(params: dict) -> None:
    """Replaces each numpy leaf by a device array, in place, freeing the host copy as it goes.

    `jax.device_put` on CPU aliases numpy memory, and the first jitted call then copies every
    parameter anyway, so the model was held twice (measured on B/32: 1.35 GB peak against 0.82
    GB once loaded). Copying leaf by leaf and handing the freed host memory back to the system
    (glibc keeps it otherwise) keeps the peak at the model plus one tensor.
    """
    trim = _malloc_trim()
    for key, value in params.items():
        if isinstance(value, dict):
            _move_to_device(value)
        elif isinstance(value, np.ndarray):
            params[key] = jnp.array(value, copy=True)
            del value
            trim()


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back
        return lambda: None


__all__ = ["CheckpointError", "load", "read_checkpoint", "sniff_format"]
