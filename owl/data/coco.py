"""COCO- and LVIS-format detection datasets as training examples, with federated label sets.

`load_detection_dataset` reads an annotations JSON plus an image folder into a
`DetectionDataset`: a sequence of `Example` records (image path, xyxy pixel boxes, one
canonicalised class name per box, the image's annotated negative and not-exhaustive class names)
together with what training needs to build per-image query sets (spec §5.2):

* **Positives**: the class names of the image's boxes.
* **Annotated negatives**: LVIS ``neg_category_ids`` (classes verified absent).
* **Exhaustive datasets** (COCO, ShapesWorld: no image carries LVIS fields, or ``exhaustive=True``):
  every class absent from an image is a true negative, so `DetectionDataset.negatives_for` returns
  all classes the image does not contain.
* **Random negatives**: `NegativeSampler` draws further class names with probability proportional
  to how often they occur as box labels in the dataset, which is what the official 100k shuffle
  queue of seen labels approximates. A draw is deterministic given a numpy Generator.

`write_coco_instances` is the writer: examples -> a COCO instances JSON, with a ``score`` per box
for pseudo-labels (`Example.scores`, read back from that field; ``min_score`` drops the low ones).
`owl.data.formats` detects and dispatches between this, YOLO and Pascal VOC.

``remove_categories`` implements the zero-shot hygiene of spec §5.5: instances of those classes are
dropped (the objects stay in the pixels, unlabelled) and the names are never used as positives or
negatives.

Annotation problems (missing image files, empty or out-of-image boxes, unknown ids, crowd boxes,
malformed entries) never stop loading: they are counted in a `DatasetReport`, logged once as a
one-paragraph summary with a few examples, and only become fatal (`DatasetError`) when no usable
image remains.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from owl.data.annotations import detect_format, load_json
from owl.files import atomic_write
from owl.text.prompts import canonicalize

logger = logging.getLogger(__name__)

#: How many example descriptions a `DatasetReport` keeps per kind of problem.
MAX_EXAMPLES_PER_PROBLEM = 3

#: Problem kinds, in the order the summary lists them, with a short description each.
PROBLEMS: dict[str, str] = {
    "malformed_image": "image entries without an integer id or a file name",
    "duplicate_image_id": "image entries repeating an earlier id (ignored)",
    "missing_image_file": "images whose file is missing (dropped with their boxes)",
    "unreadable_image_size": "images without width/height whose header could not be read",
    "malformed_annotation": "annotations without a valid image id, category id or bbox",
    "unknown_image": "annotations of unknown or dropped images",
    "unknown_category": "annotations with a category id not in 'categories'",
    "unnamed_category": "categories whose name is empty after canonicalisation (dropped)",
    "crowd_box": "crowd boxes (iscrowd=1, dropped)",
    "degenerate_box": "boxes with width or height <= 0 (dropped)",
    "box_outside_image": "boxes entirely outside their image (dropped)",
    "box_clipped": "boxes partly outside their image (clipped to it)",
    "missing_label_file": "images without a label file (read as images with no objects)",
}


class DatasetError(ValueError):
    """The dataset cannot be used for training; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One training image and its federated labels.

    Attributes:
        image_path: the image file (absolute path).
        image_id: the id of the image in the annotations file.
        width: image width in pixels (from the annotations, else the file header).
        height: image height in pixels.
        boxes: float32 [N, 4] xyxy pixel boxes (pixel-edge coordinates), inside the image.
        labels: N canonicalised class names, one per box.
        negatives: canonicalised class names verified absent (LVIS ``neg_category_ids``).
        not_exhaustive: canonicalised names of classes whose boxes may be incomplete (LVIS
            ``not_exhaustive_category_ids``, or pseudo-labels dropped by ``min_score``): never
            negatives of this image, else unused by the loss (spec §5.2).
        scores: float32 [N] confidence of each box for pseudo-labels (a COCO ``score`` field,
            as `owl label` writes), or None for human labels.
    """

    image_path: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray
    labels: tuple[str, ...]
    negatives: tuple[str, ...] = ()
    not_exhaustive: tuple[str, ...] = ()
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        if len(boxes) != len(self.labels):
            raise ValueError(
                f"{self.image_path}: {len(boxes)} boxes but {len(self.labels)} labels; "
                "give one label per box."
            )
        if self.scores is not None:
            scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
            if len(scores) != len(boxes):
                raise ValueError(
                    f"{self.image_path}: {len(boxes)} boxes but {len(scores)} scores; "
                    "give one score per box or none."
                )
            object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "negatives", tuple(self.negatives))
        object.__setattr__(self, "not_exhaustive", tuple(self.not_exhaustive))


@dataclasses.dataclass
class DatasetReport:
    """What loading kept and which annotation problems it met.

    Attributes:
        source: the annotations file (or "<dict>").
        num_images: image entries in the annotations.
        num_annotations: annotation entries in the annotations.
        num_examples: usable images kept as examples.
        num_instances: boxes kept.
        num_removed_instances: boxes dropped because their class is in ``remove_categories``.
        num_low_score: pseudo-label boxes dropped because their score is below ``min_score``.
        removed_names: canonical class names removed by ``remove_categories``.
        unmatched_removals: ``remove_categories`` names that match no class of the dataset.
        counts: problem kind (see `PROBLEMS`) -> how many times it occurred.
        examples: problem kind -> up to `MAX_EXAMPLES_PER_PROBLEM` descriptions.
    """

    source: str
    num_images: int = 0
    num_annotations: int = 0
    num_examples: int = 0
    num_instances: int = 0
    num_removed_instances: int = 0
    num_low_score: int = 0
    removed_names: tuple[str, ...] = ()
    unmatched_removals: tuple[str, ...] = ()
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def add(self, problem: str, description: str) -> None:
        """Counts one occurrence of ``problem`` and keeps its description if there is room."""
        if problem not in PROBLEMS:
            raise KeyError(f"unknown problem kind {problem!r}")
        self.counts[problem] = self.counts.get(problem, 0) + 1
        kept = self.examples.setdefault(problem, [])
        if len(kept) < MAX_EXAMPLES_PER_PROBLEM:
            kept.append(description)

    @property
    def num_problems(self) -> int:
        """Total count of all problems."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """One paragraph: what was kept, then each problem with its count and a few examples."""
        text = (
            f"{self.source}: kept {self.num_examples} of {self.num_images} images and "
            f"{self.num_instances} of {self.num_annotations} boxes."
        )
        if self.removed_names:
            text += (
                f" Removed {len(self.removed_names)} categories by request "
                f"({self.num_removed_instances} boxes dropped)."
            )
        if self.num_low_score:
            text += f" Dropped {self.num_low_score} pseudo-label boxes below min_score."
        if self.unmatched_removals:
            shown = ", ".join(repr(n) for n in self.unmatched_removals[:5])
            text += f" Names to remove not in the dataset (ignored): {shown}."
        if not self.counts:
            return text + " No annotation problems."
        parts = []
        for kind, description in PROBLEMS.items():
            if self.counts.get(kind):
                listed = "; ".join(self.examples.get(kind, []))
                parts.append(f"{self.counts[kind]} {description} (e.g. {listed})")
        return text + " Problems: " + "; ".join(parts) + "."


class NegativeSampler:
    """Draws random negative class names with probability proportional to their frequency.

    The official pipeline keeps a 100k shuffle queue of label strings seen in the data and draws
    candidates from it, so a class is drawn about as often as it occurs as a box label (spec §5.2).
    Here the frequencies are counted exactly and names are drawn without replacement, weighted by
    those counts; classes that never label a box are never drawn.

    Args:
        counts: class name -> number of boxes with that label.
    """

    def __init__(self, counts: Mapping[str, int]) -> None:
        items = sorted((name, int(c)) for name, c in counts.items() if int(c) > 0)
        self.names: tuple[str, ...] = tuple(name for name, _ in items)
        self._counts = np.array([c for _, c in items], dtype=np.float64)
        self._index = {name: i for i, name in enumerate(self.names)}

    def __repr__(self) -> str:
        return f"NegativeSampler({len(self.names)} names, {int(self._counts.sum())} labels)"

    def probabilities(self, exclude: Iterable[str] = ()) -> dict[str, float]:
        """Probability of each name being the first draw when ``exclude`` is excluded."""
        weights = self._weights(exclude)
        total = weights.sum()
        if total == 0:
            return {}
        return {n: float(w / total) for n, w in zip(self.names, weights, strict=True) if w > 0}

    def _weights(self, exclude: Iterable[str]) -> np.ndarray:
        weights = self._counts.copy()
        for name in exclude:
            i = self._index.get(name)
            if i is not None:
                weights[i] = 0.0
        return weights

    def sample(self, rng: np.random.Generator, num: int, exclude: Iterable[str] = ()) -> list[str]:
        """Draws up to ``num`` distinct names not in ``exclude``, weighted by frequency.

        Args:
            rng: the numpy Generator (the result is a function of its state).
            num: how many names to draw; fewer come back when fewer are available.
            exclude: names never to return (the image's positives and existing negatives).

        Returns:
            The drawn names, in draw order.
        """
        if num <= 0 or not self.names:
            return []
        weights = self._weights(exclude)
        available = int(np.count_nonzero(weights))
        k = min(num, available)
        if k == 0:
            return []
        picked = rng.choice(len(self.names), size=k, replace=False, p=weights / weights.sum())
        return [self.names[i] for i in picked]


class DetectionDataset(Sequence[Example]):
    """A sequence of `Example` plus the dataset-wide facts that query sets need.

    Attributes:
        examples: the usable examples.
        class_names: canonical names of every class kept (after ``remove_categories``), sorted by
            category id.
        removed_names: canonical names removed by ``remove_categories``; never positives or
            negatives.
        exhaustive: whether every absent class counts as a negative in every image.
        label_counts: class name -> number of kept boxes with that label.
        report: the `DatasetReport` of loading.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        *,
        class_names: Sequence[str] | None = None,
        removed_names: Iterable[str] = (),
        exhaustive: bool = False,
        report: DatasetReport | None = None,
    ) -> None:
        self.examples: tuple[Example, ...] = tuple(examples)
        counts: Counter[str] = Counter()
        for ex in self.examples:
            counts.update(ex.labels)
        self.label_counts: dict[str, int] = dict(counts)
        self.removed_names: frozenset[str] = frozenset(removed_names)
        if class_names is None:
            names: dict[str, None] = {}
            for ex in self.examples:
                names.update(dict.fromkeys(ex.labels + ex.negatives + ex.not_exhaustive))
            class_names = list(names)
        self.class_names: tuple[str, ...] = tuple(
            dict.fromkeys(n for n in class_names if n not in self.removed_names)
        )
        self.exhaustive = bool(exhaustive)
        self.report = report
        self.negative_sampler = NegativeSampler(
            {n: c for n, c in self.label_counts.items() if n not in self.removed_names}
        )

    def __len__(self) -> int:
        return len(self.examples)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Example]: ...

    def __getitem__(self, index):
        return self.examples[index]

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __repr__(self) -> str:
        kind = "exhaustive" if self.exhaustive else "federated"
        return (
            f"DetectionDataset({len(self.examples)} examples, {len(self.class_names)} classes, "
            f"{kind}, fingerprint={self.fingerprint()})"
        )

    def fingerprint(self) -> str:
        """A short hash of the image paths, box counts and class names (stable across runs)."""
        if not hasattr(self, "_fingerprint"):
            h = hashlib.sha1()
            for ex in self.examples:
                h.update(f"{ex.image_path}|{len(ex.labels)}\n".encode())
            h.update("\n".join(self.class_names).encode())
            h.update(b"exhaustive" if self.exhaustive else b"federated")
            self._fingerprint = h.hexdigest()[:12]
        return self._fingerprint

    def negatives_for(self, example: Example) -> tuple[str, ...]:
        """The negatives an example carries before random ones are added.

        Annotated negatives, plus (for exhaustive datasets) every class the image does not contain;
        never a positive of the image, one of its not-exhaustive classes, nor a removed class.
        """
        positives = set(example.labels) | set(example.not_exhaustive)
        names = list(example.negatives)
        if self.exhaustive:
            names += self.class_names
        return tuple(
            n for n in dict.fromkeys(names) if n not in positives and n not in self.removed_names
        )


# --------------------------------------------------------------------------------------------------
# Loading


def load_detection_dataset(
    annotations: str | os.PathLike | Mapping[str, Any],
    image_dir: str | os.PathLike,
    *,
    exhaustive: bool | None = None,
    remove_categories: Iterable[str | int] = (),
    min_score: float = 0.0,
    log: bool = True,
) -> DetectionDataset:
    """Reads a COCO- or LVIS-format dataset into training examples.

    Args:
        annotations: the annotations JSON file, or its parsed content.
        image_dir: the folder image ``file_name`` entries are relative to. LVIS entries without a
            ``file_name`` use the last two parts of their ``coco_url`` ("train2017/x.jpg"), or just
            its file name if that is where the file is.
        exhaustive: whether absent classes are negatives in every image. None detects it: a
            dataset is federated (LVIS) when images carry ``neg_category_ids`` /
            ``not_exhaustive_category_ids`` or categories an LVIS ``frequency``, else exhaustive.
        remove_categories: category ids or names (raw or canonical) to remove: their boxes are
            dropped and their names never become queries. Names the dataset does not have are
            ignored (listed in the report); unknown ids raise.
        min_score: pseudo-labels (annotations with a ``score``, as `owl label` writes) below
            this are dropped; their class is then never a negative of that image (the object
            is still in the pixels). Annotations without a score count as 1.
        log: log the report's summary once (a warning when there were problems).

    Returns:
        The `DetectionDataset`; its ``report`` says what was kept and which problems occurred.

    Raises:
        DatasetError: the file is unreadable or not a detection dataset, an id in
            ``remove_categories`` is unknown, or no usable image remains.
    """
    if isinstance(annotations, Mapping):
        data, source = annotations, "<dict>"
    else:
        source = os.fspath(annotations)
        try:
            data = load_json(annotations)
        except ValueError as e:
            raise DatasetError(str(e)) from None
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found; pass the folder of the images.")
    _check_structure(data, source)
    report = DatasetReport(
        source=source, num_images=len(data["images"]), num_annotations=len(data["annotations"])
    )

    names_by_id = _category_names(data["categories"], source, report)
    removed_ids, unmatched = _resolve_removals(remove_categories, names_by_id, source)
    removed_names = {names_by_id[i] for i in removed_ids}
    report.removed_names = tuple(sorted(removed_names))
    report.unmatched_removals = tuple(unmatched)
    if exhaustive is None:
        exhaustive = detect_format(data) == "coco"

    images = _read_images(data["images"], image_dir, report)
    per_image: dict[int, _ImageBoxes] = {i: _ImageBoxes() for i in images}
    category_ids = {c.get("id") for c in data["categories"] if isinstance(c, Mapping)}
    for ann in data["annotations"]:
        _add_annotation(ann, images, per_image, names_by_id, category_ids, removed_names, report)
    scored = any(isinstance(a, Mapping) and "score" in a for a in data["annotations"])

    def names_of(ids: Any) -> tuple[str, ...]:
        if not isinstance(ids, list):
            return ()
        out = (names_by_id.get(i) for i in ids if isinstance(i, int) and not isinstance(i, bool))
        return tuple(dict.fromkeys(n for n in out if n is not None and n not in removed_names))

    examples = []
    for image_id, entry in images.items():
        kept = per_image[image_id]
        keep = [i for i, score in enumerate(kept.scores) if score >= min_score]
        low = tuple(dict.fromkeys(kept.labels[i] for i in range(len(kept.labels)) if i not in keep))
        report.num_low_score += len(kept.labels) - len(keep)
        examples.append(
            Example(
                image_path=entry["path"],
                image_id=image_id,
                width=entry["width"],
                height=entry["height"],
                boxes=np.asarray([kept.boxes[i] for i in keep], dtype=np.float32).reshape(-1, 4),
                labels=tuple(kept.labels[i] for i in keep),
                negatives=names_of(entry["raw"].get("neg_category_ids")),
                not_exhaustive=tuple(
                    dict.fromkeys(names_of(entry["raw"].get("not_exhaustive_category_ids")) + low)
                ),
                scores=np.asarray([kept.scores[i] for i in keep], np.float32) if scored else None,
            )
        )
    report.num_examples = len(examples)
    report.num_instances = sum(len(ex.labels) for ex in examples)
    if log:
        (logger.warning if report.counts else logger.info)("%s", report.summary())
    if not examples:
        raise DatasetError(
            f"{source}: no usable training image remains. {report.summary()} Check that the image "
            f"folder {image_dir} holds the files the annotations name."
        )
    class_names = [names_by_id[i] for i in sorted(names_by_id)]
    return DetectionDataset(
        examples,
        class_names=class_names,
        removed_names=removed_names,
        exhaustive=exhaustive,
        report=report,
    )


def _check_structure(data: Any, source: str) -> None:
    if not isinstance(data, Mapping):
        raise DatasetError(f"{source}: expected a JSON object with images/annotations/categories.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f"{source}: '{key}' is missing or not a list; is this a COCO/LVIS detection file?"
            )
    if not data["images"]:
        raise DatasetError(f"{source}: the dataset has no images.")
    if not data["categories"]:
        raise DatasetError(f"{source}: the dataset has no categories.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _category_names(categories: list, source: str, report: DatasetReport) -> dict[int, str]:
    """Category id -> canonical name; structural errors are fatal, empty names are dropped."""
    names: dict[int, str] = {}
    for i, cat in enumerate(categories):
        if not isinstance(cat, Mapping) or not _is_int(cat.get("id")):
            raise DatasetError(f"{source}: categories[{i}] must be an object with an integer 'id'.")
        if not isinstance(cat.get("name"), str):
            raise DatasetError(f"{source}: category {cat['id']} has no 'name' string.")
        if int(cat["id"]) in names:
            raise DatasetError(f"{source}: category id {cat['id']} is used twice.")
        name = canonicalize(cat["name"])
        if not name or name == "#":
            report.add("unnamed_category", f"category {cat['id']} {cat['name']!r}")
            continue
        names[int(cat["id"])] = name
    return names


def _resolve_removals(
    tokens: Iterable[str | int], names_by_id: Mapping[int, str], source: str
) -> tuple[set[int], list[str]]:
    """Category ids/names to remove -> (ids, names that match no class)."""
    if isinstance(tokens, str | int):
        tokens = [tokens]
    ids_by_name: dict[str, set[int]] = {}
    for cid, name in names_by_id.items():
        ids_by_name.setdefault(name, set()).add(cid)
    out: set[int] = set()
    unmatched: list[str] = []
    unknown_ids: list[int] = []
    for token in tokens:
        if _is_int(token):
            if int(token) in names_by_id:
                out.add(int(token))
            else:
                unknown_ids.append(int(token))
            continue
        text = str(token).strip()
        if text.isdigit() and int(text) in names_by_id:
            out.add(int(text))
            continue
        matched = ids_by_name.get(canonicalize(text))
        if matched:
            out |= matched
        else:
            unmatched.append(text)
    if unknown_ids:
        raise DatasetError(
            f"{source}: remove_categories names category ids the dataset does not have: "
            f"{sorted(unknown_ids)[:10]}; pass ids from its 'categories' or names."
        )
    return out, unmatched


def _image_file(entry: Mapping[str, Any], image_dir: Path) -> Path | None:
    name = entry.get("file_name")
    if isinstance(name, str) and name:
        return image_dir / name
    url = entry.get("coco_url") or entry.get("flickr_url")
    if isinstance(url, str) and url:
        parts = Path(urlparse(url).path).parts
        if len(parts) >= 2:
            nested = image_dir / parts[-2] / parts[-1]
            return nested if nested.exists() else image_dir / parts[-1]
    return None


def _read_images(
    entries: list, image_dir: Path, report: DatasetReport
) -> dict[int, dict[str, Any]]:
    """Usable image entries by id: path, width, height and the raw entry."""
    images: dict[int, dict[str, Any]] = {}
    seen: set[int] = set()
    for i, entry in enumerate(entries):
        path = _image_file(entry, image_dir) if isinstance(entry, Mapping) else None
        if not isinstance(entry, Mapping) or not _is_int(entry.get("id")) or path is None:
            report.add("malformed_image", f"images[{i}]")
            continue
        image_id = int(entry["id"])
        if image_id in seen:
            report.add("duplicate_image_id", f"image {image_id}")
            continue
        seen.add(image_id)
        if not path.is_file():
            report.add("missing_image_file", f"image {image_id}: {path}")
            continue
        width, height = entry.get("width"), entry.get("height")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            try:
                with Image.open(path) as pil:
                    width, height = pil.size
            except (OSError, ValueError) as e:
                report.add("unreadable_image_size", f"image {image_id}: {path} ({e})")
                continue
        images[image_id] = {
            "path": str(path.resolve()),
            "width": int(width),
            "height": int(height),
            "raw": entry,
        }
    return images


@dataclasses.dataclass
class _ImageBoxes:
    """The boxes of one image while annotations are read."""

    boxes: list[list[float]] = dataclasses.field(default_factory=list)
    labels: list[str] = dataclasses.field(default_factory=list)
    scores: list[float] = dataclasses.field(default_factory=list)


def _add_annotation(
    ann: Any,
    images: Mapping[int, Mapping[str, Any]],
    per_image: dict[int, _ImageBoxes],
    names_by_id: Mapping[int, str],
    category_ids: set,
    removed_names: set[str],
    report: DatasetReport,
) -> None:
    """Validates one annotation and appends its clipped box and label to its image."""
    if not isinstance(ann, Mapping):
        report.add("malformed_annotation", f"annotation {ann!r:.40}")
        return
    where = f"annotation {ann.get('id', '?')}"
    box = ann.get("bbox")
    if not (
        _is_int(ann.get("image_id"))
        and _is_int(ann.get("category_id"))
        and isinstance(box, list | tuple)
        and len(box) == 4
        and all(isinstance(v, int | float) and math.isfinite(v) for v in box)
    ):
        report.add("malformed_annotation", where)
        return
    image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
    if image_id not in images:
        report.add("unknown_image", f"{where} (image {image_id})")
        return
    if category_id not in names_by_id:
        if category_id not in category_ids:
            report.add("unknown_category", f"{where} (category {category_id})")
        return  # else: the category was dropped as unnamed, already reported
    name = names_by_id[category_id]
    if name in removed_names:
        report.num_removed_instances += 1
        return
    if ann.get("iscrowd"):
        report.add("crowd_box", where)
        return
    x, y, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        report.add("degenerate_box", f"{where} bbox {list(box)}")
        return
    width, height = images[image_id]["width"], images[image_id]["height"]
    x0, y0, x1, y1 = x, y, x + w, y + h
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 <= cx0 or cy1 <= cy0:
        report.add("box_outside_image", f"{where} bbox {list(box)} in {width}x{height}")
        return
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        report.add("box_clipped", f"{where} bbox {list(box)} in {width}x{height}")
    score = ann.get("score", 1.0)
    if not (isinstance(score, int | float) and math.isfinite(score)):
        report.add("malformed_annotation", f"{where} score {score!r}")
        return
    kept = per_image[image_id]
    kept.boxes.append([cx0, cy0, cx1, cy1])
    kept.labels.append(name)
    kept.scores.append(float(score))


# --------------------------------------------------------------------------------------------------
# Writing


def relative_image_name(example: Example, images_dir: str | os.PathLike) -> str:
    """The example's image path relative to ``images_dir``, with "/" separators.

    Raises:
        ValueError: the image is not inside ``images_dir``.
    """
    root = Path(os.path.abspath(images_dir))
    path = Path(os.path.abspath(example.image_path))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        raise ValueError(
            f"{example.image_path} is not inside the images folder {images_dir}; place the "
            "images there first (owl.data.formats.place_images)"
        ) from None


def write_coco_instances(
    path: str | os.PathLike,
    examples: Sequence[Example],
    class_names: Sequence[str],
    *,
    images_dir: str | os.PathLike,
) -> Path:
    """Writes examples as a COCO instances (dataset) JSON, atomically.

    Images get ``id`` (the example's ``image_id``), ``file_name`` (relative to ``images_dir``,
    the folder to pass to `load_detection_dataset`), ``width`` and ``height``; categories are
    ``class_names`` with ids 1..C in that order; annotations ``bbox`` [x, y, w, h] in pixels,
    ``area`` w * h, ``iscrowd`` 0 and, for examples that carry scores (pseudo-labels), ``score``.

    Raises:
        ValueError: an example's label is not in ``class_names``, or its image is outside
            ``images_dir``.
    """
    ids = {name: i + 1 for i, name in enumerate(class_names)}
    images, annotations = [], []
    for ex in examples:
        images.append(
            {
                "id": int(ex.image_id),
                "file_name": relative_image_name(ex, images_dir),
                "width": int(ex.width),
                "height": int(ex.height),
            }
        )
        for k, (box, label) in enumerate(zip(ex.boxes.tolist(), ex.labels, strict=True)):
            if label not in ids:
                raise ValueError(f"{ex.image_path}: label {label!r} is not in the class names")
            x0, y0, x1, y1 = box
            ann = {
                "id": len(annotations) + 1,
                "image_id": int(ex.image_id),
                "category_id": ids[label],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }
            if ex.scores is not None:
                ann["score"] = float(ex.scores[k])
            annotations.append(ann)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    with atomic_write(path) as f:
        json.dump(data, f)
        f.write("\n")
    return Path(path)
