"""Image-guided (one-shot) detection: owl against transformers' `image_guided_detection`.

transformers picks the query token of each query image itself: for OWL-ViT with the official IoU
heuristic against the whole image box [0, 0, 1, 1], for OWLv2 by the highest objectness. owl does
the same with `select_by_iou` (box None or the full square) and `select_by_objectness` (box None)
on its own `embed_image` outputs, then scores the target image with its class head. Square
images only, so "the whole image" and "the whole padded square" coincide. Tolerances as for the
text-query parity: logits <= 1e-4, boxes <= 2e-3.
"""

from __future__ import annotations

import numpy as np
import pytest

import owl
from owl.inference.detector import Detector
from owl.inference.image_query import candidate_mask, select_by_iou, select_by_objectness
from owl.inference.queries import ImageQuery
from owl.models.configs import get_variant
from owl.ops.image import preprocess
from owl.testing import build_transformers_detector, save_transformers_detector

LOGIT_TOL = 1e-4
BOX_TOL = 2e-3


def _nchw(pixels: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))


def transformers_image_guided(hf, target: np.ndarray, query: np.ndarray) -> dict[str, np.ndarray]:
    """transformers' image-guided outputs plus the query token its `embed_image_query` picks."""
    import torch

    with torch.no_grad():
        out = hf.image_guided_detection(pixel_values=_nchw(target), query_pixel_values=_nchw(query))
        qmap = hf.image_embedder(pixel_values=_nchw(query))[0]
        b, h, w, d = qmap.shape
        query_embeds, indices, _ = hf.embed_image_query(qmap.reshape(b, h * w, d), qmap)
    return {
        "logits": out.logits.numpy(),
        "target_pred_boxes": out.target_pred_boxes.numpy(),
        "query_embeds": query_embeds.numpy().reshape(b, -1),
        "indices": indices.numpy().reshape(b),
    }


@pytest.fixture(scope="module", params=["tiny-owlvit", "tiny-owlv2"])
def pair(request, tmp_path_factory):
    """(transformers model, owl model loaded from its saved directory)."""
    hf = build_transformers_detector(get_variant(request.param), seed=5)
    directory = save_transformers_detector(hf, tmp_path_factory.mktemp(request.param))
    return hf, owl.load(directory)


def our_selection(model, query: np.ndarray, whole_box: bool) -> list[int]:
    enc = {k: np.asarray(v) for k, v in model.embed_image(query).items()}
    picked = []
    for i in range(len(query)):
        if model.config.objectness:
            picked.append(
                select_by_objectness(None, enc["pred_boxes"][i], enc["objectness_logits"][i])
            )
        else:
            box = np.array([0.5, 0.5, 1.0, 1.0]) if whole_box else None
            picked.append(select_by_iou(box, enc["pred_boxes"][i], enc["class_embeddings"][i]))
    return picked


@pytest.mark.parametrize("whole_box", [False, True], ids=["box-None", "box-full-square"])
def test_image_guided_logits_and_boxes_match_transformers(pair, whole_box):
    hf, model = pair
    size = model.config.image_size
    rng = np.random.default_rng(11)
    query = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    target = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    theirs = transformers_image_guided(hf, target, query)

    indices = our_selection(model, query, whole_box)
    assert indices == theirs["indices"].tolist()
    if not model.config.objectness:  # the IoU heuristic really chooses among several tokens
        boxes = np.asarray(model.embed_image(query)["pred_boxes"])
        counts = [int(candidate_mask(np.array([0.5, 0.5, 1.0, 1.0]), b).sum()) for b in boxes]
        assert max(counts) > 1, counts

    query_emb = np.asarray(model.embed_image(query)["class_embeddings"])[np.arange(2), indices]
    np.testing.assert_allclose(query_emb, theirs["query_embeds"], atol=1e-4)
    target_out = model.embed_image(target)
    logits = np.asarray(
        model.class_head(target_out["image_features"], query_emb[:, None, :])["pred_logits"]
    )
    assert logits.shape == theirs["logits"].shape
    assert np.abs(logits - theirs["logits"]).max() <= LOGIT_TOL
    boxes = np.asarray(target_out["pred_boxes"])
    assert np.abs(boxes - theirs["target_pred_boxes"]).max() <= BOX_TOL


def test_detector_image_query_matches_transformers_end_to_end(pair):
    """The Detector's exemplar query and its scores equal transformers' on the same pixels."""
    hf, model = pair
    size = model.config.image_size
    rng = np.random.default_rng(12)
    query_img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    target_img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    c = model.config
    query_px, _ = preprocess(query_img, image_size=size, pad_value=c.pad_value)
    target_px, _ = preprocess(target_img, image_size=size, pad_value=c.pad_value)
    theirs = transformers_image_guided(hf, target_px[None], query_px[None])

    det = Detector(model)
    for box in (None, (0, 0, size, size)):
        qs = det.prepare_queries(ImageQuery(((query_img, box),), label="thing"))
        np.testing.assert_allclose(qs.embeddings[0], theirs["query_embeds"][0], atol=1e-4)
        logits = det.score(det.encode_image(target_img), qs)
        assert np.abs(logits - theirs["logits"][0]).max() <= LOGIT_TOL
    assert det.image_encoder_calls == 2  # the query image once, the target once
