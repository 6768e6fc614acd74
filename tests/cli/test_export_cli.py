"""`owl export` and `owl detect --backend onnx|stablehlo` on shapes-tiny, and bad export folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from owl.cli.detect import detect
from owl.cli.export import export
from owl.cli.options import UsageFailure, check_export_extra

pytest.importorskip("onnxruntime")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "shapes" / "images"


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for fmt in ("onnx", "stablehlo"):
        result = CliRunner().invoke(
            export, ["shapes-tiny", "--format", fmt, "--out", str(root / fmt)]
        )
        assert result.exit_code == 0, result.output
        assert f"wrote {fmt} export of shapes-tiny to {root / fmt} (dynamic batch, f32" in (
            result.output
        )
        out[fmt] = root / fmt
    return out


def _detect(*args) -> list[dict]:
    result = CliRunner().invoke(detect, [str(a) for a in args] + ["-o", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["results"]


def _assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    assert sum(len(w["detections"]) for w in want) > 0
    for g, w in zip(got, want, strict=True):
        assert g["image"] == w["image"]
        assert [d["label"] for d in g["detections"]] == [d["label"] for d in w["detections"]]
        if not w["detections"]:
            continue
        np.testing.assert_allclose(
            [d["box"] for d in g["detections"]], [d["box"] for d in w["detections"]], atol=1e-3
        )
        np.testing.assert_allclose(
            [d["score"] for d in g["detections"]], [d["score"] for d in w["detections"]],
            atol=1e-4,
        )  # fmt: skip


@pytest.mark.parametrize("backend", ["onnx", "stablehlo"])
def test_detect_with_text_queries_equals_jax(exports, backend):
    images = sorted(EXAMPLES.glob("*.png"))
    args = [*images, "-q", "red circle", "-q", "blue square@0.05", "--batch-size", "2"]
    want = _detect(*args, "--model", "shapes-tiny")
    got = _detect(*args, "--backend", backend, "--model", exports[backend])
    _assert_same(got, want)


def test_detect_with_an_image_query_equals_jax(exports):
    images = sorted(EXAMPLES.glob("*.png"))
    args = [*images, "--query-image", images[0], "--query-box", "80,99,107,126",
            "--query-label", "like this"]  # fmt: skip
    want = _detect(*args, "--model", "shapes-tiny")
    got = _detect(*args, "--backend", "onnx", "--model", exports["onnx"])
    _assert_same(got, want)


def _one_line_usage_error(model_dir: Path, backend: str = "onnx") -> str:
    result = CliRunner().invoke(
        detect, [str(EXAMPLES / "000000.png"), "-q", "x", "--backend", backend, "--model",
                 str(model_dir)],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --model "), result.stderr
    return lines[0]


def test_bad_export_folders_get_one_line(exports, tmp_path):
    def copy(name: str, fmt: str = "onnx") -> Path:
        return Path(shutil.copytree(exports[fmt], tmp_path / name))

    assert "no such directory" in _one_line_usage_error(tmp_path / "nowhere")
    unfinished = copy("unfinished")
    (unfinished / "manifest.json").unlink()
    assert "no manifest.json, so not a finished owl export" in _one_line_usage_error(unfinished)
    broken_json = copy("broken_json")
    (broken_json / "manifest.json").write_text('{"owl_export": 1,')
    assert "not valid JSON" in _one_line_usage_error(broken_json)
    missing = copy("missing")
    (missing / "text_encoder.onnx").unlink()
    assert "text_encoder graph text_encoder.onnx named in manifest.json is missing" in (
        _one_line_usage_error(missing)
    )
    corrupt = copy("corrupt")
    data = (corrupt / "image_encoder.onnx").read_bytes()
    (corrupt / "image_encoder.onnx").write_bytes(data[: len(data) // 3])
    line = _one_line_usage_error(corrupt)
    assert "image_encoder.onnx: not a graph ONNX Runtime can load" in line
    corrupt_hlo = copy("corrupt_hlo", "stablehlo")
    (corrupt_hlo / "image_encoder.stablehlo").write_bytes(b"not a module")
    line = _one_line_usage_error(corrupt_hlo, "stablehlo")
    assert "image_encoder.stablehlo: not a serialised jax.export module" in line
    assert "holds a stablehlo export, not onnx; use --backend stablehlo" in (
        _one_line_usage_error(exports["stablehlo"])
    )
    # A manifest of another model than the graphs: the input size does not match.
    mismatched = copy("mismatched")
    manifest = json.loads((mismatched / "manifest.json").read_text())
    manifest["model_config"]["image_size"] = 256
    manifest["preprocessing"]["image_size"] = 256
    (mismatched / "manifest.json").write_text(json.dumps(manifest))
    assert "image_encoder graph does not match manifest.json" in _one_line_usage_error(mismatched)
    newer = copy("newer")
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["owl_export"] = 2
    (newer / "manifest.json").write_text(json.dumps(manifest))
    assert "owl_export version 2, this owl reads version 1" in _one_line_usage_error(newer)


def test_export_usage_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    for args, message in [
        (["--out", str(tmp_path / "file")], "is a file; give a folder"),
        (["--out", str(tmp_path / "o"), "--batch", "0"], "neither a positive integer"),
        (["--out", str(tmp_path)], "not an owl export (file)"),
    ]:
        result = CliRunner().invoke(export, ["shapes-tiny", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_missing_export_extra_is_one_line():
    with pytest.raises(UsageFailure) as info:
        check_export_extra("`owl export --format onnx`", ("onnx", "no_such_module_owl"))
    assert info.value.message == (
        "`owl export --format onnx` needs the export extra (module 'no_such_module_owl' is not "
        'installed); install it with: pip install "owl[export]"'
    )


def _edited(exports: dict[str, Path], tmp_path: Path, name: str, edit, fmt: str = "onnx") -> Path:
    """A copy of an export whose manifest.json was changed by `edit(manifest_dict)`."""
    folder = Path(shutil.copytree(exports[fmt], tmp_path / name))
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_manifest_file_names_stay_inside_the_folder(exports, tmp_path, monkeypatch):
    # The manifest is untrusted: a file name that leaves the folder is refused before any file
    # is opened, whether or not the target exists.
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(exports["onnx"] / "image_encoder.onnx", outside)
    opened: list[str] = []
    import owl.export.onnx_files as onnx_files

    real = onnx_files.load_onnx
    monkeypatch.setattr(
        onnx_files, "load_onnx", lambda p, t=None: opened.append(str(p)) or real(p, t)
    )
    for bad in ["../../../../etc/passwd", "/etc/passwd", str(outside), "../outside.onnx",
                "sub/image_encoder.onnx", "..", "", "a\\..\\b.onnx"]:  # fmt: skip
        folder = _edited(
            exports, tmp_path, f"bad{len(opened)}_{abs(hash(bad))}",
            lambda m, bad=bad: m["graphs"]["image_encoder"].update(file=bad),
        )  # fmt: skip
        line = _one_line_usage_error(folder)
        assert f"graphs.image_encoder.file {bad!r} is not a plain file name inside the folder" in (
            line
        )
    assert opened == []


def test_manifest_values_owl_computes_itself_must_be_owls(exports, tmp_path):
    def setter(*keys, value):
        def edit(m):
            d = m
            for k in keys[:-1]:
                d = d[k]
            d[keys[-1]] = value

        return edit

    cases = [
        (("tokenizer", "context_length"), 77, "tokenizer.context_length 77 differs from the model's 16"),
        (("preprocessing", "mean"), [0.5, 0.5, 0.5], "preprocessing.mean [0.5, 0.5, 0.5] is not owl's CLIP mean"),
        (("preprocessing", "std"), None, "preprocessing.std None is not owl's CLIP std"),
        (("preprocessing", "pad_value"), 0.25, "preprocessing.pad_value 0.25 differs from the model's 0.5"),
        (("tokenizer", "end_id"), 3, "tokenizer.end_id 3 is not owl's tokenizer's 49407"),
    ]  # fmt: skip
    for i, (keys, value, message) in enumerate(cases):
        folder = _edited(exports, tmp_path, f"c{i}", setter(*keys, value=value))
        assert message in _one_line_usage_error(folder)


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_a_context_length_other_than_the_graphs_is_one_line(exports, tmp_path, fmt):
    # Both context lengths edited consistently (16 -> 77, and 16 -> 8): the graph itself is
    # checked, so this is a one-line usage error, not an ONNX Runtime traceback mid-detection.
    for ctx in (77, 8):

        def edit(m, ctx=ctx):
            m["model_config"]["context_length"] = ctx
            m["tokenizer"]["context_length"] = ctx

        folder = _edited(exports, tmp_path, f"{fmt}{ctx}", edit, fmt)
        line = _one_line_usage_error(folder, fmt)
        assert f"the text_encoder graph does not take the {ctx} tokens of manifest.json's " in line


def test_a_missing_tokenizer_folder_is_not_needed(exports, tmp_path):
    # owl tokenizes with its own bundled vocabulary (docs/export.md): tokenizer/ is for others.
    folder = Path(shutil.copytree(exports["onnx"], tmp_path / "no_tokenizer"))
    shutil.rmtree(folder / "tokenizer")
    image = EXAMPLES / "000000.png"
    want = _detect(image, "-q", "red circle", "--model", "shapes-tiny")
    got = _detect(image, "-q", "red circle", "--backend", "onnx", "--model", folder)
    _assert_same(got, want)


def test_export_over_an_earlier_export_needs_overwrite(exports, tmp_path):
    # As `owl convert` needs --overwrite to replace its file, so does `owl export` its folder.
    folder = Path(shutil.copytree(exports["onnx"], tmp_path / "again"))
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    result = CliRunner().invoke(export, ["shapes-tiny", "--out", str(folder)])
    assert result.exit_code == 2, result.output
    assert f"--out {folder}: holds an owl export already; pass --overwrite to replace it" in (
        result.stderr
    )
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # untouched
    result = CliRunner().invoke(
        export, ["shapes-tiny", "--out", str(folder), "--format", "stablehlo", "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((folder / "manifest.json").read_text())["format"] == "stablehlo"
    assert not (folder / "image_encoder.onnx").exists()  # the earlier graphs are gone
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        export, ["shapes-tiny", "--out", str(empty), "--format", "stablehlo"]
    )
    assert result.exit_code == 0, result.output
