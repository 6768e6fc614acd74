"""One-shot evaluation: exemplar choice, and AP through the real Detector, predict and metrics code.

The model is a stub with hand-set outputs (`OwlModel.embed_image` overridden): patch 0 always
predicts box A with embedding e1, patch 1 box B with e2 (orthogonal), the rest far-off boxes with
small embeddings. So an exemplar drawn on box A must select patch 0 (official IoU rule) and
retrieve A everywhere: AP50 1 when the held-out images have category 1 at A, 0 when at B (with
top-2 pairs per image, only the confident ones are kept).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from owl.data.annotations import EvalDataError
from owl.eval.one_shot import choose_exemplars, evaluate_one_shot, exemplar_embeddings
from owl.inference.detector import Detector
from owl.models.configs import ModelConfig
from owl.models.model import OwlModel

SIZE = 32  # image side; patch 16 -> 4 patches
BOX_A = (2.0, 2.0, 14.0, 14.0)  # xyxy pixels
BOX_B = (18.0, 18.0, 30.0, 30.0)


def _cxcywh(box):
    x0, y0, x1, y1 = (v / SIZE for v in box)
    return [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]


class StubModel(OwlModel):
    """Fixed outputs for every image (see the module docstring)."""

    def __init__(self) -> None:
        self.config = ModelConfig(
            family="owlvit", image_size=SIZE, patch_size=16, vision_width=8, vision_layers=1,
            vision_heads=1, text_width=8, text_layers=1, text_heads=1, embed_dim=4,
        )  # fmt: skip
        self.params = {}
        self.source = "stub"

    def embed_image(self, pixel_values, *, features=True):
        b = np.shape(pixel_values)[0]
        boxes = np.array(
            [_cxcywh(BOX_A), _cxcywh(BOX_B), [0.9, 0.1, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1]],
            np.float32,
        )
        emb = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0.1, 0], [0, 0, 0, 0.1]], np.float32)
        return {
            "pred_boxes": np.broadcast_to(boxes, (b, 4, 4)).copy(),
            "class_embeddings": np.broadcast_to(emb, (b, 4, 4)).copy(),
            "logit_shift": np.zeros((b, 4), np.float32),
            "logit_scale": np.full((b, 4), 5.0, np.float32),
        }


def _dataset(tmp_path, name, layout, num_images, extra_anns=()):
    """COCO dataset of grey images; ``layout`` maps category id -> box for every image."""
    folder = tmp_path / name
    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for i in range(num_images):
        image_id = 10 + i
        file_name = f"{i}.png"
        pixels = np.full((SIZE, SIZE, 3), 100 + i, np.uint8)  # distinct content per image
        Image.fromarray(pixels).save(folder / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": SIZE, "height": SIZE})
        for cid, (x0, y0, x1, y1) in layout.items():
            anns.append(
                {
                    "id": len(anns) + 1, "image_id": image_id, "category_id": cid,
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )  # fmt: skip
    anns.extend(extra_anns)
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "red circle"}, {"id": 2, "name": "blue star"},
                       {"id": 3, "name": "green ring"}],
    }  # fmt: skip
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder


def test_choose_exemplars_first_usable_box_in_image_then_annotation_order(tmp_path):
    support = _dataset(tmp_path, "support", {}, 3)
    data = json.loads((support / "annotations.json").read_text())

    def box(x, w):
        return [x, 1.0, w, w]

    data["annotations"] = [
        # image 12 comes later than image 11 even though its annotation id is smaller.
        {"id": 1, "image_id": 12, "category_id": 1, "bbox": box(1.0, 9.0), "iscrowd": 0},
        {"id": 5, "image_id": 11, "category_id": 1, "bbox": box(2.0, 9.0), "iscrowd": 0},
        {"id": 4, "image_id": 11, "category_id": 1, "bbox": box(3.0, 9.0), "iscrowd": 0},
        # category 2: crowd and a too small box are skipped.
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": box(4.0, 9.0), "iscrowd": 1},
        {"id": 3, "image_id": 10, "category_id": 2, "bbox": box(5.0, 3.0), "iscrowd": 0},
        {"id": 6, "image_id": 12, "category_id": 2, "bbox": box(6.0, 8.0), "iscrowd": 0},
    ]
    got = choose_exemplars(data, support / "images", [2, 1], min_side=4.0)
    assert [(e.category_id, e.image_id, e.box_xyxy) for e in got] == [
        (2, 12, (6.0, 1.0, 14.0, 9.0)),
        (1, 11, (3.0, 1.0, 12.0, 10.0)),
    ]
    assert got[0].path == support / "images" / "2.png"
    with pytest.raises(EvalDataError, match=r"no usable box for categories \[3\]"):
        choose_exemplars(data, support / "images", [1, 3])


def test_exemplar_embedding_is_the_patch_the_box_selects(tmp_path):
    support = _dataset(tmp_path, "support", {1: BOX_A, 2: BOX_B}, 1)
    detector = Detector(StubModel(), batch_size=2)
    exemplars = choose_exemplars(support / "annotations.json", support / "images", [2, 1])
    emb = exemplar_embeddings(detector, exemplars)
    np.testing.assert_array_equal(emb, [[0, 1, 0, 0], [1, 0, 0, 0]])


@pytest.mark.parametrize(("layout", "expected"), [({1: BOX_A, 2: BOX_B}, 1.0),
                                                  ({1: BOX_B, 2: BOX_A}, 0.0)])  # fmt: skip
def test_one_shot_ap_follows_the_exemplars(tmp_path, layout, expected):
    support = _dataset(tmp_path, "support", {1: BOX_A, 2: BOX_B}, 1)
    heldout = _dataset(tmp_path, "heldout", layout, 3)
    detector = Detector(StubModel(), batch_size=2)
    exemplars = choose_exemplars(support / "annotations.json", support / "images", [1, 2])
    result = evaluate_one_shot(
        detector,
        heldout / "annotations.json",
        heldout / "images",
        exemplars,
        tmp_path / "out",
        top_k=2,  # the two confident pairs per image: (patch 0, category 1), (patch 1, category 2)
    )
    assert result["num_images"] == 3
    assert result["AP50"] == pytest.approx(expected)
    assert set(result["per_category"]) == {"red circle", "blue star"}
    for record in result["per_category"].values():
        assert record["AP50"] == pytest.approx(expected)
    written = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert {row["category_id"] for row in written} == {1, 2}  # never the un-queried category 3


def test_one_shot_rejects_an_exemplar_category_the_dataset_lacks(tmp_path):
    heldout = _dataset(tmp_path, "heldout", {1: BOX_A}, 1)
    support = _dataset(tmp_path, "support", {1: BOX_A}, 1)
    exemplars = choose_exemplars(support / "annotations.json", support / "images", [1])
    bad = [exemplars[0].__class__(7, exemplars[0].image_id, exemplars[0].path, BOX_A)]
    with pytest.raises(EvalDataError, match=r"not in the annotations: \[7\]"):
        evaluate_one_shot(
            Detector(StubModel()), heldout / "annotations.json", heldout / "images", bad,
            tmp_path / "out",
        )  # fmt: skip
