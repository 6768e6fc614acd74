"""Dataset formats in one place: detect which one a path is, read it, place images, write them.

Every format has one reader and one writer, all to the one example type
(`owl.data.coco.Example` / `DetectionDataset`): COCO/LVIS (`owl.data.coco`), YOLO
(`owl.data.yolo`) and Pascal VOC (`owl.data.voc`). This module is what the rest of owl calls:

* :func:`detect_dataset_format` — ``"coco"``, ``"yolo"`` or ``"voc"`` for a path, by its shape:
  a ``*.json`` file is COCO, a ``*.yaml`` YOLO; a folder is YOLO if it holds ``data.yaml`` (or
  ``labels/`` with ``classes.txt``), COCO if it holds ``annotations.json``, VOC if it holds
  ``*.xml`` files or an ``Annotations/`` folder, tried in that order.
* :func:`load_dataset` — reads any of them (``owl train``'s ``data.format``), applies
  ``remove_categories`` and ``min_score`` the same way for all, and returns the one-line
  description `owl train` prints at start.
* :func:`place_images` and :func:`write_dataset` — the layout `owl label` writes, so that
  every format of one run shares one image folder::

      DIR/images/[SPLIT/]NAME          hard-linked (else symlinked) or copied
      DIR/annotations[_SPLIT].json     COCO instances, a "score" per pseudo-label box
      DIR/data.yaml, DIR/labels/...    YOLO
      DIR/Annotations/[SPLIT/]NAME.xml Pascal VOC
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from owl.data.coco import (
    DatasetError,
    DetectionDataset,
    Example,
    load_detection_dataset,
    write_coco_instances,
)
from owl.files import atomic_write
from owl.text.prompts import canonicalize

FORMATS = ("coco", "yolo", "voc")


def detect_dataset_format(path: str | os.PathLike) -> str:
    """The format of a dataset path (see the module docstring).

    Raises:
        DatasetError: the path does not exist or looks like none of the formats.
    """
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".json":
            return "coco"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        raise DatasetError(f"{path}: neither a COCO .json nor a YOLO data.yaml")
    if not path.is_dir():
        raise DatasetError(f"{path}: no such dataset file or folder")
    if (path / "data.yaml").is_file() or (path / "data.yml").is_file():
        return "yolo"
    if (path / "labels").is_dir() and (path / "classes.txt").is_file():
        return "yolo"
    if (path / "annotations.json").is_file():
        return "coco"
    if (path / "Annotations").is_dir() or any(path.glob("*.xml")):
        return "voc"
    raise DatasetError(
        f"{path}: not a dataset owl can read (no data.yaml, annotations.json, Annotations/ or "
        "*.xml); set data.format to coco, yolo or voc and point at its file"
    )


def _remove(dataset: DetectionDataset, names: Iterable[str | int]) -> DetectionDataset:
    """Drops the boxes of the named classes, which then never become queries."""
    removed = {canonicalize(str(n)) for n in names}
    if not removed:
        return dataset
    report = dataset.report
    examples = []
    for ex in dataset.examples:
        keep = [i for i, label in enumerate(ex.labels) if label not in removed]
        if report is not None:
            report.num_removed_instances += len(ex.labels) - len(keep)
        examples.append(
            dataclasses.replace(
                ex,
                boxes=ex.boxes[keep],
                labels=tuple(ex.labels[i] for i in keep),
                scores=None if ex.scores is None else ex.scores[keep],
            )
        )
    if report is not None:
        report.removed_names = tuple(sorted(removed & set(dataset.class_names)))
        report.num_instances = sum(len(ex.labels) for ex in examples)
    return DetectionDataset(
        examples,
        class_names=dataset.class_names,
        removed_names=removed,
        exhaustive=dataset.exhaustive,
        report=report,
    )


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """Where a data set's annotations and images are, as `resolve_dataset` found them.

    Attributes:
        format: "coco", "yolo" or "voc".
        annotations: COCO: the JSON file; YOLO: data.yaml or the folder with classes.txt; VOC:
            the folder of XML files.
        images: the image folder (COCO: always set; VOC: optional; YOLO: None, data.yaml names
            the folders).
        split: the YOLO data.yaml key that was read.
        how: "auto-detected from PATH" or "as configured", for the start line.
    """

    format: str
    annotations: Path
    images: Path | None
    split: str
    how: str


def resolve_dataset(
    annotations: str | os.PathLike,
    images: str | os.PathLike | None = None,
    *,
    format: str = "auto",
    split: str = "train",
) -> DatasetSource:
    """Finds a data set's format and files (see `load_dataset` for the arguments).

    Raises:
        DatasetError: an unknown format, or a path that is no data set.
    """
    path = Path(annotations)
    chosen = detect_dataset_format(path) if format == "auto" else format
    if chosen not in FORMATS:
        raise DatasetError(f"data.format must be auto, coco, yolo or voc, got {format!r}")
    how = f"auto-detected from {path}" if format == "auto" else "as configured"
    if chosen == "coco":
        if path.is_dir():
            named = path / f"annotations_{split}.json"
            images = images or path / "images"
            path = named if named.is_file() else path / "annotations.json"
        if not images and (path.parent / "images").is_dir():
            images = path.parent / "images"
        if not images:
            raise DatasetError(f"{path}: COCO needs the image folder (data.train_images)")
    elif chosen == "voc":
        path = path / "Annotations" if (path / "Annotations").is_dir() else path
        if (path / split).is_dir() and not any(path.glob("*.xml")):
            path = path / split
    else:
        images = None
    return DatasetSource(chosen, path, Path(images) if images else None, split, how)


def load_dataset(
    annotations: str | os.PathLike,
    images: str | os.PathLike | None = None,
    *,
    format: str = "auto",
    split: str = "train",
    remove_categories: Sequence[str | int] = (),
    min_score: float = 0.0,
    log: bool = True,
) -> tuple[DetectionDataset, str]:
    """Reads a COCO, YOLO or VOC dataset; returns it and a one-line description.

    Args:
        annotations: COCO: the JSON (or a folder with annotations.json); YOLO: data.yaml or the
            dataset folder; VOC: the XML folder (or a folder with Annotations/).
        images: the image folder (COCO: default ``images/`` beside the JSON or in the folder;
            VOC: optional; YOLO: ignored, data.yaml names the folders).
        format: "auto" (see `detect_dataset_format`), "coco", "yolo" or "voc".
        split: YOLO: the data.yaml key ("train", "val"); a folder written by `owl label
            --split` also picks annotations_SPLIT.json and Annotations/SPLIT.
        remove_categories: class names (COCO: also ids) whose boxes are dropped.
        min_score: pseudo-label boxes with a lower score are dropped (COCO "score"; other
            formats carry none).
        log: log the loading report.

    Returns:
        (dataset, line): the line names the format, how it was chosen, the counts and what an
        image without labels means in that format.

    Raises:
        DatasetError: an unreadable dataset; the message names the file (and line).
    """
    source = resolve_dataset(annotations, images, format=format, split=split)
    return read_source(source, remove_categories=remove_categories, min_score=min_score, log=log)


def read_source(
    source: DatasetSource,
    *,
    remove_categories: Sequence[str | int] = (),
    min_score: float = 0.0,
    log: bool = True,
) -> tuple[DetectionDataset, str]:
    """Reads a resolved data set (the second half of `load_dataset`)."""
    path, images = source.annotations, source.images
    if source.format == "coco":
        dataset = load_detection_dataset(
            path, images, remove_categories=remove_categories, min_score=min_score, log=log
        )
        missing = "images without annotations have no objects"
    elif source.format == "yolo":
        from owl.data.yolo import read_yolo

        dataset = _remove(read_yolo(path, source.split, log=log), remove_categories)
        count = dataset.report.counts.get("missing_label_file", 0) if dataset.report else 0
        missing = f"{count} images without a label file read as images with no objects"
    else:
        from owl.data.voc import read_voc

        dataset = _remove(read_voc(path, images, log=log), remove_categories)
        missing = "images without an XML file are not read"
    boxes = sum(len(ex.labels) for ex in dataset.examples)
    line = (
        f"data.format = {source.format} ({source.how}): {len(dataset)} images, {boxes} boxes, "
        f"{len(dataset.class_names)} classes; {missing}"
    )
    return dataset, line


def annotation_files(source: DatasetSource, examples: Sequence[Example]) -> list[Path]:
    """The file that holds each example's annotations, in order (what `rewrite_examples`
    replaces): COCO: the one JSON; YOLO: the image's label file (it may not exist yet); VOC:
    the XML file it was read from (`read_voc` numbers images 1.. in sorted file order)."""
    if source.format == "coco":
        return [source.annotations] * len(examples)
    if source.format == "yolo":
        from owl.data.yolo import label_path

        return [label_path(ex.image_path) for ex in examples]
    files = sorted(source.annotations.glob("*.xml"))
    if len(files) != len(examples) or any(ex.image_id != i + 1 for i, ex in enumerate(examples)):
        raise DatasetError(f"{source.annotations}: the XML files changed since they were read")
    return files


def rewrite_examples(
    source: DatasetSource,
    examples: Sequence[Example],
    class_names: Sequence[str],
    changed: Sequence[int],
) -> list[Path]:
    """Writes edited examples back into the data set they were read from, in its own format,
    each file atomically (`owl.files.atomic_write`, through the format's writer).

    Args:
        source: where the data set was read from (`resolve_dataset`).
        examples: every example of the data set, in the order it was read, edits applied.
        class_names: the data set's classes (COCO category ids 1..C, YOLO indices 0..C-1).
        changed: positions in ``examples`` of the edited ones. COCO rewrites its one JSON with
            every example; YOLO and VOC rewrite only the label / XML files of these, so the
            files of images nobody touched stay byte for byte (and data.yaml is never written).

    Returns:
        The files written.

    Raises:
        ValueError: a label not in ``class_names``, an image outside the COCO image folder.
        OSError: a file could not be written (the ones before it are written, the rest not).
    """
    if not changed:
        return []
    if source.format == "coco":
        return [
            write_coco_instances(
                source.annotations, examples, class_names, images_dir=source.images
            )
        ]
    files = annotation_files(source, examples)
    written = []
    if source.format == "yolo":
        from owl.data.yolo import write_yolo_labels

        for i in changed:
            written.append(write_yolo_labels(examples[i], class_names))
        return written
    from owl.data.voc import voc_xml

    for i in changed:
        with atomic_write(files[i]) as f:
            f.write(voc_xml(examples[i]))
        written.append(files[i])
    return written


def unique_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """A file name per path (its own name), unique ignoring case: clashes get "-2", "-3" ..."""
    used: set[str] = set()
    out = []
    for p in paths:
        path = Path(p)
        name, n = path.name, 1
        while name.lower() in used or Path(name).stem.lower() in used:
            n += 1
            name = f"{path.stem}-{n}{path.suffix}"
        used.add(name.lower())
        used.add(Path(name).stem.lower())
        out.append(name)
    return out


def place_images(
    examples: Sequence[Example],
    images_dir: str | os.PathLike,
    names: Sequence[str],
    *,
    copy: bool = False,
) -> list[Example]:
    """Links or copies each example's image to ``images_dir/name``.

    A link is a hard link (every tool sees an ordinary file; supervision, for one, refuses
    symlinks that lead outside the image folder), or an absolute symlink where the image is on
    another file system. ``copy`` copies instead.

    Returns:
        The examples with ``image_path`` pointing at the placed files (an existing link or
        copy of the same file is kept, so a resumed run does no work twice).
    """
    folder = Path(images_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ex, name in zip(examples, names, strict=True):
        source = Path(os.path.abspath(ex.image_path))
        target = folder / name
        if not _placed(source, target, copy):
            tmp = target.with_name(f".{name}.tmp")
            tmp.unlink(missing_ok=True)
            if copy:
                shutil.copyfile(source, tmp)
            else:
                try:
                    os.link(source, tmp)
                except OSError:
                    os.symlink(source, tmp)
            os.replace(tmp, target)
        out.append(dataclasses.replace(ex, image_path=str(target.absolute())))
    return out


def _placed(source: Path, target: Path, copy: bool) -> bool:
    """Whether ``target`` already is the placed ``source`` (same file, or a copy's size)."""
    if not target.exists():
        return False
    if copy:
        return not target.is_symlink() and target.stat().st_size == source.stat().st_size
    return os.path.samefile(source, target)


def write_dataset(
    out_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[Example]],
    class_names: Sequence[str],
    formats: Sequence[str],
) -> list[Path]:
    """Writes placed examples (images under ``out_dir/images/[SPLIT]``) in each format.

    Args:
        out_dir: the dataset folder.
        splits: split name ("" for one unsplit set) -> examples.
        class_names: every label, in class order (COCO ids 1..C, YOLO indices 0..C-1).
        formats: some of `FORMATS`.

    Returns:
        The files or folders written, one or more per format.
    """
    out = Path(out_dir)
    written: list[Path] = []
    for fmt in formats:
        if fmt == "coco":
            for split, examples in splits.items():
                name = f"annotations_{split}.json" if split else "annotations.json"
                written.append(
                    write_coco_instances(
                        out / name, examples, class_names, images_dir=out / "images"
                    )
                )
        elif fmt == "yolo":
            from owl.data.yolo import write_yolo

            written.append(write_yolo(out, splits, class_names))
        elif fmt == "voc":
            from owl.data.voc import write_voc

            for split, examples in splits.items():
                written.append(write_voc(out / "Annotations" / split, examples))
        else:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return written
