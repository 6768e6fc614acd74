"""Which K boxes of an image the index keeps: a class-agnostic rank, computed once per image.

An image has P predicted boxes (64 for shapes-tiny, 576 for OWL-ViT B/32, 3,600 for OWLv2 B/16);
keeping all of them makes the index P/K times larger and slower for little gain, since most
boxes are background. The rank must not depend on the query (it is computed at indexing time):

  * ``objectness`` (OWLv2): the objectness head's logit, the model's own "is this an object".
  * ``bound`` (OWL-ViT v1, no objectness head): the highest logit the box could reach for any
    query, (1 + shift) * scale, since the cosine is at most 1. Query-free and costs nothing.
  * ``vocabulary``: the box's best logit over a list of prompts (a generic vocabulary, or the
    classes a model was trained on), through the class head like any query.

What each rank misses is measured by benchmarks/search_bench.py (docs/search.md).
"""

from __future__ import annotations

import numpy as np

from owl.models.owl_vit import score_queries

RANKS = ("auto", "objectness", "bound", "vocabulary")


def resolve_rank(rank: str, has_objectness: bool) -> str:
    """ "auto" -> objectness with the head, else bound; an impossible choice is a ValueError."""
    if rank not in RANKS:
        raise ValueError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")
    if rank == "auto":
        return "objectness" if has_objectness else "bound"
    if rank == "objectness" and not has_objectness:
        raise ValueError(
            "rank 'objectness' needs a model with an objectness head (OWLv2); this model has "
            "none: use 'bound' or 'vocabulary'"
        )
    return rank


def rank_scores(
    rank: str,
    embeddings: np.ndarray,
    logit_shift: np.ndarray,
    logit_scale: np.ndarray,
    objectness_logits: np.ndarray | None,
    vocabulary: np.ndarray | None = None,
) -> np.ndarray:
    """Per-box rank scores [P] (higher is kept first).

    Args:
      rank: a resolved rank ("objectness", "bound" or "vocabulary").
      embeddings: [P, E] normalised class embeddings.
      logit_shift, logit_scale: [P] the class head's terms.
      objectness_logits: [P] or None.
      vocabulary: [V, E] query embeddings for "vocabulary".
    """
    if rank == "objectness":
        return np.asarray(objectness_logits, np.float32)
    if rank == "bound":
        return ((1.0 + logit_shift) * logit_scale).astype(np.float32)
    if vocabulary is None or len(vocabulary) == 0:
        raise ValueError("rank 'vocabulary' needs at least one vocabulary prompt")
    logits = np.asarray(score_queries(embeddings, logit_shift, logit_scale, vocabulary))
    return logits.max(axis=1)


def top_boxes(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best boxes, best first (ties by box index)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return order[: min(k, len(order))]
