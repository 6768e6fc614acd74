"""Dataset prediction for evaluation: the images of a dataset, top-k (box, class) pairs per image.

This is the prediction half of the official OWL-ViT evaluator's protocol (spec §6 and §3), without
its bugs:

* per image: one image encoding, one class-head scoring per template of the prompt ensemble
  (`owl.eval.prompts`), the **mean of the logits** over templates (not of the embeddings),
  scores = sigmoid(mean);
* the top-k (300) (box, class) pairs of the flattened [P, C] score matrix: multi-label, no NMS,
  no score threshold;
* boxes are unpadded the evaluator's way (centre and size divided by the image's fraction of the
  padded square and clipped to [0, 1]) and written as COCO xywh pixels;
* category ids are the dataset's real ids through :class:`~owl.data.annotations.CategoryMap`;
  unlike the official evaluator, class index 0 (LVIS id 1, COCO "person") is kept, and COCO's
  non-contiguous ids are mapped instead of assuming ``index + 1``.

Throughput and determinism: images are decoded and resized in a thread pool ahead of the model;
they are encoded in batches of exactly ``detector.batch_size`` (the last batch padded), so every
image goes through the same compiled program whichever images share its batch. That is what makes
a resumed run (`owl.eval.runlog`) write the same numbers as an uninterrupted one.

Image sizes: boxes refer to the image as owl loads it, EXIF orientation applied; the official
TFDS pipeline ignores EXIF. Images whose loaded size differs from the annotations' are reported.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from owl.data.annotations import MAX_LISTED
from owl.eval.prompts import PromptEnsemble
from owl.inference.detector import Detector
from owl.models.owl_vit import normalize, score_queries
from owl.ops.image import ImageLoadError, ImageMeta, preprocess

# ----------------------------------------------------------------------------------------------
# Images of a dataset.


@dataclasses.dataclass(frozen=True)
class DatasetImage:
    """One image to predict: its dataset id and file (and size as the annotations give it)."""

    image_id: int
    path: Path
    width: int | None = None
    height: int | None = None


def _candidates(image: Mapping[str, Any], images_dir: Path) -> list[Path]:
    """Where an image may be: ``file_name``, else from ``coco_url`` (LVIS has no file_name)."""
    out = []
    if isinstance(image.get("file_name"), str) and image["file_name"]:
        out.append(images_dir / image["file_name"])
        out.append(images_dir / Path(image["file_name"]).name)
    url = image.get("coco_url") or image.get("flickr_url")
    if isinstance(url, str) and url:
        parts = url.rstrip("/").split("/")
        out.append(images_dir / parts[-1])
        if len(parts) >= 2:  # .../val2017/000000397133.jpg -> DIR/val2017/000000397133.jpg
            out.append(images_dir / parts[-2] / parts[-1])
    return list(dict.fromkeys(out))


def find_images(
    dataset: Mapping[str, Any], images_dir: str | os.PathLike
) -> tuple[list[DatasetImage], list[str]]:
    """Locates the dataset's image files, in ascending image-id order.

    A COCO image is ``DIR/<file_name>``; an LVIS image (no ``file_name``) is the last part of its
    ``coco_url``, directly in DIR or in DIR/<split folder> (``val2017/``, ``train2017/``).

    Args:
        dataset: a validated dataset (:func:`~owl.data.annotations.load_annotations`).
        images_dir: the folder holding the images.

    Returns:
        (found, missing): the images whose file exists, and the names of those whose file does not
        (file_name, the URL's file name, or ``id <n>`` when the record names no file).
    """
    images_dir = Path(images_dir)
    found, missing = [], []
    for im in sorted(dataset["images"], key=lambda im: im["id"]):
        paths = _candidates(im, images_dir)
        hit = next((p for p in paths if p.is_file()), None)
        if hit is None:
            url = im.get("coco_url") or im.get("flickr_url")
            url = url if isinstance(url, str) else None
            name = im.get("file_name") or (url.rstrip("/").split("/")[-1] if url else None)
            missing.append(str(name) if name else f"id {im['id']}")
            continue
        width, height = im.get("width"), im.get("height")
        found.append(
            DatasetImage(
                int(im["id"]),
                hit,
                width if isinstance(width, int) else None,
                height if isinstance(height, int) else None,
            )
        )
    return found, missing


def describe_missing(missing: Sequence[str], total: int, images_dir: str | os.PathLike) -> str:
    """One line listing up to ten missing image files and the count."""
    shown = ", ".join(missing[:MAX_LISTED])
    more = len(missing) - MAX_LISTED
    return (
        f"{len(missing)} of {total} images in the annotations are not in {images_dir}: {shown}"
        + (f" (and {more} more)" if more > 0 else "")
    )


def subset_annotations(dataset: Mapping[str, Any], image_ids: Iterable[int]) -> dict[str, Any]:
    """The dataset restricted to some images (and their annotations), e.g. those predicted."""
    keep = set(int(i) for i in image_ids)
    out = {k: v for k, v in dataset.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in dataset["images"] if im["id"] in keep]
    out["annotations"] = [a for a in dataset.get("annotations", []) if a["image_id"] in keep]
    return out


# ----------------------------------------------------------------------------------------------
# Scoring.


@functools.partial(jax.jit, static_argnames=("k",))
def ensemble_top_k(
    class_embeddings: jax.Array,
    logit_shift: jax.Array,
    logit_scale: jax.Array,
    pred_boxes: jax.Array,
    queries: jax.Array,
    k: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Template-averaged class logits and the top-k (box, class) pairs of each image.

    Args:
        class_embeddings: [B, P, E] unnormalised patch embeddings.
        logit_shift, logit_scale: [B, P] the class head's per-patch terms.
        pred_boxes: [B, P, 4] cxcywh on the padded square.
        queries: [T, C, E] unnormalised text embeddings.
        k: pairs per image, at most P * C.

    Returns:
        scores [B, k] (sigmoid of the mean logit, descending), class indices [B, k] and boxes
        [B, k, 4] (cxcywh) of the selected pairs.
    """
    cls = normalize(class_embeddings)
    num_templates, num_classes = queries.shape[0], queries.shape[1]
    total = score_queries(cls, logit_shift, logit_scale, queries[0])
    for t in range(1, num_templates):
        total = total + score_queries(cls, logit_shift, logit_scale, queries[t])
    scores = jax.nn.sigmoid(total / num_templates)  # [B, P, C]
    top, index = jax.lax.top_k(scores.reshape(scores.shape[0], -1), k)
    patch, label = index // num_classes, index % num_classes
    boxes = jnp.take_along_axis(pred_boxes, patch[..., None], axis=1)
    return top, label, boxes


def unpad_boxes(boxes_cxcywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """Model boxes (cxcywh on the padded square) -> COCO xywh pixels, the official evaluator's way.

    Centre and size are divided by the image's fraction of the padded square (+1e-6) and clipped
    to [0, 1]; then x = (cx - w/2) * W, y = (cy - h/2) * H, width = w * W, height = h * H. The
    corners are not clipped, so a box may reach slightly outside the image (spec §3).

    Args:
        boxes_cxcywh: [..., 4] in [0, 1] of the padded square.
        width, height: the original image size in pixels.

    Returns:
        float64 [..., 4] (x, y, width, height) in pixels.
    """
    side = max(width, height)
    frac = np.array([width / side, height / side] * 2) + 1e-6
    b = np.clip(np.asarray(boxes_cxcywh, np.float64) / frac, 0.0, 1.0)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height], axis=-1)


# ----------------------------------------------------------------------------------------------
# Per-image results.


def _f32(values: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32."""
    return [float(s) for s in np.asarray(values, np.float32).reshape(-1).astype(str)]


@dataclasses.dataclass(frozen=True)
class ImagePrediction:
    """The top-k detections of one image.

    Attributes:
        image_id: the dataset's image id.
        width, height: the image size the boxes refer to.
        category_ids: [K] real category ids.
        boxes: [K, 4] COCO xywh pixels.
        scores: [K] descending.
    """

    image_id: int
    width: int
    height: int
    category_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def to_record(self) -> dict[str, Any]:
        """The JSONL record (floats rounded to float32, written as their shortest decimals)."""
        return {
            "image_id": int(self.image_id),
            "width": int(self.width),
            "height": int(self.height),
            "category_id": [int(c) for c in self.category_ids],
            "bbox": np.reshape(_f32(self.boxes), (-1, 4)).tolist(),
            "score": _f32(self.scores),
        }

    @classmethod
    def from_record(cls, record: Any) -> ImagePrediction:
        """Parses a JSONL record; raises ValueError/KeyError/TypeError on a malformed one."""
        boxes = np.asarray(record["bbox"], np.float64).reshape(-1, 4)
        category_ids = np.asarray(record["category_id"], np.int64).reshape(-1)
        scores = np.asarray(record["score"], np.float64).reshape(-1)
        if not len(boxes) == len(category_ids) == len(scores):
            raise ValueError("bbox, category_id and score lengths differ")
        image_id = record["image_id"]
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise TypeError("image_id must be an integer")
        width, height = int(record["width"]), int(record["height"])
        return cls(image_id, width, height, category_ids, boxes, scores)


@dataclasses.dataclass(frozen=True)
class ImageFailure:
    """An image that could not be read; ``error`` names the file and the problem."""

    image_id: int
    path: str
    error: str


def _preprocessed(
    images: Iterable[DatasetImage], detector: Detector, workers: int, ahead: int
) -> Iterator[tuple[DatasetImage, np.ndarray | None, ImageMeta | None, str | None]]:
    """Preprocesses images in a thread pool, ``ahead`` images in advance, in input order."""
    cfg = detector.model.config
    job = functools.partial(
        preprocess,
        image_size=cfg.image_size,
        pad_value=cfg.pad_value,
        method=detector.resize_method,
        max_pixels=detector.max_pixels,
        exif=False,  # annotations refer to the stored pixel grid; the official pipeline ignores EXIF
    )
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="owl-eval")
    pending: collections.deque = collections.deque()
    source = iter(images)
    try:
        for item in source:
            pending.append((item, pool.submit(job, item.path)))
            if len(pending) >= ahead:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(source, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(job, nxt.path)))
            try:
                pixels, meta = future.result()
            except ImageLoadError as e:
                yield item, None, None, str(e)
                continue
            yield item, pixels, meta, None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def predict_images(
    detector: Detector,
    images: Iterable[DatasetImage],
    ensemble: PromptEnsemble,
    *,
    top_k: int = 300,
    workers: int | None = None,
) -> Iterator[ImagePrediction | ImageFailure]:
    """Predicts the top-k (box, class) pairs of each image with the prompt ensemble.

    Images are encoded in batches of ``detector.batch_size`` (padded), see the module docstring.
    An unreadable image yields an :class:`ImageFailure` and the others go on. Results come in
    input order except that a failure is reported as soon as it is found.

    Args:
        detector: the model, batch size, resize method and pixel limit.
        images: what to predict.
        ensemble: from :func:`owl.eval.prompts.embed_prompts` (with this detector's model).
        top_k: pairs per image (fewer if the image has fewer than ``top_k`` pairs).
        workers: preprocessing threads (default: min(4, CPUs)).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    model = detector.model
    cfg = model.config
    batch_size = detector.batch_size
    k = min(top_k, cfg.num_patches * len(ensemble.categories))
    queries = jnp.asarray(ensemble.embeddings)
    workers = workers or min(4, os.cpu_count() or 1)

    def run(batch: list[tuple[DatasetImage, np.ndarray, ImageMeta]]) -> list[ImagePrediction]:
        pixels = np.zeros((batch_size, cfg.image_size, cfg.image_size, 3), np.float32)
        pixels[: len(batch)] = np.stack([p for _, p, _ in batch])
        out = model.embed_image(pixels, features=False)
        scores, labels, boxes = jax.device_get(
            ensemble_top_k(
                out["class_embeddings"], out["logit_shift"], out["logit_scale"],
                out["pred_boxes"], queries, k=k,
            )
        )  # fmt: skip
        return [
            ImagePrediction(
                item.image_id,
                meta.width,
                meta.height,
                ensemble.categories.ids_for_indices(labels[j]),
                unpad_boxes(boxes[j], meta.width, meta.height),
                np.asarray(scores[j]),
            )
            for j, (item, _, meta) in enumerate(batch)
        ]

    batch = []
    for item, pixels, meta, error in _preprocessed(images, detector, workers, 2 * batch_size):
        if error is not None:
            yield ImageFailure(item.image_id, str(item.path), error)
            continue
        batch.append((item, pixels, meta))
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    if batch:
        yield from run(batch)
