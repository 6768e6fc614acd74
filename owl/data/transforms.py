"""Training augmentations and the construction of one training example (spec §5.2).

Every function here is pure numpy: it takes a `Sample` (and, where random, a numpy Generator)
and returns a new `Sample`, so a result is a function of its inputs and the Generator's state.
A `Sample` holds

* ``image``: float32 [H, W, 3] in [0, 1];
* ``boxes``: float32 [N, 4] xyxy in pixel-edge coordinates (a box covering pixel columns
  x0 .. x1 - 1 has x1 = last column + 1);
* ``labels``: one tuple of class names per box (a tuple, because merging near-identical boxes
  gives a box several labels);
* ``negatives``: class names known to be absent.

The official order (scenic ``input_pipeline``) is kept:

1. per tile: `horizontal_flip` (p 0.5), `random_crop` (area 0.3-1, aspect 0.75-1.33, boxes kept
   when >= 60% of their area remains), `resize_with_pad` to S / n, at most ``max_instances``
   boxes;
2. `mosaic` of n x n tiles, n drawn by `choose_mosaic_size` (1, 2, 3 with p 0.4, 0.3, 0.3);
   boxes offset by their tile, instance lists concatenated, negatives = union minus positives;
3. random negatives (`owl.data.coco.NegativeSampler`) up to ``num_negatives``;
4. `encode_example`: at most ``max_instances`` boxes, `merge_overlapping_instances`
   (IoU >= 0.9), one random training prompt per unique label, the query list
   ['', positives, negatives] padded/truncated to ``max_queries``, and the arrays of the training
   batch contract (CLIP-normalised image, int32 query tokens, multi-hot labels with column 0 for
   padding instances, cxcywh boxes normalised to the padded square, instance mask).

Two deliberate differences from scenic: when S is not divisible by n, mosaic tiles are S // n
pixels and the leftover strip at the bottom/right is padding; and when the query list must be
truncated, positives are kept first (negatives are dropped before any positive).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from owl.ops.boxes import box_iou, xyxy_to_cxcywh
from owl.ops.image import normalize_pixels, resize_square
from owl.text.prompts import NOT_PROMPTABLE_MARKER, TRAINING_PROMPT_TEMPLATES, canonicalize
from owl.text.tokenizer import get_tokenizer

Labels = tuple[str, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """An image with its boxes, per-box label sets and negative class names.

    Attributes:
        image: float32 [H, W, 3] in [0, 1].
        boxes: float32 [N, 4] xyxy pixel-edge coordinates.
        labels: N tuples of class names, one tuple per box.
        negatives: class names known to be absent from the image.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: tuple[Labels, ...]
    negatives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        labels = tuple(tuple(ls) for ls in self.labels)
        if len(boxes) != len(labels):
            raise ValueError(f"{len(boxes)} boxes but {len(labels)} label sets; give one per box.")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "negatives", tuple(self.negatives))

    def positives(self) -> tuple[str, ...]:
        """Unique labels of the boxes, in order of first appearance."""
        return tuple(dict.fromkeys(name for ls in self.labels for name in ls))

    def replace(self, **changes) -> Sample:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def select(self, keep: np.ndarray) -> Sample:
        """Keeps the boxes where the boolean mask ``keep`` is True (or the given indices)."""
        keep = np.asarray(keep)
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(np.int64)
        return self.replace(boxes=self.boxes[idx], labels=tuple(self.labels[i] for i in idx))


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation and example-construction settings (defaults: the v1 configs, spec §5.1).

    Attributes:
        image_size: side S of the square model input.
        pad_value: grey level of the padding (0.5 for OWL-ViT v1, 0.0 for OWLv2).
        max_queries: Q, query rows per example (row 0 is '').
        max_instances: M, instance rows per example.
        num_negatives: total negatives per example after random ones are added.
        mosaic_sizes: grid sizes n to draw from.
        mosaic_probs: their probabilities.
        flip_prob: probability of a horizontal flip per tile.
        crop_area_range: crop area as a fraction of the image area.
        crop_aspect_range: crop width / height.
        min_area_fraction: a cropped box is kept when this fraction of its area remains.
        merge_iou: boxes with IoU at least this are merged into one with both label sets.
        prompt_templates: training prompt templates; one is drawn per unique label.
    """

    image_size: int
    pad_value: float
    max_queries: int = 100
    max_instances: int = 100
    num_negatives: int = 50
    mosaic_sizes: tuple[int, ...] = (1, 2, 3)
    mosaic_probs: tuple[float, ...] = (0.4, 0.3, 0.3)
    flip_prob: float = 0.5
    crop_area_range: tuple[float, float] = (0.3, 1.0)
    crop_aspect_range: tuple[float, float] = (0.75, 1.33)
    min_area_fraction: float = 0.6
    merge_iou: float = 0.9
    prompt_templates: tuple[str, ...] = TRAINING_PROMPT_TEMPLATES

    def __post_init__(self) -> None:
        object.__setattr__(self, "mosaic_sizes", tuple(int(n) for n in self.mosaic_sizes))
        object.__setattr__(self, "mosaic_probs", tuple(float(p) for p in self.mosaic_probs))
        if len(self.mosaic_sizes) != len(self.mosaic_probs) or not self.mosaic_sizes:
            raise ValueError(
                f"mosaic_sizes {self.mosaic_sizes} and mosaic_probs {self.mosaic_probs} must be "
                "non-empty and of equal length."
            )
        if any(n < 1 for n in self.mosaic_sizes) or any(p < 0 for p in self.mosaic_probs):
            raise ValueError("mosaic sizes must be >= 1 and probabilities >= 0.")
        if abs(sum(self.mosaic_probs) - 1.0) > 1e-6:
            raise ValueError(f"mosaic_probs {self.mosaic_probs} must sum to 1.")
        if self.image_size < max(self.mosaic_sizes):
            raise ValueError(
                f"image_size {self.image_size} is smaller than the mosaic grid "
                f"{max(self.mosaic_sizes)}."
            )
        if self.max_queries < 2 or self.max_instances < 1:
            raise ValueError(
                f"need max_queries >= 2 and max_instances >= 1, got {self.max_queries} and "
                f"{self.max_instances}."
            )
        if self.num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {self.num_negatives}.")
        object.__setattr__(self, "prompt_templates", tuple(self.prompt_templates))
        for template in self.prompt_templates:
            if template.count("{}") != 1:
                raise ValueError(f"prompt template {template!r} must contain exactly one '{{}}'.")


# --------------------------------------------------------------------------------------------------
# Geometric augmentations


def horizontal_flip(sample: Sample, rng: np.random.Generator, p: float = 0.5) -> Sample:
    """Mirrors image and boxes left-right with probability ``p`` (one draw from ``rng``)."""
    if rng.random() >= p:
        return sample
    return flip(sample)


def flip(sample: Sample) -> Sample:
    """Mirrors image and boxes left-right (x -> W - x)."""
    width = sample.image.shape[1]
    b = sample.boxes
    boxes = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=-1)
    return sample.replace(image=np.ascontiguousarray(sample.image[:, ::-1]), boxes=boxes)


def sample_crop_window(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    area_range: tuple[float, float] = (0.3, 1.0),
    aspect_range: tuple[float, float] = (0.75, 1.33),
    max_attempts: int = 100,
) -> tuple[int, int, int, int]:
    """Draws an integer crop window like ``tf.image.sample_distorted_bounding_box``.

    Area fraction and aspect ratio (width / height) are drawn uniformly from their ranges until
    the window fits in the image (at most ``max_attempts`` times; then the whole image).

    Returns:
        (x0, y0, x1, y1) in pixels.
    """
    for _ in range(max_attempts):
        area = rng.uniform(*area_range) * height * width
        aspect = rng.uniform(*aspect_range)
        h = round(np.sqrt(area / aspect))
        w = round(np.sqrt(area * aspect))
        if 1 <= h <= height and 1 <= w <= width:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return x0, y0, x0 + w, y0 + h
    return 0, 0, width, height


def crop(sample: Sample, window: tuple[int, int, int, int], min_area_fraction: float) -> Sample:
    """Crops to ``window`` (x0, y0, x1, y1); boxes are clipped to it and kept when at least
    ``min_area_fraction`` of their area (and a positive area) remains."""
    x0, y0, x1, y1 = (int(v) for v in window)
    image = sample.image[y0:y1, x0:x1]
    b = sample.boxes.astype(np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    shifted = b - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = np.stack(
        [
            np.clip(shifted[:, 0], 0, x1 - x0),
            np.clip(shifted[:, 1], 0, y1 - y0),
            np.clip(shifted[:, 2], 0, x1 - x0),
            np.clip(shifted[:, 3], 0, y1 - y0),
        ],
        axis=-1,
    )
    new_area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (new_area > 0) & (new_area >= min_area_fraction * area)
    out = sample.replace(image=image, boxes=clipped)
    return out.select(keep)


def random_crop(
    sample: Sample,
    rng: np.random.Generator,
    *,
    area_range: tuple[float, float] = (0.3, 1.0),
    aspect_range: tuple[float, float] = (0.75, 1.33),
    min_area_fraction: float = 0.6,
) -> Sample:
    """`crop` to a window from `sample_crop_window`."""
    height, width = sample.image.shape[:2]
    window = sample_crop_window(
        rng, height, width, area_range=area_range, aspect_range=aspect_range
    )
    return crop(sample, window, min_area_fraction)


def resize_with_pad(sample: Sample, size: int, pad_value: float) -> Sample:
    """Resizes the long side to ``size`` (bilinear, no anti-aliasing) and pads bottom/right.

    The short side becomes floor(short * size / long), as in scenic's ``ResizeWithPad``; boxes
    are scaled per axis by the same factors as the pixels, so they stay exact.
    """
    height, width = sample.image.shape[:2]
    long_side = max(height, width)
    new_h = size if height == long_side else max(int(np.floor(height * size / long_side)), 1)
    new_w = size if width == long_side else max(int(np.floor(width * size / long_side)), 1)
    image = resize_square(sample.image, size, pad_value=pad_value, method="tf")
    scale = np.array([new_w / width, new_h / height] * 2, dtype=np.float64)
    return sample.replace(image=image, boxes=sample.boxes.astype(np.float64) * scale)


def truncate_instances(sample: Sample, max_instances: int) -> Sample:
    """Keeps the first ``max_instances`` boxes (scenic ``crop_or_pad``)."""
    if len(sample.labels) <= max_instances:
        return sample
    return sample.select(np.arange(max_instances))


def augment_tile(
    sample: Sample, rng: np.random.Generator, size: int, config: AugmentConfig
) -> Sample:
    """Pre-mosaic steps for one tile: flip, crop, resize-pad to ``size``, truncate instances."""
    sample = horizontal_flip(sample, rng, config.flip_prob)
    sample = random_crop(
        sample,
        rng,
        area_range=config.crop_area_range,
        aspect_range=config.crop_aspect_range,
        min_area_fraction=config.min_area_fraction,
    )
    sample = resize_with_pad(sample, size, config.pad_value)
    return truncate_instances(sample, config.max_instances)


# --------------------------------------------------------------------------------------------------
# Mosaic


def choose_mosaic_size(
    rng: np.random.Generator,
    sizes: Sequence[int] = (1, 2, 3),
    probs: Sequence[float] = (0.4, 0.3, 0.3),
) -> int:
    """Draws the mosaic grid size n."""
    return int(sizes[int(rng.choice(len(sizes), p=np.asarray(probs, dtype=np.float64)))])


def mosaic(
    tiles: Sequence[Sample],
    image_size: int,
    pad_value: float,
    exclude_negatives: Sequence[str] = (),
) -> Sample:
    """Tiles n * n samples, each already ``image_size // n`` square, into an n x n grid.

    Tile k goes to row k // n, column k % n. Boxes are offset by their tile's position and the
    instance lists concatenated in tile order; the negatives are the union of the tiles'
    negatives minus every positive (and minus ``exclude_negatives``, e.g. labels the augmentation
    cropped away). When ``image_size`` is not divisible by n the strip left at the bottom/right is
    filled with ``pad_value``.

    Raises:
        ValueError: if the number of tiles is not a square or a tile has the wrong size.
    """
    n = round(np.sqrt(len(tiles)))
    if n < 1 or n * n != len(tiles):
        raise ValueError(f"mosaic needs a square number of tiles, got {len(tiles)}.")
    side = image_size // n
    canvas = np.full((image_size, image_size, 3), pad_value, dtype=np.float32)
    boxes, labels, negatives = [], [], {}
    for k, tile in enumerate(tiles):
        if tile.image.shape[:2] != (side, side):
            raise ValueError(
                f"mosaic tile {k} is {tile.image.shape[:2]}, expected ({side}, {side})."
            )
        row, col = divmod(k, n)
        canvas[row * side : (row + 1) * side, col * side : (col + 1) * side] = tile.image
        offset = np.array([col * side, row * side] * 2, dtype=np.float64)
        boxes.append(tile.boxes.astype(np.float64) + offset)
        labels.extend(tile.labels)
        negatives.update(dict.fromkeys(tile.negatives))
    out = Sample(canvas, np.concatenate(boxes, axis=0), tuple(labels))
    excluded = set(out.positives()) | set(exclude_negatives)
    return out.replace(negatives=tuple(n for n in negatives if n not in excluded))


# --------------------------------------------------------------------------------------------------
# Labels and queries


def merge_overlapping_instances(
    sample: Sample, rng: np.random.Generator, iou_threshold: float = 0.9
) -> Sample:
    """Merges boxes that overlap with IoU >= ``iou_threshold`` (scenic
    ``merge_overlapping_instances``).

    Repeatedly takes the pair with the highest IoU, gives the surviving box the union of both
    label sets (first box's labels first) and keeps one of the two boxes at random, until no pair
    reaches the threshold. The survivor takes the position of the earlier box.
    """
    boxes = sample.boxes.astype(np.float64)
    labels = list(sample.labels)
    alive = list(range(len(labels)))
    if len(alive) < 2:
        return sample
    iou = box_iou(boxes, boxes)[0]
    np.fill_diagonal(iou, -1.0)
    while len(alive) > 1:
        sub = iou[np.ix_(alive, alive)]
        flat = int(np.argmax(sub))
        a, b = divmod(flat, len(alive))
        if sub[a, b] < iou_threshold:
            break
        i, j = sorted((alive[a], alive[b]))
        labels[i] = tuple(dict.fromkeys(labels[i] + labels[j]))
        if rng.random() < 0.5:
            boxes[i] = boxes[j]
            iou[i, :] = iou[j, :]
            iou[:, i] = iou[:, j]
            iou[i, i] = -1.0
        alive.remove(j)
    return sample.replace(boxes=boxes[alive], labels=tuple(labels[i] for i in alive))


def add_random_negatives(
    sample: Sample,
    rng: np.random.Generator,
    sampler,
    num_negatives: int,
    exclude: Sequence[str] = (),
) -> Sample:
    """Tops the negatives up to ``num_negatives`` with names drawn by ``sampler``.

    Existing negatives are kept even if there are more. Random ones are never a positive, an
    existing negative or in ``exclude``.

    Args:
        sample: the (mosaic) sample.
        rng: numpy Generator.
        sampler: an `owl.data.coco.NegativeSampler` (anything with ``sample(rng, num, exclude)``).
        num_negatives: the total to reach.
        exclude: further names never to draw (removed classes, labels cropped away).
    """
    missing = num_negatives - len(sample.negatives)
    if missing <= 0:
        return sample
    taken = set(sample.positives()) | set(sample.negatives) | set(exclude)
    drawn = sampler.sample(rng, missing, exclude=taken)
    return sample.replace(negatives=sample.negatives + tuple(drawn))


def prompt_label(label: str, template: str) -> str:
    """A training prompt for ``label``: the filled template, re-canonicalised.

    Labels marked not promptable (leading "#") get no template; the marker is removed.
    """
    if label.startswith(NOT_PROMPTABLE_MARKER):
        return canonicalize(label[len(NOT_PROMPTABLE_MARKER) :])
    return canonicalize(template.format(label))


def build_query_set(
    positives: Sequence[str],
    negatives: Sequence[str],
    rng: np.random.Generator,
    *,
    max_queries: int,
    templates: Sequence[str] = TRAINING_PROMPT_TEMPLATES,
) -> tuple[list[str], dict[str, int]]:
    """The query list and each label's row in it.

    Every unique label gets one template drawn uniformly from ``templates`` (spec §2.2). The list
    is [''] + positive prompts (in order) + negative prompts (in random order), with duplicates
    removed, truncated to ``max_queries`` (negatives go first) and padded with ''.

    Returns:
        (queries, row_of): ``queries`` has exactly ``max_queries`` strings; ``row_of`` maps each
        label whose prompt made it into the list to its row (>= 1).
    """
    positives = list(dict.fromkeys(positives))
    negatives = [n for n in dict.fromkeys(negatives) if n not in set(positives)]
    negatives = [negatives[i] for i in rng.permutation(len(negatives))]
    labels = positives + negatives
    choice = rng.integers(0, len(templates), size=len(labels))
    queries = [""]
    row_of_prompt: dict[str, int] = {}
    row_of: dict[str, int] = {}
    for label, t in zip(labels, choice, strict=True):
        prompt = prompt_label(label, templates[int(t)])
        if not prompt:
            continue
        if prompt not in row_of_prompt:
            if len(queries) >= max_queries:
                continue
            row_of_prompt[prompt] = len(queries)
            queries.append(prompt)
        row_of[label] = row_of_prompt[prompt]
    queries += [""] * (max_queries - len(queries))
    return queries, row_of


def encode_example(
    sample: Sample,
    rng: np.random.Generator,
    config: AugmentConfig,
    tokenize: Callable[[list[str]], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Turns an augmented S x S sample into one example of the training batch contract.

    Steps (post-mosaic, after random negatives): keep at most ``max_instances`` boxes; merge
    near-identical boxes; build the query set; drop boxes none of whose labels got a query row;
    write the arrays.

    Args:
        sample: the sample, image already ``config.image_size`` square.
        rng: numpy Generator (merge choices, negative order, prompt templates).
        config: the settings.
        tokenize: list of Q strings -> int32 [Q, 16]; default the CLIP tokenizer with truncation.

    Returns:
        {"image": float32 [S, S, 3] CLIP-normalised, "queries": int32 [Q, 16],
         "labels": float32 [M, Q], "boxes": float32 [M, 4] cxcywh in [0, 1],
         "instance_mask": bool [M]}.
    """
    size, m_max, q_max = config.image_size, config.max_instances, config.max_queries
    if sample.image.shape[:2] != (size, size):
        raise ValueError(f"expected a {size}x{size} image, got {sample.image.shape[:2]}.")
    sample = truncate_instances(sample, m_max)
    sample = merge_overlapping_instances(sample, rng, config.merge_iou)
    queries, row_of = build_query_set(
        sample.positives(),
        sample.negatives,
        rng,
        max_queries=q_max,
        templates=config.prompt_templates,
    )
    if tokenize is None:
        tokenize = _clip_tokenize
    labels = np.zeros((m_max, q_max), dtype=np.float32)
    boxes = np.zeros((m_max, 4), dtype=np.float32)
    mask = np.zeros((m_max,), dtype=bool)
    m = 0
    for box, label_set in zip(sample.boxes, sample.labels, strict=True):
        rows = [row_of[name] for name in label_set if name in row_of]
        w, h = box[2] - box[0], box[3] - box[1]
        if not rows or w <= 0 or h <= 0:
            continue
        labels[m, rows] = 1.0
        boxes[m] = xyxy_to_cxcywh(np.clip(np.asarray(box, np.float64), 0.0, size) / size)
        mask[m] = True
        m += 1
    labels[m:, 0] = 1.0
    image = normalize_pixels(np.asarray(sample.image, np.float32))
    return {
        "image": image.astype(np.float32),
        "queries": np.asarray(tokenize(queries), dtype=np.int32),
        "labels": labels,
        "boxes": boxes,
        "instance_mask": mask,
    }


def _clip_tokenize(queries: list[str]) -> np.ndarray:
    return get_tokenizer().tokenize(queries, truncate=True)
