"""Choosing the query embedding for an exemplar box (image-conditioned, one-shot detection).

OWL's class head compares patch embeddings; an exemplar box becomes a query by picking one patch
of the exemplar image whose embedding stands for the boxed object. Two selection rules:

  * "iou" — the official notebook heuristic for v1 (scenic `inference.Model.embed_image_query`,
    spec §4): candidates are the predicted boxes with IoU >= 0.8 x the best IoU with the given
    box; if no box overlaps at all, GIoU is used with threshold 1.2 x min(max GIoU, 0). Among the
    candidates the one whose (unnormalised) class embedding has the lowest dot product with the
    image's mean class embedding wins: with one-to-one matching only one token per object is
    foreground-like, the rest look like background.
  * "objectness" — OWLv2 (maintainers' advice, scenic issue #989; transformers' OWLv2
    image-guided detection): the same candidates, then the highest objectness logit. With no box
    (None), the most object-like token of the whole image.

All functions are NumPy on one image's cached outputs; the returned embedding is unnormalised,
as the class head normalises queries itself.
"""

from __future__ import annotations

import numpy as np

from owl.ops.boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou

IOU_FRACTION = 0.8  # candidates: IoU >= 0.8 x max IoU (official)
GIOU_FACTOR = 1.2  # fallback when nothing overlaps: GIoU >= 1.2 x min(max GIoU, 0) (official)


def candidate_mask(box_cxcywh: np.ndarray, pred_boxes: np.ndarray) -> np.ndarray:
    """Predicted boxes that fit the query box, by the official adaptive IoU rule.

    Args:
      box_cxcywh: [4] query box, normalised to the padded square.
      pred_boxes: [P, 4] predicted boxes (cxcywh, same frame).
    Returns:
      bool [P], at least one True.
    """
    query = cxcywh_to_xyxy(np.asarray(box_cxcywh, np.float64)[None])
    preds = cxcywh_to_xyxy(np.asarray(pred_boxes, np.float64))
    iou = box_iou(query, preds)[0][0]
    if iou.max() > 0:
        return iou >= IOU_FRACTION * iou.max()
    giou = generalized_box_iou(query, preds)[0]
    return giou >= GIOU_FACTOR * min(giou.max(), 0.0)


def select_by_iou(
    box_cxcywh: np.ndarray | None, pred_boxes: np.ndarray, class_embeddings: np.ndarray
) -> int:
    """Index of the official v1 choice: the candidate least similar to the mean embedding.

    Args:
      box_cxcywh: [4] query box (None: the whole padded square, as transformers' v1 does).
      pred_boxes: [P, 4]; class_embeddings: [P, E] unnormalised.
    """
    if box_cxcywh is None:
        box_cxcywh = np.array([0.5, 0.5, 1.0, 1.0])
    candidates = np.flatnonzero(candidate_mask(box_cxcywh, pred_boxes))
    emb = np.asarray(class_embeddings, np.float32)
    similarity = emb[candidates] @ emb.mean(axis=0)
    return int(candidates[np.argmin(similarity)])  # argmin: first candidate on ties


def select_by_objectness(
    box_cxcywh: np.ndarray | None, pred_boxes: np.ndarray, objectness_logits: np.ndarray
) -> int:
    """Index of the most object-like candidate (OWLv2); None box: the whole image's argmax."""
    objectness = np.asarray(objectness_logits, np.float32)
    if box_cxcywh is None:
        return int(np.argmax(objectness))
    candidates = np.flatnonzero(candidate_mask(box_cxcywh, pred_boxes))
    return int(candidates[np.argmax(objectness[candidates])])


def resolve_method(method: str, has_objectness: bool) -> str:
    """Resolves "auto" to "objectness" for models with the head, else "iou"; checks availability."""
    if method == "auto":
        return "objectness" if has_objectness else "iou"
    if method == "objectness" and not has_objectness:
        raise ValueError(
            "objectness selection needs an OWLv2 model (this model has no objectness head); "
            "use method 'iou'"
        )
    return method
