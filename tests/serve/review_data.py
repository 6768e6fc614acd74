"""A hand-written three-image data set in COCO, YOLO and Pascal VOC form, for the review tests.

Written as text here (not by owl's writers), so what the tests expect never comes from the code
under test. Images are 128x128 (copies of examples/shapes/images). Boxes are xyxy pixel edges on
a grid of 8 px, so every format holds them exactly (YOLO: multiples of 1/32).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

SHAPES = Path(__file__).resolve().parents[2] / "examples/shapes/images"
SIZE = 128
CLASSES = ["red circle", "blue square", "green triangle"]
#: image name -> [(box xyxy, class, score)]; image "b" has the lowest score, so it is shown first.
BOXES = {
    "a.png": [
        ([8, 8, 40, 40], "red circle", 0.9),
        ([48, 48, 96, 104], "blue square", 0.3),
        ([64, 8, 120, 32], "green triangle", 0.6),
    ],
    "b.png": [([16, 32, 64, 72], "red circle", 0.2)],
    "c.png": [],
}


def _images(folder: Path) -> None:
    folder.mkdir(parents=True)
    for i, name in enumerate(BOXES):
        shutil.copyfile(SHAPES / f"00000{i}.png", folder / name)


def make_dataset(
    root: Path, fmt: str, boxes: dict | None = None, classes: list[str] | None = None
) -> Path:
    """Writes the data set (or `boxes` and `classes` in its shape) into `root` in `fmt`; returns
    the path to give `owl serve --review`: COCO annotations.json, YOLO data.yaml, VOC the folder."""
    boxes = BOXES if boxes is None else boxes
    classes = CLASSES if classes is None else classes
    if fmt == "coco":
        _images(root / "images")
        images, annotations = [], []
        for i, (name, items) in enumerate(boxes.items()):
            images.append({"id": i + 1, "file_name": name, "width": SIZE, "height": SIZE})
            for (x0, y0, x1, y1), label, score in items:
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": classes.index(label) + 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                        "score": score,
                    }
                )
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(classes)]
        path = root / "annotations.json"
        data = {"images": images, "annotations": annotations, "categories": categories}
        path.write_text(json.dumps(data))
        return path
    if fmt == "yolo":
        _images(root / "images")
        (root / "labels").mkdir()
        for name, items in boxes.items():
            if not items:
                continue  # no label file: an image without objects
            lines = [
                f"{classes.index(label)} {(x0 + x1) / 2 / SIZE} {(y0 + y1) / 2 / SIZE} "
                f"{(x1 - x0) / SIZE} {(y1 - y0) / SIZE}\n"
                for (x0, y0, x1, y1), label, _ in items
            ]
            (root / "labels" / name.replace(".png", ".txt")).write_text("".join(lines))
        path = root / "data.yaml"
        path.write_text(f"train: images\nval: images\nnames: [{', '.join(classes)}]\n")
        return path
    assert fmt == "voc"
    _images(root / "JPEGImages")
    (root / "Annotations").mkdir()
    for name, items in boxes.items():
        objects = "".join(
            f"<object><name>{label}</name><difficult>0</difficult><bndbox><xmin>{x0 + 1}</xmin>"
            f"<ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for (x0, y0, x1, y1), label, _ in items
        )
        (root / "Annotations" / name.replace(".png", ".xml")).write_text(
            f"<annotation><filename>{name}</filename><size><width>{SIZE}</width>"
            f"<height>{SIZE}</height><depth>3</depth></size>{objects}</annotation>\n"
        )
    return root


def read_back(root: Path, fmt: str) -> dict[str, list[tuple[list[float], str]]]:
    """The data set as supervision reads it: image name -> sorted [(xyxy, class name)]."""
    import supervision as sv

    if fmt == "coco":
        ds = sv.DetectionDataset.from_coco(str(root / "images"), str(root / "annotations.json"))
    elif fmt == "yolo":
        ds = sv.DetectionDataset.from_yolo(
            str(root / "images"), str(root / "labels"), str(root / "data.yaml")
        )
    else:
        ds = sv.DetectionDataset.from_pascal_voc(
            str(root / "JPEGImages"), str(root / "Annotations")
        )
    out = {}
    for path, _, dets in ds:
        found = [
            ([round(float(v), 3) for v in box], ds.classes[int(c)])
            for box, c in zip(dets.xyxy, dets.class_id, strict=True)
        ]
        out[Path(path).name] = sorted(found)
    return out
