"""Initial parameters for training: random, from an OWL checkpoint, or from a CLIP-style backbone.

* "random": `owl.models.owl_vit.init_params` (new heads: zero last box layer, class-head bias
  from the prior probability 0.01).
* "owl" (fine-tuning): any checkpoint `owl.load` reads (a registry name such as "owlvit-b32" or
  "owlv2-b16", an owl .safetensors file, an official msgpack file, a transformers directory).
  When the training input size differs from the checkpoint's, the vision position embedding is
  resized; an objectness head the checkpoint lacks (v1 -> v2 architecture) starts new.
* "clip": a CLIP image-text backbone, as the official recipe starts (spec §5.1): a parameter
  tree holding ``backbone/clip/{visual,text,...}`` (or ``clip/...``, or ``visual``/``text`` at
  the top), read from a .safetensors file ("/"-joined keys) or a Flax msgpack file. The visual
  projection is dropped, the vision position embedding is resized with
  ``scipy.ndimage.zoom(order=1)`` (spec §1.12), the text position embedding is cut to 16 rows,
  and the merged-class-token LayerNorm and all heads are new.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from owl.checkpoints.tree import (
    CheckpointError,
    as_float32,
    check_params,
    flatten_params,
    unflatten_params,
)
from owl.models.configs import ModelConfig
from owl.models.owl_vit import OwlViT, PredictorMLP, param_shapes

INIT_MODES = ("random", "owl", "clip")
_ARCH_FIELDS = (
    "patch_size",
    "vision_width",
    "vision_layers",
    "vision_heads",
    "text_width",
    "text_layers",
    "text_heads",
    "embed_dim",
    "vocab_size",
)


@functools.lru_cache(maxsize=8)
def _jitted_init(config: ModelConfig) -> Any:
    """`owl.models.owl_vit.init_params` as one jitted function per config, compiled once."""
    module = OwlViT(config)
    images = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
    ids = jnp.zeros((1, 1, config.context_length), jnp.int32)
    return jax.jit(lambda rng: module.init(rng, images, ids)["params"])


def init_params(config: ModelConfig, rng: jax.Array) -> dict[str, Any]:
    """Fresh parameters (as `owl.models.owl_vit.init_params`, whose values these equal) on the host.

    New heads: the last box layer is zero and the class-head bias is log(0.01 / 0.99), the
    prior probability 0.01 of spec §5.1.
    """
    return jax.device_get(_jitted_init(config)(rng))


def resize_posemb(posemb: np.ndarray, grid: int) -> np.ndarray:
    """Resizes a vision position embedding [1 + g0*g0, W] to [1 + grid*grid, W].

    The class-token row is kept; the g0 x g0 grid is zoomed bilinearly (scipy.ndimage.zoom,
    order 1), as scenic's `resize_posemb` does. An embedding without a class row ([g0*g0, W]) is
    resized likewise.

    Raises:
      ValueError: the row count is not a square (plus one).
    """
    posemb = np.asarray(posemb, np.float32)
    rows, width = posemb.shape
    old = int(round(np.sqrt(rows - 1)))
    if old * old == rows - 1:
        token, table = posemb[:1], posemb[1:]
    elif int(round(np.sqrt(rows))) ** 2 == rows:
        old, token, table = int(round(np.sqrt(rows))), posemb[:0], posemb
    else:
        raise ValueError(f"position embedding with {rows} rows is not a square grid")
    if old == grid:
        return posemb
    table = table.reshape(old, old, width)
    zoomed = scipy.ndimage.zoom(table, (grid / old, grid / old, 1), order=1)
    return np.concatenate([token, zoomed.reshape(grid * grid, width)], axis=0).astype(np.float32)


def read_param_tree(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a nested parameter tree from a .safetensors ("/"-joined keys) or Flax msgpack file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or head[8:9] == b"{":
        import safetensors.numpy

        try:
            flat = safetensors.numpy.load_file(path)
        except Exception as e:  # noqa: BLE001 - SafetensorError and OSError
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
        return unflatten_params(flat)
    from flax import serialization

    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - msgpack raises several types
        raise CheckpointError(f"{path}: neither safetensors nor Flax msgpack ({e})") from None
    for wrapper in ("params", "optimizer"):
        if isinstance(tree, Mapping) and wrapper in tree and "backbone" not in tree:
            tree = tree[wrapper]
            if wrapper == "optimizer":
                tree = tree["target"]
    return dict(tree)


def _clip_subtree(tree: Mapping[str, Any]) -> Mapping[str, Any]:
    """The CLIP part {visual, text, [logit_scale]} of a tree, wherever it sits."""
    node: Any = tree
    for key in ("backbone", "clip"):
        if isinstance(node, Mapping) and key in node:
            node = node[key]
    if not (isinstance(node, Mapping) and "visual" in node and "text" in node):
        raise CheckpointError(
            "not a CLIP-style backbone: expected backbone/clip/{visual,text} (or clip/... or "
            f"visual/text at the top); found top-level keys {sorted(tree)[:6]}"
        )
    return node


def params_from_clip(
    clip_tree: Mapping[str, Any], config: ModelConfig, rng: jax.Array
) -> dict[str, Any]:
    """Detector parameters with a CLIP backbone and new heads (see module docstring).

    Args:
      clip_tree: a tree with ``backbone/clip/...``, ``clip/...`` or ``visual``/``text`` at the top.
      config: the detector to build (its grid decides the position-embedding size).
      rng: key for the new parts (heads, merged-class-token LayerNorm).

    Raises:
      CheckpointError: the backbone does not fit ``config``; the message names the parameter.
    """
    clip = flatten_params(_clip_subtree(clip_tree))
    clip = {k: as_float32(v) for k, v in clip.items() if k != "visual/proj"}
    if "visual/positional_embedding" in clip:
        clip["visual/positional_embedding"] = resize_posemb(
            clip["visual/positional_embedding"], config.posemb_grid_size
        )
    if "text/positional_embedding" in clip:
        clip["text/positional_embedding"] = clip["text/positional_embedding"][
            : config.context_length
        ]
    fresh = flatten_params(init_params(config, rng))
    expected = {k[len("backbone/clip/") :] for k in fresh if k.startswith("backbone/clip/")}
    unknown = sorted(set(clip) - expected)
    if unknown:
        raise CheckpointError(
            f"the CLIP backbone has parameters the detector does not: {', '.join(unknown[:3])}"
        )
    params = dict(fresh)
    params.update({f"backbone/clip/{k}": v for k, v in clip.items()})
    tree = unflatten_params(params)
    try:
        check_params(tree, param_shapes(config))
    except CheckpointError as e:
        raise CheckpointError(f"the CLIP backbone does not fit {config.family}: {e}") from None
    return tree


def params_from_owl(source: str | os.PathLike, config: ModelConfig, rng: jax.Array) -> dict:
    """Fine-tuning start: an OWL checkpoint's parameters adapted to ``config``.

    Raises:
      CheckpointError: the checkpoint's architecture differs from ``config`` (sizes other than
        the input resolution), or it cannot be read.
    """
    from owl.checkpoints.load import load

    model = load(source, progress=True)
    found = model.config
    bad = [
        f"{f}: checkpoint {getattr(found, f)} vs config {getattr(config, f)}"
        for f in _ARCH_FIELDS
        if getattr(found, f) != getattr(config, f)
    ]
    if bad:
        raise CheckpointError(f"{source}: does not fit model {config.family}: {'; '.join(bad)}")
    params = flatten_params(jax.device_get(model.params))
    params = {k: as_float32(v) for k, v in params.items()}
    key = "backbone/clip/visual/positional_embedding"
    params[key] = resize_posemb(params[key], config.posemb_grid_size)
    has_objectness = any(k.startswith("objectness_head/") for k in params)
    if config.objectness and not has_objectness:
        head = PredictorMLP(out_dim=1).init(rng, jnp.zeros((1, 1, config.vision_width)))["params"]
        params.update(flatten_params({"objectness_head": jax.device_get(head)}))
    if not config.objectness:
        params = {k: v for k, v in params.items() if not k.startswith("objectness_head/")}
    tree = unflatten_params(params)
    check_params(tree, param_shapes(config))
    return tree


def initial_params(
    *, mode: str, source: str, config: ModelConfig, rng: jax.Array
) -> dict[str, Any]:
    """Dispatches on ``mode`` ("random", "owl", "clip"); see the module docstring.

    Raises:
      ValueError: unknown mode, or a missing ``source`` for "owl"/"clip".
      CheckpointError: the source cannot be read or does not fit.
    """
    if mode not in INIT_MODES:
        raise ValueError(f"init.mode must be one of {', '.join(INIT_MODES)}; got {mode!r}")
    if mode == "random":
        return init_params(config, rng)
    if not source:
        raise ValueError(f"init.mode={mode!r} needs init.source (a checkpoint name or path)")
    if mode == "owl":
        return params_from_owl(source, config, rng)
    tree = read_param_tree(source)
    return params_from_clip(tree, config, rng)


__all__ = [
    "INIT_MODES",
    "initial_params",
    "params_from_clip",
    "params_from_owl",
    "read_param_tree",
    "resize_posemb",
]
