"""Model variants: one typed table of every OWL-ViT / OWLv2 architecture owl knows.

A `ModelConfig` fixes everything that decides the shapes of the parameters and the numerics of the
forward pass. Checkpoint loaders infer one from parameter shapes (`owl.checkpoints.tree`); the
registry names the official variants below. Values follow the official configs (scenic
`owl_vit/configs/*.py` and `clip/model.py`): head dimension 64, MLP 4x width, text context 16.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

VOCAB_SIZE = 49408
CONTEXT_LENGTH = 16
HEAD_DIM = 64

# Official pad value of the square canvas: grey for v1 checkpoints, black for OWLv2
# (spec §2.1; transformers PR #41938 measured +0.6 LVIS AP for 0.0 on v2).
PAD_VALUE_V1 = 0.5
PAD_VALUE_V2 = 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one detector.

    Attributes:
      family: "owlvit" (v1) or "owlv2"; decides defaults such as the padding colour.
      image_size: side S of the square model input in pixels.
      patch_size: ViT patch size p; the grid is S / p on each side.
      vision_width, vision_layers, vision_heads: image tower (heads = width / 64 officially).
      text_width, text_layers, text_heads: text tower.
      embed_dim: size E of query embeddings (CLIP embed dim; class head maps to it).
      vocab_size, context_length: text input; the checkpoints have 16 text positions.
      objectness: whether the OWLv2 objectness head exists.
      pad_value: colour of the padding canvas in [0, 1] before normalisation.
      native_grid_size: grid the position embedding was trained for, when it differs from the
        grid of `image_size` (posemb truncation to smaller inputs, spec §1.12). None: same.
    """

    family: str
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    text_width: int
    text_layers: int
    text_heads: int
    embed_dim: int
    vocab_size: int = VOCAB_SIZE
    context_length: int = CONTEXT_LENGTH
    objectness: bool = False
    pad_value: float = PAD_VALUE_V1
    native_grid_size: int | None = None

    def __post_init__(self) -> None:
        if self.family not in ("owlvit", "owlv2"):
            raise ValueError(f"family must be 'owlvit' or 'owlv2', got {self.family!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        for name in ("vision", "text"):
            width, heads = getattr(self, f"{name}_width"), getattr(self, f"{name}_heads")
            if width % heads:
                raise ValueError(f"{name}_width {width} is not divisible by {name}_heads {heads}")

    @property
    def grid_size(self) -> int:
        """Patches per side of the model input."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Number of predictions P per image (one box per patch)."""
        return self.grid_size**2

    @property
    def posemb_grid_size(self) -> int:
        """Grid side the vision position embedding has rows for."""
        return self.native_grid_size or self.grid_size

    def replace(self, **changes: Any) -> ModelConfig:
        """Returns a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)


def _clip(size: str) -> dict[str, int]:
    """CLIP backbone sizes (scenic `clip/model.py` CONFIGS)."""
    if size in ("b32", "b16"):
        return dict(
            patch_size=int(size[1:]),
            vision_width=768, vision_layers=12, vision_heads=12,
            text_width=512, text_layers=12, text_heads=8, embed_dim=512,
        )  # fmt: skip
    if size == "l14":
        return dict(
            patch_size=14,
            vision_width=1024, vision_layers=24, vision_heads=16,
            text_width=768, text_layers=12, text_heads=12, embed_dim=768,
        )  # fmt: skip
    raise KeyError(size)


VARIANTS: dict[str, ModelConfig] = {
    "owlvit-b32": ModelConfig(family="owlvit", image_size=768, **_clip("b32")),
    "owlvit-b16": ModelConfig(family="owlvit", image_size=768, **_clip("b16")),
    "owlvit-l14": ModelConfig(family="owlvit", image_size=840, **_clip("l14")),
    "owlv2-b16": ModelConfig(
        family="owlv2", image_size=960, objectness=True, pad_value=PAD_VALUE_V2, **_clip("b16")
    ),
    "owlv2-l14": ModelConfig(
        family="owlv2", image_size=1008, objectness=True, pad_value=PAD_VALUE_V2, **_clip("l14")
    ),
    # ShapesWorld (issue 6): the tiny CLIP of configs/shapes_clip.py, 128 px, patch 16 (8x8
    # grid); the architecture of the shipped `shapes-tiny` model.
    "shapes-tiny": ModelConfig(
        family="owlvit",
        image_size=128,
        patch_size=16,
        vision_width=64,
        vision_layers=4,
        vision_heads=4,
        text_width=64,
        text_layers=3,
        text_heads=4,
        embed_dim=64,
    ),  # fmt: skip
    # Test-only sizes: two layers, width 64, 128 px input with patch 32 (a 4x4 grid).
    "tiny-owlvit": ModelConfig(
        family="owlvit",
        image_size=128,
        patch_size=32,
        vision_width=64,
        vision_layers=2,
        vision_heads=4,
        text_width=32,
        text_layers=2,
        text_heads=4,
        embed_dim=32,
    ),  # fmt: skip
    "tiny-owlv2": ModelConfig(
        family="owlv2",
        image_size=128,
        patch_size=32,
        vision_width=64,
        vision_layers=2,
        vision_heads=4,
        text_width=32,
        text_layers=2,
        text_heads=4,
        embed_dim=32,
        objectness=True,
        pad_value=PAD_VALUE_V2,
    ),  # fmt: skip
}


def get_variant(name: str) -> ModelConfig:
    """Looks up a variant by name, with a helpful error."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(
            f"unknown model variant {name!r}; known: {', '.join(sorted(VARIANTS))}"
        ) from None


def variant_config_dict(name: str) -> Any:
    """A variant as a locked ml_collections ConfigDict (used by the files in configs/models/)."""
    import ml_collections

    return ml_collections.ConfigDict(get_variant(name).to_dict()).lock()
