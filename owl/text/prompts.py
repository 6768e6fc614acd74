"""Prompt templates and label canonicalisation, as OWL-ViT's training and evaluation use them.

The official evaluator embeds every class name once per template of `CLIP_BEST_PROMPT_TEMPLATES`
and averages the class logits over templates (spec §2.2). Training (v1) draws one template per
label from `TRAINING_PROMPT_TEMPLATES`. In both, the filled-in template is canonicalised, so
"itap of a {}." with "cat" becomes "itap of a cat". Interactive queries are used raw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Marks a label as "not promptable" (no template is added during training); only kept at the
# start of a label by `canonicalize`.
NOT_PROMPTABLE_MARKER = "#"

# The 7-template ensemble of the OWL-ViT / OWLv2 evaluations (from CLIP's ImageNet prompt
# engineering notebook).
CLIP_BEST_PROMPT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# The 80 ImageNet templates of the CLIP paper, in OpenAI's order.
CLIP_PAPER_PROMPT_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# Training (v1): the bare label or one of the 80 paper templates, drawn uniformly.
TRAINING_PROMPT_TEMPLATES: tuple[str, ...] = ("{}",) + CLIP_PAPER_PROMPT_TEMPLATES

# tf.strings.lower, which the official code uses, lowercases ASCII letters only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_DISALLOWED = re.compile(r"[^a-z0-9\-# ]")
_SPACES = re.compile(r"\s+")
_DASHES = re.compile(r"-+")
# A run of markers after any character, i.e. anywhere but at the very start.
_INNER_MARKERS = re.compile(r"(.)#+", re.DOTALL)


def canonicalize(label: str) -> str:
    """Brings a label or filled-in prompt into the official canonical form.

    The six steps of scenic's `_canonicalize_string_tf`: lowercase (ASCII letters, like
    `tf.strings.lower`); replace every character other than a-z, 0-9, "-", "#" and space by a
    space; collapse whitespace; collapse runs of dashes; strip; drop "#" except at the start.
    As in the original, the last step runs after stripping, so "a # b" keeps two spaces.

    Examples: "arctic_(type_of_shoe)" -> "arctic type of shoe"; "itap of a cat." -> "itap of a
    cat"; "#Tree#house" -> "#treehouse".
    """
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}: {label!r}")
    text = label.translate(_ASCII_LOWER)
    text = _DISALLOWED.sub(" ", text)
    text = _SPACES.sub(" ", text)
    text = _DASHES.sub("-", text)
    text = text.strip()
    return _INNER_MARKERS.sub(r"\1", text)


def expand_prompts(names: Sequence[str], templates: Sequence[str]) -> list[list[str]]:
    """Fills every template with every class name and canonicalises the result.

    Args:
      names: C class names (raw, e.g. LVIS's "arctic_(type_of_shoe)").
      templates: T format strings with one "{}" each, e.g. `CLIP_BEST_PROMPT_TEMPLATES`.

    Returns:
      A [T][C] nested list: entry [t][c] is `canonicalize(templates[t].format(names[c]))`, the
      query whose logits the evaluator averages over t for class c.
    """
    if isinstance(names, str) or isinstance(templates, str):
        raise TypeError("names and templates must be sequences of strings, not a single str")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}'")
    return [[canonicalize(template.format(name)) for name in names] for template in templates]
