"""`owl label` as library code: images -> Detector -> filters -> a dataset in COCO, YOLO or VOC.

:func:`label_images` runs the `owl.inference.detector.Detector` over the images with one query
set for all (class names, exemplars) or one per image (from its caption, `owl.label.captions`),
keeps each box's best query (OWL-ST's hard label), filters, and writes the data set with the
writers of `owl.data.formats`.

Filters, in order: the score threshold (global, or a query's own), **class-agnostic NMS** (on by
default: a data set wants one label per object, and open-vocabulary queries overlap — "car" and
"red car", or a caption's n-grams "red star" and "star", fire on the same object; per-class NMS
would keep both boxes and train a detector that two classes are there), boxes whose shorter side
is below ``min_size`` pixels, then the ``max_per_image`` best.

Resumable like `owl eval`: each image's detections are appended to
``DIR/.owl-label/predictions.jsonl`` as soon as it is done (flushed and fsynced per batch), with
the settings they depend on in ``run.json`` (`owl.eval.runlog.prepare_output`, which also cuts a
line torn by a kill). A re-run skips the logged images and then writes every output from the log
alone, atomically, so after a ``kill -9`` the result equals an uninterrupted run. Output-only
choices (formats, split, --copy, --html) are not in the settings: re-running with other ones
re-uses the log and only rewrites the outputs. Images that cannot be read are not logged (a
re-run tries them again) and are returned as failures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.data.coco import Example
from owl.data.formats import FORMATS, place_images, unique_names, write_dataset
from owl.eval.runlog import LOG_FILE, prepare_output
from owl.inference.calibration import Calibration
from owl.inference.detections import Detections
from owl.inference.detector import Detector, QuerySet
from owl.inference.queries import Query, TextQuery
from owl.label.captions import MAX_WORDS, queries_for

#: The resume log's folder inside the output folder.
LOG_DIR = ".owl-label"
HTML_FILE = "review.html"


@dataclasses.dataclass(frozen=True)
class LabelOptions:
    """Which detections become labels (see the module docstring for the order).

    Attributes:
        threshold: minimum score for queries without their own. 0.3 is OWL-ST's finding (a
            moderate threshold beat 0.5 and 0.7 for self-training).
        nms_iou: NMS drops a box whose IoU with a better one is above this.
        class_agnostic_nms: NMS across queries (one label per object); False: within each.
        max_per_image: keep at most this many boxes per image (0: no limit).
        min_size: drop boxes whose shorter side is below this many pixels.
        min_words, max_words, extra_stop_words: caption n-grams (`caption_queries`).
        calibration: score boxes as calibrated probabilities (docs/calibration.md); the
            threshold then applies to them. None: raw scores.
    """

    threshold: float = 0.3
    nms_iou: float = 0.5
    class_agnostic_nms: bool = True
    max_per_image: int = 100
    min_size: float = 0.0
    min_words: int = 1
    max_words: int = MAX_WORDS
    extra_stop_words: tuple[str, ...] = ()
    calibration: Calibration | None = None


@dataclasses.dataclass(frozen=True)
class LabelRun:
    """What :func:`label_images` did.

    Attributes:
        class_names: the data set's classes, in class order.
        num_images: images labelled (in the outputs).
        num_boxes: boxes written.
        counts: class name -> boxes.
        splits: split name ("" when unsplit) -> images.
        resumed: images found done in the log.
        new: images labelled in this call.
        failures: one "path: problem" line per image that could not be labelled.
        written: the files and folders written.
    """

    class_names: tuple[str, ...]
    num_images: int
    num_boxes: int
    counts: dict[str, int]
    splits: dict[str, int]
    resumed: int
    new: int
    failures: tuple[str, ...]
    written: tuple[Path, ...]


def _filtered(detections: Detections, options: LabelOptions) -> Detections:
    if options.min_size > 0 and len(detections):
        sides = np.minimum(
            detections.xyxy[:, 2] - detections.xyxy[:, 0],
            detections.xyxy[:, 3] - detections.xyxy[:, 1],
        )
        detections = detections[sides >= options.min_size]
    if options.max_per_image:
        detections = detections.top_k(options.max_per_image)
    return detections


def _detect_options(options: LabelOptions) -> dict[str, Any]:
    return dict(
        threshold=options.threshold, multi_label=False, nms=True, nms_iou=options.nms_iou,
        class_agnostic_nms=options.class_agnostic_nms, max_detections=None,
        calibration=options.calibration,
    )  # fmt: skip


def _query_digest(qs: QuerySet) -> dict[str, Any]:
    return {
        "labels": list(qs.labels),
        "thresholds": list(qs.thresholds),
        "embeddings_sha256": hashlib.sha256(qs.embeddings.tobytes()).hexdigest(),
    }


def _settings(
    model: str,
    paths: Sequence[str],
    options: LabelOptions,
    qs: QuerySet | None,
    entries: Sequence[Any] | None,
    resize: str,
) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(os.path.abspath(p) for p in paths).encode()).hexdigest()
    settings: dict[str, Any] = {
        "model": model,
        "resize": resize,
        "images_sha256": digest,
        "options": json.loads(json.dumps(dataclasses.asdict(options))),
    }
    if options.calibration is not None:  # its digest, not the whole file
        text = json.dumps(options.calibration.to_dict(), sort_keys=True)
        settings["options"]["calibration"] = hashlib.sha256(text.encode()).hexdigest()
    if qs is not None:
        settings["queries"] = _query_digest(qs)
    else:
        text = json.dumps(list(entries or []), sort_keys=True)
        settings["captions_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return settings


def _results_global(
    detector: Detector, paths: Sequence[str], qs: QuerySet, options: LabelOptions
) -> Iterator[tuple[int, Detections | None, str | None]]:
    for i, result in enumerate(detector.detect_each(paths, qs, **_detect_options(options))):
        if result.error is not None:
            yield i, None, result.error
        else:
            yield i, _filtered(result.detections, options), None


def _results_captions(
    detector: Detector,
    paths: Sequence[str],
    entries: Sequence[Any],
    options: LabelOptions,
    truncate: bool,
) -> Iterator[tuple[int, Detections | None, str | None]]:
    kw = _detect_options(options)
    for start in range(0, len(paths), detector.batch_size):
        batch = list(range(start, min(start + detector.batch_size, len(paths))))
        encodings = detector.encode_images([paths[i] for i in batch])
        for i, enc in zip(batch, encodings, strict=True):
            if isinstance(enc, Exception):
                yield i, None, str(enc)
                continue
            texts = queries_for(
                entries[i], min_words=options.min_words, max_words=options.max_words,
                extra_stop_words=options.extra_stop_words,
            )  # fmt: skip
            if not texts:
                meta = enc.meta
                empty = {"path": meta.path, "width": meta.width, "height": meta.height}
                yield i, Detections.empty(empty), None
                continue
            qs = detector.prepare_queries([TextQuery(t) for t in texts], truncate=truncate)
            yield i, _filtered(detector.detect_encoded(enc, qs, **kw), options), None


def _read_log(path: Path) -> dict[int, Detections]:
    latest: dict[int, Detections] = {}
    if not path.exists():
        return latest
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or not line.strip():
                continue
            record = json.loads(line)
            latest[int(record["image_id"])] = Detections.from_dict(record)
    return latest


def _split(n: int, split: Mapping[str, float], seed: int) -> dict[str, list[int]]:
    """Positions per split: "val" (etc.) get round(fraction * n) random images, "train" the rest."""
    if not split:
        return {"": list(range(n))}
    order = np.random.default_rng(seed).permutation(n).tolist()
    out, start = {}, 0
    for name, fraction in split.items():
        k = int(round(fraction * n))
        out[name] = sorted(order[start : start + k])
        start += k
    out = {"train": sorted(order[start:]), **out}
    return out


def label_images(
    detector: Detector,
    paths: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    model: str,
    queries: Sequence[Query] | QuerySet | None = None,
    captions: Sequence[str | list[str] | None] | None = None,
    options: LabelOptions = LabelOptions(),
    formats: Sequence[str] = ("coco",),
    split: Mapping[str, float] | None = None,
    seed: int = 0,
    copy: bool = False,
    html: bool = False,
    overwrite: bool = False,
    truncate: bool = False,
    on_result: Callable[[int, str | None], None] | None = None,
) -> LabelRun:
    """Labels ``paths`` into the data set folder ``out_dir``, resuming a killed run.

    Args:
        detector: the Detector (its batch size is the fsync interval of the log).
        paths: image files, in order (image ids are 1.. in this order).
        out_dir: the data set folder (see `owl.data.formats` for its layout).
        model: the model's id, recorded in the settings (a resumed log must match it).
        queries: one query set for every image (texts, exemplars, embeddings), or None with
            ``captions``.
        captions: per image, a caption (its n-grams are the queries) or a list of class names;
            None for an image marks it failed ("no caption").
        options: filters and caption n-gram settings.
        formats: some of coco, yolo, voc.
        split: e.g. {"val": 0.1}: that fraction of the labelled images, drawn with ``seed``, goes
            to images/val (the rest to images/train); None or {}: one unsplit set.
        seed: the split's seed.
        copy: copy images into ``out_dir/images`` instead of linking them.
        html: also write ``out_dir/review.html`` (the search gallery page).
        overwrite: discard a log made with other settings instead of refusing.
        truncate: cut over-long caption n-grams instead of failing.
        on_result: called with (position, error or None) as each image is done (progress).

    Returns:
        A :class:`LabelRun`.

    Raises:
        owl.eval.runlog.SettingsMismatchError: ``out_dir`` holds a log of other settings.
        ValueError: neither or both of queries and captions, or an unknown format.
    """
    if (queries is None) == (captions is None):
        raise ValueError("give either queries (one set for all images) or captions (per image)")
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format {bad[0]!r}; use {', '.join(FORMATS)}")
    out = Path(out_dir)
    qs = None
    if queries is not None:
        qs = queries if isinstance(queries, QuerySet) else detector.prepare_queries(queries)
    settings = _settings(model, paths, options, qs, captions, detector.resize_method)
    log_dir = out / LOG_DIR
    done = {i - 1 for i in prepare_output(log_dir, settings, overwrite=overwrite)}
    todo = [i for i in range(len(paths)) if i not in done]
    failures: dict[int, str] = {}
    if captions is not None:
        for i in todo:
            if captions[i] is None:
                failures[i] = f"{paths[i]}: no caption or class list for this image"
        todo = [i for i in todo if i not in failures]
    sub = [paths[i] for i in todo]
    if qs is not None:
        results = _results_global(detector, sub, qs, options)
    else:
        results = _results_captions(detector, sub, [captions[i] for i in todo], options, truncate)
    new = 0
    with open(log_dir / LOG_FILE, "a", encoding="utf-8") as log:
        unsynced = 0
        for k, detections, error in results:
            position = todo[k]
            if error is not None:
                failures[position] = error
            else:
                record = {"image_id": position + 1, **detections.to_dict()}
                log.write(json.dumps(record, separators=(",", ":")) + "\n")
                new += 1
                unsynced += 1
                if unsynced >= detector.batch_size:
                    log.flush()
                    os.fsync(log.fileno())
                    unsynced = 0
            if on_result is not None:
                on_result(position, error)
        log.flush()
        os.fsync(log.fileno())

    logged = _read_log(log_dir / LOG_FILE)
    positions = [i for i in range(len(paths)) if i + 1 in logged]
    if qs is not None:
        class_names = list(qs.labels)
    else:
        class_names = list(
            dict.fromkeys(str(label) for i in positions for label in logged[i + 1].labels)
        )
    examples = []
    for i in positions:
        d = logged[i + 1]
        examples.append(
            Example(
                image_path=os.path.abspath(paths[i]),
                image_id=i + 1,
                width=int(d.metadata["width"]),
                height=int(d.metadata["height"]),
                boxes=d.xyxy,
                labels=tuple(str(label) for label in d.labels),
                scores=d.confidence,
            )
        )
    placed: dict[str, list[Example]] = {}
    for name, members in _split(len(examples), split or {}, seed).items():
        chosen = [examples[k] for k in members]
        names = unique_names([e.image_path for e in chosen])
        placed[name] = place_images(chosen, out / "images" / name, names, copy=copy)
    written = write_dataset(out, placed, class_names, formats)
    if html:
        from owl.search.gallery import write_gallery

        pages = [logged[i + 1] for i in positions]
        write_gallery(out / HTML_FILE, pages, title=f"owl label: {out}")
        written.append(out / HTML_FILE)
    counts: dict[str, int] = dict.fromkeys(class_names, 0)
    for ex in examples:
        for label in ex.labels:
            counts[label] += 1
    return LabelRun(
        class_names=tuple(class_names),
        num_images=len(examples),
        num_boxes=sum(len(ex.labels) for ex in examples),
        counts=counts,
        splits={name: len(v) for name, v in placed.items()},
        resumed=len(done),
        new=new,
        failures=tuple(failures[i] for i in sorted(failures)),
        written=tuple(written),
    )
