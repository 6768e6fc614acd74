"""Scoring the index's boxes against queries: exact below a size, ANN candidates above it.

A box's logit for a query q is the class head's (e . q/|q| + shift) * scale
(`owl.models.owl_vit.score_queries`, the same function `Detector.score` runs), so search scores
are `owl detect`'s scores. Written as an inner product,

    logit = [scale * e, scale * shift] . [q/|q|, 1],

ranking boxes by logit is a maximum-inner-product search over (E + 1)-dimensional vectors. Below
`EXACT_BELOW` boxes every box is scored exactly (one matrix product). Above it, a FAISS index of
4-bit product-quantised vectors ("fast scan", SIMD) proposes `REFINE` x as many boxes as needed;
their images are then scored exactly, box by box, as below. The FAISS index is derived data: it
is rebuilt from the SQLite rows when the index's generation changes, and kept beside the index
file (``<index>.vectors-<generation>.faiss``) so later processes reuse it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import jax
import numpy as np

from owl.files import atomic_path
from owl.inference.detector import MIN_QUERY_BUCKET, bucket
from owl.models.owl_vit import normalize, score_queries
from owl.search.store import Snapshot

EXACT_BELOW = 2_000_000  # boxes; exact search of 2M boxes x 64 dims is ~0.1 s on one core
REFINE = 32  # ANN candidates per wanted box, re-scored exactly
TRAIN_SAMPLE = 200_000  # vectors the product quantiser is trained on

_score = jax.jit(score_queries)


class MissingFaissError(RuntimeError):
    """The index is large enough for ANN search but FAISS (the [search] extra) is missing."""


def box_logits(
    embeddings: np.ndarray,
    logit_shift: np.ndarray,
    logit_scale: np.ndarray,
    query_embeddings: np.ndarray,
) -> np.ndarray:
    """Logits [B, Q] of normalised box embeddings [B, E] against unnormalised queries [Q, E].

    Rows and queries are padded to powers of two (as the Detector pads), so the jitted class
    head compiles once per bucket.
    """
    return padded_box_logits(pad_boxes(embeddings, logit_shift, logit_scale), query_embeddings)


PaddedBoxes = tuple[np.ndarray, np.ndarray, np.ndarray, int]


def pad_boxes(
    embeddings: np.ndarray, logit_shift: np.ndarray, logit_scale: np.ndarray
) -> PaddedBoxes:
    """Box rows padded to their power-of-two bucket, once, for `padded_box_logits`.

    An index pads its whole snapshot once per generation, so a query over every box copies
    nothing (at 160,000 boxes the copies were most of a query's time).
    """
    n = len(embeddings)
    rows = bucket(max(n, 1), 64)
    emb = np.zeros((rows, embeddings.shape[1]), np.float32)
    emb[:n] = embeddings
    shift = np.zeros(rows, np.float32)
    shift[:n] = logit_shift
    scale = np.zeros(rows, np.float32)
    scale[:n] = logit_scale
    return emb, shift, scale, n


def padded_box_logits(boxes: PaddedBoxes, query_embeddings: np.ndarray) -> np.ndarray:
    """`box_logits` on boxes already padded by `pad_boxes`."""
    emb, shift, scale, n = boxes
    q = len(query_embeddings)
    if n == 0 or q == 0:
        return np.zeros((n, q), np.float32)
    cols = bucket(q, MIN_QUERY_BUCKET)
    queries = np.zeros((cols, query_embeddings.shape[1]), np.float32)
    queries[:q] = query_embeddings
    mask = np.arange(cols) < q
    return np.asarray(_score(emb, shift, scale, queries, mask))[:n, :q]


def augmented_vectors(snapshot: Snapshot) -> np.ndarray:
    """[B, E + 1] rows [scale * e, scale * shift] (padded with zeros to a multiple of 4)."""
    e = snapshot.embeddings
    width = e.shape[1] + 1
    width += (-width) % 4
    out = np.zeros((len(e), width), np.float32)
    out[:, : e.shape[1]] = e * snapshot.logit_scale[:, None]
    out[:, e.shape[1]] = snapshot.logit_shift * snapshot.logit_scale
    return out


def augmented_queries(query_embeddings: np.ndarray, width: int) -> np.ndarray:
    """[Q, width] rows [q/|q|, 1, 0...] matching `augmented_vectors`."""
    q = np.asarray(normalize(np.asarray(query_embeddings, np.float32)))
    out = np.zeros((len(q), width), np.float32)
    out[:, : q.shape[1]] = q
    out[:, q.shape[1]] = 1.0
    return out


class AnnIndex:
    """FAISS product-quantised inner-product index over a snapshot's boxes."""

    def __init__(self, faiss_index, width: int):
        self.faiss_index = faiss_index
        self.width = width

    @classmethod
    def for_snapshot(cls, snapshot: Snapshot, index_path: str | os.PathLike | None) -> AnnIndex:
        """Loads the saved FAISS index of this generation, or builds (and saves) it."""
        faiss = _import_faiss()
        vectors = augmented_vectors(snapshot)
        width = vectors.shape[1]
        saved = None if index_path is None else _saved_path(index_path, snapshot.generation)
        if saved is not None and saved.exists():
            return cls(faiss.read_index(str(saved)), width)
        index = faiss.index_factory(width, f"PQ{width // 2}x4fs", faiss.METRIC_INNER_PRODUCT)
        step = max(1, len(vectors) // TRAIN_SAMPLE)
        index.train(vectors[::step])
        index.add(vectors)
        if saved is not None:
            for old in glob.glob(glob.escape(str(index_path)) + ".vectors-*.faiss"):
                Path(old).unlink(missing_ok=True)
            with atomic_path(saved) as tmp:
                faiss.write_index(index, str(tmp))
        return cls(index, width)

    def candidate_boxes(self, query_embeddings: np.ndarray, count: int) -> np.ndarray:
        """Row numbers of about the `count` best boxes for any of the queries (union)."""
        queries = augmented_queries(query_embeddings, self.width)
        _, ids = self.faiss_index.search(queries, min(count, self.faiss_index.ntotal))
        ids = ids.reshape(-1)
        return np.unique(ids[ids >= 0])


def _saved_path(index_path: str | os.PathLike, generation: int) -> Path:
    return Path(f"{os.fspath(index_path)}.vectors-{generation}.faiss")


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise MissingFaissError(
            f"this index holds more than {EXACT_BELOW:,} boxes, which are searched with FAISS; "
            'install it with: pip install "owl[search]"'
        ) from None
    return faiss
