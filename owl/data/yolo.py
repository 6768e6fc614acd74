"""YOLO-format detection datasets (the Ultralytics / darknet layout): one reader, one writer.

The layout both sides use::

    ROOT/data.yaml               names (a list, or {index: name}), nc, train / val image folders
    ROOT/images/[SPLIT/]NAME.png the images (`owl label` links them, or copies with --copy)
    ROOT/labels/[SPLIT/]NAME.txt one line per box: "class cx cy w h", normalised to 0..1

An image's label file is its path with the last ``images`` folder replaced by ``labels`` and the
suffix by ``.txt`` (Ultralytics' rule). A folder without data.yaml is read when it holds
``images/``, ``labels/`` and a ``classes.txt`` (one name per line, the darknet/Label Studio
export), since nothing else names the classes.

* :func:`read_yolo` — data.yaml or ROOT -> `owl.data.coco.DetectionDataset` (exhaustive).
  **An image without a label file is an image with no objects** (Ultralytics' "background
  image" rule, and what `owl label` writes for an image where nothing was found: an empty
  file); the report counts them, so `owl train`'s start line says how many there were. A class
  index outside the names, a line that is not five numbers, or a box outside the image (by more
  than `TOLERANCE`) stops reading with a `DatasetError` naming ``file:line``.
* :func:`write_yolo` — examples whose images lie under ROOT/images -> label files and data.yaml.
  YOLO has no score column (Ultralytics rejects a sixth value), so pseudo-label scores live only
  in the COCO output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from owl.data.coco import DatasetError, DatasetReport, DetectionDataset, Example
from owl.files import atomic_write
from owl.text.prompts import canonicalize

#: How far (in fractions of the image) a normalised box may stick out before it is an error;
#: within it, boxes are clipped (rounding in other tools' writers).
TOLERANCE = 0.01
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def label_path(image_path: str | os.PathLike) -> Path:
    """The label file of an image: the last ``images`` folder -> ``labels``, suffix -> ``.txt``.

    Raises:
        ValueError: the path has no ``images`` folder.
    """
    parts = list(Path(os.path.abspath(image_path)).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    raise ValueError(f"{image_path}: not inside an 'images' folder, so it has no YOLO label path")


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise DatasetError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, Mapping):
        raise DatasetError(f"{path}: expected a mapping with 'names' and 'train'")
    return dict(data)


def _names(raw: Any, origin: Path) -> list[str]:
    if isinstance(raw, Mapping):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise DatasetError(f"{origin}: 'names' keys must be class indices 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DatasetError(f"{origin}: 'names' indices must be 0..{len(keys) - 1} without gaps")
        by_int = {int(k): v for k, v in raw.items()}
        raw = [by_int[k] for k in keys]
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str | int) for n in raw):
        raise DatasetError(f"{origin}: 'names' must be a non-empty list of class names")
    return [str(n) for n in raw]


def _resolve(source: str | os.PathLike, split: str) -> tuple[list[str], list[Path], Path]:
    """(class names, image folders of the split, the file that named the classes)."""
    source = Path(source)
    if source.is_dir():
        for name in ("data.yaml", "data.yml"):
            if (source / name).is_file():
                source = source / name
                break
        else:
            classes = source / "classes.txt"
            if not classes.is_file():
                raise DatasetError(
                    f"{source}: no data.yaml or classes.txt, so the class names are unknown; "
                    "add a data.yaml with 'names'"
                )
            if not (source / "images").is_dir():
                raise DatasetError(f"{source}: no images/ folder beside classes.txt")
            lines = classes.read_text(encoding="utf-8").splitlines()
            names = [line.strip() for line in lines if line.strip()]
            return names, [source / "images"], classes
    if not source.is_file():
        raise DatasetError(f"{source}: no such YOLO data.yaml or dataset folder")
    data = _load_yaml(source)
    if "names" not in data:
        raise DatasetError(f"{source}: no 'names' (the class names)")
    names = _names(data["names"], source)
    if split not in data or not data[split]:
        keys = ", ".join(k for k in ("train", "val", "test") if data.get(k))
        raise DatasetError(f"{source}: no '{split}' image folder (has: {keys or 'none'})")
    root = Path(data.get("path") or ".")
    if not root.is_absolute():
        root = source.parent / root
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    folders = []
    for entry in entries:
        folder = Path(str(entry))
        folder = folder if folder.is_absolute() else root / folder
        if not folder.is_dir():
            raise DatasetError(
                f"{source}: {split} image folder {folder} not found (image-list .txt files are "
                "not supported; give a folder)"
            )
        folders.append(folder)
    return names, folders, source


def _parse_label_file(
    path: Path, names: Sequence[str], width: int, height: int, origin: Path
) -> tuple[list[list[float]], list[str]]:
    boxes, labels = [], []
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            numbers = []
        if len(numbers) != 5 or not all(np.isfinite(numbers)):
            raise DatasetError(
                f"{path}:{number}: expected 'class cx cy w h' (5 numbers), got {line.strip()!r}"
            )
        cls, cx, cy, w, h = numbers
        if cls != int(cls) or not 0 <= int(cls) < len(names):
            raise DatasetError(
                f"{path}:{number}: class index {values[0]} is outside the {len(names)} names of "
                f"{origin} (0..{len(names) - 1}); fix the line or add the name"
            )
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if w <= 0 or h <= 0 or min(x0, y0) < -TOLERANCE or max(x1, y1) > 1 + TOLERANCE:
            raise DatasetError(
                f"{path}:{number}: box cx={cx} cy={cy} w={w} h={h} is empty or outside the image "
                "(normalised coordinates must be within 0..1)"
            )
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x0, y0, x1, y1))
        boxes.append([x0 * width, y0 * height, x1 * width, y1 * height])
        labels.append(canonicalize(names[int(cls)]))
    return boxes, labels


def read_yolo(
    source: str | os.PathLike, split: str = "train", *, log: bool = True
) -> DetectionDataset:
    """Reads a YOLO dataset (data.yaml, or a folder with one or with classes.txt).

    Args:
        source: the data.yaml, or the dataset folder.
        split: which data.yaml key names the image folder(s): "train", "val" or "test".
        log: log the report's summary once.

    Returns:
        The dataset; image ids are 1.. in sorted path order, every class absent from an image is
        one of its negatives (YOLO sets are exhaustively labelled).

    Raises:
        DatasetError: see the module docstring; also when no image is found.
    """
    import logging

    names, folders, origin = _resolve(source, split)
    report = DatasetReport(source=str(origin))
    examples = []
    for folder in folders:
        images = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        for image in images:
            report.num_images += 1
            try:
                with Image.open(image) as pil:
                    width, height = pil.size
            except (OSError, ValueError) as e:
                report.add("unreadable_image_size", f"{image} ({e})")
                continue
            labels_file = label_path(image)
            if labels_file.is_file():
                boxes, labels = _parse_label_file(labels_file, names, width, height, origin)
            else:
                report.add("missing_label_file", str(image))
                boxes, labels = [], []
            report.num_annotations += len(labels)
            examples.append(
                Example(
                    image_path=str(image.resolve()),
                    image_id=len(examples) + 1,
                    width=width,
                    height=height,
                    boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    labels=tuple(labels),
                )
            )
    report.num_examples = len(examples)
    report.num_instances = sum(len(ex.labels) for ex in examples)
    if log:
        logging.getLogger(__name__).info("%s", report.summary())
    if not examples:
        shown = ", ".join(str(f) for f in folders)
        raise DatasetError(f"{origin}: no images in {shown}")
    return DetectionDataset(
        examples,
        class_names=list(dict.fromkeys(canonicalize(n) for n in names)),
        exhaustive=True,
        report=report,
    )


def _number(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") or "0"


def write_yolo_labels(example: Example, class_names: Sequence[str]) -> Path:
    """Writes one example's label file (`label_path` of its image), atomically; an image with
    no boxes gets an empty file.

    Raises:
        ValueError: a label not in ``class_names``, or an image outside an ``images`` folder.
    """
    index = {name: i for i, name in enumerate(class_names)}
    lines = []
    for box, label in zip(example.boxes.tolist(), example.labels, strict=True):
        if label not in index:
            raise ValueError(f"{example.image_path}: label {label!r} is not in the class names")
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2 / example.width, (y0 + y1) / 2 / example.height
        w, h = (x1 - x0) / example.width, (y1 - y0) / example.height
        lines.append(" ".join([str(index[label]), *map(_number, (cx, cy, w, h))]) + "\n")
    out = label_path(example.image_path)
    with atomic_write(out) as f:
        f.write("".join(lines))
    return out


def write_yolo(
    root: str | os.PathLike,
    splits: Mapping[str, Sequence[Example]],
    class_names: Sequence[str],
) -> Path:
    """Writes label files and ``ROOT/data.yaml`` for examples whose images lie in ROOT/images.

    Args:
        root: the dataset folder.
        splits: split name ("train", "val"; "" for one unsplit set in ROOT/images) -> examples.
            Each example's image must be under ROOT/images/SPLIT/.
        class_names: the names, in class-index order; every label must be one of them.

    Returns:
        The data.yaml path. With one unsplit set, its ``train`` and ``val`` both name ``images``
        (Ultralytics needs a val key).

    Raises:
        ValueError: an image outside ROOT/images/SPLIT, or a label not in ``class_names``.
    """
    import yaml

    root = Path(root)
    for split, examples in splits.items():
        images_dir = (root / "images" / split).absolute()
        for ex in examples:
            path = Path(os.path.abspath(ex.image_path))
            if images_dir not in path.parents:
                raise ValueError(f"{ex.image_path} is not inside {images_dir}")
            write_yolo_labels(ex, class_names)
    named = [s for s in splits if s]
    data: dict[str, Any] = {}
    if named:
        for split in named:
            data[split] = f"images/{split}"
        data.setdefault("val", data.get("train", f"images/{named[0]}"))
        data.setdefault("train", data["val"])
    else:
        data["train"] = data["val"] = "images"
    data["nc"] = len(class_names)
    data["names"] = list(class_names)
    out = root / "data.yaml"
    with atomic_write(out) as f:
        yaml.safe_dump(data, f, sort_keys=False, allow_unicode=True)
    return out
