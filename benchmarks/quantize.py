"""Which layers tolerate int8, and how far int8 and bf16 move the answers, at full size.

    python benchmarks/quantize.py [--variants owlvit-b32,owlvit-b16,owlv2-b16] [--images 2]
        [--shapes 600] [--json out.json]

First, with `--shapes N` (default 600; 0 skips it): shapes-tiny's ShapesWorld AP50 on base and
novel categories, f32 JAX against `--precision int8` (ONNX Runtime) and `--precision bf16` (JAX),
on N held-out scenes (seed 12345) scored by `owl eval`'s code, as tests/export/
test_int8_agreement.py holds them (change <= 0.01).

For each variant, random weights are drawn once (the generator of benchmarks/onnx_forward.py,
seed 0) and exported to ONNX (float32, batch 1). Then the image encoder is quantized with
`owl.export.quantize.quantize_image_encoder` for each set of weight-matmul groups: each group of
the vision blocks alone (attention q/k/v, attention output, MLP in, MLP out), all four (what
`--precision int8` ships), and all four plus the heads. Each int8 graph runs in ONNX Runtime on
`--images` random images (seed 1); owl's float32 JAX model on the same pixels is the reference.
The bf16 row is owl's JAX model with `precision="bf16"` (what `--precision bf16` runs).

Agreement (`owl.export.verify.agreement`, the figures `owl export --precision int8` writes into
its manifest), over all boxes of all images: the class embeddings' cosine with the reference
(median and 1st percentile), the mean |diff| of the boxes (cx, cy, w, h in [0, 1]), and, for
OWLv2, the Pearson correlation of the objectness logits. No timings here: benchmarks/forward.py
times the int8 path against transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import machine  # benchmarks/machine.py
from onnx_forward import random_params  # the same random weights as the ONNX speed benchmark


def _configs() -> list[tuple[str, tuple[str, ...]]]:
    from owl.export.quantize import BLOCK_GROUPS, DEFAULT_GROUPS, HEAD_GROUP

    rows = [(f"int8 {g} only", (g,)) for g in BLOCK_GROUPS]
    rows.append(("int8 vision blocks (--precision int8)", DEFAULT_GROUPS))
    rows.append(("int8 vision blocks + heads", (*DEFAULT_GROUPS, HEAD_GROUP)))
    return rows


def _concat(outputs: list[dict]) -> dict[str, np.ndarray]:
    keys = ("class_embeddings", "pred_boxes", "logit_shift", "logit_scale", "objectness_logits")
    return {
        k: np.concatenate([np.asarray(o[k], np.float32) for o in outputs])
        for k in keys
        if k in outputs[0]
    }


def run_variant(name: str, images: int, work: Path) -> list[dict]:
    """The agreement rows of one variant (see the module docstring)."""
    from owl.export.onnx_files import load_onnx
    from owl.export.quantize import quantize_image_encoder
    from owl.export.verify import agreement
    from owl.export.writer import export_model
    from owl.models.configs import get_variant
    from owl.models.model import OwlModel

    config = get_variant(name)
    params = random_params(config)
    model = OwlModel(config, params, source=name)
    rng = np.random.default_rng(1)
    size = config.image_size
    pixels = [rng.standard_normal((1, size, size, 3)).astype(np.float32) for _ in range(images)]

    t0 = time.perf_counter()
    reference = _concat([model.embed_image(p, features=False) for p in pixels])
    print(f"{name}: float32 JAX reference on {images} images in {time.perf_counter() - t0:.0f} s")
    folder = work / f"{name}-onnx"
    export_model(model, folder, format="onnx", batch=1, tolerance=float("inf"))
    f32_graph = folder / "image_encoder.onnx"

    rows = []
    for label, groups in _configs():
        int8_graph = work / f"{name}-{'-'.join(groups)}.onnx"
        record = quantize_image_encoder(f32_graph, int8_graph, config, groups)
        run = load_onnx(int8_graph, None)
        got = _concat([run({"pixel_values": p}) for p in pixels])
        rows.append({"model": name, "setting": label, "quantized": record["quantized"],
                     **agreement(reference, got)})  # fmt: skip
        int8_graph.unlink()
        print(f"  {label}: {_line(rows[-1])}", flush=True)

    bf16 = OwlModel(config, params, source=name, precision="bf16")
    got = _concat([bf16.embed_image(p, features=False) for p in pixels])
    rows.append(
        {"model": name, "setting": "bf16 (JAX, --precision bf16)", **agreement(reference, got)}
    )
    print(f"  bf16: {_line(rows[-1])}", flush=True)
    return rows


def shapes_ap50(scenes: int, work: Path) -> list[dict]:
    """shapes-tiny's AP50 (base, novel) for f32 JAX, int8 and bf16 on `scenes` held-out scenes."""
    import os

    from owl.data import shapes
    from owl.inference.detector import Detector
    from owl.recipes.shapes import evaluate_text

    os.environ["OWL_CACHE_DIR"] = str(work / "cache")  # a fresh export for the int8 row
    heldout = work / "heldout"
    shapes.write_coco_dataset(heldout, scenes, 12345, progress=False)
    rows = []
    for label, precision, backend in (("f32 (JAX)", "f32", "jax"), ("int8", "int8", "auto"),
                                      ("bf16 (JAX)", "bf16", "auto")):  # fmt: skip
        detector = Detector(
            "shapes-tiny", batch_size=16, resize_method="tf", precision=precision, backend=backend
        )
        got = evaluate_text(detector, heldout, work / f"eval-{precision}")
        rows.append({"setting": label, "backend": detector.backend.name,
                     "AP50_base": got["AP50_base"], "AP50_novel": got["AP50_novel"]})  # fmt: skip
        print(f"  shapes-tiny {label} on {detector.backend.name}: AP50 base "
              f"{got['AP50_base']:.4f}, novel {got['AP50_novel']:.4f}", flush=True)  # fmt: skip
    return rows


def _line(row: dict) -> str:
    objectness = row.get("objectness_correlation")
    return (
        f"cosine median {row['class_embedding_cosine_median']:.5f}, "
        f"p1 {row['class_embedding_cosine_p1']:.5f}, box L1 {row['box_l1_mean']:.5f}"
        + (f", objectness r {objectness:.5f}" if objectness is not None else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="owlvit-b32,owlvit-b16,owlv2-b16")
    parser.add_argument("--images", type=int, default=2, help="random images per variant")
    parser.add_argument("--shapes", type=int, default=600, help="held-out scenes (0: skip)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="owl-quantize-bench-"))
    print(f"machine: {machine()}")
    print(f"command: python {' '.join(sys.argv)}")
    shapes_rows = shapes_ap50(args.shapes, work) if args.shapes else []
    rows = [
        row for name in args.variants.split(",") for row in run_variant(name, args.images, work)
    ]
    print(f"\nagreement with float32 JAX, full-size random weights, {args.images} random images")
    print("| model | setting | cosine median | cosine p1 | box L1 | objectness r |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        objectness = r.get("objectness_correlation")
        print(f"| {r['model']} | {r['setting']} | {r['class_embedding_cosine_median']:.5f} | "
              f"{r['class_embedding_cosine_p1']:.5f} | {r['box_l1_mean']:.5f} | "
              f"{'-' if objectness is None else f'{objectness:.5f}'} |")  # fmt: skip
    if shapes_rows:
        f32 = shapes_rows[0]
        print(f"\nshapes-tiny, ShapesWorld AP50 on {args.shapes} held-out scenes (seed 12345)")
        print("| precision | backend | AP50 base | change | AP50 novel | change |")
        print("|---|---|---|---|---|---|")
        for r in shapes_rows:
            print(f"| {r['setting']} | {r['backend']} | {r['AP50_base']:.4f} | "
                  f"{r['AP50_base'] - f32['AP50_base']:+.4f} | {r['AP50_novel']:.4f} | "
                  f"{r['AP50_novel'] - f32['AP50_novel']:+.4f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"shapes_tiny": shapes_rows, "full_size": rows}, indent=1))


if __name__ == "__main__":
    main()
