"""What a user can ask for: text queries, image (exemplar) queries and saved query embeddings.

A query carries an optional label (what detections are called) and an optional score threshold
of its own, which overrides the global one. Saved embeddings are plain `.npz` files
(`embedding` [E] float32, `label` str, `model` str) read without pickle.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from owl.ops.image import ImageInput

BoxXYXY = tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class TextQuery:
    """Find things described by `text` ("red car")."""

    text: str
    threshold: float | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.text


@dataclasses.dataclass(frozen=True)
class ImageQuery:
    """Find things like the object(s) in the given boxes of example images (one-shot / few-shot).

    Attributes:
      exemplars: (image, box) pairs; box is (x0, y0, x1, y1) in that image's pixels, or None for
        "the whole image" (v1) / "the most object-like token" (v2). Several exemplars of one class
        are averaged into one query embedding.
      label: name of the detections; defaults to "image query <n>".
      threshold: per-query score threshold.
      method: exemplar selection: "iou" (official v1 heuristic), "objectness" (v2), or "auto"
        (objectness when the model has the head, else iou).
    """

    exemplars: tuple[tuple[ImageInput, BoxXYXY | None], ...]
    label: str | None = None
    threshold: float | None = None
    method: str = "auto"

    def __post_init__(self) -> None:
        if not self.exemplars:
            raise ValueError("an image query needs at least one (image, box) exemplar")
        if self.method not in ("auto", "iou", "objectness"):
            raise ValueError(f"method must be 'auto', 'iou' or 'objectness', got {self.method!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingQuery:
    """A precomputed query embedding [E], e.g. saved by `owl embed-query`.

    Attributes:
      embedding: [E] unnormalised.
      label: name of the detections.
      threshold: per-query score threshold.
      kind: "image" (from exemplars: NMS on by default, as for image queries) or "text".
      model: the model it was computed with, when known (embeddings only fit that model).
    """

    embedding: np.ndarray
    label: str
    threshold: float | None = None
    kind: str = "image"
    model: str | None = None


Query = str | TextQuery | ImageQuery | EmbeddingQuery


def parse_text_query(spec: str) -> TextQuery:
    """Parses the CLI form "text" or "text@threshold" (e.g. "red car@0.3").

    Only a trailing "@<number in [0, 1]>" is a threshold; any other "@" stays in the text.
    """
    text, sep, tail = spec.rpartition("@")
    if sep:
        try:
            value = float(tail)
        except ValueError:
            value = None
        if value is not None:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"query {spec!r}: threshold {tail} is not in [0, 1]")
            return TextQuery(text.strip(), threshold=value)
    return TextQuery(spec.strip())


def save_query_embedding(
    path: str | os.PathLike, embedding: np.ndarray, label: str, model: str, kind: str = "image"
) -> Path:
    """Writes a query embedding as .npz (no pickled objects): embedding, label, model, kind."""
    path = Path(path)
    embedding = np.asarray(embedding, np.float32)
    if embedding.ndim != 1:
        raise ValueError(f"a query embedding must be 1-D, got shape {embedding.shape}")
    if kind not in ("image", "text"):
        raise ValueError(f"kind must be 'image' or 'text', got {kind!r}")
    with open(path, "wb") as f:
        np.savez(
            f, embedding=embedding, label=np.str_(label), model=np.str_(model), kind=np.str_(kind)
        )
    return path


_EMBEDDING_FILE_HINT = (
    "expected an .npz of plain arrays: a 1-D float 'embedding', and 'label', 'model' and "
    "'kind' strings, as `owl embed-query -o FILE.npz` writes it; make it again with that"
)


def load_query_embedding(path: str | os.PathLike, threshold: float | None = None) -> EmbeddingQuery:
    """Reads an .npz written by `save_query_embedding`; refuses pickled content."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            embedding = np.asarray(data["embedding"], np.float32)
            label = str(data["label"]) if "label" in data else path.stem
            model = str(data["model"]) if "model" in data else None
            kind = str(data["kind"]) if "kind" in data else "image"
    except FileNotFoundError:
        raise ValueError(f"{path}: query embedding file not found") from None
    except KeyError:
        raise ValueError(
            f"{path}: .npz file without an 'embedding' array; {_EMBEDDING_FILE_HINT}"
        ) from None
    except (OSError, ValueError):
        # numpy's own message would suggest loading pickled data "unsafely": never.
        raise ValueError(
            f"{path}: not a query embedding file, or it holds Python objects (never unpickled); "
            f"{_EMBEDDING_FILE_HINT}"
        ) from None
    if embedding.ndim != 1:
        raise ValueError(f"{path}: embedding must be 1-D, got shape {embedding.shape}")
    return EmbeddingQuery(embedding, label, threshold, kind=kind, model=model)


def as_queries(queries: Query | Sequence[Query]) -> list[Query]:
    """Accepts one query or a sequence; plain strings become `TextQuery`s."""
    if isinstance(queries, (str, TextQuery, ImageQuery, EmbeddingQuery)):
        queries = [queries]
    out = []
    for q in queries:
        if isinstance(q, str):
            q = TextQuery(q)
        if not isinstance(q, (TextQuery, ImageQuery, EmbeddingQuery)):
            raise TypeError(
                f"unsupported query {q!r}; use a string, TextQuery, ImageQuery or EmbeddingQuery"
            )
        out.append(q)
    return out
