"""Dataset-wide prediction for evaluation: prompt ensembling, top-k (box, class) pairs, resume.

This is the prediction half of the official OWL-ViT evaluator's protocol (spec §6 and §3), without
its bugs:

* every category name is put into each of T templates (the 7 of `CLIP_BEST_PROMPT_TEMPLATES` for
  the ensemble) and canonicalised; all T x C prompts are embedded once, in batches;
* per image: one image encoding, one class-head scoring per template, the **mean of the logits**
  over templates (not of the embeddings), scores = sigmoid(mean);
* the top-k (300) (box, class) pairs of the flattened [P, C] score matrix: multi-label, no NMS,
  no score threshold;
* boxes are unpadded the evaluator's way (centre and size divided by the image's fraction of the
  padded square and clipped to [0, 1]) and written as COCO xywh pixels;
* category ids are the dataset's real ids through :class:`~owl.data.annotations.CategoryMap`; unlike
  the official evaluator, class index 0 (LVIS id 1, COCO "person") is kept, and COCO's
  non-contiguous ids are mapped instead of assuming ``index + 1``.

Over-long prompts (more than 14 BPE tokens) are embedded the way the official tokenizer cuts them
(``long_prompts="official"``: EOT dropped, so they all collapse to one embedding, spec §1.4), or
with owl's EOT-keeping truncation (``"truncate"``).

Throughput and determinism: images are decoded and resized in a thread pool ahead of the model;
they are encoded in batches of exactly ``detector.batch_size`` (the last batch padded), so every
image goes through the same compiled program whichever images share its batch. That is what makes
a resumed run write the same numbers as an uninterrupted one.

Image sizes: boxes refer to the image as owl loads it, EXIF orientation applied; the official
TFDS pipeline ignores EXIF. Images whose loaded size differs from the annotations' are reported.

Resume: :func:`predict_dataset` appends one JSON line per image to ``predictions.jsonl`` as soon as
the image is done (flushed and fsynced per batch), records the settings in ``run.json``, and on a
new start skips the images already in the log (a torn last line, left by a kill during a write, is
cut off). It refuses to continue a log made with other settings unless told to overwrite. The final
``detections.json`` (COCO results format) is assembled from the log.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from owl.data.annotations import (
    MAX_LISTED,
    CategoryMap,
    EvalDataError,
    ResultsTable,
    write_results,
)
from owl.files import atomic_write
from owl.inference.detector import MIN_QUERY_BUCKET, Detector, bucket
from owl.inference.preprocess import ImageLoadError, ImageMeta, preprocess
from owl.models.owl_vit import normalize, score_queries
from owl.text.prompts import CLIP_BEST_PROMPT_TEMPLATES, expand_prompts
from owl.text.tokenizer import EOT_ID, PAD_ID, SOT_ID, get_tokenizer

#: ``--prompts`` values that name a template set rather than giving a template.
PROMPT_SETS: dict[str, tuple[str, ...]] = {
    "ensemble": CLIP_BEST_PROMPT_TEMPLATES,
    "none": ("{}",),
}
#: How prompts longer than the text context are embedded.
LONG_PROMPT_POLICIES = ("official", "truncate")
#: Files in an evaluation's output folder.
RUN_FILE, LOG_FILE, RESULTS_FILE = "run.json", "predictions.jsonl", "detections.json"
#: Prompts embedded per text-tower call.
TEXT_CHUNK = 512


class SettingsMismatchError(EvalDataError):
    """An output folder holds predictions made with other settings."""


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
# Prompts.


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


def official_token_ids(texts: Sequence[str], context_length: int) -> np.ndarray:
    """Token ids as the official tokenizer makes them: ``[SOT, *bpe, EOT]`` cut to the context.

    For a prompt with more than ``context_length - 2`` BPE tokens this drops EOT (spec §1.4); the
    text tower then pools at SOT and all such prompts get the same embedding.
    """
    tokenizer = get_tokenizer()
    out = np.full((len(texts), context_length), PAD_ID, dtype=np.int32)
    for row, text in enumerate(texts):
        ids = [SOT_ID, *tokenizer.encode(text), EOT_ID][:context_length]
        out[row, : len(ids)] = ids
    return out


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

    Prompts that fit the text context go through ``Detector.embed_texts``; over-long ones are
    embedded as the official code does (``"official"``) or truncated keeping EOT
    (``"truncate"``).

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
    context = detector.model.config.context_length
    too_long = {t for t in unique if len(tokenizer.encode(t)) > context - 2}
    table: dict[str, np.ndarray] = {}
    fits = [t for t in unique if t not in too_long]
    for chunk in _chunks(fits, TEXT_CHUNK):
        table.update(zip(chunk, detector.embed_texts(list(chunk)), strict=True))
    long = [t for t in unique if t in too_long]
    for chunk in _chunks(long, TEXT_CHUNK):
        if long_prompts == "truncate":
            emb = detector.embed_texts(list(chunk), truncate=True)
        else:
            ids = official_token_ids(chunk, context)
            padded = np.zeros((bucket(len(ids), MIN_QUERY_BUCKET), context), np.int32)
            padded[: len(ids)] = ids
            emb = np.asarray(detector.model.embed_text(padded))[: len(ids)]
        table.update(zip(chunk, emb, strict=True))
    embeddings = np.stack([np.stack([table[p] for p in row]) for row in prompts])
    return PromptEnsemble(
        templates=tuple(templates),
        categories=categories,
        prompts=tuple(tuple(row) for row in prompts),
        embeddings=embeddings.astype(np.float32),
        long_prompts=tuple(long),
        policy=long_prompts,
    )


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
        ensemble: from :func:`embed_prompts` (with this detector's model).
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


# ----------------------------------------------------------------------------------------------
# The resumable log.


def run_settings(
    *,
    model: str,
    prompts: str,
    templates: Sequence[str],
    top_k: int,
    resize: str,
    long_prompts: str,
    categories: CategoryMap,
) -> dict[str, Any]:
    """The settings a log's predictions depend on (compared on resume)."""
    digest = hashlib.sha256(
        json.dumps([list(categories.ids), list(categories.names)]).encode()
    ).hexdigest()
    return {
        "model": str(model),
        "prompts": prompts,
        "templates": list(templates),
        "top_k": int(top_k),
        "resize": resize,
        "long_prompts": long_prompts,
        "categories_sha256": digest,
    }


def _write_json_atomic(path: Path, value: Any) -> None:
    with atomic_write(path) as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _repair_log(path: Path) -> None:
    """Cuts a torn last line (no newline: the process died while writing it)."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


def read_log(path: str | os.PathLike) -> Iterator[ImagePrediction]:
    """Reads a predictions log (JSONL), ignoring a torn last line.

    Raises:
        EvalDataError: a complete line that is not a prediction record (``file:line``).
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return  # torn by a kill during the write
            if not line.strip():
                continue
            try:
                yield ImagePrediction.from_record(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                raise EvalDataError(
                    f"{path}:{number}: not a prediction record ({e}); delete that line or pass "
                    "--overwrite to start again"
                ) from None


def prepare_output(
    output_dir: str | os.PathLike, settings: Mapping[str, Any], *, overwrite: bool = False
) -> set[int]:
    """Readies an output folder and returns the image ids already predicted there.

    A new folder (or ``overwrite``) gets a fresh ``run.json`` and an empty log. An existing log is
    continued only if its ``run.json`` holds the same settings; a torn last line is cut off.

    Raises:
        SettingsMismatchError: the log was made with other settings (or has no run.json).
        EvalDataError: a corrupt line in the log.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_FILE
    if overwrite or not check_resumable(out, settings):
        log_path.unlink(missing_ok=True)
        _write_json_atomic(out / RUN_FILE, {"settings": dict(settings)})
        return set()
    _repair_log(log_path)
    return logged_image_ids(log_path)


def logged_image_ids(path: str | os.PathLike) -> set[int]:
    """The image ids in a predictions log, read from each line's start (fast; no full parse).

    Lines are written as ``{"image_id":N,...}``; a line that does not start so is parsed whole.
    A torn last line is ignored. Malformed lines are reported when the log is assembled.
    """
    path = Path(path)
    ids: set[int] = set()
    if not path.exists():
        return ids
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or not line.strip():
                continue
            match = _ID_PREFIX.match(line)
            if match:
                ids.add(int(match.group(1)))
                continue
            try:
                ids.add(int(json.loads(line)["image_id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


_ID_PREFIX = re.compile(rb'\{"image_id":(-?\d+),')


def check_resumable(output_dir: str | os.PathLike, settings: Mapping[str, Any]) -> bool:
    """Whether ``output_dir`` holds a log to resume; checks its settings without changing files.

    Returns:
        True if there is a non-empty log made with ``settings``, False if there is no log.

    Raises:
        SettingsMismatchError: the log was made with other settings (or has no run.json).
    """
    out = Path(output_dir)
    run_path, log_path = out / RUN_FILE, out / LOG_FILE
    if not (log_path.exists() and log_path.stat().st_size > 0):
        return False
    try:
        saved = json.loads(run_path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SettingsMismatchError(
            f"{log_path} exists but {run_path} is missing or unreadable, so its settings are "
            "unknown; pass --overwrite to start again or use another --output-dir"
        ) from None
    changed = [k for k in settings if saved.get(k) != settings[k]]
    if changed:
        diffs = "; ".join(
            f"{k}: {_short(saved.get(k))} there, {_short(settings[k])} now" for k in changed
        )
        raise SettingsMismatchError(
            f"{out} holds predictions made with other settings ({diffs}); pass --overwrite to "
            "discard them or use another --output-dir"
        )
    return True


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclasses.dataclass(frozen=True)
class DatasetRun:
    """What :func:`predict_dataset` did.

    Attributes:
        results: the detections of all requested images that have predictions, from the log.
        predicted_ids: those images' ids, in request order.
        resumed: images found already done in the log.
        new: images predicted in this call.
        failures: images that could not be read.
        size_mismatches: ids of images whose file size differs from the annotations' width/height
            (e.g. an EXIF rotation the annotations did not apply).
        results_path: the detections.json written.
    """

    results: ResultsTable
    predicted_ids: tuple[int, ...]
    resumed: int
    new: int
    failures: tuple[ImageFailure, ...]
    size_mismatches: tuple[int, ...]
    results_path: Path


def predict_dataset(
    detector: Detector | None,
    images: Sequence[DatasetImage],
    ensemble: PromptEnsemble | None,
    output_dir: str | os.PathLike,
    *,
    settings: Mapping[str, Any],
    top_k: int = 300,
    overwrite: bool = False,
    progress: bool = False,
    on_result: Callable[[ImagePrediction | ImageFailure], None] | None = None,
) -> DatasetRun:
    """Predicts a dataset into ``output_dir`` with resume, then writes ``detections.json``.

    Args:
        detector: see :func:`predict_images`; may be None when every image is in the log already
            (see :func:`pending_images`).
        images: the images to predict, in order (from :func:`find_images`).
        ensemble: from :func:`embed_prompts`; None under the same condition.
        output_dir: gets run.json, predictions.jsonl and detections.json.
        settings: from :func:`run_settings`; must match a log being resumed.
        top_k: pairs per image.
        overwrite: discard an existing log instead of resuming it.
        progress: show a tqdm bar (images/s, ETA) on stderr.
        on_result: called after each image's result is recorded (for progress or tests).

    Returns:
        A :class:`DatasetRun`.

    Raises:
        SettingsMismatchError, EvalDataError: see :func:`prepare_output`.
    """
    out = Path(output_dir)
    done = prepare_output(out, settings, overwrite=overwrite)
    todo = [im for im in images if im.image_id not in done]
    if todo and (detector is None or ensemble is None):
        raise ValueError(f"{len(todo)} image(s) to predict, but no detector or ensemble given")
    failures, mismatches, new = [], [], 0
    expected = {im.image_id: (im.width, im.height) for im in images}
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="predict", dynamic_ncols=True)
    try:
        with open(out / LOG_FILE, "a", encoding="utf-8") as log:
            unsynced, batch_size = 0, detector.batch_size if todo else 1
            results = predict_images(detector, todo, ensemble, top_k=top_k) if todo else ()
            for result in results:
                if isinstance(result, ImageFailure):
                    failures.append(result)
                else:
                    log.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
                    unsynced += 1
                    new += 1
                    want = expected[result.image_id]
                    if None not in want and want != (result.width, result.height):
                        mismatches.append(result.image_id)
                    if unsynced >= batch_size:
                        _sync(log)
                        unsynced = 0
                if bar is not None:
                    bar.update(1)
                if on_result is not None:
                    on_result(result)
            _sync(log)
    finally:
        if bar is not None:
            bar.close()
    table, predicted = load_log_results(out / LOG_FILE, [im.image_id for im in images])
    path = write_results(out / RESULTS_FILE, table)
    return DatasetRun(
        results=table,
        predicted_ids=tuple(predicted),
        resumed=len(images) - len(todo),
        new=new,
        failures=tuple(failures),
        size_mismatches=tuple(mismatches),
        results_path=path,
    )


def pending_images(
    output_dir: str | os.PathLike,
    images: Sequence[DatasetImage],
    settings: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> list[DatasetImage]:
    """The images :func:`predict_dataset` would still predict; changes no file.

    Raises:
        SettingsMismatchError: as :func:`prepare_output` would (unless ``overwrite``).
    """
    if overwrite or not check_resumable(output_dir, settings):
        return list(images)
    done = logged_image_ids(Path(output_dir) / LOG_FILE)
    return [im for im in images if im.image_id not in done]


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def load_log_results(
    log_path: str | os.PathLike, image_ids: Sequence[int]
) -> tuple[ResultsTable, list[int]]:
    """Assembles the detections of ``image_ids`` (in that order) from a predictions log.

    Returns:
        (table, ids): the detections, and the requested ids that the log holds (the last record
        of an image wins).
    """
    wanted = set(int(i) for i in image_ids)
    latest: dict[int, ImagePrediction] = {}
    for p in read_log(log_path):
        if p.image_id in wanted:
            latest[p.image_id] = p
    present = [int(i) for i in image_ids if int(i) in latest]
    parts = [latest[i] for i in present]
    if not parts:
        return ResultsTable.empty(), present
    return (
        ResultsTable(
            image_ids=np.concatenate(
                [np.full(len(p.scores), p.image_id, np.int64) for p in parts]
            ),
            category_ids=np.concatenate([p.category_ids for p in parts]).astype(np.int64),
            boxes=np.concatenate([p.boxes for p in parts]).astype(np.float64).reshape(-1, 4),
            scores=np.concatenate([p.scores for p in parts]).astype(np.float64),
        ),
        present,
    )
