"""The canonical parameter tree and what every checkpoint format shares.

owl keeps parameters as nested dicts of float32 NumPy arrays laid out exactly like the current
official scenic tree (spec §1.10): `backbone/clip/{visual,text,logit_scale}`,
`backbone/merged_class_token`, `class_head/{Dense_0,logit_shift,logit_scale}`,
`obj_box_head/Dense_{0,1,2}` and, for OWLv2, `objectness_head/Dense_{0,1,2}`; transformer blocks
are `resblocks_{i}` with LayerNorms `ln_0` (pre-attention) and `ln_1` (pre-MLP).

Each on-disk format converts to and from that tree in its own module:

  * `owl.checkpoints.official`: scenic Flax msgpack files, every naming era;
  * `owl.checkpoints.transformers_format`: Hugging Face directories (config.json + safetensors);
  * `owl.checkpoints.owl_format`: owl's own single safetensors file with the config inside.

This module holds the format-independent parts: the error type, flattening, `check_params`,
`infer_config` (architecture from shapes), `sniff_format` and `read_checkpoint`, which reads any
supported path. The readers and writers are re-exported here lazily, so
`from owl.checkpoints.formats import read_official` works without importing every format.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from owl.models.configs import PAD_VALUE_V1, PAD_VALUE_V2, ModelConfig

Params = dict[str, Any]  # nested dict of np.ndarray (float32)

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

# Reader/writer name -> module that defines it (resolved on first use, see `__getattr__`).
_LAZY = {
    "read_official": "owl.checkpoints.official",
    "write_official": "owl.checkpoints.official",
    "read_transformers": "owl.checkpoints.transformers_format",
    "write_transformers": "owl.checkpoints.transformers_format",
    "read_owl": "owl.checkpoints.owl_format",
    "save_owl": "owl.checkpoints.owl_format",
}


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names file and cause."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from owl.checkpoints.owl_format import is_owl_file

        if is_owl_file(path):
            return "owl"
        raise CheckpointError(f"{path}: gzip file that is not an owl checkpoint")
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "pickle"  # zip: torch.save; 0x80 0x02..0x05: a pickle protocol header
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        from owl.checkpoints.owl_format import is_owl_file

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
    import json
    import struct

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
        from owl.checkpoints.official import read_official

        params = read_official(path)
        stored = infer_config(params)
    elif fmt == "owl":
        from owl.checkpoints.owl_format import read_owl

        stored, params = read_owl(path)
    else:
        from owl.checkpoints.transformers_format import read_transformers

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
