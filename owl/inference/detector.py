"""`Detector`: text- and image-conditioned detection over many images, with embedding caches.

Cost model (spec §9): the image encoder dominates, the class head is cheap. So the Detector
  * encodes each image once and keeps, per image, only what scoring needs (boxes, class
    embeddings, the class head's per-patch shift and scale, objectness) in an LRU cache keyed by
    the image's content; N query sets on one image cost one image encoding;
  * embeds each query text once (LRU cache keyed by the text);
  * pads query counts and image batches to buckets (powers of two), so jitted functions compile
    once per bucket rather than once per call.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from owl.export.auto import open_backend
from owl.inference import image_query
from owl.inference.calibration import Calibration, load_calibration
from owl.inference.detections import Detections
from owl.inference.postprocess import PostprocessOptions, detections_from_scores
from owl.inference.queries import EmbeddingQuery, ImageQuery, Query, TextQuery, as_queries
from owl.ops.image import (
    DEFAULT_MAX_PIXELS,
    ImageInput,
    ImageLoadError,
    ImageMeta,
    boxes_to_pixels,
    pixels_to_normalized,
    preprocess,
)
from owl.text.tokenizer import get_tokenizer

if TYPE_CHECKING:
    from owl.models.model import OwlModel

MIN_QUERY_BUCKET = 8
# The backend seam: what encodes pixels and token ids. "jax" is an `OwlModel`; the others an
# export folder's `owl.export.backend.ExportedModel`, with the same `config`,
# `embed_image(pixels, features=False)` and `embed_text(ids)`. "auto" picks one
# (`owl.export.auto`): ONNX Runtime where the [export] extra is installed, else JAX. JAX is
# imported only by the JAX backend, so a process on a cached ONNX export starts without it.
BACKENDS = ("auto", "jax", "onnx", "stablehlo")


def bucket(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum): the padded size that keeps shapes static."""
    n = max(n, minimum, 1)
    return 1 << (n - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class ImageEncoding:
    """What the Detector keeps per encoded image (all numpy, one image).

    Attributes:
      meta: original size and scale, to map boxes back to pixels.
      pred_boxes: [P, 4] cxcywh normalised to the padded square.
      class_embeddings: [P, E] unnormalised (image-query selection needs them raw).
      logit_shift, logit_scale: [P] the class head's per-patch terms.
      objectness_logits: [P] for OWLv2, else None.
    """

    meta: ImageMeta
    pred_boxes: np.ndarray
    class_embeddings: np.ndarray
    logit_shift: np.ndarray
    logit_scale: np.ndarray
    objectness_logits: np.ndarray | None


@dataclasses.dataclass(frozen=True, eq=False)
class QuerySet:
    """Queries resolved to embeddings, ready to score any number of images.

    Attributes:
      labels: [Q] names; embeddings: [Q, E] unnormalised; thresholds: [Q] (None = global).
      has_image_queries: whether any query came from an exemplar (turns NMS on by default).
      notes: messages for the user (e.g. merged duplicates).
    """

    labels: tuple[str, ...]
    embeddings: np.ndarray
    thresholds: tuple[float | None, ...]
    has_image_queries: bool
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class DetectionResult:
    """Outcome for one input image: detections, or the error that stopped it."""

    source: str
    detections: Detections | None
    error: str | None = None


class _LRU(collections.OrderedDict):
    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity

    def get_item(self, key: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return None

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)


class Detector:
    """Open-vocabulary detector over an `OwlModel`.

    Args:
      model: an `OwlModel` or anything `owl.load` accepts (registry name or path).
      batch_size: images encoded per forward pass (each batch padded to the next power of two).
      image_cache_size: encoded images kept (LRU).
      text_cache_size: text embeddings kept (LRU).
      max_pixels: decompression-bomb limit for image files (None: no limit).
      resize_method: "official" (pad then antialiased resize, the notebooks' way) or "tf" (the
        scenic evaluator's resize-then-pad).
      backend: "auto" (default: ONNX Runtime when owl[export] is installed and `model` is a
        file or registry name, exported into the cache on first use; else JAX), "jax" (owl's
        model), "onnx" (an `owl export` folder, or any model exported on the fly) or
        "stablehlo" (an `owl export --format stablehlo` folder). Everything else
        (preprocessing, caches, scoring, post-processing) is the same. `self.backend` says
        which was chosen and why (`owl.export.auto.BackendChoice`).
      precision: "f32", "bf16" (JAX, bfloat16 image tower) or "int8" (ONNX Runtime, int8
        image encoder); applies when `model` is loaded here.
      progress: show download progress and a note when a first-use export starts.

    Example:
      det = Detector("owlvit-b32")
      [result] = det.detect("street.jpg", ["red car", TextQuery("bicycle", threshold=0.2)])
    """

    def __init__(
        self,
        model: OwlModel | str | os.PathLike,
        *,
        batch_size: int = 4,
        image_cache_size: int = 64,
        text_cache_size: int = 4096,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        resize_method: str = "official",
        backend: str = "auto",
        precision: str = "f32",
        progress: bool = False,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model, self.backend = open_backend(model, backend, precision, progress=progress)
        self.model = model
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.resize_method = resize_method
        self._images = _LRU(image_cache_size)
        self._texts = _LRU(text_cache_size)
        self.image_encoder_calls = 0  # forward passes of the image tower (for tests and stats)
        self.text_encoder_calls = 0

    # -- images --------------------------------------------------------------------------------

    def _cache_key(self, image: ImageInput) -> tuple:
        h = hashlib.sha256()
        if isinstance(image, Image.Image):
            image = np.asarray(image)
        if isinstance(image, np.ndarray):
            h.update(str((image.shape, image.dtype)).encode())
            h.update(np.ascontiguousarray(image).tobytes())
        else:
            try:
                with open(image, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except OSError:
                h.update(os.fsencode(os.path.abspath(image)))  # preprocess reports the error
        c = self.model.config
        return (h.hexdigest(), c.image_size, c.pad_value, self.resize_method)

    def encode_images(self, images: Sequence[ImageInput]) -> list[ImageEncoding | ImageLoadError]:
        """Encodes images (cached), batching the ones not in the cache.

        Returns one entry per input: its `ImageEncoding`, or the `ImageLoadError` that stopped it.
        """
        return self._encode_prepared(images, self._prepare(images))

    def _prepare(self, images: Sequence[ImageInput]) -> list[tuple]:
        """The host side of encoding: cache lookups, decoding and preprocessing (no model call).

        `detect_each` runs this on a background thread for the next batch while the model runs
        on the current one. Each entry is ("hit", encoding), ("error", ImageLoadError),
        ("repeat", key) for content already pending in this call, or ("pixels", key, pixels,
        meta).
        """
        prepared: list[tuple] = []
        pending_keys: set[tuple] = set()
        c = self.model.config
        for image in images:
            key = self._cache_key(image)
            hit = self._images.get_item(key)
            if hit is not None:
                prepared.append(("hit", hit))
            elif key in pending_keys:
                prepared.append(("repeat", key))
            else:
                try:
                    pixels, meta = preprocess(
                        image, image_size=c.image_size, pad_value=c.pad_value,
                        method=self.resize_method, max_pixels=self.max_pixels,
                    )  # fmt: skip
                except ImageLoadError as e:
                    prepared.append(("error", e))
                    continue
                prepared.append(("pixels", key, pixels, meta))
                pending_keys.add(key)
        return prepared

    def _encode_prepared(
        self, images: Sequence[ImageInput], prepared: list[tuple]
    ) -> list[ImageEncoding | ImageLoadError]:
        """The model side of encoding: runs the image tower on what `_prepare` left to do."""
        results: list[Any] = [None] * len(images)
        pending = [(i, entry) for i, entry in enumerate(prepared) if entry[0] == "pixels"]
        encoded: dict[tuple, ImageEncoding] = {}
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            batch = self._encode_batch([e[2] for _, e in chunk], [e[3] for _, e in chunk])
            for (i, entry), enc in zip(chunk, batch, strict=True):
                self._images.put(entry[1], enc)
                encoded[entry[1]] = enc
                results[i] = enc
        for i, (image, entry) in enumerate(zip(images, prepared, strict=True)):
            if entry[0] == "hit":
                results[i] = _with_path(entry[1], _path_of(image))
            elif entry[0] == "repeat":
                results[i] = _with_path(encoded[entry[1]], _path_of(image))
            elif entry[0] == "error":
                results[i] = entry[1]
        return results

    def _encode_batch(
        self, pixels: list[np.ndarray], metas: list[ImageMeta]
    ) -> list[ImageEncoding]:
        n = len(pixels)
        padded = bucket(n) if self.backend.name == "jax" else n  # XLA compiles per shape
        batch = np.zeros((padded, *pixels[0].shape), np.float32)
        batch[:n] = np.stack(pixels)
        out = {k: np.asarray(v) for k, v in self.model.embed_image(batch, features=False).items()}
        self.image_encoder_calls += 1
        objectness = out.get("objectness_logits")
        return [
            ImageEncoding(
                meta=metas[j],
                pred_boxes=out["pred_boxes"][j],
                class_embeddings=out["class_embeddings"][j],
                logit_shift=out["logit_shift"][j],
                logit_scale=out["logit_scale"][j],
                objectness_logits=None if objectness is None else objectness[j],
            )
            for j in range(n)
        ]

    def encode_image(self, image: ImageInput) -> ImageEncoding:
        """Encodes one image (cached); raises `ImageLoadError` for unreadable input."""
        [enc] = self.encode_images([image])
        if isinstance(enc, ImageLoadError):
            raise enc
        return enc

    # -- queries -------------------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str], *, truncate: bool | str = False) -> np.ndarray:
        """Unnormalised text embeddings [N, E]; each distinct text is encoded once (cached).

        ``truncate`` is the tokenizer's: False, True or "official" (`ClipTokenizer.tokenize`).
        """
        # Look up every text before inserting new ones: a small cache may evict while inserting.
        found = {t: self._texts.get_item((t, truncate)) for t in dict.fromkeys(texts)}
        missing = [t for t, e in found.items() if e is None]
        if missing:
            ids = get_tokenizer().tokenize(missing, truncate=truncate)
            # Drop the all-padding tail (bucketed to 8 or 16 tokens): the text tower is causal and
            # pools at the end token, so the embedding is the same at about half the cost.
            used = int(np.max(np.nonzero(ids.any(axis=0))[0])) + 1
            ids = ids[:, : min(ids.shape[1], bucket(used, MIN_QUERY_BUCKET))]
            padded = np.zeros((bucket(len(ids), MIN_QUERY_BUCKET), ids.shape[1]), np.int32)
            padded[: len(ids)] = ids
            emb = np.asarray(self.model.embed_text(padded))[: len(ids)]
            self.text_encoder_calls += 1
            for t, e in zip(missing, emb, strict=False):
                self._texts.put((t, truncate), e)
                found[t] = e
        dim = self.model.config.embed_dim
        return np.stack([found[t] for t in texts]) if texts else np.zeros((0, dim), np.float32)

    def embed_image_query(self, query: ImageQuery) -> np.ndarray:
        """The query embedding [E] of an exemplar query: one selected token per exemplar, averaged.

        Raises:
          ValueError: a box outside its image or with zero area.
          ImageLoadError: an unreadable exemplar image.
        """
        method = image_query.resolve_method(query.method, self.model.config.objectness)
        picked = []
        for image, box in query.exemplars:
            enc = self.encode_image(image)
            if box is not None:
                box_norm = _check_box(box, enc.meta)
            elif method == "iou":  # "the whole image" is the image, not the padded square
                box_norm = pixels_to_normalized(
                    np.array([0, 0, enc.meta.width, enc.meta.height]), enc.meta
                )
            else:
                box_norm = None  # objectness: the most object-like token of the whole input
            if method == "objectness":
                index = image_query.select_by_objectness(
                    box_norm, enc.pred_boxes, enc.objectness_logits
                )
            else:
                index = image_query.select_by_iou(box_norm, enc.pred_boxes, enc.class_embeddings)
            picked.append(enc.class_embeddings[index])
        return np.mean(np.stack(picked), axis=0)

    def prepare_queries(
        self, queries: Query | Sequence[Query], *, truncate: bool = False
    ) -> QuerySet:
        """Resolves text, image and embedding queries to one `QuerySet`; merges duplicates."""
        items = as_queries(queries)
        if not items:
            raise ValueError("no queries given; pass at least one text, image or embedding query")
        labels, thresholds, embeddings, notes = [], [], [], []
        seen: dict[tuple, int] = {}
        texts = []
        for n, q in enumerate(items):
            if isinstance(q, TextQuery):
                if not q.text.strip():
                    raise ValueError(f"query {n + 1} is empty; give some text such as 'a red car'")
                key = ("text", q.text.strip().lower(), q.threshold)
                label = q.name
            elif isinstance(q, ImageQuery):
                key = ("image", id(q))
                label = q.label or f"image query {n + 1}"
            else:
                key = ("embedding", id(q))
                label = q.label
            if key in seen:
                notes.append(
                    f"duplicate query {label!r} merged with the same query at query_index "
                    f"{seen[key]}"
                )
                continue
            seen[key] = len(labels)
            labels.append(label)
            thresholds.append(q.threshold)
            embeddings.append(q)
            if isinstance(q, TextQuery):
                texts.append(q.text)
        text_emb = (
            dict(zip(texts, self.embed_texts(texts, truncate=truncate), strict=False))
            if texts
            else {}
        )
        dim = self.model.config.embed_dim
        rows = []
        for q in embeddings:
            if isinstance(q, TextQuery):
                rows.append(text_emb[q.text])
            elif isinstance(q, ImageQuery):
                rows.append(self.embed_image_query(q))
            else:
                emb = np.asarray(q.embedding, np.float32)
                if emb.shape != (dim,):
                    raise ValueError(
                        f"query embedding {q.label!r} has shape {emb.shape}, "
                        f"this model needs ({dim},)"
                    )
                rows.append(emb)
        return QuerySet(
            labels=tuple(labels),
            embeddings=np.stack(rows).astype(np.float32),
            thresholds=tuple(thresholds),
            has_image_queries=any(
                isinstance(q, ImageQuery) or (isinstance(q, EmbeddingQuery) and q.kind == "image")
                for q in embeddings
            ),
            notes=tuple(notes),
        )

    # -- scoring -------------------------------------------------------------------------------

    @functools.cached_property
    def _score(self) -> Callable[..., Any]:
        import jax

        from owl.models.owl_vit import score_queries

        return jax.jit(score_queries)

    def score(self, encoding: ImageEncoding, queries: QuerySet) -> np.ndarray:
        """Logits [P, Q] of one encoded image against a query set (class head only)."""
        if self.backend.name != "jax":  # the export's own score graph: no JAX in this process
            return self.model.score_image(
                encoding.class_embeddings, encoding.logit_shift, encoding.logit_scale,
                queries.embeddings,
            )  # fmt: skip
        import jax.numpy as jnp

        from owl.models.owl_vit import normalize

        q = len(queries)
        padded = np.zeros((bucket(q, MIN_QUERY_BUCKET), queries.embeddings.shape[1]), np.float32)
        padded[:q] = queries.embeddings
        mask = np.arange(len(padded)) < q
        logits = self._score(
            normalize(jnp.asarray(encoding.class_embeddings)),
            encoding.logit_shift, encoding.logit_scale, padded, mask,
        )  # fmt: skip
        return np.asarray(logits)[:, :q]

    def detect_each(
        self,
        images: Iterable[ImageInput],
        queries: Query | Sequence[Query] | QuerySet,
        *,
        threshold: float | None = None,
        multi_label: bool = False,
        nms: bool | None = None,
        nms_iou: float | None = None,
        class_agnostic_nms: bool = False,
        max_detections: int | None = 100,
        calibration: Calibration | str | os.PathLike | None = None,
        on_result: Callable[[DetectionResult], None] | None = None,
    ) -> Iterator[DetectionResult]:
        """Detects in many images, yielding one `DetectionResult` per image in input order.

        A bad image yields a result with `error` set and the others go on. `nms=None` turns NMS on
        when the query set holds image queries (as the official image-query demo does) or a
        calibration is given.

        Calibration (`calibration`: a `Calibration` or the path of its JSON file, written by
        `owl calibrate`; docs/calibration.md): scores become calibrated probabilities that a box
        is a true match, so one threshold means the same for every query. Defaults then
        change: threshold 0.5 (else 0.1), NMS on at the calibration's IoU (else 0.3).
        """
        qs, options = self._queries_and_options(
            queries, threshold=threshold, multi_label=multi_label, nms=nms, nms_iou=nms_iou,
            class_agnostic_nms=class_agnostic_nms, max_detections=max_detections,
            calibration=calibration,
        )  # fmt: skip
        # Decode and preprocess the next batch on a background thread while the model runs on
        # this one (Pillow, numpy and XLA release the GIL), so a folder runs at the model's speed.
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="owl-prefetch") as pool:
            current = None
            for batch in _batches(images, self.batch_size):
                upcoming = (batch, pool.submit(self._prepare, batch))
                if current is not None:
                    yield from self._detect_batch(*current, qs, options, on_result)
                current = upcoming
            if current is not None:
                yield from self._detect_batch(*current, qs, options, on_result)

    def _detect_batch(self, images, prepared, qs, options, on_result) -> Iterator[DetectionResult]:
        encodings = self._encode_prepared(images, prepared.result())
        for image, enc in zip(images, encodings, strict=True):
            source = _path_of(image) or "<array>"
            if isinstance(enc, ImageLoadError):
                result = DetectionResult(source, None, str(enc))
            else:
                result = DetectionResult(source, self._detections(enc, qs, options))
            if on_result is not None:
                on_result(result)
            yield result

    def detect_encoded(
        self,
        encoding: ImageEncoding,
        queries: Query | Sequence[Query] | QuerySet,
        *,
        threshold: float | None = None,
        multi_label: bool = False,
        nms: bool | None = None,
        nms_iou: float | None = None,
        class_agnostic_nms: bool = False,
        max_detections: int | None = 100,
        calibration: Calibration | str | os.PathLike | None = None,
    ) -> Detections:
        """Detections on an image encoded before (`encode_images`): class head only, no encoder.

        Options are those of `detect_each`, and the result equals what `detect` returns for the
        same image (a server re-scores new queries or thresholds this way).
        """
        qs, options = self._queries_and_options(
            queries, threshold=threshold, multi_label=multi_label, nms=nms, nms_iou=nms_iou,
            class_agnostic_nms=class_agnostic_nms, max_detections=max_detections,
            calibration=calibration,
        )  # fmt: skip
        return self._detections(encoding, qs, options)

    def _queries_and_options(
        self,
        queries: Query | Sequence[Query] | QuerySet,
        *,
        nms: bool | None,
        threshold: float | None,
        nms_iou: float | None,
        calibration: Calibration | str | os.PathLike | None = None,
        **options: Any,
    ) -> tuple[QuerySet, PostprocessOptions]:
        """The prepared query set and post-processing options of one detect call.

        `nms=None` means on exactly when the set holds image queries (the official demo's rule)
        or scores are calibrated (the probabilities are fitted after NMS). `threshold=None` is
        0.1 raw, 0.5 calibrated; `nms_iou=None` 0.3, or the calibration's own NMS IoU.

        Raises:
          CalibrationError: `calibration` is a path to an unusable file.
        """
        cal = load_calibration(calibration)
        qs = queries if isinstance(queries, QuerySet) else self.prepare_queries(queries)
        if nms is None:
            nms = qs.has_image_queries or cal is not None
        if threshold is None:
            threshold = 0.1 if cal is None else 0.5
        if nms_iou is None:
            nms_iou = 0.3 if cal is None or cal.nms_iou is None else cal.nms_iou
        return qs, PostprocessOptions(
            nms=nms, threshold=threshold, nms_iou=nms_iou, calibration=cal, **options
        )

    def _contrast_set(self, calibration: Calibration) -> QuerySet | None:
        """The calibration's contrast vocabulary as a query set (prepared once, kept)."""
        if not calibration.contrast:
            return None
        cache = self.__dict__.setdefault("_contrast_sets", {})
        if calibration.contrast not in cache:
            cache[calibration.contrast] = self.prepare_queries(list(calibration.contrast))
        return cache[calibration.contrast]

    def _detections(
        self, enc: ImageEncoding, qs: QuerySet, options: PostprocessOptions
    ) -> Detections:
        extra = {}
        if enc.objectness_logits is not None:
            extra["objectness"] = 1 / (1 + np.exp(-enc.objectness_logits.astype(np.float64)))
        meta = enc.meta
        contrast = None
        if options.calibration is not None:
            cqs = self._contrast_set(options.calibration)
            contrast = None if cqs is None else self.score(enc, cqs)
        return detections_from_scores(
            self.score(enc, qs),
            boxes_to_pixels(enc.pred_boxes, meta),
            qs.labels,
            qs.thresholds,
            options,
            extra=extra,
            metadata={"path": meta.path, "width": meta.width, "height": meta.height},
            contrast_logits=contrast,
        )

    def detect(
        self,
        images: ImageInput | Sequence[ImageInput],
        queries: Query | Sequence[Query] | QuerySet,
        **options: Any,
    ) -> list[Detections]:
        """Detects in one image or a list; returns one `Detections` per image.

        Options are those of `detect_each`. Raises `ImageLoadError` on the first unreadable image
        (use `detect_each` to go on past bad images).
        """
        if isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
            images = [images]
        out = []
        for result in self.detect_each(images, queries, **options):
            if result.error is not None:
                raise ImageLoadError(result.error)
            out.append(result.detections)
        return out


def _batches(images: Iterable[ImageInput], size: int) -> Iterator[list[ImageInput]]:
    batch: list[ImageInput] = []
    for image in images:
        batch.append(image)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _path_of(image: ImageInput) -> str | None:
    return None if isinstance(image, (np.ndarray, Image.Image)) else os.fspath(image)


def _with_path(enc: ImageEncoding, path: str | None) -> ImageEncoding:
    """A cached encoding reused for another input with the same content, with that input's path."""
    return dataclasses.replace(enc, meta=dataclasses.replace(enc.meta, path=path))


def _check_box(box: Sequence[float], meta: ImageMeta) -> np.ndarray:
    """Validates a pixel xyxy box on an image; returns it cxcywh-normalised to the padded square."""
    x0, y0, x1, y1 = (float(v) for v in box)
    name = meta.path or "the query image"
    if x1 < x0 or y1 < y0:
        flipped = " and ".join(s for s, bad in (("x1 < x0", x1 < x0), ("y1 < y0", y1 < y0)) if bad)
        raise ValueError(
            f"query box {tuple(box)} on {name} is inverted ({flipped}); give X0,Y0,X1,Y1 as "
            "left, top, right, bottom with x0 < x1 and y0 < y1"
        )
    if x1 == x0 or y1 == y0:
        raise ValueError(
            f"query box {tuple(box)} on {name} has zero area; give x0 < x1 and y0 < y1"
        )
    if x0 < 0 or y0 < 0 or x1 > meta.width or y1 > meta.height:
        raise ValueError(
            f"query box {tuple(box)} lies outside {name} ({meta.width}x{meta.height} px); "
            "give a box inside the image"
        )
    return pixels_to_normalized(np.array([x0, y0, x1, y1]), meta)


__all__ = ["DetectionResult", "Detector", "ImageEncoding", "QuerySet", "bucket"]
