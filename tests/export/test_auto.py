"""The default backend (auto): ONNX Runtime with the [export] extra, else JAX; the export cache.

The rest of the suite pins JAX (tests/conftest.py sets OWL_BACKEND=jax); these tests unset it
and run the default path, comparing it with JAX.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from click.testing import CliRunner

import owl
from owl.checkpoints.owl_format import save_owl
from owl.cli.detect import detect
from owl.cli.models import models
from owl.export import auto
from owl.inference.detector import Detector

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images"
QUERIES = ["red circle", "blue square", "green triangle"]


@pytest.fixture
def default_path(monkeypatch, tmp_path):
    """The default backend as a user gets it: no OWL_BACKEND, a fresh cache, JAX on the CPU."""
    monkeypatch.delenv(auto.ENV, raising=False)
    monkeypatch.setenv("OWL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    return tmp_path / "cache" / "exports"


def _without_export_extra(monkeypatch):
    real = auto.has_module
    monkeypatch.setattr(auto, "has_module", lambda m: m not in auto.EXPORT_MODULES and real(m))


def _detections(detector: Detector, images=None):
    images = images or sorted(EXAMPLES.glob("*.png"))
    return detector.detect(images, QUERIES, threshold=0.05)


def _assert_close(got, want, atol=1e-4):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label if hasattr(g, "label") else True
        np.testing.assert_array_equal(g.class_id, w.class_id)
        np.testing.assert_allclose(g.confidence, w.confidence, atol=atol)
        np.testing.assert_allclose(g.xyxy, w.xyxy, atol=1e-2)  # pixels


def test_auto_picks_onnx_with_the_export_extra_and_jax_without(default_path, monkeypatch):
    choice = auto.decide("auto", "f32")
    assert choice.name == "onnx" and "ONNX Runtime is installed" in choice.reason
    _without_export_extra(monkeypatch)
    choice = auto.decide("auto", "f32")
    assert choice.name == "jax" and 'pip install "owl[export]"' in choice.reason
    detector = Detector("shapes-tiny")
    assert detector.backend.name == "jax" and isinstance(detector.model, owl.OwlModel)
    assert not default_path.exists()  # nothing exported
    with pytest.raises(auto.BackendError, match=r"int8 runs on ONNX Runtime; install"):
        auto.decide("auto", "int8")


def test_the_choice_follows_precision_accelerators_and_the_env(default_path, monkeypatch):
    assert auto.decide("auto", "bf16").name == "jax"
    assert auto.decide("auto", "int8").name == "onnx"
    assert auto.decide("auto", "f32", in_memory=True).name == "jax"
    with pytest.raises(auto.BackendError, match="int8 runs on ONNX Runtime, not JAX"):
        auto.decide("jax", "int8")
    with pytest.raises(auto.BackendError, match="bf16 runs on JAX"):
        auto.decide("onnx", "bf16")
    monkeypatch.setenv(auto.ENV, "jax")
    choice = auto.decide("auto", "f32")
    assert choice.name == "jax" and "OWL_BACKEND" in choice.reason
    assert auto.decide("onnx", "f32").name == "onnx"  # an explicit --backend wins
    monkeypatch.delenv(auto.ENV)
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")
    assert auto.decide("auto", "f32").name == "jax"


def test_default_path_equals_jax_and_reuses_its_export(default_path, monkeypatch):
    jax_detector = Detector("shapes-tiny", backend="jax")
    first = Detector("shapes-tiny")
    assert first.backend.name == "onnx" and first.backend.cached is False
    assert first.backend.export_dir.parent == default_path
    manifest = json.loads((first.backend.export_dir / "manifest.json").read_text())
    assert max(manifest["verification"]["max_abs_diff"].values()) <= 1e-4  # verified as export
    want = _detections(jax_detector)
    _assert_close(_detections(first), want)

    import owl.export.writer as writer

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cached export is valid")

    monkeypatch.setattr(writer, "export_model", no_export)
    second = Detector("shapes-tiny")
    assert second.backend.cached is True
    assert second.backend.export_dir == first.backend.export_dir
    _assert_close(_detections(second), want)
    # image queries and the image cache go through the same backend
    enc = second.encode_image(EXAMPLES / "000000.png")
    ref = jax_detector.encode_image(EXAMPLES / "000000.png")
    np.testing.assert_allclose(enc.class_embeddings, ref.class_embeddings, atol=1e-4)


def test_a_changed_model_file_is_exported_again(default_path, tmp_path, tiny_owlv2):
    path = tmp_path / "model.safetensors"
    params = jax.device_get(tiny_owlv2.params)
    save_owl(path, tiny_owlv2.config, params)
    first = Detector(str(path))
    assert first.backend.cached is False
    pixels = np.random.default_rng(0).standard_normal((1, 128, 128, 3)).astype(np.float32)
    before = first.model.embed_image(pixels)["class_embeddings"]

    again = Detector(str(path))  # same content: reused
    assert again.backend.cached is True and again.backend.export_dir == first.backend.export_dir

    changed = jax.tree_util.tree_map(lambda x: np.asarray(x) * 1.1, params)
    save_owl(path, tiny_owlv2.config, changed)
    rebuilt = Detector(str(path))
    assert rebuilt.backend.cached is False
    assert rebuilt.backend.export_dir != first.backend.export_dir
    assert not first.backend.export_dir.exists()  # the export of the old content is removed
    got = rebuilt.model.embed_image(pixels)["class_embeddings"]
    want = np.asarray(owl.load(str(path)).embed_image(pixels, features=False)["class_embeddings"])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got - before).max() > 1e-2  # the new weights, not the old export


def test_detect_verbose_prints_the_choice_once(default_path, monkeypatch):
    args = [str(EXAMPLES / "000000.png"), "-q", "red circle", "--quiet", "--verbose"]
    result = CliRunner().invoke(detect, args)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("backend ")]
    assert len(lines) == 1 and lines[0].startswith("backend onnx (f32): ONNX Runtime is installed")
    assert "0.591  red circle" in result.stdout
    _without_export_extra(monkeypatch)
    result = CliRunner().invoke(detect, args)
    assert result.exit_code == 0, result.output
    assert "backend jax (f32): ONNX Runtime is not installed" in result.stderr
    assert "0.591  red circle" in result.stdout
    result = CliRunner().invoke(detect, [*args, "--precision", "int8"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        'Error: --precision int8 runs on ONNX Runtime; install it with: pip install "owl[export]"'
    ]


def test_models_info_names_the_backend(default_path, monkeypatch):
    result = CliRunner().invoke(models, ["--info", "shapes-tiny"])
    assert result.exit_code == 0, result.output
    [line] = [x for x in result.output.splitlines() if x.strip().startswith("backend")]
    assert "onnx: ONNX Runtime is installed" in line and "exported on first use" in line
    Detector("shapes-tiny")
    result = CliRunner().invoke(models, ["--info", "shapes-tiny", "--json"])
    info = json.loads(result.output)
    assert info["backend"].startswith("onnx:") and "(cached: " in info["backend"]
    _without_export_extra(monkeypatch)
    result = CliRunner().invoke(models, ["--info", "shapes-tiny"])
    assert "jax: ONNX Runtime is not installed" in result.output


def test_an_index_accepts_the_onnx_backend_of_its_model(default_path, tmp_path):
    pytest.importorskip("faiss")
    from owl.search.index import Index

    images = sorted(EXAMPLES.glob("*.png"))[:2]
    with Index(tmp_path / "a.owlindex", "shapes-tiny", backend="jax") as idx:
        idx.add(images)
    with Index(tmp_path / "a.owlindex", backend="auto") as idx:  # the same weights: accepted
        assert idx.detector.backend.name == "onnx"
        assert len(idx) == 2


def test_export_int8_writes_a_calibration_record(tmp_path):
    from owl.cli.export import export

    out = tmp_path / "int8"
    result = CliRunner().invoke(export, ["shapes-tiny", "--out", str(out), "--precision", "int8"])
    assert result.exit_code == 0, result.output
    assert "int8 image encoder vs owl: class-embedding cosine median 0.99" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    record = manifest["calibration"]
    assert record["graphs"] == {"image_encoder": "int8", "text_encoder": "f32", "score": "f32"}
    # shapes-tiny has 4 vision blocks: 4 weight products of each kind are int8, the heads not
    assert record["quantized"] == {
        g: 4 for g in ("attention_qkv", "attention_out", "mlp_in", "mlp_out")
    }
    assert record["float32"][0].startswith("heads (")
    assert record["agreement"]["class_embedding_cosine_p1"] >= 0.99
    assert manifest["verification"]["max_abs_diff"]["text_encoder"] <= 1e-4
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "image_encoder.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    detector = Detector(str(out))  # an export folder: its own format and precision
    assert (detector.backend.name, detector.backend.precision) == ("onnx", "int8")
    result = CliRunner().invoke(
        export,
        [
            "shapes-tiny",
            "--out",
            str(tmp_path / "h"),
            "--format",
            "stablehlo",
            "--precision",
            "int8",
        ],
    )
    assert result.exit_code == 2 and "--precision int8 is for --format onnx" in result.output
