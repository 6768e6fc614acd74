"""One-shot (image-conditioned) detection evaluation: one exemplar box per category, then AP.

OWL-ViT can search for "more things like this box" instead of a text query (spec §4). The
protocol here measures that on a COCO-format dataset:

1. For each evaluated category, one exemplar: an annotated box of that category in a *support*
   set (images other than the evaluated ones), chosen by :func:`choose_exemplars`.
2. The exemplar becomes an image query (`owl.inference.queries.ImageQuery`, embedded by
   `Detector.embed_image_query`: the selected patch's class embedding).
3. Every held-out image is scored against the C exemplar embeddings exactly as text prompts are,
   by the same `owl.eval.evaluation.evaluate` (a one-"template" ensemble; top-k (box, category)
   pairs, no NMS).
4. Scored with the evaluated categories as the "novel" split; the result's
   ``AP_novel``/``AP50_novel`` are the AP and AP50 over exactly those categories. The other
   categories get no detections, which does not change the split numbers: AP is averaged per
   category.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.data.annotations import CategoryMap, EvalDataError, load_annotations
from owl.eval.evaluation import evaluate
from owl.eval.predict import find_images
from owl.eval.prompts import PromptEnsemble
from owl.inference.detector import Detector
from owl.inference.queries import ImageQuery

EXEMPLAR_TEMPLATE = "exemplar"  # the single "template" name recorded in run settings


@dataclasses.dataclass(frozen=True)
class Exemplar:
    """One support box standing for a category.

    Attributes:
        category_id: the category it stands for.
        image_id: the support image's id.
        path: the support image file.
        box_xyxy: (x0, y0, x1, y1) in the support image's pixels.
    """

    category_id: int
    image_id: int
    path: Path
    box_xyxy: tuple[float, float, float, float]

    def to_record(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "category_id": self.category_id,
            "image_id": self.image_id,
            "file": str(self.path),
            "box_xyxy": list(self.box_xyxy),
        }


def choose_exemplars(
    support: str | os.PathLike | Mapping[str, Any],
    images_dir: str | os.PathLike,
    category_ids: Sequence[int],
    *,
    min_side: float = 0.0,
) -> list[Exemplar]:
    """Picks one exemplar per category: its first box, in (image id, annotation id) order.

    The choice is deterministic and blind to any model. Crowd boxes and boxes whose shorter side
    is below ``min_side`` pixels are skipped.

    Args:
        support: the support set (COCO JSON path or dict).
        images_dir: folder of the support images.
        category_ids: the categories to find exemplars for.
        min_side: smallest allowed box side in pixels.

    Returns:
        One `Exemplar` per category, in the order of ``category_ids``.

    Raises:
        EvalDataError: a category with no usable box, or a support image file that is missing.
    """
    data = load_annotations(support)
    found, _ = find_images(data, images_dir)
    paths = {im.image_id: im.path for im in found}
    wanted = [int(c) for c in category_ids]
    first: dict[int, Exemplar] = {}
    anns = sorted(data.get("annotations", []), key=lambda a: (a["image_id"], a["id"]))
    for ann in anns:
        cid = int(ann["category_id"])
        if cid not in wanted or cid in first or ann.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if min(w, h) < min_side or min(w, h) <= 0:
            continue
        if ann["image_id"] not in paths:
            raise EvalDataError(
                f"support image {ann['image_id']} is not in {images_dir}; generate the support "
                "set again or point to its images folder"
            )
        first[cid] = Exemplar(
            cid, int(ann["image_id"]), paths[ann["image_id"]], (x, y, x + w, y + h)
        )
    missing = [c for c in wanted if c not in first]
    if missing:
        raise EvalDataError(
            f"the support set has no usable box for categories {missing[:10]}; use a larger "
            "support set"
        )
    return [first[c] for c in wanted]


def exemplar_embeddings(
    detector: Detector, exemplars: Sequence[Exemplar], *, method: str = "auto"
) -> np.ndarray:
    """The image-query embedding [C, E] of each exemplar (`Detector.embed_image_query`)."""
    rows = [
        detector.embed_image_query(ImageQuery(((e.path, e.box_xyxy),), method=method))
        for e in exemplars
    ]
    return np.stack(rows).astype(np.float32)


def evaluate_one_shot(
    detector: Detector,
    annotations: str | os.PathLike | Mapping[str, Any],
    images_dir: str | os.PathLike,
    exemplars: Sequence[Exemplar],
    output_dir: str | os.PathLike,
    *,
    top_k: int = 300,
    method: str = "auto",
    max_images: int = 0,
) -> dict[str, Any]:
    """One-shot AP of the exemplars' categories on a dataset.

    Args:
        detector: the model (its batch size and resize method are used as for text prompts).
        annotations: the evaluated dataset, every category annotated (COCO JSON path or dict).
        images_dir: its images.
        exemplars: from :func:`choose_exemplars` (on images other than these).
        output_dir: gets the prediction log and ``detections.json`` (`owl.eval.predict`).
        top_k: (box, category) pairs kept per image.
        method: exemplar token selection ("auto", "iou", "objectness").
        max_images: evaluate only the first this-many images by id (0: all).

    Returns:
        {"AP", "AP50"} over the exemplars' categories, "per_category" (name -> {id, AP, AP50}),
        "exemplars" (their records), "num_images".

    Raises:
        EvalDataError: an exemplar category that the annotations lack, or no image found.
    """
    data = load_annotations(annotations)
    all_categories = CategoryMap.from_annotations(data)
    ids = [e.category_id for e in exemplars]
    if len(set(ids)) != len(ids):
        raise EvalDataError("one exemplar per category: some category has several")
    unknown = sorted(set(ids) - set(all_categories.ids))
    if unknown:
        raise EvalDataError(f"exemplar categories not in the annotations: {unknown[:10]}")
    order = np.argsort(ids)
    ordered = [exemplars[i] for i in order]
    categories = CategoryMap(
        tuple(e.category_id for e in ordered),
        tuple(all_categories.name_of(e.category_id) for e in ordered),
    )
    embeddings = exemplar_embeddings(detector, ordered, method=method)
    ensemble = PromptEnsemble(
        templates=(EXEMPLAR_TEMPLATE,),
        categories=categories,
        prompts=(categories.names,),
        embeddings=embeddings[None],
        long_prompts=(),
        policy="official",
    )
    records = json.dumps([e.to_record() for e in ordered], sort_keys=True)
    result = evaluate(
        detector, data, images_dir, output_dir, ensemble=ensemble,
        prompts=f"one-shot {method} sha256:{hashlib.sha256(records.encode()).hexdigest()}",
        top_k=top_k, max_images=max_images or None, overwrite=True,
        novel_category_ids=categories.ids,
    )  # fmt: skip
    if result.metrics is None:
        raise EvalDataError(f"no image of the annotations in {images_dir} could be read")
    metrics = result.metrics
    stats = metrics["stats"]
    wanted = set(categories.ids)
    per_category = {
        name: {"id": rec["id"], "AP": rec["AP"], "AP50": rec["AP50"]}
        for name, rec in metrics["per_category"].items()
        if rec["id"] in wanted
    }
    return {
        "AP": float(stats["AP_novel"]),
        "AP50": float(stats["AP50_novel"]),
        "per_category": per_category,
        "exemplars": [e.to_record() for e in ordered],
        "num_images": len(result.run.predicted_ids),
    }


__all__ = ["Exemplar", "choose_exemplars", "evaluate_one_shot", "exemplar_embeddings"]
