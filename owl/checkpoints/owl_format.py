"""owl's own checkpoint format: one safetensors file that carries its model config.

The file is plain safetensors (no pickle, memory-mappable, readable by any safetensors tool).
Tensors are keyed by the "/"-joined canonical parameter path
("backbone/clip/visual/conv1/kernel"), stored as float32, and the header metadata holds

    {"format": "owl", "format_version": "1", "config": <ModelConfig JSON>}

so a file is self-describing: `read_owl` needs no shape inference and no registry.

A name ending in ".gz" is the same file gzip-compressed (`read_owl` decompresses it in memory).
That is how the package ships `shapes-tiny`: its CLIP vocabulary table is mostly zero rows, which
compress to almost nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.numpy

from owl.checkpoints.tree import (
    CheckpointError,
    Params,
    as_float32,
    config_mismatches,
    flatten_params,
    unflatten_params,
)
from owl.files import atomic_path
from owl.models.configs import ModelConfig

FORMAT_NAME = "owl"
FORMAT_VERSION = "1"


def save_owl(path: str | os.PathLike, config: ModelConfig, params: Mapping[str, Any]) -> Path:
    """Writes `params` and `config` to one owl safetensors file (atomically).

    Raises:
      CheckpointError: the parameter shapes contradict `config`.
    """
    path = Path(path)
    bad = config_mismatches(config, params)
    if bad:
        raise CheckpointError(f"{path}: config does not match the parameters: {', '.join(bad)}")
    tensors = {k: as_float32(v) for k, v in flatten_params(params).items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "config": config.to_json()}
    with atomic_path(path) as tmp:
        if is_compressed(path):
            data = safetensors.numpy.save(tensors, metadata=metadata)
            tmp.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
        else:
            safetensors.numpy.save_file(tensors, str(tmp), metadata=metadata)
    return path


def read_owl(path: str | os.PathLike) -> tuple[ModelConfig, Params]:
    """Reads an owl checkpoint file.

    Returns:
      (config, params): the stored config and the nested float32 parameter tree.

    Raises:
      CheckpointError: missing, truncated or corrupt file, a safetensors file that is not owl's,
        a newer format version, or an invalid stored config; the message names the file.
    """
    path = Path(path)
    metadata = _metadata(path)
    if metadata.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path}: not an owl checkpoint (safetensors metadata format is "
            f"{metadata.get('format')!r}); use `owl convert` to make one"
        )
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: owl format version {version!r} is not supported (this owl reads "
            f"version {FORMAT_VERSION}); upgrade owl"
        )
    try:
        config = ModelConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid model config in the metadata ({e})") from None
    try:
        if is_compressed(path):
            flat = safetensors.numpy.load(gzip.decompress(path.read_bytes()))
        else:
            flat = safetensors.numpy.load_file(path)
    except Exception as e:  # SafetensorError, zlib/EOF errors: truncated or corrupt data
        raise CheckpointError(
            f"{path}: not a readable owl checkpoint, truncated or corrupt ({e}); copy or "
            "download it again"
        ) from None
    return config, unflatten_params(dict(sorted(flat.items())))


def is_owl_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a readable safetensors file whose metadata says format "owl"."""
    try:
        return _metadata(Path(path)).get("format") == FORMAT_NAME
    except CheckpointError:
        return False


def is_compressed(path: str | os.PathLike) -> bool:
    """Whether `path` names a gzip-compressed owl file (by its ".gz" suffix)."""
    return Path(path).name.lower().endswith(".gz")


def _gzip_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata of a gzip-compressed file (reads only the header)."""
    with gzip.open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100_000_000:
            raise ValueError(f"header of {size} bytes")
        header = json.loads(f.read(size))
    return dict(header.get("__metadata__") or {})


def _metadata(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if is_compressed(path):
        try:
            return _gzip_metadata(path)
        except (OSError, EOFError, struct.error, ValueError) as e:
            raise CheckpointError(
                f"{path}: not a readable gzip-compressed safetensors file ({e})"
            ) from None
    try:
        with safetensors.safe_open(path, framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # SafetensorError on a bad header
        raise CheckpointError(
            f"{path}: not a readable safetensors file, truncated or corrupt ({e}); copy or "
            "download it again"
        ) from None
