"""Synthetic detection data that follows the training batch contract, for tests and smoke runs.

Each example is a small scene of 1 to ``max_boxes`` flat-coloured rectangles on a noisy grey
canvas; the class of a rectangle is its colour ("red box", "blue box", ...). Everything is numpy,
deterministic from (seed, example index), and needs no files, so a trainer test or a
`owl train --config train_tiny` run starts in seconds.

The loader mirrors `owl.data.pipeline.build_train_loader`: process p of P reads global stream
positions p, p + P, p + 2P, ..., so the P per-process batches of step k are disjoint and together
form global batch k; position i shows example ``permutation(seed, epoch)[i mod N]`` (epoch =
i div N). Its iterator has ``get_state()`` / ``set_state(state)`` (a dict of ints), so a resumed
run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from owl.ops.image import normalize_pixels
from owl.text.tokenizer import tokenize

# Colour name -> RGB in [0, 1]. The class of a rectangle is "<colour> box".
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "green": (0.12, 0.63, 0.2),
    "blue": (0.12, 0.27, 0.86),
    "yellow": (0.94, 0.82, 0.08),
}
CLASS_NAMES: tuple[str, ...] = tuple(f"{c} box" for c in COLOURS)

_PERMUTATION_TAG = 0x5F1
_EXAMPLE_TAG = 0x5F2


def _query_tokens() -> np.ndarray:
    """int32 [1 + C, 16]: the padding query '' then every class name."""
    return tokenize(["", *CLASS_NAMES]).astype(np.int32)


def make_example(
    index: int,
    *,
    seed: int,
    image_size: int,
    max_queries: int,
    max_instances: int,
    max_boxes: int = 2,
    pad_value: float = 0.5,
) -> dict[str, np.ndarray]:
    """Builds synthetic example ``index`` (contract arrays, no batch axis).

    The queries are the padding query '' (row 0) and then every class (positives and negatives
    alike), padded with '' rows to ``max_queries``. The image is a canvas of 3/4 of the side
    followed by ``pad_value`` padding at the bottom/right, as real padded images are.

    Args:
        index: example index (any non-negative int).
        seed: data seed.
        image_size: S.
        max_queries: Q (at least 1 + number of classes).
        max_instances: M (at least ``max_boxes``).
        max_boxes: the largest number of rectangles per image (at least 1).
        pad_value: grey level of the padding in [0, 1].

    Returns:
        {"image" float32 [S, S, 3] CLIP-normalised, "queries" int32 [Q, 16], "labels" float32
        [M, Q], "boxes" float32 [M, 4] cxcywh in [0, 1], "instance_mask" bool [M]}.
    """
    num_classes = len(CLASS_NAMES)
    if max_queries < 1 + num_classes:
        raise ValueError(f"max_queries must be >= {1 + num_classes}, got {max_queries}")
    if not 1 <= max_boxes <= max_instances:
        raise ValueError(f"need 1 <= max_boxes <= max_instances, got {max_boxes}, {max_instances}")
    rng = np.random.default_rng([_EXAMPLE_TAG, seed, index])
    size = image_size
    canvas = (3 * size) // 4
    image = np.full((size, size, 3), pad_value, np.float32)
    grey = rng.uniform(0.35, 0.65)
    image[:canvas, :canvas] = grey + 0.03 * rng.standard_normal((canvas, canvas, 3))
    labels = np.zeros((max_instances, max_queries), np.float32)
    boxes = np.zeros((max_instances, 4), np.float32)
    mask = np.zeros((max_instances,), bool)
    num = int(rng.integers(1, max_boxes + 1))
    classes = rng.permutation(num_classes)[:num]
    # One rectangle per vertical strip of the canvas, so rectangles never overlap.
    strip = canvas // num
    for m, cls in enumerate(classes):
        w = int(rng.integers(max(strip // 3, 2), max(strip - 1, 3)))
        h = int(rng.integers(canvas // 4, canvas - 1))
        x0 = m * strip + int(rng.integers(0, max(strip - w, 1)))
        y0 = int(rng.integers(0, canvas - h))
        image[y0 : y0 + h, x0 : x0 + w] = COLOURS[list(COLOURS)[cls]]
        boxes[m] = ((x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size)
        labels[m, 1 + cls] = 1.0
        mask[m] = True
    labels[num:, 0] = 1.0
    queries = np.zeros((max_queries, 16), np.int32)
    tokens = _query_tokens()
    queries[:] = tokens[0]
    queries[: len(tokens)] = tokens
    image = normalize_pixels(np.clip(image, 0, 1))
    return {
        "image": image.astype(np.float32),
        "queries": queries,
        "labels": labels,
        "boxes": boxes,
        "instance_mask": mask,
    }


class SyntheticLoader:
    """An iterable of this process's share of each global batch; see the module docstring.

    Args:
        num_examples: N distinct examples (the stream cycles through them, reshuffled per epoch).
        seed: data seed.
        global_batch_size: G; must be divisible by ``process_count``.
        process_index: p.
        process_count: P.
        image_size, max_queries, max_instances, max_boxes, pad_value: see `make_example`.
        num_batches: batches per iteration (None: endless).
    """

    def __init__(
        self,
        *,
        num_examples: int,
        seed: int,
        global_batch_size: int,
        image_size: int,
        max_queries: int,
        max_instances: int,
        max_boxes: int = 2,
        pad_value: float = 0.5,
        process_index: int = 0,
        process_count: int = 1,
        num_batches: int | None = None,
    ) -> None:
        if num_examples < 1:
            raise ValueError(f"num_examples must be >= 1, got {num_examples}")
        if global_batch_size < 1 or global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size {global_batch_size} must be a positive multiple of "
                f"process_count {process_count}"
            )
        self.num_examples = num_examples
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.process_index = process_index
        self.process_count = process_count
        self.num_batches = num_batches
        self._example_kw = dict(
            seed=seed,
            image_size=image_size,
            max_queries=max_queries,
            max_instances=max_instances,
            max_boxes=max_boxes,
            pad_value=pad_value,
        )
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def example_at(self, position: int) -> dict[str, np.ndarray]:
        """The example at global stream position ``position``."""
        epoch, offset = divmod(position, self.num_examples)
        perm = np.random.default_rng([_PERMUTATION_TAG, self.seed, epoch]).permutation(
            self.num_examples
        )
        index = int(perm[offset])
        if index not in self._cache:
            self._cache[index] = make_example(index, **self._example_kw)
        return self._cache[index]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of global batch ``step``."""
        g, p, count = self.global_batch_size, self.process_index, self.process_count
        positions = [step * g + j * count + p for j in range(g // count)]
        rows = [self.example_at(i) for i in positions]
        return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

    def __iter__(self) -> SyntheticIterator:
        """A new iterator from the first batch."""
        return SyntheticIterator(self)


class SyntheticIterator(Iterator[dict[str, np.ndarray]]):
    """Iterator over a `SyntheticLoader` with grain-style ``get_state`` / ``set_state``."""

    def __init__(self, loader: SyntheticLoader) -> None:
        self._loader = loader
        self._next = 0

    def __next__(self) -> dict[str, np.ndarray]:
        """The next batch of this process's rows."""
        limit = self._loader.num_batches
        if limit is not None and self._next >= limit:
            raise StopIteration
        batch = self._loader.batch(self._next)
        self._next += 1
        return batch

    def get_state(self) -> dict[str, int]:
        """The position: {"next_batch": batches read so far}."""
        return {"next_batch": self._next}

    def set_state(self, state: dict[str, int]) -> None:
        """Continues from a `get_state` value."""
        self._next = int(state["next_batch"])
