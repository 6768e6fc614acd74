"""`owl export`: export, verify and reload (tiny v1 and v2, ONNX and StableHLO), the manifest."""

from __future__ import annotations

import json

import jax
import ml_dtypes
import numpy as np
import pytest

from owl.export.backend import open_export
from owl.export.manifest import ExportDirError, Manifest, read_manifest
from owl.export.writer import export_model
from owl.inference.detector import Detector
from owl.models.model import OwlModel

pytest.importorskip("onnxruntime")

TOL = 1e-4


@pytest.fixture(params=["tiny_owlvit", "tiny_owlv2"])
def model(request) -> OwlModel:
    return request.getfixturevalue(request.param)


def _pixels(model: OwlModel, n: int, seed: int) -> np.ndarray:
    s = model.config.image_size
    return np.random.default_rng(seed).standard_normal((n, s, s, 3)).astype(np.float32)


def _ids() -> np.ndarray:
    from owl.text.tokenizer import tokenize

    return tokenize(["red circle", "a photo of a cat", "x"])


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_export_verify_and_reload_with_a_dynamic_batch(model, fmt, tmp_path):
    manifest = export_model(model, tmp_path / "exp", format=fmt)
    diffs = manifest.verification["max_abs_diff"]
    assert set(diffs) == {"image_encoder", "text_encoder", "score"}
    assert max(diffs.values()) <= TOL
    exported = open_export(tmp_path / "exp")
    assert exported.config == model.config
    # New inputs, not the verification ones; batch 3 through a dynamic-batch graph.
    pixels = _pixels(model, 3, seed=5)
    want = jax.device_get(model.embed_image(pixels, features=False))
    got = exported.embed_image(pixels)
    assert sorted(got) == sorted(want)
    assert ("objectness_logits" in got) == model.config.objectness
    for key in want:
        assert got[key].shape == want[key].shape
        np.testing.assert_allclose(got[key], want[key], atol=TOL, rtol=0)
    ids = _ids()
    np.testing.assert_allclose(
        exported.embed_text(ids), np.asarray(model.embed_text(ids)), atol=TOL, rtol=0
    )
    # Shorter token rows (the Detector's 8-token bucket) give the same embeddings.
    np.testing.assert_allclose(
        exported.embed_text(ids[:, :8]), np.asarray(model.embed_text(ids)), atol=TOL, rtol=0
    )


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_fixed_batch_runs_any_number_of_images(tiny_owlv2, fmt, tmp_path):
    manifest = export_model(tiny_owlv2, tmp_path / "exp", format=fmt, batch=2)
    assert manifest.batch == 2
    graph = manifest.graphs["image_encoder"]["inputs"]["pixel_values"]
    assert graph["shape"][0] == 2
    exported = open_export(tmp_path / "exp")
    pixels = _pixels(tiny_owlv2, 3, seed=6)  # one full chunk and one padded chunk
    want = jax.device_get(tiny_owlv2.embed_image(pixels, features=False))
    got = exported.embed_image(pixels)
    np.testing.assert_allclose(got["pred_boxes"], want["pred_boxes"], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        got["objectness_logits"], want["objectness_logits"], atol=TOL, rtol=0
    )


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_bf16_stores_rounded_weights_and_is_exact_against_them(tiny_owlv2, fmt, tmp_path):
    f32 = export_model(tiny_owlv2, tmp_path / "f32", format=fmt)
    bf16 = export_model(tiny_owlv2, tmp_path / "bf16", format=fmt, precision="bf16")
    size = {
        name: sum(p.stat().st_size for p in (tmp_path / name).glob(f"*.{fmt}"))
        for name in ("f32", "bf16")
    }
    assert size["bf16"] < 0.7 * size["f32"]
    assert max(bf16.verification["max_abs_diff"].values()) <= TOL
    # Against the original float32 weights the rounding shows (bf16 keeps 8 bits).
    assert max(bf16.verification["max_abs_diff_vs_f32_weights"].values()) > 1e-3
    assert max(f32.verification["max_abs_diff"].values()) <= TOL
    rounded = jax.tree_util.tree_map(
        lambda x: np.asarray(np.asarray(x).astype(ml_dtypes.bfloat16), np.float32)
        if np.size(x) >= 1024 else np.asarray(x),
        jax.device_get(tiny_owlv2.params),
    )  # fmt: skip
    reference = OwlModel(tiny_owlv2.config, rounded)
    pixels = _pixels(tiny_owlv2, 1, seed=7)
    want = jax.device_get(reference.embed_image(pixels, features=False))
    got = open_export(tmp_path / "bf16").embed_image(pixels)
    np.testing.assert_allclose(got["class_embeddings"], want["class_embeddings"], atol=TOL, rtol=0)


def test_score_graph_equals_the_detectors_score(tiny_owlvit, tmp_path):
    export_model(tiny_owlvit, tmp_path / "exp", format="onnx")
    exported = open_export(tmp_path / "exp", "onnx")
    det = Detector(tiny_owlvit)
    image = (np.random.default_rng(3).random((90, 120, 3)) * 255).astype(np.uint8)
    enc = det.encode_image(image)
    queries = det.prepare_queries(["red circle", "blue star", "a dog"])
    want = det.score(enc, queries)  # [P, Q]
    got = exported.score(
        enc.class_embeddings[None], enc.logit_shift[None], enc.logit_scale[None],
        queries.embeddings,
    )[0]  # fmt: skip
    assert got.shape == want.shape == (tiny_owlvit.config.num_patches, 3)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_manifest_round_trips(tiny_owlv2, tmp_path):
    written = export_model(tiny_owlv2, tmp_path / "exp", format="stablehlo", batch=2)
    assert Manifest.from_json(written.to_json()) == written
    assert read_manifest(tmp_path / "exp") == written
    d = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert d["owl_export"] == 1 and d["format"] == "stablehlo" and d["batch"] == 2
    assert d["model_config"] == tiny_owlv2.config.to_dict()
    assert d["preprocessing"]["pad_value"] == 0.0 and d["preprocessing"]["image_size"] == 128
    assert d["preprocessing"]["mean"] == [0.48145466, 0.4578275, 0.40821073]
    assert d["tokenizer"]["files"] == [
        "tokenizer/bpe_simple_vocab_16e6.txt.gz", "tokenizer/LICENSE-clip-bpe.txt"
    ]  # fmt: skip
    for f in d["tokenizer"]["files"]:
        assert (tmp_path / "exp" / f).stat().st_size > 1000
    assert d["owl_version"] == "0.1.0"
    assert d["verification"]["tolerance"] == TOL


def test_a_folder_with_other_files_is_not_overwritten(tiny_owlvit, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportDirError, match="notes.txt"):
        export_model(tiny_owlvit, tmp_path, format="onnx")
    assert (tmp_path / "notes.txt").read_text() == "mine"
