"""Verification of an export against owl: the same inputs through the graphs and through JAX.

Every export runs this before it writes its manifest. The inputs are a random batch of pixels
(seed 0), the shipped example image (`owl/assets/example-shapes.png`, preprocessed as the
Detector does), tokenised queries plus random token ids, and the scores of those embeddings.
The result is the max |diff| per graph; an export whose largest exceeds the tolerance (1e-4 for
float32) fails.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from owl.examples import EXAMPLE_IMAGE, example_image
from owl.models.model import OwlModel
from owl.models.owl_vit import normalize, score_queries
from owl.ops.image import preprocess
from owl.text.tokenizer import EOT_ID, SOT_ID, get_tokenizer

TOLERANCE = 1e-4
# int8 exports pass on agreement, not max |diff|: the class embeddings' cosine with owl's, median
# and 1st percentile over all boxes of the verification images, must reach this.
INT8_MIN_COSINE = 0.99
EXAMPLE_QUERIES = ("red circle", "a photo of a green square", "blue star", "thing")


class VerificationError(RuntimeError):
    """The exported graphs differ from owl by more than the tolerance."""


def verification_inputs(model: OwlModel, batch: int | None) -> dict[str, np.ndarray]:
    """Pixels [n, S, S, 3] (random images then the example image) and token ids [m, 16]."""
    c = model.config
    rng = np.random.default_rng(0)
    n = batch or 2
    pixels = rng.standard_normal((n, c.image_size, c.image_size, 3)).astype(np.float32)
    example, _ = preprocess(example_image(), image_size=c.image_size, pad_value=c.pad_value)
    pixels[-1] = example
    ids = get_tokenizer().tokenize(list(EXAMPLE_QUERIES), context_length=c.context_length)
    random_ids = np.zeros((2, c.context_length), np.int32)
    random_ids[:, 0] = SOT_ID
    random_ids[0, 1:6] = rng.integers(1, SOT_ID, 5)
    random_ids[0, 6] = EOT_ID
    random_ids[1, 1:-1] = rng.integers(1, SOT_ID, c.context_length - 2)
    random_ids[1, -1] = EOT_ID
    return {"pixel_values": pixels, "input_ids": np.concatenate([ids, random_ids])}


def compare(reference: OwlModel, exported: Any, batch: int | None) -> dict[str, Any]:
    """Runs both on `verification_inputs`; returns max |diff| per graph and the largest |value|.

    Args:
      reference: owl's model with the weights the graphs hold (bf16 exports: rounded weights).
      exported: an `owl.export.backend.ExportedModel`.
    """
    inputs = verification_inputs(reference, batch)
    pixels, ids = inputs["pixel_values"], inputs["input_ids"]
    want = jax.device_get(reference.embed_image(pixels, features=False))
    got = exported.embed_image(pixels)
    want_q = np.asarray(reference.embed_text(ids))
    got_q = exported.embed_text(ids)
    diffs = {
        "image_encoder": max(_diff(got[k], want[k]) for k in want),
        "text_encoder": _diff(got_q, want_q),
    }
    scale = {
        "image_encoder": max(float(np.max(np.abs(want[k]))) for k in want),
        "text_encoder": float(np.max(np.abs(want_q))),
    }
    if "score" in exported.runners:
        want_s = np.asarray(score_queries(
            normalize(want["class_embeddings"]), want["logit_shift"], want["logit_scale"], want_q
        ))  # fmt: skip
        got_s = exported.score(
            got["class_embeddings"], got["logit_shift"], got["logit_scale"], got_q
        )
        diffs["score"] = _diff(got_s, want_s)
        scale["score"] = float(np.max(np.abs(want_s)))
    missing = sorted(set(want) - set(got))
    if missing:
        raise VerificationError(f"the image encoder graph lacks outputs {', '.join(missing)}")
    return {
        "max_abs_diff": diffs,
        "max_abs_value": scale,
        "inputs": (
            f"{len(pixels) - 1} random image(s) (seed 0) and {EXAMPLE_IMAGE}; "
            f"{len(EXAMPLE_QUERIES)} text queries and 2 random token sequences"
        ),
    }


def agreement(want: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """How close an approximate image encoder's outputs are to owl's (int8 and bf16 exports).

    Returns the class embeddings' cosine similarity per box (median, 1st percentile, minimum),
    the mean |diff| of the boxes (cx, cy, w, h in [0, 1]), the max |diff| of logit shift and
    scale, and (OWLv2) the Pearson correlation of the objectness logits, over all boxes.
    """

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)

    cos = np.sum(unit(want["class_embeddings"]) * unit(got["class_embeddings"]), axis=-1)
    out = {
        "class_embedding_cosine_median": float(np.median(cos)),
        "class_embedding_cosine_p1": float(np.percentile(cos, 1)),
        "class_embedding_cosine_min": float(np.min(cos)),
        "box_l1_mean": float(np.mean(np.abs(np.asarray(want["pred_boxes"]) - got["pred_boxes"]))),
        "logit_shift_max_abs_diff": _diff(got["logit_shift"], want["logit_shift"]),
        "logit_scale_max_abs_diff": _diff(got["logit_scale"], want["logit_scale"]),
    }
    if "objectness_logits" in want:
        a = np.asarray(want["objectness_logits"], np.float64).ravel()
        b = np.asarray(got["objectness_logits"], np.float64).ravel()
        out["objectness_correlation"] = float(np.corrcoef(a, b)[0, 1]) if a.size > 1 else 1.0
    return out


def image_agreement(reference: OwlModel, exported: Any, batch: int | None) -> dict[str, float]:
    """`agreement` of the exported image encoder with owl on the verification pixels."""
    pixels = verification_inputs(reference, batch)["pixel_values"]
    want = jax.device_get(reference.embed_image(pixels, features=False))
    return agreement(want, exported.embed_image(pixels))


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise VerificationError(f"exported output has shape {a.shape}, owl's {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


__all__ = [
    "INT8_MIN_COSINE",
    "TOLERANCE",
    "VerificationError",
    "agreement",
    "compare",
    "image_agreement",
    "verification_inputs",
]
