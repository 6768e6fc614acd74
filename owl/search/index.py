"""`owl.Index`: a photo collection encoded once, searched by text, by example, with negatives.

The image side of OWL is query-independent: per box, the class embedding, the class head's
shift and scale, the box and the objectness depend on the image alone, and a query costs a dot
product. The index stores exactly what `Detector.encode_images` gives (`ImageEncoding`), for the
K best-ranked boxes of each image (`owl.search.ranking`), in an SQLite file
(`owl.search.store`); searching runs the class head (`owl.search.vectors`), so a box's score is
the score `owl detect` gives it.

    index = owl.Index("photos.owlindex", model="owlv2-b16-ensemble")
    report = index.add(["photos/a.jpg", "photos/b.jpg"])   # incremental: unchanged files skipped
    for dets in index.search(["forklift"], top=20):        # one Detections per image, best first
        print(dets.metadata["path"], dets.confidence[0])
    index.remove(["photos/b.jpg"])

Updates are incremental: a file whose size and mtime are unchanged is skipped, one whose content
hash is unchanged only gets its new mtime, one whose content is already indexed under another
path is copied, the rest are encoded. Every batch is one transaction, so a process killed at
any moment loses only the batch in flight and the next run resumes. The index records the
model (name and weights SHA-256) and input settings; opening it with another model raises
`IndexMismatchError`. Shards (`num_shards`, `shard_index`) split the files by a hash of their
path, so any number of processes can index one collection into the same file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from owl.checkpoints.tree import params_sha256
from owl.inference.calibration import Calibration
from owl.inference.detections import Detections
from owl.inference.detector import Detector, QuerySet
from owl.inference.postprocess import PostprocessOptions, detections_from_scores
from owl.inference.queries import Query
from owl.models.model import OwlModel
from owl.models.owl_vit import QUERY_MASK_VALUE, normalize
from owl.ops.image import DEFAULT_MAX_PIXELS, ImageLoadError, ImageMeta, boxes_to_pixels
from owl.ops.scores import sigmoid
from owl.search import store
from owl.search.negatives import suppress_negatives
from owl.search.ranking import rank_scores, resolve_rank, top_boxes
from owl.search.vectors import EXACT_BELOW, REFINE, AnnIndex, pad_boxes, padded_box_logits

DEFAULT_BOXES_PER_IMAGE = 16  # chosen by benchmarks/search_bench.py (docs/search.md)
COMMIT_EVERY = 16  # images per transaction


class IndexMismatchError(ValueError):
    """The index was built with another model or other input settings than those asked for."""


@dataclasses.dataclass
class IndexReport:
    """What one `Index.add` did.

    Attributes:
      encoded: images encoded (new or changed content).
      copied: new paths whose content was already indexed (copied, not encoded again).
      unchanged: images skipped (same size and mtime, or same content hash).
      skipped_other_shards: paths left to other shards.
      failures: one line per image that could not be indexed, naming the file and the problem.
    """

    encoded: int = 0
    copied: int = 0
    unchanged: int = 0
    skipped_other_shards: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)


def _file_of(path: str) -> str:
    """The file an indexed path lives in: a video frame "clip.mp4#t=4.000" is in clip.mp4."""
    from owl.video.index import split_frame_path

    parts = split_frame_path(path)
    return path if parts is None else parts[0]


def _weights_sha256(model: Any) -> str:
    """What the index records of the weights: an export's recorded hash, or the params' own."""
    recorded = getattr(model, "weights_sha256", None)
    if recorded:
        return recorded
    if not hasattr(model, "params"):
        raise ValueError(
            f"{model.source}: this export records no weights hash, which an index needs; write "
            "it again with `owl export`, or index with --backend jax"
        )
    return params_sha256(jax.device_get(model.params))


def shard_of(path: str, num_shards: int) -> int:
    """The shard an (absolute) path belongs to: a stable hash of the path, modulo the count."""
    digest = hashlib.sha1(path.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def check_model_name(path: Path, recorded: dict[str, Any], model: str) -> None:
    """Refuses a registry model other than the index's, before it is loaded or downloaded.

    The weights hash (checked after loading) is the real test, but a registry name that is not
    the index's would be downloaded first (hundreds of MiB) only to be refused. Two registry
    names are compared by name. Another registry name is refused unless it is cached, because
    an index built from a file may hold a converted copy of that name. Then loading is cheap and
    the hash decides. A local path is always loaded and compared by hash.

    Raises:
      IndexMismatchError: naming the index's model and how to search it.
    """
    from owl.checkpoints import registry

    if Path(model).exists():
        return
    try:
        entry = registry.get_entry(model)
    except registry.UnknownModelError:
        return  # the loader reports an unknown name in its own words
    built = str(recorded.get("model"))
    try:
        built_entry = None if Path(built).exists() else registry.get_entry(built)
    except registry.UnknownModelError:
        built_entry = None
    if built_entry is not None:
        if built_entry.name == entry.name:
            return
    elif registry.is_cached(entry.name):
        return
    raise IndexMismatchError(
        f"{path} was built with model {built!r} (weights sha256 "
        f"{str(recorded.get('weights_sha256'))[:12]}), not {model!r}; search it with "
        f"--model {built} (or without --model), or build a new index for this model "
        "(nothing was loaded or downloaded)"
    )


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Index:
    """A searchable index of a photo collection, stored in one SQLite file.

    Args:
      path: the index file (created if missing).
      model: an `OwlModel`, a `Detector`, or what `owl.load` accepts. None: the model the index
        was built with (a new index needs one).
      boxes_per_image: K, the boxes kept per image (new index only; default 16).
      rank: which boxes are kept: "auto" (objectness for OWLv2, else "bound"), "objectness",
        "bound", "vocabulary" (see `owl.search.ranking`).
      vocabulary: the prompts of rank "vocabulary".
      batch_size: images per forward pass.
      max_pixels: decompression-bomb limit (None: none).
      resize_method: "official" or "tf", as for the Detector (recorded; must match).
      exact_below: indexes with fewer boxes are searched exactly, larger ones through FAISS.
      read_only: open an existing index for searching only (`owl search`, `owl serve`): the
        file is never created or changed, and `add`/`remove`/`prune` raise.
      backend, progress: as for the Detector (`owl.export.auto`): what encodes the images.

    Raises:
      IndexMismatchError: the index was built with other weights or settings. A model named
        by registry name is compared by name before it is loaded or downloaded.
      store.IndexStoreError: the file is not an owl index.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: OwlModel | Detector | str | os.PathLike | None = None,
        *,
        boxes_per_image: int | None = None,
        rank: str = "auto",
        vocabulary: Sequence[str] = (),
        batch_size: int = 4,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        resize_method: str = "official",
        exact_below: int = EXACT_BELOW,
        read_only: bool = False,
        backend: str = "auto",
        progress: bool = False,
    ):
        self.path = Path(path)
        self.exact_below = exact_below
        self._lock = threading.RLock()
        self._db = store.connect(self.path, read_only=read_only)
        self._snapshot: store.Snapshot | None = None
        self._padded_boxes: tuple | None = None  # (snapshot, pad_boxes of all its boxes)
        self._ann: AnnIndex | None = None
        recorded = store.read_settings(self._db)
        if read_only and not recorded:
            self._db.close()
            raise store.IndexStoreError(f"{self.path} holds no index; build it with `owl index`")
        if model is None:
            if not recorded:
                self._db.close()
                raise ValueError(f"{self.path} is a new index; give the model to build it with")
            model = recorded["model"]
        elif recorded and isinstance(model, str | os.PathLike):
            try:
                check_model_name(self.path, recorded, os.fspath(model))
            except IndexMismatchError:
                self._db.close()
                raise
        if isinstance(model, Detector):
            self.detector = model
        else:
            self.detector = Detector(
                model, batch_size=batch_size, max_pixels=max_pixels, resize_method=resize_method,
                backend=backend, progress=progress,
            )  # fmt: skip
        m = self.detector.model
        wanted = {
            "schema": store.SCHEMA_VERSION,
            "model": model if isinstance(model, str) else (m.source or "<in memory>"),
            "weights_sha256": _weights_sha256(m),
            "family": m.config.family,
            "image_size": m.config.image_size,
            "pad_value": m.config.pad_value,
            "embed_dim": m.config.embed_dim,
            "resize_method": self.detector.resize_method,
        }
        if recorded:
            self._check(recorded, wanted, boxes_per_image, rank, vocabulary)
            self.settings = recorded
        else:
            k = DEFAULT_BOXES_PER_IMAGE if boxes_per_image is None else boxes_per_image
            if k < 1:
                raise ValueError(f"boxes_per_image must be >= 1, got {k}")
            resolved = resolve_rank(rank, m.config.objectness)
            wanted.update(boxes_per_image=k, rank=resolved, vocabulary=list(vocabulary))
            if resolved == "vocabulary" and not vocabulary:
                raise ValueError("rank 'vocabulary' needs vocabulary prompts")
            with store.write(self._db) as db:
                if not store.read_settings(db):  # another process may have created it meanwhile
                    store.write_settings(db, wanted)
            self.settings = store.read_settings(self._db)
            self._check(self.settings, wanted, None, rank, vocabulary)
        self._vocabulary = (
            self.detector.embed_texts(self.settings["vocabulary"])
            if self.settings["rank"] == "vocabulary"
            else None
        )

    def _check(self, recorded, wanted, boxes_per_image, rank, vocabulary) -> None:
        if recorded.get("schema") != store.SCHEMA_VERSION:
            raise store.IndexStoreError(
                f"{self.path} has index schema {recorded.get('schema')}, this owl reads "
                f"{store.SCHEMA_VERSION}; build the index again"
            )
        if recorded["weights_sha256"] != wanted["weights_sha256"]:
            raise IndexMismatchError(
                f"{self.path} was built with model {recorded['model']!r} (weights sha256 "
                f"{recorded['weights_sha256'][:12]}), not {wanted['model']!r} (weights sha256 "
                f"{wanted['weights_sha256'][:12]}); search it with --model {recorded['model']} "
                "(or without --model), or build a new index for this model"
            )
        for key in ("family", "image_size", "pad_value", "embed_dim", "resize_method"):
            if recorded[key] != wanted[key]:
                raise IndexMismatchError(
                    f"{self.path} was built with {key} {recorded[key]!r}, not {wanted[key]!r}; "
                    "use the same settings or build a new index"
                )
        if boxes_per_image is not None and boxes_per_image != recorded["boxes_per_image"]:
            raise IndexMismatchError(
                f"{self.path} keeps {recorded['boxes_per_image']} boxes per image, not "
                f"{boxes_per_image}; drop the option or build a new index"
            )
        if rank != "auto" and rank != recorded["rank"]:
            raise IndexMismatchError(
                f"{self.path} ranks boxes by {recorded['rank']!r}, not {rank!r}; drop the option "
                "or build a new index"
            )

    # -- contents ------------------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def paths(self) -> list[str]:
        """Every indexed image path (absolute), sorted."""
        with self._lock:
            return [p for (p,) in self._db.execute("SELECT path FROM images ORDER BY path")]

    def records(self) -> list[store.ImageRecord]:
        """Every indexed image with its stored boxes, by path (for inspection and tests)."""
        with self._lock:
            return list(store.records(self._db))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- updating ------------------------------------------------------------------------------

    def add(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        num_shards: int = 1,
        shard_index: int = 0,
        on_progress: Callable[[int], None] | None = None,
    ) -> IndexReport:
        """Adds new images and re-encodes changed ones (this shard's share of `paths`).

        A bad image is reported in `IndexReport.failures` and the others go on.
        """
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
        report = IndexReport()
        mine = []
        for p in dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths):
            if num_shards > 1 and shard_of(p, num_shards) != shard_index:
                report.skipped_other_shards += 1
            else:
                mine.append(p)
        with self._lock:
            states = store.file_states(self._db)
        for start in range(0, len(mine), COMMIT_EVERY):
            chunk = mine[start : start + COMMIT_EVERY]
            self._add_chunk(chunk, states, report)
            if on_progress is not None:
                on_progress(len(chunk))
        return report

    def _add_chunk(self, chunk: list[str], states: dict, report: IndexReport) -> None:
        touched, copies, pending = [], [], []
        for path in chunk:
            try:
                st = os.stat(path)
                old = states.get(path)
                if old is not None and old[1:] == (st.st_size, st.st_mtime_ns):
                    report.unchanged += 1
                    continue
                digest = file_sha256(path)
            except OSError as e:
                report.failures.append(f"{path}: cannot read the file ({e.strerror or e})")
                continue
            if old is not None and old[0] == digest:
                touched.append((path, st.st_size, st.st_mtime_ns))
                report.unchanged += 1
                continue
            with self._lock:
                same = store.record_by_sha256(self._db, digest)
            if same is not None:
                copies.append(
                    dataclasses.replace(same, path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)
                )
                continue
            pending.append((path, digest, st))
        new_records = []
        if pending:
            encodings = self.detector.encode_images([p for p, _, _ in pending])
            for (path, digest, st), enc in zip(pending, encodings, strict=True):
                if isinstance(enc, ImageLoadError):
                    report.failures.append(str(enc))
                    continue
                new_records.append(self._record(path, digest, st, enc))
        with self._lock, store.write(self._db) as db:
            for path, size, mtime in touched:
                store.touch_image(db, path, size, mtime)
            store.put_images(db, copies + new_records)
        for r in copies + new_records:
            states[r.path] = (r.sha256, r.size, r.mtime_ns)
        report.copied += len(copies)
        report.encoded += len(new_records)

    def _record(self, path: str, digest: str, st: os.stat_result, enc) -> store.ImageRecord:
        embeddings = np.asarray(normalize(np.asarray(enc.class_embeddings, np.float32)))
        scores = rank_scores(
            self.settings["rank"], embeddings, enc.logit_shift, enc.logit_scale,
            enc.objectness_logits, self._vocabulary,
        )  # fmt: skip
        keep = top_boxes(scores, self.settings["boxes_per_image"])
        objectness = (
            np.full(len(keep), np.nan, np.float32)
            if enc.objectness_logits is None
            else enc.objectness_logits[keep]
        )
        return store.ImageRecord(
            path=path, sha256=digest, size=st.st_size, mtime_ns=st.st_mtime_ns,
            width=enc.meta.width, height=enc.meta.height, scale=enc.meta.scale,
            boxes=enc.pred_boxes[keep], embeddings=embeddings[keep],
            logit_shift=enc.logit_shift[keep], logit_scale=enc.logit_scale[keep],
            objectness=objectness, box_index=keep.astype(np.int64),
        )  # fmt: skip

    def remove(self, paths: Sequence[str | os.PathLike]) -> int:
        """Removes images by path; returns how many were in the index."""
        absolute = [os.path.abspath(os.fspath(p)) for p in paths]
        with self._lock, store.write(self._db) as db:
            return store.delete_images(db, absolute)

    def prune(self, *, num_shards: int = 1, shard_index: int = 0) -> list[str]:
        """Removes this shard's images whose files no longer exist; returns their paths."""
        gone = [
            p
            for p in self.paths()
            if (num_shards == 1 or shard_of(p, num_shards) == shard_index)
            and not os.path.isfile(_file_of(p))
        ]
        if gone:
            self.remove(gone)
        return gone

    # -- searching -----------------------------------------------------------------------------

    def prepare_queries(
        self, queries: Query | Sequence[Query], *, truncate: bool = False
    ) -> QuerySet:
        """Text, exemplar and embedding queries -> embeddings, as the Detector resolves them."""
        return self.detector.prepare_queries(queries, truncate=truncate)

    def search(
        self,
        queries: Query | Sequence[Query] | QuerySet,
        *,
        top: int = 10,
        negatives: Query | Sequence[Query] | QuerySet = (),
        threshold: float | None = None,
        nms: bool | None = None,
        nms_iou: float | None = None,
        max_detections: int | None = 100,
        truncate: bool = False,
        calibration: Calibration | str | os.PathLike | None = None,
    ) -> list[Detections]:
        """The `top` images whose best box scores highest, each with its matching boxes.

        Args:
          queries: text ("forklift", `TextQuery` with its own threshold), `ImageQuery`
            (exemplar boxes) or `EmbeddingQuery`, or a prepared `QuerySet`.
          top: how many images to return.
          negatives: queries whose look-alikes are not wanted: a box closer to a negative than
            to a query is dropped for that query (`owl.search.negatives`).
          threshold: minimum score of queries without their own threshold.
          nms, nms_iou, max_detections: per image, as in `Detector.detect_each` (NMS defaults
            to on for exemplar queries).
          truncate: cut over-long text queries instead of raising.
          calibration: a `Calibration` or its file: scores are calibrated probabilities, as in
            `Detector.detect_each` (threshold then defaults to 0.5, NMS to on at the
            calibration's IoU; else 0.1 and 0.3). Images rank by their best probability.
        Returns:
          One `Detections` per image (metadata path, width, height), best image first; scores
          equal those `owl detect` gives the same boxes.
        """
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        qs = (
            queries
            if isinstance(queries, QuerySet)
            else self.prepare_queries(queries, truncate=truncate)
        )
        negative_embeddings = self._negatives(negatives, truncate)
        # The Detector's rule for the defaults (calibrated: threshold 0.5, NMS on at its IoU).
        _, options = self.detector._queries_and_options(
            qs, threshold=threshold, nms=nms, nms_iou=nms_iou, max_detections=max_detections,
            calibration=calibration,
        )  # fmt: skip
        threshold, cal = options.threshold, options.calibration
        snap = self._current_snapshot()
        if not snap.paths:
            return []
        rows = self._candidate_rows(snap, qs.embeddings, top)
        if len(rows) == len(snap.embeddings):  # every box: the snapshot padded once, no copies
            boxes = self._padded(snap)
        else:
            boxes = pad_boxes(snap.embeddings[rows], snap.logit_shift[rows], snap.logit_scale[rows])
        logits = padded_box_logits(boxes, qs.embeddings)
        negative_logits = padded_box_logits(boxes, negative_embeddings)
        logits = suppress_negatives(logits, negative_logits)
        contrast = None
        if cal is not None and cal.contrast:
            contrast = padded_box_logits(boxes, self.detector._contrast_set(cal).embeddings)
        # A masked pair (a negative is closer) scores exactly 0; even threshold 0 must drop it, and
        # any real logit above -745 scores more than the smallest float64, so floor there.
        thresholds = np.maximum(
            np.array([threshold if t is None else t for t in qs.thresholds], np.float64),
            np.finfo(np.float64).smallest_subnormal,
        )
        if cal is None:
            scores = sigmoid(logits)
        else:  # a pair masked by a negative stays at exactly 0
            scores = cal.probabilities(logits, qs.labels, contrast)
            scores[logits <= QUERY_MASK_VALUE] = 0.0
        passing = np.where(scores >= thresholds[None, :], scores, -1.0).max(axis=1)
        images = snap.image_of_box[rows]
        best = np.full(len(snap.paths), -1.0)
        np.maximum.at(best, images, passing)
        ranked = [i for i in np.argsort(-best, kind="stable")[:top] if best[i] >= 0]
        results = []
        for i in ranked:
            mine = np.flatnonzero(images == i)
            results.append(
                self._detections(
                    snap, int(i), rows[mine], logits[mine], qs, thresholds, options,
                    None if contrast is None else contrast[mine],
                )
            )  # fmt: skip
        return results

    def _negatives(self, negatives, truncate: bool) -> np.ndarray:
        if isinstance(negatives, QuerySet):
            return negatives.embeddings
        if isinstance(negatives, (str, bytes)) or not isinstance(negatives, Sequence):
            negatives = [negatives]
        if not negatives:
            return np.zeros((0, self.detector.model.config.embed_dim), np.float32)
        return self.prepare_queries(negatives, truncate=truncate).embeddings

    def _padded(self, snap: store.Snapshot):
        """The whole snapshot as `pad_boxes` gives it, kept until the index changes."""
        with self._lock:
            if self._padded_boxes is None or self._padded_boxes[0] is not snap:
                boxes = pad_boxes(snap.embeddings, snap.logit_shift, snap.logit_scale)
                self._padded_boxes = (snap, boxes)
            return self._padded_boxes[1]

    def _current_snapshot(self) -> store.Snapshot:
        with self._lock:
            gen = store.generation(self._db)
            if self._snapshot is None or self._snapshot.generation != gen:
                self._snapshot = store.snapshot(self._db, self.settings["embed_dim"])
                self._ann = None
            return self._snapshot

    def _candidate_rows(
        self, snap: store.Snapshot, query_embeddings: np.ndarray, top: int
    ) -> np.ndarray:
        """All box rows (exact search), or the rows of the images the ANN index proposes."""
        total = len(snap.embeddings)
        if total < self.exact_below:
            return np.arange(total)
        with self._lock:
            if self._ann is None:
                self._ann = AnnIndex.for_snapshot(snap, self.path)
            ann = self._ann
        k = self.settings["boxes_per_image"]
        boxes = ann.candidate_boxes(query_embeddings, REFINE * top * k)
        images = np.unique(snap.image_of_box[boxes])
        starts, ends = snap.offsets[images], snap.offsets[images + 1]
        return np.concatenate([np.arange(s, e) for s, e in zip(starts, ends, strict=True)])

    def _detections(
        self, snap: store.Snapshot, image: int, rows: np.ndarray, logits: np.ndarray,
        qs: QuerySet, thresholds: np.ndarray, options: PostprocessOptions,
        contrast: np.ndarray | None = None,
    ) -> Detections:  # fmt: skip
        meta = ImageMeta(
            width=int(snap.widths[image]), height=int(snap.heights[image]),
            image_size=self.settings["image_size"], scale=float(snap.scales[image]),
            path=snap.paths[image],
        )  # fmt: skip
        extra = {"patch": snap.box_index[rows]}
        if self.detector.model.config.objectness:
            extra["objectness"] = sigmoid(snap.objectness[rows])
        dets = detections_from_scores(
            logits, boxes_to_pixels(snap.boxes[rows], meta), qs.labels, thresholds.tolist(), options,
            extra=extra, metadata={"path": meta.path, "width": meta.width, "height": meta.height},
            contrast_logits=contrast,
        )  # fmt: skip
        data = {"box_index": dets.data["patch"]}  # the patch index, as in `owl detect` output
        data.update((k, v) for k, v in dets.data.items() if k not in ("box_index", "patch"))
        return dataclasses.replace(dets, data=data)
