"""Reading, validating and writing COCO/LVIS annotation and detection-results JSON.

This is the one place that reads and writes these formats: the training data (`owl.data.coco`),
evaluation (`owl.eval`) and the detection writers (`owl.inference.outputs`) all import it, and it
imports nothing of theirs.

Evaluation is only as trustworthy as its inputs, and the official evaluators fail on bad input with
bare ``KeyError``/``AssertionError`` tracebacks (or, worse, silently ignore detections of unknown
categories). This module turns every input problem into one :class:`EvalDataError` line that names
the file and the offending value, so the CLI can show it and exit with status 2 (usage).

It holds:

* :func:`load_json` — JSON with ``file:line:column`` errors.
* :func:`load_annotations` — a validated, normalised copy of a COCO- or LVIS-style dataset.
* :func:`detect_format` — ``"lvis"`` when the dataset carries federated fields, else ``"coco"``.
* :class:`ResultsTable` and :func:`load_results` — detections in the COCO results format
  (``image_id, category_id, bbox=[x, y, w, h], score``) held as columns, checked against the
  dataset's image and category ids.
* :func:`write_results` — the inverse, and the only writer of the COCO results format: a
  results JSON list, streamed row by row and written atomically.
* :class:`CategoryMap` — contiguous class index <-> real category id <-> name. Models predict a
  class *index* (position among the queries); COCO ids are non-contiguous (1..90 with gaps) and
  LVIS ids start at 1, so results must be written with ``CategoryMap.ids_for_indices``. Unlike the
  official evaluator (spec §3), index 0 is an ordinary class here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.files import atomic_write

#: How many offending ids an error message lists at most.
MAX_LISTED = 10

#: LVIS frequency groups in the order the official evaluator reports them (APr, APc, APf).
FREQUENCIES = ("r", "c", "f")

Source = str | os.PathLike | Mapping[str, Any]


class EvalDataError(ValueError):
    """Bad evaluation input: the message is one line naming the file and what is wrong."""


def load_json(path: str | os.PathLike) -> Any:
    """Parses a JSON file, reporting malformed JSON as ``file:line:column: message``.

    Args:
        path: the JSON file.

    Returns:
        The parsed JSON value.

    Raises:
        EvalDataError: the file is missing, unreadable, not UTF-8 or not valid JSON.
    """
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvalDataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise EvalDataError(
            f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}; fix the file or regenerate it"
        ) from None
    except UnicodeDecodeError as e:
        raise EvalDataError(
            f"{path}: not UTF-8 text (byte {e.start}); is this a JSON file?"
        ) from None
    except OSError as e:
        raise EvalDataError(f"{path}: cannot read: {e.strerror}") from None


def _listed(ids: Iterable[Any]) -> str:
    """Formats up to MAX_LISTED ids (sorted) plus a count of the rest."""
    ids = sorted(set(ids), key=lambda v: (str(type(v)), v))
    shown = ", ".join(str(i) for i in ids[:MAX_LISTED])
    more = len(ids) - MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _hashable(value: Any) -> Any:
    """An int as is, anything else as its repr (for error messages)."""
    return int(value) if _is_int(value) else repr(value)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def _check_box(box: Any, where: str) -> None:
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(_is_number(v) for v in box)):
        raise EvalDataError(f"{where}: 'bbox' must be [x, y, width, height] of finite numbers")
    if box[2] < 0 or box[3] < 0:
        raise EvalDataError(f"{where}: 'bbox' {list(box)} has a negative width or height")


def _unique_ids(items: list, kind: str, origin: str) -> list[int]:
    ids = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not _is_int(item.get("id")):
            raise EvalDataError(f"{origin}: {kind}[{i}] must be an object with an integer 'id'")
        ids.append(int(item["id"]))
    if len(set(ids)) != len(ids):
        seen, dup = set(), set()
        for v in ids:
            (dup if v in seen else seen).add(v)
        raise EvalDataError(f"{origin}: duplicate {kind} ids: {_listed(dup)}")
    return ids


class AnnotationSet(dict):
    """A validated, normalised dataset dict (what :func:`load_annotations` returns).

    It is a plain dict of the COCO/LVIS keys; being this type marks it as already validated, so
    passing it to :func:`load_annotations` again (e.g. via :func:`~owl.eval.metrics.evaluate`)
    costs nothing.

    Attributes:
        origin: the file it was read from (or ``"annotations"``), used in error messages.
    """

    origin: str = "annotations"


def load_annotations(source: Source) -> AnnotationSet:
    """Loads and validates a COCO- or LVIS-style annotation file.

    The returned dict is a fresh copy (the input is never modified) in which every annotation has
    an ``area`` (default ``width * height``) and an ``iscrowd`` (default 0), and, when the dataset
    is LVIS-style, every image has ``neg_category_ids`` and ``not_exhaustive_category_ids``
    (default empty). The defaults only fill fields whose absence would crash the official
    evaluators; present fields are kept as they are.

    Args:
        source: a path to the JSON file, or an already parsed dict.

    Returns:
        The normalised dataset (an :class:`AnnotationSet`, i.e. a dict) with keys ``images``,
        ``categories``, ``annotations`` and any other top-level keys of the input.

    Raises:
        EvalDataError: naming the file and the first problem found.
    """
    if isinstance(source, AnnotationSet):
        return source
    origin = str(source) if not isinstance(source, Mapping) else "annotations"
    data = load_json(source) if not isinstance(source, Mapping) else source
    if not isinstance(data, Mapping):
        raise EvalDataError(f"{origin}: expected a JSON object with 'images' and 'categories'")
    for key in ("images", "categories", "annotations"):
        if key in data and not isinstance(data[key], list):
            raise EvalDataError(f"{origin}: '{key}' must be a list")
    images = [dict(im) if isinstance(im, Mapping) else im for im in data.get("images", [])]
    categories = [dict(c) if isinstance(c, Mapping) else c for c in data.get("categories", [])]
    annotations = [dict(a) if isinstance(a, Mapping) else a for a in data.get("annotations", [])]
    if not images:
        raise EvalDataError(f"{origin}: the dataset has no images; nothing to evaluate")
    if not categories:
        raise EvalDataError(f"{origin}: the dataset has no categories; nothing to evaluate")

    image_ids = set(_unique_ids(images, "image", origin))
    category_ids = set(_unique_ids(categories, "category", origin))
    names: dict[str, int] = {}
    for cat in categories:
        name = cat.get("name")
        if not isinstance(name, str) or not name:
            raise EvalDataError(f"{origin}: category {cat['id']} has no 'name' string")
        if name in names:
            raise EvalDataError(
                f"{origin}: category name {name!r} is used by ids {names[name]} and {cat['id']};"
                " names must be unique"
            )
        names[name] = cat["id"]

    _unique_ids(annotations, "annotation", origin)
    bad_images, bad_categories = set(), set()
    for ann in annotations:
        where = f"{origin}: annotation {ann['id']}"
        if not _is_int(ann.get("image_id")) or ann["image_id"] not in image_ids:
            bad_images.add(_hashable(ann.get("image_id")))
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in category_ids:
            bad_categories.add(_hashable(ann.get("category_id")))
        _check_box(ann.get("bbox"), where)
        if "area" not in ann:
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        elif not _is_number(ann["area"]):
            raise EvalDataError(f"{where}: 'area' must be a finite number")
        ann.setdefault("iscrowd", 0)
    if bad_images:
        raise EvalDataError(
            f"{origin}: annotations refer to unknown image ids: {_listed(bad_images)}"
        )
    if bad_categories:
        raise EvalDataError(
            f"{origin}: annotations refer to unknown category ids: {_listed(bad_categories)}"
        )

    out = AnnotationSet(
        {k: v for k, v in data.items() if k not in ("images", "categories", "annotations")}
    )
    out.update(images=images, categories=categories, annotations=annotations)
    out.origin = origin
    if detect_format(out) == "lvis":
        for im in images:
            for key in ("neg_category_ids", "not_exhaustive_category_ids"):
                value = im.setdefault(key, [])
                if not isinstance(value, list) or not all(_is_int(v) for v in value):
                    raise EvalDataError(
                        f"{origin}: image {im['id']}: '{key}' must be a list of category ids"
                    )
    return out


def detect_format(annotations: Mapping[str, Any]) -> str:
    """Returns ``"lvis"`` when images carry federated label lists or categories a frequency.

    Args:
        annotations: a dataset dict (as returned by :func:`load_annotations`).

    Returns:
        ``"lvis"`` or ``"coco"``.
    """
    federated = ("neg_category_ids", "not_exhaustive_category_ids")
    if any(
        isinstance(im, Mapping) and any(k in im for k in federated) for im in annotations["images"]
    ):
        return "lvis"
    if any(isinstance(c, Mapping) and "frequency" in c for c in annotations["categories"]):
        return "lvis"
    return "coco"


def check_lvis_frequencies(annotations: AnnotationSet) -> None:
    """Checks that every category has an LVIS ``frequency`` of ``r``, ``c`` or ``f``.

    Raises:
        EvalDataError: naming up to ten categories without a valid frequency.
    """
    bad = [c["id"] for c in annotations["categories"] if c.get("frequency") not in FREQUENCIES]
    if bad:
        raise EvalDataError(
            f"{annotations.origin}: LVIS evaluation needs a 'frequency' of r, c or f on every "
            f"category; missing or invalid for ids {_listed(bad)} "
            "(use --format coco for a COCO-style set)"
        )


@dataclasses.dataclass(frozen=True)
class ResultsTable:
    """Detections in the COCO/LVIS results format, held as columns (row order is kept).

    Row order matters: the official evaluators break score ties by it.

    Attributes:
        image_ids: [N] int64 image ids.
        category_ids: [N] int64 real category ids.
        boxes: [N, 4] float64 boxes as (x, y, width, height) in pixels.
        scores: [N] float64 scores.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if not (len(self.category_ids) == len(self.scores) == n and self.boxes.shape == (n, 4)):
            raise ValueError(
                f"ResultsTable columns disagree: {n} image ids, {len(self.category_ids)} category "
                f"ids, boxes {self.boxes.shape}, {len(self.scores)} scores"
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def empty(cls) -> ResultsTable:
        """A table with no detections."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0))

    def to_rows(self) -> list[dict[str, Any]]:
        """The detections as COCO results rows with plain Python numbers."""
        return [
            {"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, c, b, s in zip(
                self.image_ids.tolist(),
                self.category_ids.tolist(),
                self.boxes.tolist(),
                self.scores.tolist(),
                strict=True,
            )
        ]


def _first_bad_row(rows: Sequence[Any], origin: str) -> EvalDataError:
    """Finds the first row that is not a well-formed detection and describes it."""
    for i, row in enumerate(rows):
        where = f"{origin}: detection {i}"
        if not isinstance(row, Mapping):
            return EvalDataError(f"{where} is not an object")
        for key in ("image_id", "category_id"):
            if not _is_int(row.get(key)):
                return EvalDataError(f"{where}: '{key}' must be an integer, got {row.get(key)!r}")
        if not _is_number(row.get("score")):
            return EvalDataError(
                f"{where}: 'score' must be a finite number, got {row.get('score')!r}"
            )
        try:
            _check_box(row.get("bbox"), where)
        except EvalDataError as e:
            return e
    return EvalDataError(f"{origin}: malformed detections")


def _rows_to_table(rows: Sequence[Any], origin: str) -> ResultsTable:
    if len(rows) == 0:
        return ResultsTable.empty()
    try:
        image_ids = np.asarray([r["image_id"] for r in rows])
        category_ids = np.asarray([r["category_id"] for r in rows])
        boxes = np.asarray([r["bbox"] for r in rows], dtype=np.float64)
        scores = np.asarray([r["score"] for r in rows])
    except (KeyError, TypeError, ValueError, IndexError):
        raise _first_bad_row(rows, origin) from None
    ok = (
        image_ids.dtype.kind in "iu"
        and category_ids.dtype.kind in "iu"
        and scores.dtype.kind in "iuf"
        and boxes.shape == (len(rows), 4)
        and np.isfinite(boxes).all()
        and np.isfinite(scores).all()
        and (boxes[:, 2:] >= 0).all()
    )
    if not ok:
        raise _first_bad_row(rows, origin)
    return ResultsTable(
        image_ids.astype(np.int64),
        category_ids.astype(np.int64),
        boxes,
        scores.astype(np.float64),
    )


def load_results(
    source: str | os.PathLike | Sequence[Mapping[str, Any]] | ResultsTable,
    annotations: AnnotationSet,
) -> ResultsTable:
    """Loads detections and checks them against the dataset.

    Args:
        source: a results JSON file (a list of ``{"image_id", "category_id", "bbox", "score"}``),
            the parsed list, or a :class:`ResultsTable`.
        annotations: the dataset (from :func:`load_annotations`) the detections belong to.

    Returns:
        The detections as a :class:`ResultsTable`, in their original order.

    Raises:
        EvalDataError: malformed rows, or image/category ids the dataset does not have (up to ten
            of them are named).
    """
    origin = "results"
    if isinstance(source, ResultsTable):
        table = source
    else:
        if isinstance(source, str | os.PathLike):
            origin = str(source)
            source = load_json(source)
        if not isinstance(source, list | tuple):
            raise EvalDataError(
                f"{origin}: expected a JSON list of detections "
                '[{"image_id", "category_id", "bbox", "score"}, ...]'
            )
        table = _rows_to_table(source, origin)
    known_images = np.asarray([im["id"] for im in annotations["images"]], dtype=np.int64)
    known_cats = np.asarray([c["id"] for c in annotations["categories"]], dtype=np.int64)
    unknown = np.unique(table.image_ids[~np.isin(table.image_ids, known_images)])
    if unknown.size:
        raise EvalDataError(
            f"{origin}: detections refer to image ids not in the annotations: "
            f"{_listed(unknown.tolist())}; are these the right annotations?"
        )
    unknown = np.unique(table.category_ids[~np.isin(table.category_ids, known_cats)])
    if unknown.size:
        raise EvalDataError(
            f"{origin}: detections refer to category ids not in the annotations: "
            f"{_listed(unknown.tolist())}; category ids must be the dataset's real ids"
        )
    return table


def _rows_from_mappings(rows: Iterable[Mapping[str, Any]]) -> ResultsTable:
    """Results rows (numpy or Python numbers) -> a table; other keys are dropped."""
    rows = list(rows)
    if not rows:
        return ResultsTable.empty()
    return ResultsTable(
        np.asarray([int(r["image_id"]) for r in rows], np.int64),
        np.asarray([int(r["category_id"]) for r in rows], np.int64),
        np.asarray([np.asarray(r["bbox"], np.float64) for r in rows]).reshape(-1, 4),
        np.asarray([float(r["score"]) for r in rows], np.float64),
    )


def write_results(
    path: str | os.PathLike,
    rows: ResultsTable | Iterable[Mapping[str, Any]],
    *,
    chunk: int = 65536,
) -> Path:
    """Writes detections as a COCO/LVIS results JSON list, streamed and atomically.

    One ``{"image_id":..,"category_id":..,"bbox":[x,y,w,h],"score":..}`` object per line.
    Numbers are written as Python's ``repr`` (what ``json`` writes), ``chunk`` rows at a time, so
    a file of millions of detections never exists as Python dicts in memory.

    Args:
        path: the output file (its folder is created if needed), or "-" for standard output.
        rows: a :class:`ResultsTable`, or rows with ``image_id``, ``category_id``, ``bbox``,
            ``score`` (numpy numbers are converted; other keys are not written).
        chunk: rows formatted per write.

    Returns:
        The path written.
    """
    table = rows if isinstance(rows, ResultsTable) else _rows_from_mappings(rows)
    to_stdout = os.fspath(path) == "-"
    with contextlib.nullcontext(sys.stdout) if to_stdout else atomic_write(Path(path)) as f:
        f.write("[")
        sep = ""
        for start in range(0, len(table), chunk):
            end = start + chunk
            lines = []
            for i, c, (x, y, w, h), s in zip(
                table.image_ids[start:end].tolist(),
                table.category_ids[start:end].tolist(),
                table.boxes[start:end].tolist(),
                table.scores[start:end].tolist(),
                strict=True,
            ):
                lines.append(
                    f'{sep}{{"image_id":{i},"category_id":{c},'
                    f'"bbox":[{x!r},{y!r},{w!r},{h!r}],"score":{s!r}}}'
                )
                sep = ",\n"
            f.write("".join(lines))
        f.write("]\n")
    return Path(path)


@dataclasses.dataclass(frozen=True)
class CategoryMap:
    """Contiguous class index <-> real category id <-> name, ordered by ascending id.

    Index ``k`` is the ``k``-th category by id (the TFDS/scenic label order); ``index + 1`` equals
    the id only for datasets whose ids are 1..C without gaps (LVIS), not for COCO.

    Attributes:
        ids: real category ids, ascending; position = class index.
        names: category names, same order.
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError("CategoryMap needs one name per id")
        if list(self.ids) != sorted(set(self.ids)):
            raise ValueError("CategoryMap ids must be unique and ascending")
        if len(set(self.names)) != len(self.names):
            raise ValueError("CategoryMap names must be unique")

    @classmethod
    def from_annotations(cls, annotations: Source) -> CategoryMap:
        """Builds the map from a dataset dict or file (validated with :func:`load_annotations`)."""
        annotations = load_annotations(annotations)
        cats = sorted(annotations["categories"], key=lambda c: c["id"])
        return cls(tuple(int(c["id"]) for c in cats), tuple(c["name"] for c in cats))

    def __len__(self) -> int:
        return len(self.ids)

    def ids_for_indices(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Class indices (e.g. query positions) -> real category ids.

        Raises:
            IndexError: an index outside [0, len(self)).
        """
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self.ids)):
            raise IndexError(f"class index out of range [0, {len(self.ids)}): {indices}")
        return np.asarray(self.ids, dtype=np.int64)[indices]

    def indices_for_ids(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Real category ids -> class indices.

        Raises:
            KeyError: an id the dataset does not have.
        """
        ids = np.asarray(ids, dtype=np.int64)
        table = np.asarray(self.ids, dtype=np.int64)
        pos = np.searchsorted(table, ids)
        found = (pos < len(table)) & (table[np.minimum(pos, len(table) - 1)] == ids)
        if not found.all():
            raise KeyError(f"unknown category ids: {_listed(ids[~found].tolist())}")
        return pos

    def name_of(self, category_id: int) -> str:
        """The name of a real category id."""
        return self.names[int(self.indices_for_ids([category_id])[0])]

    def resolve(self, tokens: Iterable[str | int]) -> list[int]:
        """Category names or ids -> sorted unique real ids.

        A token that is an integer (or a string of digits) and a known id is taken as an id;
        anything else must be a category name (exact match first, then case-insensitive).

        Raises:
            EvalDataError: naming up to ten tokens that match no category.
        """
        by_name = dict(zip(self.names, self.ids, strict=True))
        by_folded = {n.casefold(): i for n, i in by_name.items()}
        known = set(self.ids)
        out, unknown = set(), []
        for token in tokens:
            text = str(token).strip()
            if text.lstrip("-").isdigit() and int(text) in known:
                out.add(int(text))
            elif text in by_name:
                out.add(by_name[text])
            elif text.casefold() in by_folded:
                out.add(by_folded[text.casefold()])
            else:
                unknown.append(text)
        if unknown:
            raise EvalDataError(
                f"unknown categories (neither an id nor a name in the annotations): "
                f"{_listed(unknown)}"
            )
        return sorted(out)
