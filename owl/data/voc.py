"""Pascal VOC detection datasets (one XML file per image): one reader, one writer.

Each ``NAME.xml`` holds ``<annotation>`` with ``<filename>``, ``<size>`` (width, height, depth)
and one ``<object>`` per box: ``<name>`` and ``<bndbox>`` (xmin, ymin, xmax, ymax). Coordinates
follow the VOC devkit: 1-based pixel indices, inclusive, so a box covering pixel columns 0..9
(owl's pixel-edge box x0=0, x1=10) is written xmin=1, xmax=10. owl writes sub-pixel boxes as
decimals (two places), as many exporters do; readers that accept only integers must round.

* :func:`read_voc` — a folder of XML files (and the image folder) -> `DetectionDataset`
  (exhaustive). Images are found as IMAGES/<filename>, else the XML's ``<path>``, else a
  ``JPEGImages`` folder beside the XML folder. **An image without an XML file is not read**: VOC
  is annotation-driven (`owl label` writes an XML for every image, with no ``<object>`` when
  nothing was found, so its outputs have none missing). A box outside ``<size>``, an empty
  box or a missing field stops reading with a `DatasetError` naming ``file:line``.
  ``<difficult>`` boxes are kept as ordinary boxes.
* :func:`write_voc` — examples -> one XML per image into a folder.
"""

from __future__ import annotations

import logging
import math
import os
import xml.parsers.expat
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from owl.data.coco import DatasetError, DatasetReport, DetectionDataset, Example
from owl.files import atomic_write
from owl.text.prompts import canonicalize


class _Node:
    """An XML element with the line it starts on (ElementTree keeps no line numbers)."""

    def __init__(self, tag: str, line: int) -> None:
        self.tag, self.line, self.text, self.children = tag, line, "", []

    def find(self, tag: str) -> _Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list[_Node]:
        return [c for c in self.children if c.tag == tag]


def _parse(path: Path) -> _Node:
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, _attrs: Any) -> None:
        node = _Node(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(path.read_bytes(), True)
    except xml.parsers.expat.ExpatError as e:
        raise DatasetError(
            f"{path}:{e.lineno}: invalid XML ({xml.parsers.expat.errors.messages[e.code]})"
        ) from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read: {e.strerror}") from None
    if not root or root[0].tag != "annotation":
        raise DatasetError(f"{path}:1: expected an <annotation> element (Pascal VOC)")
    return root[0]


def _number(node: _Node | None, tag: str, path: Path, parent: _Node) -> float:
    child = node.find(tag) if node is not None else None
    if child is None:
        raise DatasetError(f"{path}:{parent.line}: <{parent.tag}> has no <{tag}>")
    try:
        value = float(child.text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{child.line}: <{tag}> is {child.text.strip()!r}, not a number")
    return value


def _image_of(root: _Node, xml_path: Path, images_dir: Path | None) -> Path:
    filename = root.find("filename")
    name = filename.text.strip() if filename is not None else ""
    candidates = []
    if images_dir is not None and name:
        candidates.append(images_dir / name)
    path_node = root.find("path")
    if path_node is not None and path_node.text.strip():
        candidates.append(Path(path_node.text.strip()))
    if name:
        candidates.append(xml_path.parent.parent / "JPEGImages" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shown = ", ".join(str(c) for c in candidates) or "no <filename> or <path>"
    raise DatasetError(f"{xml_path}: its image is not found (looked for {shown})")


def read_voc(
    annotations_dir: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    *,
    log: bool = True,
) -> DetectionDataset:
    """Reads every ``*.xml`` in a folder (sorted by name) as a Pascal VOC dataset.

    Args:
        annotations_dir: the XML folder (VOC's ``Annotations``).
        images_dir: the image folder; None: each XML's ``<path>``, or ``JPEGImages`` beside it.
        log: log the report's summary once.

    Returns:
        The dataset; classes sorted by name, image ids 1.. in file order.

    Raises:
        DatasetError: see the module docstring; also a folder without XML files.
    """
    folder = Path(annotations_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of Pascal VOC XML files")
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DatasetError(f"{folder}: no *.xml files (Pascal VOC annotations)")
    images = Path(images_dir) if images_dir is not None else None
    report = DatasetReport(source=str(folder))
    examples, names = [], set()
    for xml_path in files:
        root = _parse(xml_path)
        report.num_images += 1
        size = root.find("size")
        if size is None:
            raise DatasetError(f"{xml_path}:{root.line}: <annotation> has no <size>")
        width, height = (_number(size, t, xml_path, size) for t in ("width", "height"))
        boxes, labels = [], []
        for obj in root.findall("object"):
            name_node = obj.find("name")
            name = canonicalize(name_node.text) if name_node is not None else ""
            if not name:
                raise DatasetError(f"{xml_path}:{obj.line}: <object> has no <name>")
            box = obj.find("bndbox")
            if box is None:
                raise DatasetError(f"{xml_path}:{obj.line}: <object> {name!r} has no <bndbox>")
            xmin, ymin, xmax, ymax = (
                _number(box, t, xml_path, box) for t in ("xmin", "ymin", "xmax", "ymax")
            )
            x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
            if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise DatasetError(
                    f"{xml_path}:{box.line}: box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} "
                    f"ymax={ymax:g} of {name!r} is empty or outside the {width:g}x{height:g} "
                    "image (VOC coordinates are 1-based: 1..width, 1..height)"
                )
            boxes.append([x0, y0, x1, y1])
            labels.append(name)
            names.add(name)
        report.num_annotations += len(labels)
        examples.append(
            Example(
                image_path=str(_image_of(root, xml_path, images).resolve()),
                image_id=len(examples) + 1,
                width=int(width),
                height=int(height),
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=tuple(labels),
            )
        )
    report.num_examples = len(examples)
    report.num_instances = sum(len(ex.labels) for ex in examples)
    if log:
        logging.getLogger(__name__).info("%s", report.summary())
    return DetectionDataset(examples, class_names=sorted(names), exhaustive=True, report=report)


def _coordinate(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def voc_xml(example: Example) -> str:
    """One example as a Pascal VOC XML document (see the module docstring for coordinates)."""
    path = Path(os.path.abspath(example.image_path))
    objects = []
    for (x0, y0, x1, y1), label in zip(example.boxes.tolist(), example.labels, strict=True):
        coords = (x0 + 1, y0 + 1, x1, y1)
        fields = "".join(
            f"<{t}>{_coordinate(v)}</{t}>"
            for t, v in zip(("xmin", "ymin", "xmax", "ymax"), coords, strict=True)
        )
        objects.append(
            f"  <object>\n    <name>{escape(label)}</name>\n    <pose>Unspecified</pose>\n"
            f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n"
            f"    <bndbox>{fields}</bndbox>\n  </object>\n"
        )
    return (
        "<annotation>\n"
        f"  <folder>{escape(path.parent.name)}</folder>\n"
        f"  <filename>{escape(path.name)}</filename>\n"
        f"  <path>{escape(str(path))}</path>\n"
        f"  <size><width>{example.width}</width><height>{example.height}</height>"
        "<depth>3</depth></size>\n"
        "  <segmented>0</segmented>\n" + "".join(objects) + "</annotation>\n"
    )


def write_voc(annotations_dir: str | os.PathLike, examples: Sequence[Example]) -> Path:
    """Writes ``annotations_dir/<image stem>.xml`` for each example (atomically, each).

    Raises:
        ValueError: two examples' images share a stem (their XML files would collide).
    """
    folder = Path(annotations_dir)
    seen: dict[str, str] = {}
    for ex in examples:
        stem = Path(ex.image_path).stem
        if stem.lower() in seen:
            raise ValueError(
                f"{ex.image_path} and {seen[stem.lower()]} share the stem {stem!r}; "
                "VOC needs one XML name per image"
            )
        seen[stem.lower()] = ex.image_path
        with atomic_write(folder / f"{stem}.xml") as f:
            f.write(voc_xml(ex))
    return folder
