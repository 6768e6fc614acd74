"""Prompts for dataset evaluation: templates, the prompt ensemble, and embedding it once.

Every category name is put into each of T templates (the 7 of `CLIP_BEST_PROMPT_TEMPLATES` for
the ensemble, spec §6) and canonicalised; all T x C prompts are embedded once, in batches, through
the Detector (tokenizer, text tower, text cache). Prediction (`owl.eval.predict`) then averages
the class logits over the T templates.

Over-long prompts (more than 14 BPE tokens) are embedded the way the official tokenizer cuts them
(``long_prompts="official"``: EOT dropped, so they all collapse to one embedding, spec §1.4), or
with owl's EOT-keeping truncation (``"truncate"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from owl.data.annotations import CategoryMap
from owl.inference.detector import Detector
from owl.text.prompts import CLIP_BEST_PROMPT_TEMPLATES, expand_prompts
from owl.text.tokenizer import get_tokenizer

#: ``--prompts`` values that name a template set rather than giving a template.
PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "ensemble": CLIP_BEST_PROMPT_TEMPLATES,
    "none": ("{}",),
}
#: How prompts longer than the text context are embedded.
LONG_PROMPT_POLICIES = ("official", "truncate")
#: The tokenizer's ``truncate`` for each policy.
_TRUNCATE: dict[str, bool | str] = {"official": "official", "truncate": True}
#: Prompts embedded per text-tower call.
TEXT_CHUNK = 512


def resolve_templates(spec: str) -> tuple[str, ...]:
    """``--prompts`` -> templates: "ensemble" (the 7), "none" (the bare name) or one template.

    Raises:
        ValueError: a template without exactly one ``{}``.
    """
    if spec in PROMPT_SETS:
        return PROMPT_SETS[spec]
    if spec.count("{}") != 1:
        raise ValueError(
            f"prompt {spec!r} must be 'ensemble', 'none' or a template with exactly one '{{}}' "
            "for the class name, such as 'a photo of a {}'"
        )
    return (spec,)


@dataclasses.dataclass(frozen=True, eq=False)
class PromptEnsemble:
    """The embedded text queries of an evaluation: T templates x C categories.

    Attributes:
        templates: the T templates.
        categories: the C categories (class index -> real id).
        prompts: [T][C] canonicalised prompts.
        embeddings: [T, C, E] unnormalised text embeddings (float32).
        long_prompts: the distinct prompts longer than the text context, and how they were
            embedded (``policy``).
        policy: "official" or "truncate" (see the module docstring).
    """

    templates: tuple[str, ...]
    categories: CategoryMap
    prompts: tuple[tuple[str, ...], ...]
    embeddings: np.ndarray
    long_prompts: tuple[str, ...]
    policy: str


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_prompts(
    detector: Detector,
    categories: CategoryMap,
    templates: Sequence[str],
    *,
    long_prompts: str = "official",
) -> PromptEnsemble:
    """Embeds every (template, category) prompt once, in batches of ``TEXT_CHUNK``.

    Every prompt goes through ``Detector.embed_texts`` (tokenizer, text tower, cache); over-long
    ones are cut as the official tokenizer cuts them (``"official"``: EOT dropped) or truncated
    keeping EOT (``"truncate"``).

    Args:
        detector: supplies the model and its text-embedding cache.
        categories: the dataset's categories; their names are the class names.
        templates: format strings with one ``{}``.
        long_prompts: "official" or "truncate".

    Returns:
        The :class:`PromptEnsemble`.
    """
    if long_prompts not in LONG_PROMPT_POLICIES:
        raise ValueError(
            f"long_prompts must be one of {LONG_PROMPT_POLICIES}, got {long_prompts!r}"
        )
    prompts = expand_prompts(list(categories.names), list(templates))
    unique = list(dict.fromkeys(p for row in prompts for p in row))
    tokenizer = get_tokenizer()
    limit = detector.model.config.context_length - 2
    too_long = {t for t in unique if len(tokenizer.encode(t)) > limit}
    long = [t for t in unique if t in too_long]
    fits = [t for t in unique if t not in too_long]
    table: dict[str, np.ndarray] = {}
    for texts, truncate in ((fits, False), (long, _TRUNCATE[long_prompts])):
        for chunk in _chunks(texts, TEXT_CHUNK):
            embedded = detector.embed_texts(list(chunk), truncate=truncate)
            table.update(zip(chunk, embedded, strict=True))
    embeddings = np.stack([np.stack([table[p] for p in row]) for row in prompts])
    return PromptEnsemble(
        templates=tuple(templates),
        categories=categories,
        prompts=tuple(tuple(row) for row in prompts),
        embeddings=embeddings.astype(np.float32),
        long_prompts=tuple(long),
        policy=long_prompts,
    )
