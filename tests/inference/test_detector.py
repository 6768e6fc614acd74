"""Tests for owl/inference/detector.py: box mapping, exemplar queries, caches, batching, errors.

Box mapping and exemplar selection are checked against hand-computed values by making the tiny
model's `embed_image` return chosen `pred_boxes` (the rest of its output stays real). Scores are
checked against the model's full forward pass (`predict_raw`), an independent path. Only the
tiny OWLv2 fixture is used, to keep the file fast: the v1 selection rule ("iou") is chosen per
query, and the v1/v2 image-guided parity with transformers lives in
tests/models/test_image_guided_parity.py.
"""

from __future__ import annotations

import shutil
import threading

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from owl.inference.detector import Detector, bucket
from owl.inference.queries import EmbeddingQuery, ImageQuery, TextQuery
from owl.ops.boxes import box_iou
from owl.ops.image import ImageLoadError, preprocess
from owl.text.tokenizer import get_tokenizer

NUM_PATCHES = 16  # tiny configs: 128 px, patch 32 -> 4 x 4
FAR = (0.9, 0.9, 0.05, 0.05)  # a small box in the bottom-right corner


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_png(path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def boxes_with(rows: dict[int, tuple[float, ...]]) -> np.ndarray:
    """[16, 4] cxcywh: FAR everywhere except the given rows."""
    boxes = np.tile(np.array(FAR, np.float32), (NUM_PATCHES, 1))
    for i, box in rows.items():
        boxes[i] = box
    return boxes


def patch_boxes(monkeypatch, model, boxes: np.ndarray, objectness: np.ndarray | None = None):
    """Makes `model.embed_image` return `boxes` (and objectness) for every image of the batch."""
    real = model.embed_image

    def fake(pixels, **kwargs):
        out = dict(real(pixels, **kwargs))
        b = pixels.shape[0]
        out["pred_boxes"] = jnp.broadcast_to(jnp.asarray(boxes), (b, *boxes.shape))
        if objectness is not None:
            out["objectness_logits"] = jnp.broadcast_to(
                jnp.asarray(objectness), (b, len(objectness))
            )
        return out

    monkeypatch.setattr(model, "embed_image", fake)


def record_batches(monkeypatch, model) -> list[int]:
    """Records the batch size of every `embed_image` call."""
    real, sizes = model.embed_image, []

    def spy(pixels, **kwargs):
        sizes.append(pixels.shape[0])
        return real(pixels, **kwargs)

    monkeypatch.setattr(model, "embed_image", spy)
    return sizes


def tokens(texts: list[str]) -> np.ndarray:
    """Token ids padded with all-zero rows to 8 (the shape the Detector compiles, reused here)."""
    ids = get_tokenizer().tokenize(texts)
    return np.concatenate([ids, np.zeros((8 - len(ids), ids.shape[1]), ids.dtype)])


def by_box(det) -> dict[int, np.ndarray]:
    return dict(zip(det.data["box_index"].tolist(), det.xyxy, strict=False))


# --------------------------------------------------------------------------------------------------
# Boxes back to original pixels


MODEL_BOXES = {
    0: (0.25, 0.25, 0.1, 0.2),  # square xyxy (0.2, 0.15, 0.3, 0.35)
    1: (0.5, 0.5, 0.2, 0.2),  # (0.4, 0.4, 0.6, 0.6)
    2: (0.9, 0.1, 0.4, 0.1),  # (0.7, 0.05, 1.1, 0.15): past the right edge
}


@pytest.mark.parametrize(
    "height, width, expected",
    [
        # Portrait 100 wide x 200 high: side 200; x clipped to [0, 100], y to [0, 200].
        (200, 100, {0: (40, 30, 60, 70), 1: (80, 80, 100, 120), 2: (100, 10, 100, 30)}),
        # Landscape 200 wide x 100 high: side 200; y clipped to [0, 100].
        (100, 200, {0: (40, 30, 60, 70), 1: (80, 80, 120, 100), 2: (140, 10, 200, 30)}),
        # Square 150: side 150.
        (150, 150, {0: (30, 22.5, 45, 52.5), 1: (60, 60, 90, 90), 2: (105, 7.5, 150, 22.5)}),
    ],
    ids=["portrait", "landscape", "square"],
)
def test_boxes_map_back_to_original_pixels(monkeypatch, tiny_owlv2, height, width, expected):
    patch_boxes(monkeypatch, tiny_owlv2, boxes_with(MODEL_BOXES))
    [det] = Detector(tiny_owlv2).detect(
        image(height, width), "cat", threshold=0.0, max_detections=None
    )
    assert len(det) == NUM_PATCHES  # every box, its best (only) query
    assert det.metadata == {"path": None, "width": width, "height": height}
    got = by_box(det)
    for i, xyxy in expected.items():
        np.testing.assert_allclose(got[i], xyxy, atol=1e-3)


# --------------------------------------------------------------------------------------------------
# Exemplar (image) queries


def test_query_box_in_pixels_selects_the_matching_token(monkeypatch, tiny_owlv2):
    # Portrait 100 x 200: box (20, 40, 60, 120) px / 200 = xyxy (0.1, 0.2, 0.3, 0.6), i.e. cxcywh
    # (0.2, 0.4, 0.2, 0.4). Token 5 predicts exactly that; token 3 (half its height, IoU 0.5) is
    # below 0.8 x 1.0; the rest (FAR) do not overlap.
    patch_boxes(
        monkeypatch, tiny_owlv2, boxes_with({5: (0.2, 0.4, 0.2, 0.4), 3: (0.2, 0.4, 0.2, 0.2)})
    )
    det = Detector(tiny_owlv2)
    img = image(200, 100)
    qs = det.prepare_queries(ImageQuery(((img, (20, 40, 60, 120)),), method="iou"))
    np.testing.assert_array_equal(qs.embeddings[0], det.encode_image(img).class_embeddings[5])
    assert qs.labels == ("image query 1",) and qs.has_image_queries


def test_no_box_with_iou_selection_means_the_image_not_the_padded_square(monkeypatch, tiny_owlv2):
    # Landscape 200 x 100: the image covers the top half of the padded square, cxcywh
    # (0.5, 0.25, 1, 0.5) = token 7. Token 2 is the whole square (IoU 0.5 with the image).
    patch_boxes(
        monkeypatch, tiny_owlv2, boxes_with({7: (0.5, 0.25, 1.0, 0.5), 2: (0.5, 0.5, 1.0, 1.0)})
    )
    det = Detector(tiny_owlv2)
    img = image(100, 200)
    qs = det.prepare_queries(ImageQuery(((img, None),), label="whole", method="iou"))
    np.testing.assert_array_equal(qs.embeddings[0], det.encode_image(img).class_embeddings[7])


def test_objectness_selection_on_v2(monkeypatch, tiny_owlv2):
    objectness = np.zeros(NUM_PATCHES, np.float32)
    objectness[[1, 4, 9]] = [3.0, 2.0, 5.0]
    # Box (0, 0, 64, 64) on a 128 square = cxcywh (0.25, 0.25, 0.5, 0.5): tokens 1 and 4 match
    # it; token 9 (highest objectness) is FAR.
    boxes = boxes_with({1: (0.25, 0.25, 0.5, 0.5), 4: (0.25, 0.25, 0.5, 0.45)})
    patch_boxes(monkeypatch, tiny_owlv2, boxes, objectness)
    det = Detector(tiny_owlv2)
    img = image(128, 128)
    emb = det.encode_image(img).class_embeddings
    with_box = det.prepare_queries(ImageQuery(((img, (0, 0, 64, 64)),)))  # auto -> objectness
    np.testing.assert_array_equal(with_box.embeddings[0], emb[1])
    no_box = det.prepare_queries(ImageQuery(((img, None),)))
    np.testing.assert_array_equal(no_box.embeddings[0], emb[9])
    by_iou = det.prepare_queries(ImageQuery(((img, (0, 0, 64, 64)),), method="iou"))
    np.testing.assert_array_equal(by_iou.embeddings[0], emb[[1, 4]][_least_typical(emb, [1, 4])])


def _least_typical(emb: np.ndarray, candidates: list[int]) -> int:
    return int(np.argmin(emb[candidates] @ emb.mean(axis=0)))


def test_several_exemplars_are_averaged(tiny_owlv2):
    det = Detector(tiny_owlv2)
    a, b = image(100, 140, seed=1), image(90, 90, seed=2)
    ex_a, ex_b = (a, (10, 10, 80, 60)), (b, (0, 20, 50, 90))
    single_a = det.prepare_queries(ImageQuery((ex_a,))).embeddings[0]
    single_b = det.prepare_queries(ImageQuery((ex_b,))).embeddings[0]
    both = det.prepare_queries(ImageQuery((ex_a, ex_b), label="pair"))
    np.testing.assert_allclose(both.embeddings[0], (single_a + single_b) / 2, rtol=1e-6, atol=1e-7)
    assert not np.allclose(single_a, single_b)
    assert det.image_encoder_calls == 2


def test_mixed_text_and_image_queries_in_one_call(tiny_owlv2):
    det = Detector(tiny_owlv2)
    exemplar, target = image(128, 128, seed=3), image(128, 128, seed=4)
    qs = det.prepare_queries(
        ["a cat", ImageQuery(((exemplar, None),), label="thing", threshold=0.2)]
    )
    assert qs.labels == ("a cat", "thing") and qs.thresholds == (None, 0.2) and qs.has_image_queries
    np.testing.assert_array_equal(qs.embeddings[0], det.embed_texts(["a cat"])[0])

    # Scores against the full forward pass (text) and the class head (image query).
    pixels, _ = preprocess(target, image_size=128, pad_value=tiny_owlv2.config.pad_value)
    raw = tiny_owlv2.predict_raw(pixels[None], tokens(["a cat"]))
    logits = det.score(det.encode_image(target), qs)
    np.testing.assert_allclose(logits[:, 0], raw["logits"][0, :, 0], atol=1e-4)
    feats = tiny_owlv2.embed_image(pixels[None])["image_features"]
    head = tiny_owlv2.class_head(feats, qs.embeddings[1][None, None])["pred_logits"]
    np.testing.assert_allclose(logits[:, 1], np.asarray(head)[0, :, 0], atol=1e-4)

    # Image queries turn class-wise NMS (IoU 0.3) on by default.
    [plain] = det.detect(target, qs, threshold=0.0, nms=False, max_detections=None)
    [nms] = det.detect(target, qs, threshold=0.0, max_detections=None)
    best = logits.argmax(axis=1)  # per-box best query, which must pass its own threshold
    passing = 1 / (1 + np.exp(-logits[np.arange(NUM_PATCHES), best])) >= np.array([0.0, 0.2])[best]
    assert plain.data["box_index"].tolist() == sorted(
        np.flatnonzero(passing).tolist(), key=lambda i: -logits[i, best[i]]
    )
    assert set(nms.data["box_index"].tolist()) <= set(plain.data["box_index"].tolist())
    for c in (0, 1):
        boxes = nms.xyxy[nms.class_id == c]
        iou = box_iou(boxes, boxes)[0] - np.eye(len(boxes))
        assert (iou <= 0.3 + 1e-6).all()


def test_duplicate_text_queries_are_merged_with_a_note(tiny_owlv2):
    det = Detector(tiny_owlv2)
    qs = det.prepare_queries(["cat", "Cat ", "dog", TextQuery("cat", threshold=0.5)])
    assert qs.labels == ("cat", "dog", "cat")  # a different threshold is a different query
    assert qs.thresholds == (None, None, 0.5)
    assert qs.notes == ("duplicate query 'Cat ' merged with the same query at query_index 0",)
    assert det.text_encoder_calls == 1


def test_bad_queries_raise_clear_errors(tiny_owlv2, tmp_path):
    det = Detector(tiny_owlv2)
    path = write_png(tmp_path / "tall.png", image(200, 100))
    with pytest.raises(ValueError, match="no queries given"):
        det.prepare_queries([])
    with pytest.raises(ValueError, match="query 2 is empty; give some text"):
        det.prepare_queries(["cat", "  "])
    with pytest.raises(
        ValueError, match=r"lies outside \S*tall.png \(100x200 px\); give a box inside"
    ):
        det.prepare_queries(ImageQuery(((path, (0, 0, 101, 50)),)))
    with pytest.raises(ValueError, match=r"lies outside the query image \(100x200 px\)"):
        det.prepare_queries(ImageQuery(((image(200, 100), (-1, 0, 50, 50)),)))
    with pytest.raises(
        ValueError, match=r"query box \(10, 10, 10, 20\) on \S*tall.png has zero area"
    ):
        det.prepare_queries(ImageQuery(((path, (10, 10, 10, 20)),)))
    with pytest.raises(ValueError, match=r"is inverted \(y1 < y0\); give X0,Y0,X1,Y1 as left, top"):
        det.prepare_queries(ImageQuery(((path, (10, 30, 20, 5)),)))
    with pytest.raises(ValueError, match=r"is inverted \(x1 < x0 and y1 < y0\)"):
        det.prepare_queries(ImageQuery(((path, (20, 30, 10, 5)),)))
    with pytest.raises(ValueError, match=r"has shape \(3,\), this model needs \(32,\)"):
        det.prepare_queries(EmbeddingQuery(np.zeros(3), "x"))
    with pytest.raises(ImageLoadError, match="no such file"):
        det.prepare_queries(ImageQuery(((tmp_path / "missing.png", None),)))


# --------------------------------------------------------------------------------------------------
# Caches and batching


def test_many_query_sets_on_one_image_cost_one_encoding(tiny_owlv2):
    det = Detector(tiny_owlv2)
    img = image(120, 90, seed=5)
    first = det.detect(img, "cat", threshold=0.0)[0]
    det.detect(img, ["dog", "bird"])
    det.detect(img, EmbeddingQuery(np.ones(32, np.float32), "ones"))
    again = det.detect(img, "cat", threshold=0.0)[0]
    assert det.image_encoder_calls == 1
    assert first == again


def test_same_content_under_another_path_hits_the_cache(monkeypatch, tiny_owlv2, tmp_path):
    sizes = record_batches(monkeypatch, tiny_owlv2)
    det = Detector(tiny_owlv2)
    a = write_png(tmp_path / "a.png", image(60, 80, seed=6))
    b = str(shutil.copy(a, tmp_path / "b.png"))
    [da] = det.detect(a, "cat")
    [db] = det.detect(b, "cat")
    assert det.image_encoder_calls == 1 and sizes == [1]
    assert da.metadata["path"] == a and db.metadata["path"] == b
    # The same new content twice in one call: one slot in one batch.
    c = write_png(tmp_path / "c.png", image(60, 80, seed=7))
    d = str(shutil.copy(c, tmp_path / "d.png"))
    encs = det.encode_images([c, d])
    assert det.image_encoder_calls == 2 and sizes == [1, 1]
    assert [e.meta.path for e in encs] == [c, d]
    np.testing.assert_array_equal(encs[0].class_embeddings, encs[1].class_embeddings)


def test_batches_are_padded_to_power_of_two_buckets(monkeypatch, tiny_owlv2):
    assert [bucket(n) for n in (0, 1, 2, 3, 4, 5, 9)] == [1, 1, 2, 4, 4, 8, 16]
    assert bucket(3, minimum=8) == 8
    sizes = record_batches(monkeypatch, tiny_owlv2)
    det = Detector(tiny_owlv2, batch_size=4)
    imgs = [image(64 + 8 * i, 64, seed=10 + i) for i in range(6)]
    det.encode_images(imgs[:1])
    det.encode_images(imgs[1:3])
    three = det.encode_images(imgs[3:6])
    assert sizes == [1, 2, 4] and det.image_encoder_calls == 3
    # Padding does not leak into real images: each equals its encoding alone.
    alone = Detector(tiny_owlv2).encode_image(imgs[5])
    np.testing.assert_allclose(three[2].class_embeddings, alone.class_embeddings, atol=1e-5)
    np.testing.assert_allclose(three[2].pred_boxes, alone.pred_boxes, atol=1e-6)

    sizes.clear()
    small = Detector(tiny_owlv2, batch_size=2)
    results = list(small.detect_each(imgs[:3], "cat"))
    assert sizes == [2, 1] and small.image_encoder_calls == 2 and len(results) == 3


def test_text_queries_are_embedded_once(tiny_owlv2):
    det = Detector(tiny_owlv2)
    first = det.embed_texts(["cat", "dog"])
    det.prepare_queries(["dog", "cat"])
    assert det.text_encoder_calls == 1
    again = det.embed_texts(["bird", "cat"])
    assert det.text_encoder_calls == 2
    np.testing.assert_array_equal(again[1], first[0])
    direct = np.asarray(tiny_owlv2.embed_text(tokens(["cat", "bird"])))[:2]
    np.testing.assert_allclose(again[[1, 0]], direct, atol=1e-5)
    # A text cache smaller than one call's texts still returns every embedding.
    tiny_cache = Detector(tiny_owlv2, text_cache_size=1)
    np.testing.assert_allclose(
        tiny_cache.embed_texts(["bird", "cat", "bird"]), direct[[1, 0, 1]], atol=1e-5
    )
    assert tiny_cache.text_encoder_calls == 1


# --------------------------------------------------------------------------------------------------
# Many images, bad ones among them


def test_bad_image_in_detect_each_yields_an_error_and_the_others_go_on(tiny_owlv2, tmp_path):
    det = Detector(tiny_owlv2, batch_size=2)
    good = write_png(tmp_path / "good.png", image(70, 50, seed=8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    missing = str(tmp_path / "missing.png")
    seen = []
    results = list(
        det.detect_each(
            [image(64, 64, seed=9), missing, good, str(broken)],
            "cat",
            threshold=0.0,
            max_detections=None,
            on_result=seen.append,
        )
    )
    assert [r.source for r in results] == ["<array>", missing, good, str(broken)]
    assert seen == results
    assert results[1].detections is None and "no such file" in results[1].error
    assert results[3].detections is None and "not an image file" in results[3].error
    for r in (results[0], results[2]):
        assert r.error is None and len(r.detections) == NUM_PATCHES
    # OWLv2 detections carry sigmoid(objectness) of their box.
    enc = det.encode_image(good)
    d = results[2].detections
    expected = 1 / (1 + np.exp(-enc.objectness_logits[d.data["box_index"]].astype(np.float64)))
    np.testing.assert_allclose(d.data["objectness"], expected, rtol=1e-6)
    with pytest.raises(ImageLoadError, match="missing.png: no such file"):
        det.detect([good, missing], "cat")


def test_detector_loads_a_model_file(tiny_model_file, tiny_owlv2):
    det = Detector(tiny_model_file)
    assert det.model.config == tiny_owlv2.config
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        Detector(tiny_owlv2, batch_size=0)


def test_next_batch_is_preprocessed_while_the_model_runs(monkeypatch, tiny_owlv2, tmp_path):
    paths = [write_png(tmp_path / f"{i}.png", image(40, 30 + i, seed=i)) for i in range(4)]
    det = Detector(tiny_owlv2, batch_size=2)
    second_batch_started = threading.Event()
    prepare, encode = det._prepare, det._encode_batch
    overlapped = []

    def recording_prepare(images):
        if images[0] == paths[2]:
            second_batch_started.set()
        return prepare(images)

    def slow_encode(pixels, metas):
        if metas[0].path == paths[0]:  # the first batch waits until the second is being read
            overlapped.append(second_batch_started.wait(timeout=10))
        return encode(pixels, metas)

    monkeypatch.setattr(det, "_prepare", recording_prepare)
    monkeypatch.setattr(det, "_encode_batch", slow_encode)
    results = list(det.detect_each(paths, ["a cat"], threshold=0.0))
    assert overlapped == [True]
    assert [r.source for r in results] == paths  # input order kept
    assert det.image_encoder_calls == 2
