"""Hugging Face transformers checkpoints: a directory with config.json and safetensors weights.

`OwlViTForObjectDetection` / `Owlv2ForObjectDetection` save a config.json (model_type "owlvit"
or "owlv2", nested `text_config` / `vision_config`) and `model.safetensors`, or shards listed in
`model.safetensors.index.json`. The state_dict names map one to one onto the canonical tree
(transformers notes §2), with these layout changes:

  * Linear weights are [out, in]; Flax Dense kernels are [in, out] (transpose);
  * the patch Conv2d is OIHW; Flax `conv1/kernel` is HWIO [p, p, 3, W];
  * q/k/v weights [W, W] become kernels [W, H, hd] and biases [H, hd]; the out projection
    becomes [H, hd, W] (head h owns channels h*hd .. (h+1)*hd in both);
  * `layer_norm1` / `layer_norm2` are `ln_0` / `ln_1`; `layer_norm` is the merged class token.

`visual_projection` (CLIP's image projection, unused by detection) is dropped on reading and
written as zeros. Pickled `pytorch_model.bin` files are refused: owl never unpickles.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from owl.checkpoints.tree import (
    PICKLE_HINT,
    PICKLE_SUFFIXES,
    CheckpointError,
    Params,
    as_float32,
    config_mismatches,
    flatten_params,
    unflatten_params,
)
from owl.files import atomic_path
from owl.models.configs import PAD_VALUE_V1, PAD_VALUE_V2, ModelConfig

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
_ARCHITECTURE = {"owlvit": "OwlViTForObjectDetection", "owlv2": "Owlv2ForObjectDetection"}

# Class defaults of transformers 5.24's OwlViT*/Owlv2* configs: a config.json may leave them out.
_TEXT_DEFAULTS = dict(
    hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
    vocab_size=49408, max_position_embeddings=16,
)  # fmt: skip
_VISION_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    image_size=768,
)  # fmt: skip
_PATCH_DEFAULT = {"owlvit": 32, "owlv2": 16}
_PROJECTION_DEFAULT = 512

# (transformers name, canonical path, layout kind, heads); see `_to_canonical` for the kinds.
Entry = tuple[str, str, str, int]


# -- config.json -------------------------------------------------------------------------------


def config_from_hf(cfg: Mapping[str, Any], name: str = "config.json") -> ModelConfig:
    """Translates a transformers OWL-ViT / OWLv2 config dict into a `ModelConfig`."""
    family = cfg.get("model_type")
    if family not in _ARCHITECTURE:
        raise CheckpointError(
            f"{name}: model_type {family!r} is not an OWL-ViT model (expected 'owlvit' or 'owlv2')"
        )
    text = {**_TEXT_DEFAULTS, **(cfg.get("text_config") or cfg.get("text_config_dict") or {})}
    vision_defaults = {**_VISION_DEFAULTS, "patch_size": _PATCH_DEFAULT[family]}
    vision = {
        **vision_defaults,
        **(cfg.get("vision_config") or cfg.get("vision_config_dict") or {}),
    }
    for tower, c in (("text", text), ("vision", vision)):
        if c["intermediate_size"] != 4 * c["hidden_size"]:
            raise CheckpointError(
                f"{name}: {tower} intermediate_size {c['intermediate_size']} is not 4 x "
                f"hidden_size {c['hidden_size']}; owl models use 4x MLPs"
            )
    try:
        return ModelConfig(
            family=family,
            image_size=int(vision["image_size"]),
            patch_size=int(vision["patch_size"]),
            vision_width=int(vision["hidden_size"]),
            vision_layers=int(vision["num_hidden_layers"]),
            vision_heads=int(vision["num_attention_heads"]),
            text_width=int(text["hidden_size"]),
            text_layers=int(text["num_hidden_layers"]),
            text_heads=int(text["num_attention_heads"]),
            embed_dim=int(cfg.get("projection_dim", _PROJECTION_DEFAULT)),
            vocab_size=int(text["vocab_size"]),
            context_length=int(text["max_position_embeddings"]),
            objectness=family == "owlv2",
            pad_value=PAD_VALUE_V2 if family == "owlv2" else PAD_VALUE_V1,
        )
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: invalid OWL-ViT config ({e})") from None


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """A minimal config.json dict that transformers' `from_pretrained` rebuilds the model from."""
    if config.embed_dim != config.text_width:
        raise CheckpointError(
            f"transformers needs projection_dim == text width; this model has embed_dim "
            f"{config.embed_dim} and text width {config.text_width}"
        )
    return {
        "architectures": [_ARCHITECTURE[config.family]],
        "model_type": config.family,
        "projection_dim": config.embed_dim,
        "text_config": {
            "hidden_size": config.text_width,
            "intermediate_size": 4 * config.text_width,
            "num_hidden_layers": config.text_layers,
            "num_attention_heads": config.text_heads,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.context_length,
        },
        "vision_config": {
            "hidden_size": config.vision_width,
            "intermediate_size": 4 * config.vision_width,
            "num_hidden_layers": config.vision_layers,
            "num_attention_heads": config.vision_heads,
            "patch_size": config.patch_size,
            # The position embedding has rows for the native grid (transformers has no truncation).
            "image_size": config.posemb_grid_size * config.patch_size,
        },
    }


# -- name and layout mapping -------------------------------------------------------------------


def name_map(config: ModelConfig) -> list[Entry]:
    """Every transformers tensor owl uses, with its canonical path and layout change."""
    p = config.family
    vis, txt = "backbone/clip/visual", "backbone/clip/text"
    entries: list[Entry] = [
        (f"{p}.logit_scale", "backbone/clip/logit_scale", "copy", 0),
        (f"{p}.vision_model.embeddings.class_embedding", f"{vis}/class_embedding", "copy", 0),
        (f"{p}.vision_model.embeddings.patch_embedding.weight", f"{vis}/conv1/kernel", "conv", 0),
        (f"{p}.vision_model.embeddings.position_embedding.weight", f"{vis}/positional_embedding",
         "copy", 0),
        (f"{p}.text_model.embeddings.token_embedding.weight", f"{txt}/token_embedding/embedding",
         "copy", 0),
        (f"{p}.text_model.embeddings.position_embedding.weight", f"{txt}/positional_embedding",
         "copy", 0),
        (f"{p}.text_projection.weight", f"{txt}/text_projection/kernel", "linear", 0),
    ]  # fmt: skip
    entries += _layer_norm(f"{p}.vision_model.pre_layernorm", f"{vis}/ln_pre")
    entries += _layer_norm(f"{p}.vision_model.post_layernorm", f"{vis}/ln_post")
    entries += _layer_norm(f"{p}.text_model.final_layer_norm", f"{txt}/ln_final")
    entries += _layer_norm("layer_norm", "backbone/merged_class_token")
    for hf, canon, layers, heads in (
        (f"{p}.vision_model.encoder", vis, config.vision_layers, config.vision_heads),
        (f"{p}.text_model.encoder", txt, config.text_layers, config.text_heads),
    ):
        for i in range(layers):
            entries += _block(f"{hf}.layers.{i}", f"{canon}/transformer/resblocks_{i}", heads)
    entries += _dense("class_head.dense0", "class_head/Dense_0")
    entries += _dense("class_head.logit_shift", "class_head/logit_shift")
    entries += _dense("class_head.logit_scale", "class_head/logit_scale")
    heads_mlp = [("box_head", "obj_box_head")]
    if config.objectness:
        heads_mlp.append(("objectness_head", "objectness_head"))
    for hf, canon in heads_mlp:
        for i in range(3):
            entries += _dense(f"{hf}.dense{i}", f"{canon}/Dense_{i}")
    return entries


def _layer_norm(hf: str, canon: str) -> list[Entry]:
    return [
        (f"{hf}.weight", f"{canon}/scale", "copy", 0),
        (f"{hf}.bias", f"{canon}/bias", "copy", 0),
    ]


def _dense(hf: str, canon: str) -> list[Entry]:
    return [
        (f"{hf}.weight", f"{canon}/kernel", "linear", 0),
        (f"{hf}.bias", f"{canon}/bias", "copy", 0),
    ]


def _block(hf: str, canon: str, heads: int) -> list[Entry]:
    entries: list[Entry] = []
    for short, long in (("q", "query"), ("k", "key"), ("v", "value")):
        entries.append((f"{hf}.self_attn.{short}_proj.weight", f"{canon}/attn/{long}/kernel",
                        "qkv", heads))  # fmt: skip
        entries.append((f"{hf}.self_attn.{short}_proj.bias", f"{canon}/attn/{long}/bias",
                        "head_bias", heads))  # fmt: skip
    entries.append((f"{hf}.self_attn.out_proj.weight", f"{canon}/attn/out/kernel", "out", heads))
    entries.append((f"{hf}.self_attn.out_proj.bias", f"{canon}/attn/out/bias", "copy", 0))
    entries += _layer_norm(f"{hf}.layer_norm1", f"{canon}/ln_0")
    entries += _layer_norm(f"{hf}.layer_norm2", f"{canon}/ln_1")
    entries += _dense(f"{hf}.mlp.fc1", f"{canon}/mlp/c_fc")
    entries += _dense(f"{hf}.mlp.fc2", f"{canon}/mlp/c_proj")
    return entries


def _to_canonical(kind: str, x: np.ndarray, heads: int) -> np.ndarray:
    if kind == "copy":
        return x
    if kind == "linear":  # [out, in] -> [in, out]
        return x.T
    if kind == "conv":  # OIHW -> HWIO
        return x.transpose(2, 3, 1, 0)
    if kind == "qkv":  # [H*hd, W] -> [W, H, hd]
        return x.T.reshape(x.shape[1], heads, -1)
    if kind == "head_bias":  # [H*hd] -> [H, hd]
        return x.reshape(heads, -1)
    if kind == "out":  # [W, H*hd] -> [H, hd, W]
        return x.T.reshape(heads, -1, x.shape[0])
    raise AssertionError(kind)


def _from_canonical(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "copy":
        return x
    if kind == "linear":
        return x.T
    if kind == "conv":  # HWIO -> OIHW
        return x.transpose(3, 2, 0, 1)
    if kind == "qkv":  # [W, H, hd] -> [H*hd, W]
        return x.reshape(x.shape[0], -1).T
    if kind == "head_bias":
        return x.reshape(-1)
    if kind == "out":  # [H, hd, W] -> [W, H*hd]
        return x.reshape(-1, x.shape[-1]).T
    raise AssertionError(kind)


def transformers_to_canonical(
    state: Mapping[str, np.ndarray], config: ModelConfig
) -> tuple[Params, list[str]]:
    """Maps a transformers state dict to the canonical tree.

    Returns:
      (params, ignored): float32 canonical params and the state-dict names not used.

    Raises:
      CheckpointError: tensors are missing or cannot take the configured head layout.
    """
    entries = name_map(config)
    missing = [hf for hf, *_ in entries if hf not in state]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f", ... ({len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise CheckpointError(f"{len(missing)} tensor(s) missing: {shown}")
    flat = {}
    for hf, canon, kind, heads in entries:
        x = as_float32(state[hf])
        if kind in ("qkv", "head_bias", "out") and x.shape[0] % heads:
            raise CheckpointError(
                f"tensor {hf!r} of shape {x.shape} does not split into {heads} heads"
            )
        try:
            flat[canon] = as_float32(_to_canonical(kind, x, heads))
        except ValueError as e:
            raise CheckpointError(f"tensor {hf!r} has unexpected shape {x.shape} ({e})") from None
    used = {hf for hf, *_ in entries}
    return unflatten_params(flat), [k for k in state if k not in used]


def canonical_to_transformers(
    params: Mapping[str, Any], config: ModelConfig
) -> dict[str, np.ndarray]:
    """The transformers state dict of a canonical tree (inverse of `transformers_to_canonical`)."""
    flat = flatten_params(params)
    missing = [canon for _, canon, *_ in name_map(config) if canon not in flat]
    if missing:
        raise CheckpointError(f"{len(missing)} parameter(s) missing, e.g. {missing[0]!r}")
    state = {
        hf: as_float32(_from_canonical(kind, as_float32(flat[canon])))
        for hf, canon, kind, _ in name_map(config)
    }
    # Unused by detection, but transformers expects it; zeros make it obviously synthetic.
    proj = f"{config.family}.visual_projection.weight"
    state[proj] = np.zeros((config.embed_dim, config.vision_width), np.float32)
    return state


# -- files -------------------------------------------------------------------------------------


def read_transformers(directory: str | os.PathLike) -> tuple[ModelConfig, Params]:
    """Reads a transformers OWL-ViT / OWLv2 model directory.

    Args:
      directory: holds config.json and model.safetensors (or model.safetensors.index.json with
        its shards).

    Returns:
      (config, params): the architecture and canonical float32 params.

    Raises:
      CheckpointError: missing or invalid files, pickled weights (refused), or tensors that do
        not fit config.json; the message names the file.
    """
    directory = Path(directory)
    cfg_path = directory / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except OSError as e:
        raise CheckpointError(f"{cfg_path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object")
    config = config_from_hf(cfg, str(cfg_path))
    state = _load_state(directory)
    try:
        params, ignored = transformers_to_canonical(state, config)
        bad = config_mismatches(config, params)
    except CheckpointError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    if bad:
        raise CheckpointError(f"{directory}: weights do not match config.json: {', '.join(bad)}")
    unused = [k for k in ignored if not k.endswith("visual_projection.weight")]
    if unused:
        logger.info("%s: ignored %d unused tensors: %s", directory, len(unused), ", ".join(unused))
    return config, params


def _load_state(directory: Path) -> Mapping[str, np.ndarray]:
    single, index = directory / WEIGHTS_NAME, directory / INDEX_NAME
    if single.is_file():
        return _LazyState({key: single for key in _safetensors_keys(single)})
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from None
        where: dict[str, Path] = {}
        for shard in sorted(set(weight_map.values())):
            where.update({key: directory / shard for key in _safetensors_keys(directory / shard)})
        missing = [k for k in weight_map if k not in where]
        if missing:
            raise CheckpointError(f"{index}: tensor {missing[0]!r} is in no shard")
        return _LazyState(where)
    pickled = sorted(p for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(f"{pickled[0]}: refusing to read a pickled checkpoint; {PICKLE_HINT}")
    raise CheckpointError(f"{directory}: no {WEIGHTS_NAME} or {INDEX_NAME} found")


class _LazyState(Mapping):
    """A state dict whose tensors are read from their safetensors file when asked for.

    Conversion to the canonical tree takes one tensor at a time, so at most one raw tensor is
    alive next to the converted ones: peak memory is the model once, not twice.
    """

    def __init__(self, where: dict[str, Path]):
        self._where = where

    def __getitem__(self, key: str) -> np.ndarray:
        path = self._where[key]
        try:
            with safetensors.safe_open(str(path), framework="numpy") as f:
                return f.get_tensor(key)
        except Exception as e:  # SafetensorError and friends: truncated or corrupt file
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def _safetensors_keys(path: Path) -> list[str]:
    try:
        with safetensors.safe_open(str(path), framework="numpy") as f:
            return list(f.keys())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as e:  # SafetensorError and friends: truncated or corrupt file
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def write_transformers(
    directory: str | os.PathLike, config: ModelConfig, params: Mapping[str, Any]
) -> Path:
    """Writes config.json and model.safetensors that transformers' `from_pretrained` loads.

    `visual_projection.weight` (not part of owl's tree) is written as zeros. Returns `directory`.
    """
    directory = Path(directory)
    hf_config = config_to_hf(config)
    state = canonical_to_transformers(params, config)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        safetensors.numpy.save_file(state, str(tmp), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return directory
