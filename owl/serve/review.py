"""The state behind `owl serve --review DATASET`: a labelled data set a person checks and fixes.

A `ReviewSession` reads a COCO, YOLO or VOC data set once (`owl.data.formats`), holds every
image's boxes (each with a stable id, its class, its pixel box and its score when the data set
has scores), and saves edits back into the same files in the same format
(`owl.data.formats.rewrite_examples`, atomic per file), appending one JSON line per change to
the edit log beside the data set (docs/review.md).

The rules it keeps:

* **Nothing is lost on open.** A data set whose reading would drop or change something that a
  save would then write back (a COCO box outside its image, a crowd box, an image whose file is
  missing, ...) is refused with one line naming the file and the first problem; YOLO and VOC
  readers already refuse such files with ``file:line``.
* **A save never overwrites what someone else saved.** Every image has a version (a hash of its
  boxes as the server holds them). A save names, for each image, the version its edits started
  from; if any image changed since (another tab or person saved it), the whole save is refused
  (`Conflict`, HTTP 409) and nothing is written. Images edited by only one side never conflict.
  Files changed on disk by another program since they were read also refuse the save.
* **Bad edits are refused before anything is written**: an unknown class name, a box that is
  empty or outside its image, an unknown image (`ReviewError`, HTTP 400), and an unwritable
  folder (`ReviewError` with status 507).
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import hashlib
import json
import math
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.data.annotations import load_json
from owl.data.coco import PROBLEMS, DatasetError, Example, relative_image_name
from owl.data.formats import (
    DatasetSource,
    annotation_files,
    read_source,
    resolve_dataset,
    rewrite_examples,
)

#: What a COCO reading may report without losing anything on save (YOLO and VOC: see
#: `_check_lossless`).
HARMLESS = frozenset({"missing_label_file"})
#: Longest box id and reviewer name accepted from the page.
MAX_ID_CHARS = 64
MAX_WHO_CHARS = 100


class ReviewError(ValueError):
    """A save or an opening that cannot be done; the message is one line saying what to do."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Conflict(ReviewError):
    """A stale save: images changed since the page loaded them (HTTP 409)."""

    def __init__(self, message: str, images: list[dict[str, Any]]):
        super().__init__(message, 409)
        self.images = images


@dataclasses.dataclass
class Box:
    """One box as the page sees it: `box` is xyxy pixels (pixel edges), `score` None when the
    data set carries no scores."""

    id: str
    label: str
    box: list[float]
    score: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "box": self.box, "score": self.score}


def version_of(boxes: Sequence[Box]) -> str:
    """An image's version: a short hash of its boxes (ids, classes, coordinates, scores)."""
    text = json.dumps([b.to_dict() for b in boxes], sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def _log_path(source: DatasetSource, given: Path) -> Path:
    """The edit log beside the data set: DIR/review-log.jsonl for a folder, NAME.review-log.jsonl
    beside a file (COCO JSON, data.yaml)."""
    if given.is_dir():
        return given / "review-log.jsonl"
    return given.with_name(given.stem + ".review-log.jsonl")


class ReviewSession:
    """One data set open for review (see the module docstring).

    Args:
        path: the data set (as `owl train`'s data.annotations: COCO JSON or folder, YOLO
            data.yaml or folder, VOC XML folder or a folder with Annotations/).
        images: the image folder where the format needs one (COCO without images/ beside it).
        format: "auto", "coco", "yolo" or "voc".
        split: which split of a YOLO data.yaml / an `owl label --split` folder.

    Raises:
        ReviewError: the data set cannot be read, or reading it would lose something.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        images: str | os.PathLike | None = None,
        *,
        format: str = "auto",
        split: str = "train",
    ) -> None:
        given = Path(path)
        try:
            self.source = resolve_dataset(given, images, format=format, split=split)
            dataset, self.line = read_source(self.source, log=False)
        except DatasetError as e:
            raise ReviewError(str(e)) from None
        self.examples: list[Example] = list(dataset.examples)
        self.class_names: tuple[str, ...] = tuple(dataset.class_names)
        self.scored = any(ex.scores is not None for ex in self.examples)
        self._check_lossless(dataset)
        self.files = annotation_files(self.source, self.examples)
        self.log_path = _log_path(self.source, given)
        self.id = hashlib.sha1(
            f"{self.source.format}:{self.source.annotations.resolve()}".encode()
        ).hexdigest()[:12]
        self.name = given.resolve().name
        self.boxes: list[list[Box]] = [self._boxes_of(ex) for ex in self.examples]
        self.versions = [version_of(b) for b in self.boxes]
        self.seen = {f: _stat(f) for f in dict.fromkeys(self.files)}
        self.saves = 0
        self.lock = threading.Lock()
        root = self.source.images or self.source.annotations.parent
        self.image_names = [self._display_name(ex, root) for ex in self.examples]
        self.dropped = self._coco_extras() if self.source.format == "coco" else []
        self.backup = self.source.annotations.with_name(self.source.annotations.name + ".orig")
        self.note = (
            f"saving rewrites {self.source.annotations.name} in owl's COCO form, without "
            f"{', '.join(self.dropped)}; the file as it was is kept as {self.backup.name} "
            "on the first save"
            if self.dropped
            else ""
        )

    # -- opening ---------------------------------------------------------------------------------

    def _check_lossless(self, dataset: Any) -> None:
        report = dataset.report
        lossy = {k: n for k, n in (report.counts if report else {}).items() if k not in HARMLESS}
        if self.source.format == "coco" and lossy:
            kind = next(k for k in PROBLEMS if k in lossy)
            example = (report.examples.get(kind) or ["?"])[0]
            more = sum(lossy.values()) - lossy[kind]
            raise ReviewError(
                f"{self.source.annotations}: a review save would change this data set beyond your "
                f"edits: {lossy[kind]} {PROBLEMS[kind]} (e.g. {example})"
                + (f" and {more} other problems" if more else "")
                + "; fix the file first (nothing was written)"
            )
        if self.source.format == "coco":
            for ex in self.examples:
                try:
                    relative_image_name(ex, self.source.images)
                except ValueError as e:
                    raise ReviewError(f"{self.source.annotations}: {e}") from None

    def _coco_extras(self) -> list[str]:
        """What of the COCO file owl's writer does not write back (other fields, category ids
        other than 1..C, names other than their canonical form, annotation ids)."""
        data = load_json(self.source.annotations)
        kept = {
            "": {"images", "annotations", "categories"},
            "images": {"id", "file_name", "width", "height"},
            "annotations": {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "score"},
            "categories": {"id", "name"},
        }
        out = sorted(set(data) - kept[""])
        for part in ("images", "annotations", "categories"):
            extra = set().union(*(set(d) for d in data[part] if isinstance(d, dict))) - kept[part]
            out += [f"{part}.{k}" for k in sorted(extra)]
        cats = sorted(data["categories"], key=lambda c: c["id"])
        if [c["id"] for c in cats] != list(range(1, len(cats) + 1)):
            out.append("the category ids (renumbered 1..C)")
        if [c["name"] for c in cats] != list(self.class_names):
            out.append("the category names as written (canonical form)")
        if [a.get("id") for a in data["annotations"]] != list(
            range(1, len(data["annotations"]) + 1)
        ):
            out.append("the annotation ids (renumbered 1..N)")
        return out

    def _boxes_of(self, ex: Example) -> list[Box]:
        scores = ex.scores if ex.scores is not None else [None] * len(ex.labels)
        return [
            Box(str(k), label, [float(v) for v in box], None if s is None else float(s))
            for k, (box, label, s) in enumerate(
                zip(ex.boxes.tolist(), ex.labels, scores, strict=True)
            )
        ]

    @staticmethod
    def _display_name(ex: Example, root: Path) -> str:
        path = Path(ex.image_path)
        try:
            return path.relative_to(root.resolve()).as_posix()
        except ValueError:
            return path.name

    def order(self) -> list[int]:
        """Image positions in review order: with scores, the image whose lowest box score is
        lowest first (images without boxes last); without scores, the data set's order."""
        if not self.scored:
            return list(range(len(self.examples)))

        def lowest(i: int) -> float:
            scores = [b.score for b in self.boxes[i] if b.score is not None]
            return min(scores) if scores else math.inf

        return sorted(range(len(self.examples)), key=lowest)

    def describe(self) -> dict[str, Any]:
        """What the page loads: the classes and every image with its boxes and version."""
        with self.lock:
            return {
                "id": self.id,
                "name": self.name,
                "format": self.source.format,
                "line": self.line,
                "note": self.note,
                "classes": list(self.class_names),
                "scored": self.scored,
                "who": _user(),
                "log": self.log_path.name,
                "saves": self.saves,
                "images": [self._image(i) for i in self.order()],
            }

    def _image(self, i: int) -> dict[str, Any]:
        ex = self.examples[i]
        return {
            "key": i,
            "name": self.image_names[i],
            "width": ex.width,
            "height": ex.height,
            "version": self.versions[i],
            "boxes": [b.to_dict() for b in self.boxes[i]],
        }

    def image_path(self, key: int) -> Path:
        """The file of image `key` (a position, never a path from the client)."""
        if not 0 <= key < len(self.examples):
            raise ReviewError(f"unknown image {key}; reload the page", 404)
        return Path(self.examples[key].image_path)

    # -- saving ----------------------------------------------------------------------------------

    def _parse(self, item: Mapping[str, Any]) -> tuple[int, str, list[Box]]:
        key = item.get("key")
        if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key < len(self.examples):
            raise ReviewError(f"unknown image key {key!r}; reload the page")
        name, ex = self.image_names[key], self.examples[key]
        base = item.get("version")
        raw = item.get("boxes")
        if not isinstance(base, str) or not isinstance(raw, list):
            raise ReviewError(f"image {name}: give its 'version' and its 'boxes' list")
        boxes, ids = [], set()
        current = {b.id: b for b in self.boxes[key]}
        for b in raw:
            if not isinstance(b, Mapping):
                raise ReviewError(f"image {name}: a box is not an object")
            box_id, label, coords, score = b.get("id"), b.get("label"), b.get("box"), b.get("score")
            if not isinstance(box_id, str) or not box_id or len(box_id) > MAX_ID_CHARS:
                raise ReviewError(f"image {name}: box id {box_id!r} must be a short string")
            if box_id in ids:
                raise ReviewError(f"image {name}: box id {box_id!r} is used twice")
            ids.add(box_id)
            if label not in self.class_names:
                raise ReviewError(
                    f"image {name}: unknown class name {label!r}; this data set's classes are "
                    f"{', '.join(self.class_names)} (nothing was saved)"
                )
            if not (
                isinstance(coords, list)
                and len(coords) == 4
                and all(isinstance(v, int | float) and math.isfinite(v) for v in coords)
            ):
                raise ReviewError(f"image {name}: box {box_id!r} needs 4 finite numbers")
            old = current.get(box_id)
            if old is not None and [float(v) for v in coords] == old.box:
                x0, y0, x1, y1 = old.box  # untouched: kept exactly
            else:
                x0, y0, x1, y1 = (_stored(v) for v in coords)
            if not (0 <= x0 < x1 <= ex.width and 0 <= y0 < y1 <= ex.height):
                raise ReviewError(
                    f"image {name}: box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] of {label!r} is empty or "
                    f"outside the {ex.width}x{ex.height} image (nothing was saved)"
                )
            if score is not None and not (
                isinstance(score, int | float) and math.isfinite(score) and 0 <= score <= 1
            ):
                raise ReviewError(f"image {name}: score {score!r} must be within 0..1 or null")
            if old is not None and score == old.score:
                pass
            elif score is not None:
                score = _stored(score, 6)
            if self.scored and score is None:
                score = 1.0  # a box a person drew is a person's label
            if not self.scored:
                score = None
            boxes.append(Box(box_id, label, [x0, y0, x1, y1], score))
        return key, base, boxes

    def save(self, items: Sequence[Mapping[str, Any]], who: str) -> dict[str, Any]:
        """Applies the page's edited images and writes the data set; see the module docstring.

        Args:
            items: ``{"key", "version", "boxes": [{"id", "label", "box", "score"}]}`` per edited
                image, ``version`` being the one its edits started from.
            who: the reviewer's name, for the edit log.

        Returns:
            ``{"saved": n, "images": [...the saved images, with their new versions...]}``.

        Raises:
            ReviewError: bad input (400), unwritable files (507); Conflict: stale versions (409).
        """
        if not isinstance(who, str) or not who.strip() or len(who) > MAX_WHO_CHARS:
            raise ReviewError(f"who: give your name (1..{MAX_WHO_CHARS} characters)")
        if not isinstance(items, list):
            raise ReviewError("images: give a list of edited images")
        with self.lock:
            parsed = [self._parse(item) for item in items]
            if len({k for k, _, _ in parsed}) != len(parsed):
                raise ReviewError("an image is listed twice in one save")
            # Stale and different from what the server holds: a conflict. Stale but equal (both
            # sides made the same edit, or an earlier save got half-way) is no conflict.
            stale = [
                k
                for k, base, boxes in parsed
                if base != self.versions[k] and _content(boxes) != _content(self.boxes[k])
            ]
            if stale:
                names = ", ".join(self.image_names[k] for k in stale[:5])
                raise Conflict(
                    f"not saved: {len(stale)} image(s) ({names}) were saved by another tab or "
                    "person since this page loaded them; keep yours (overwrite) or take theirs",
                    [self._image(k) for k in stale],
                )
            changed = [
                (k, boxes) for k, _, boxes in parsed if _content(boxes) != _content(self.boxes[k])
            ]

            self._check_disk([k for k, _ in changed])
            now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            records = []
            for k, boxes in changed:
                records += self._changes(k, self.boxes[k], boxes, who.strip(), now)
            examples = list(self.examples)
            for k, boxes in changed:
                examples[k] = self._example(k, boxes)
            # COCO is one file; YOLO and VOC one file per image, written one by one so that a
            # failure half-way leaves the server's state equal to what is on disk.
            keys = [k for k, _ in changed]
            groups = [keys] if self.source.format == "coco" else [[k] for k in keys]
            done: list[int] = []
            try:
                if self.dropped and not self.backup.exists():
                    shutil.copy2(self.source.annotations, self.backup)
                for group in groups:
                    for path in rewrite_examples(self.source, examples, self.class_names, group):
                        self.seen[path] = _stat(path)
                    done += group
            except OSError as e:
                self._commit(done, changed, examples, records)
                raise ReviewError(
                    f"cannot write {e.filename or self.source.annotations}: "
                    f"{e.strerror or e}; make it writable and save again (your edits are kept in "
                    "the page)",
                    507,
                ) from None
            self._commit(done, changed, examples, records)
            return {
                "saved": len(changed),
                "saves": self.saves,
                "log": self.log_path.name,
                "images": [self._image(k) for k, _, _ in parsed],
            }

    def _commit(
        self,
        done: Sequence[int],
        changed: Sequence[tuple[int, list[Box]]],
        examples: Sequence[Example],
        records: Sequence[dict[str, Any]],
    ) -> None:
        """Takes the written images into the server's state and logs their changes."""
        # Box ids become positions, as a fresh read of the files numbers them, so an image's
        # version after a save equals its version when a new server reads it.
        boxes_of = {
            k: [dataclasses.replace(b, id=str(i)) for i, b in enumerate(boxes)]
            for k, boxes in changed
        }
        for k in done:
            self.examples[k], self.boxes[k] = examples[k], boxes_of[k]
            self.versions[k] = version_of(boxes_of[k])
        if done:
            self.saves += 1
            names = {self.image_names[k] for k in done}
            self._append_log([r for r in records if r["image"] in names])

    def _check_disk(self, keys: Sequence[int]) -> None:
        """Refuses (409) when a file to be rewritten changed on disk since it was read or last
        written here, and (507) when its folder or the log's cannot be written."""
        files = list(dict.fromkeys(self.files[k] for k in keys))
        for path in files:
            if _stat(path) != self.seen.get(path):
                raise Conflict(
                    f"not saved: {path} changed on disk since owl serve read it (another program "
                    "or server); restart owl serve --review to load it",
                    [],
                )
        folders = {_existing(p.parent) for p in files}
        if files:
            folders.add(_existing(self.log_path.parent))
        for folder in sorted(folders):
            effective = os.access in os.supports_effective_ids
            if not os.access(folder, os.W_OK, effective_ids=effective):
                raise ReviewError(
                    f"cannot write into {folder} (read-only); make it writable and save again "
                    "(nothing was written, your edits are kept in the page)",
                    507,
                )

    def _example(self, k: int, boxes: Sequence[Box]) -> Example:
        ex = self.examples[k]
        return dataclasses.replace(
            ex,
            boxes=np.asarray([b.box for b in boxes], np.float32).reshape(-1, 4),
            labels=tuple(b.label for b in boxes),
            scores=(
                np.asarray([b.score for b in boxes], np.float32) if ex.scores is not None else None
            ),
        )

    def _changes(
        self, k: int, old: Sequence[Box], new: Sequence[Box], who: str, now: str
    ) -> list[dict[str, Any]]:
        """One edit-log record per box that changed: draw, delete, relabel, move, accept."""
        before = {b.id: b for b in old}
        after = {b.id: b for b in new}
        out = []
        for box_id in [*before, *(i for i in after if i not in before)]:
            a, b = before.get(box_id), after.get(box_id)
            if a is not None and b is not None:
                actions = [
                    name
                    for name, differs in (
                        ("relabel", a.label != b.label),
                        ("move", a.box != b.box),
                        ("accept", a.label == b.label and a.box == b.box and a.score != b.score),
                    )
                    if differs
                ]
                if not actions:
                    continue
                action = "+".join(actions)
            else:
                action = "draw" if a is None else "delete"
            out.append(
                {
                    "time": now,
                    "who": who,
                    "save": self.saves + 1,
                    "image": self.image_names[k],
                    "file": self.files[k].name,
                    "action": action,
                    "box_id": box_id,
                    "before": None if a is None else _plain(a),
                    "after": None if b is None else _plain(b),
                }
            )
        return out

    def _append_log(self, records: Sequence[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(text)


def _content(boxes: Sequence[Box]) -> list[tuple]:
    """An image's boxes without their ids, in order: what a save writes."""
    return [(b.label, b.box, b.score) for b in boxes]


def _user() -> str:
    """The server's user name, the page's default reviewer."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "reviewer"


def _stored(value: float, digits: int = 2) -> float:
    """A page's number as the server keeps it: rounded (VOC keeps 2 decimals), then float32 (the
    data sets' box type), so the version of a saved image equals that of its re-read boxes."""
    return float(np.float32(round(float(value), digits)))


def _existing(folder: Path) -> Path:
    """The folder, or its nearest existing parent (what a write into it would have to create in)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _plain(box: Box) -> dict[str, Any]:
    out: dict[str, Any] = {"label": box.label, "box": box.box}
    if box.score is not None:
        out["score"] = box.score
    return out
