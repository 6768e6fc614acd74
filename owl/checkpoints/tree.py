"""The canonical parameter tree that every checkpoint format converts to and from.

owl keeps parameters as nested dicts of float32 NumPy arrays laid out exactly like the current
official scenic tree (spec §1.10): `backbone/clip/{visual,text,logit_scale}`,
`backbone/merged_class_token`, `class_head/{Dense_0,logit_shift,logit_scale}`,
`obj_box_head/Dense_{0,1,2}` and, for OWLv2, `objectness_head/Dense_{0,1,2}`; transformer blocks
are `resblocks_{i}` with LayerNorms `ln_0` (pre-attention) and `ln_1` (pre-MLP).

This module is the base the format modules import (`owl.checkpoints.official`,
`owl.checkpoints.transformers_format`, `owl.checkpoints.owl_format`); it imports none of them.
It holds the error type, flattening, `check_params` and `infer_config` (architecture from
shapes). Which format a path holds, and reading any of them, is `owl.checkpoints.load`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from owl.models.configs import PAD_VALUE_V1, PAD_VALUE_V2, ModelConfig

Params = dict[str, Any]  # nested dict of np.ndarray (float32)

#: Suffixes of pickled (torch) checkpoints, which every reader refuses.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
PICKLE_HINT = (
    "owl never unpickles; convert it to safetensors with transformers: "
    "model.save_pretrained(dir, safe_serialization=True)"
)

# Every leaf path of the canonical tree, as a pattern. Readers drop (and report) anything else.
_BLOCK = (
    r"transformer/resblocks_\d+/(ln_[01]/(scale|bias)|attn/(query|key|value|out)/(kernel|bias)"
    r"|mlp/(c_fc|c_proj)/(kernel|bias))"
)
_CANONICAL = re.compile(
    "|".join(
        [
            rf"backbone/clip/visual/(conv1/kernel|class_embedding|positional_embedding"
            rf"|ln_(pre|post)/(scale|bias)|{_BLOCK})",
            rf"backbone/clip/text/(token_embedding/embedding|positional_embedding"
            rf"|ln_final/(scale|bias)|text_projection/kernel|{_BLOCK})",
            r"backbone/clip/logit_scale",
            r"backbone/merged_class_token/(scale|bias)",
            r"class_head/(Dense_0|logit_shift|logit_scale)/(kernel|bias)",
            r"(obj_box_head|objectness_head)/Dense_[012]/(kernel|bias)",
        ]
    )
)


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names file and cause."""


# -- tree helpers ------------------------------------------------------------------------------


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a/b/c": leaf}, in the tree's insertion order."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten_params(flat: Mapping[str, Any]) -> Params:
    """{"a/b/c": leaf} -> nested dict (inverse of `flatten_params`)."""
    tree: Params = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def is_canonical_path(path: str) -> bool:
    """Whether a "/"-joined leaf path belongs to the canonical tree (any size, any family)."""
    return _CANONICAL.fullmatch(path) is not None


def as_float32(value: Any) -> np.ndarray:
    """A leaf as a C-contiguous float32 NumPy array (bfloat16/float16 leaves are widened).

    Unlike `np.ascontiguousarray`, this keeps 0-d leaves (`logit_scale`) 0-d.
    """
    return np.asarray(value, dtype=np.float32, order="C")


def params_sha256(params: Mapping[str, Any]) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, in sorted path order.

    Identifies the weights themselves, whatever file or format they came from (the search index
    records it and refuses a model whose weights differ).
    """
    h = hashlib.sha256()
    for path, leaf in sorted(flatten_params(params).items()):
        array = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{path}:{array.dtype.str}:{array.shape};".encode())
        h.update(array.tobytes())
    return h.hexdigest()


def count_params(params: Mapping[str, Any]) -> int:
    """Number of scalars in a tree."""
    return sum(int(np.prod(np.shape(v))) for v in flatten_params(params).values())


# -- checks ------------------------------------------------------------------------------------


def check_params(params: Mapping[str, Any], expected_shapes: Mapping[str, Any]) -> None:
    """Checks that `params` has exactly the parameters and shapes the model expects.

    Args:
      params: nested dict of arrays.
      expected_shapes: nested dict whose leaves are shapes (tuples) or anything with a `.shape`
        (arrays, `jax.ShapeDtypeStruct`), e.g. `owl.models.owl_vit.param_shapes(config)`.

    Raises:
      CheckpointError: naming missing parameters, then unexpected ones (a few of each), then
        the first parameter (in the model's order) whose shape differs, with both shapes.
    """
    have = flatten_params(params)
    want = flatten_params(expected_shapes)
    missing = [p for p in want if p not in have]
    unexpected = [p for p in have if p not in want]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing parameter(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected parameter(s): {_few(unexpected)}")
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))
    bad = [p for p in want if tuple(np.shape(have[p])) != _shape_of(want[p])]
    if bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more mismatched parameter(s))" if len(bad) > 1 else ""
        raise CheckpointError(
            f"parameter {first!r} has shape {tuple(np.shape(have[first]))} in the checkpoint "
            f"but the model expects {_shape_of(want[first])}{more}"
        )


def _shape_of(leaf: Any) -> tuple[int, ...]:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(leaf)


def _few(paths: list[str], n: int = 3) -> str:
    shown = ", ".join(paths[:n])
    return shown + (f", ... ({len(paths) - n} more)" if len(paths) > n else "")


# -- architecture from shapes ------------------------------------------------------------------


def infer_config(
    params: Mapping[str, Any], *, overrides: ModelConfig | Mapping[str, Any] | None = None
) -> ModelConfig:
    """Reads the architecture off the parameter shapes of a canonical tree.

    Patch size and vision width come from `conv1/kernel` [p, p, 3, W]; depths from the number of
    `resblocks_{i}`; heads from the middle axis of `attn/query/kernel` [W, H, hd]; the image size
    is sqrt(posemb rows - 1) * patch; text context and vocabulary from the text embeddings; the
    embed dim from `text_projection/kernel` [Wt, E]. An `objectness_head` makes the family
    "owlv2" (pad value 0.0), otherwise "owlvit" (0.5).

    Args:
      params: canonical nested dict of arrays.
      overrides: a full `ModelConfig`, returned as is (an explicit config wins), or a mapping of
        fields that replace the inferred ones. Overriding `family` without `pad_value` also
        switches the pad value to that family's.

    Raises:
      CheckpointError: when a parameter needed for inference is missing or malformed.
    """
    if isinstance(overrides, ModelConfig):
        return overrides
    flat = flatten_params(params)

    def shape(path: str, ndim: int) -> tuple[int, ...]:
        if path not in flat:
            raise CheckpointError(f"cannot infer the model config: parameter {path!r} is missing")
        s = tuple(np.shape(flat[path]))
        if len(s) != ndim:
            raise CheckpointError(
                f"cannot infer the model config: parameter {path!r} has shape {s}, "
                f"expected {ndim} dimensions"
            )
        return s

    vis, txt = "backbone/clip/visual", "backbone/clip/text"
    patch, _, _, vision_width = shape(f"{vis}/conv1/kernel", 4)
    rows, _ = shape(f"{vis}/positional_embedding", 2)
    grid = math.isqrt(rows - 1) if rows > 1 else 0
    if grid * grid != rows - 1 or grid == 0:
        raise CheckpointError(
            f"cannot infer the image size: the vision position embedding has {rows} rows, "
            "not 1 + a square number"
        )
    vocab, text_width = shape(f"{txt}/token_embedding/embedding", 2)
    context, _ = shape(f"{txt}/positional_embedding", 2)
    _, embed_dim = shape(f"{txt}/text_projection/kernel", 2)
    vision_layers = _count_blocks(flat, f"{vis}/transformer")
    text_layers = _count_blocks(flat, f"{txt}/transformer")
    vision_heads = shape(f"{vis}/transformer/resblocks_0/attn/query/kernel", 3)[1]
    text_heads = shape(f"{txt}/transformer/resblocks_0/attn/query/kernel", 3)[1]
    objectness = any(p.startswith("objectness_head/") for p in flat)
    fields: dict[str, Any] = dict(
        family="owlv2" if objectness else "owlvit",
        image_size=grid * patch,
        patch_size=patch,
        vision_width=vision_width,
        vision_layers=vision_layers,
        vision_heads=vision_heads,
        text_width=text_width,
        text_layers=text_layers,
        text_heads=text_heads,
        embed_dim=embed_dim,
        vocab_size=vocab,
        context_length=context,
        objectness=objectness,
        pad_value=PAD_VALUE_V2 if objectness else PAD_VALUE_V1,
    )
    overrides = dict(overrides or {})
    if "family" in overrides:
        fields["pad_value"] = PAD_VALUE_V2 if overrides["family"] == "owlv2" else PAD_VALUE_V1
    fields.update(overrides)
    try:
        return ModelConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"invalid model config: {e}") from None


def _count_blocks(flat: Mapping[str, Any], prefix: str) -> int:
    found = {int(m.group(1)) for p in flat if (m := re.match(rf"{prefix}/resblocks_(\d+)/", p))}
    if not found:
        raise CheckpointError(f"cannot infer the model config: no blocks under {prefix!r}")
    if found != set(range(len(found))):
        raise CheckpointError(
            f"cannot infer the model config: blocks under {prefix!r} are not numbered "
            f"0..{len(found) - 1} (found {sorted(found)})"
        )
    return len(found)


def config_mismatches(config: ModelConfig, params: Mapping[str, Any]) -> list[str]:
    """Fields where `config` disagrees with what the parameter shapes say ("name: a vs b")."""
    found = infer_config(params)
    pairs = [(f, getattr(config, f), getattr(found, f)) for f in _SHAPE_FIELDS]
    pairs.append(("posemb grid", config.posemb_grid_size, found.grid_size))
    pairs.append(("objectness", config.objectness, found.objectness))
    return [f"{name}: config {a} vs weights {b}" for name, a, b in pairs if a != b]


_SHAPE_FIELDS = (
    "patch_size", "vision_width", "vision_layers", "vision_heads",
    "text_width", "text_layers", "text_heads", "embed_dim", "vocab_size", "context_length",
)  # fmt: skip
