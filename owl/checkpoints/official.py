"""Official scenic OWL-ViT / OWLv2 checkpoints: Flax msgpack files in every naming era.

A checkpoint is one `flax.serialization` msgpack file (spec §1.10). Its layout changed over time,
and the official loader handles the eras with `_fix_old_layernorm` / `_fix_resblock_naming`:

| era       | parameters at        | block key       | block LayerNorms        |
|-----------|----------------------|-----------------|-------------------------|
| v1-2022   | optimizer/target     | resblocks.{i}   | ln_1, ln_2 (torch CLIP) |
| v2-2023   | params               | resblocks.{i}   | ln_0, ln_1              |
| current   | params (or the top)  | resblocks_{i}   | ln_0, ln_1              |

The official fix-up assumes every block is old and crashes on new trees (scenic issue #1127,
"KeyError: 'ln_2'"); here each block is inspected on its own, so old, new and mixed trees all
load. Keys owl does not use (`class_head/padding*` of old v1 files, `backbone/clip/visual/proj`,
optimizer state, a mask head) are dropped and reported through `logging`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from owl.checkpoints.tree import (
    CheckpointError,
    Params,
    as_float32,
    flatten_params,
    is_canonical_path,
    unflatten_params,
)
from owl.files import atomic_write

logger = logging.getLogger(__name__)

ERAS = ("v1-2022", "v2-2023", "current")

# Extras known to be harmless: logged at INFO. Anything else dropped is logged as a WARNING.
_KNOWN_UNUSED = re.compile(
    r"class_head/padding(_bias)?|backbone/clip/visual/proj|optimizer/state(/.*)?"
)
_BLOCK_KEY = re.compile(r"resblocks[._](\d+)")


# -- reading -----------------------------------------------------------------------------------


def read_official(source: str | os.PathLike | bytes) -> Params:
    """Reads an official Flax msgpack checkpoint into the canonical parameter tree.

    Args:
      source: path of the checkpoint file, or its bytes.

    Returns:
      Nested dict of float32 arrays in the canonical layout (`resblocks_{i}`, `ln_0`/`ln_1`).

    Raises:
      CheckpointError: the file is missing, truncated, not msgpack, or holds no OWL parameters;
        the message names the file.
    """
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise CheckpointError(f"{name}: cannot read checkpoint ({e.strerror or e})") from None
    try:
        tree = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises ValueError, ExtraData, TypeError, ... on bad input
        raise CheckpointError(
            f"{name}: not a readable Flax msgpack checkpoint (truncated or corrupt? {e})"
        ) from None
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{name}: not a Flax checkpoint (top level is not a map)")
    try:
        params, ignored = official_to_canonical(tree)
    except CheckpointError as e:
        raise CheckpointError(f"{name}: {e}") from None
    _report_ignored(name, ignored)
    return params


def official_to_canonical(tree: Mapping[str, Any]) -> tuple[Params, list[str]]:
    """Converts a restored official state dict (any era) to the canonical tree.

    Returns:
      (params, ignored): float32 canonical params, and the "/"-joined paths that were dropped
      (whole subtrees such as "optimizer/state" are reported as one path).
    """
    raw, ignored = _locate_params(tree)
    renamed = _fix_block_names(raw)
    params: dict[str, np.ndarray] = {}
    for path, value in flatten_params(renamed).items():
        if is_canonical_path(path):
            params[path] = as_float32(value)
        else:
            ignored.append(path)
    if not any(p.startswith("backbone/clip/") for p in params):
        raise CheckpointError("no OWL-ViT parameters found (expected backbone/clip/...)")
    return unflatten_params(params), ignored


def _locate_params(tree: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
    """Finds the parameters: optimizer/target (v1), params (v2) or the top level."""
    if isinstance(tree.get("optimizer"), Mapping) and "target" in tree["optimizer"]:
        ignored = [f"optimizer/{k}" for k in tree["optimizer"] if k != "target"]
        ignored += [k for k in tree if k != "optimizer"]
        return tree["optimizer"]["target"], ignored
    if isinstance(tree.get("params"), Mapping):
        return tree["params"], [k for k in tree if k != "params"]
    return tree, []


def _fix_block_names(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Renames `resblocks.{i}` to `resblocks_{i}` and fixes each block's LayerNorm names."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        match = _BLOCK_KEY.fullmatch(key) if isinstance(value, Mapping) else None
        if match:
            new_key = f"resblocks_{match.group(1)}"
            if new_key in out:
                raise CheckpointError(f"block {match.group(1)} appears twice ({key!r})")
            out[new_key] = _fix_old_layernorm(value, key)
        elif isinstance(value, Mapping):
            out[key] = _fix_block_names(value)
        else:
            out[key] = value
    return out


def _fix_old_layernorm(block: Mapping[str, Any], key: str) -> dict[str, Any]:
    """One block: torch-CLIP names ln_1/ln_2 become ln_0/ln_1; new names are kept.

    Decided per block: a block with `ln_2` is old. Unlike scenic's `_fix_old_layernorm`, a block
    that is already new passes through (issue #1127).
    """
    block = dict(block)
    if "ln_2" not in block:
        return block
    if "ln_0" in block:
        raise CheckpointError(f"block {key!r} mixes old and new LayerNorm names (ln_0 and ln_2)")
    renamed = {k: v for k, v in block.items() if k not in ("ln_1", "ln_2")}
    if "ln_1" in block:
        renamed["ln_0"] = block["ln_1"]
    renamed["ln_1"] = block["ln_2"]
    return renamed


def _report_ignored(name: str, ignored: list[str]) -> None:
    known = [p for p in ignored if _KNOWN_UNUSED.fullmatch(p)]
    unknown = [p for p in ignored if not _KNOWN_UNUSED.fullmatch(p)]
    if known:
        logger.info("%s: ignored %d unused entries: %s", name, len(known), ", ".join(known))
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        logger.warning("%s: ignored %d entries owl does not use: %s", name, len(unknown), shown)


# -- writing -----------------------------------------------------------------------------------


def canonical_to_official(params: Mapping[str, Any], era: str = "current") -> dict[str, Any]:
    """Lays a canonical tree out as the official checkpoints of `era` stored it.

    "v1-2022": {"optimizer": {"target": ...}}, `resblocks.{i}`, `ln_1`/`ln_2`, plus the unused
    `class_head/padding` [E] and `class_head/padding_bias` [1] of the early v1 files (zeros; the
    official v1 files hold the target only, no optimizer moments). "v2-2023": {"params": ...}
    with `resblocks.{i}` and `ln_0`/`ln_1`. "current": {"params": ...}, the canonical names.
    """
    if era not in ERAS:
        raise ValueError(f"unknown checkpoint era {era!r}; choose one of {', '.join(ERAS)}")
    flat = {p: as_float32(v) for p, v in flatten_params(params).items()}
    if era == "current":
        return {"params": unflatten_params(flat)}
    out = {}
    for path, value in flat.items():
        path = re.sub(r"/resblocks_(\d+)/", r"/resblocks.\1/", path)
        if era == "v1-2022":
            path = re.sub(r"(/resblocks\.\d+/)ln_([01])/", _old_ln, path)
        out[path] = value
    if era == "v2-2023":
        return {"params": unflatten_params(out)}
    embed_dim = flat["class_head/Dense_0/bias"].shape[0]
    out["class_head/padding"] = np.zeros((embed_dim,), np.float32)
    out["class_head/padding_bias"] = np.zeros((1,), np.float32)
    return {"optimizer": {"target": unflatten_params(out)}}


def _old_ln(match: re.Match) -> str:
    return f"{match.group(1)}ln_{int(match.group(2)) + 1}/"


def write_official(
    path: str | os.PathLike, params: Mapping[str, Any], era: str = "current"
) -> Path:
    """Writes a canonical tree as an official msgpack checkpoint of the given naming era.

    The file is written to a temporary name and moved into place, so `path` is never partial.
    See `canonical_to_official` for the layouts. Returns the path written.
    """
    path = Path(path)
    data = serialization.msgpack_serialize(canonical_to_official(params, era))
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path
