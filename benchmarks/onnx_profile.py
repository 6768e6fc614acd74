"""Where the default CPU path spends its time: ONNX Runtime's own profile of the image encoder.

    python benchmarks/onnx_profile.py [--variant owlv2-b16] [--precision f32|int8] [--repeats 2]
        [--export DIR]

Random weights (benchmarks/onnx_forward.py's generator), exported as `owl export` does
(`--export DIR` reuses an f32 export folder; int8 is quantized from it with
`owl.export.quantize`), then one warm-up and `--repeats` forwards of one random image with
ONNX Runtime's profiler on, 2 intra-op threads. The table sums the kernel time per operator
type over the timed forwards: what is left to win, and where (the README's performance section
cites it where a target is missed).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import load_report, machine  # benchmarks/machine.py
from onnx_forward import random_params


def profile(graph: Path, size: int, repeats: int, threads: int) -> tuple[dict[str, float], int]:
    """Kernel microseconds per operator type over `repeats` forwards, and the forwards run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(graph.parent / f"profile-{graph.stem}")
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(1).standard_normal((1, size, size, 3)).astype(np.float32)
    for _ in range(1 + repeats):
        session.run(None, {"pixel_values": pixels})
    trace = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in trace if e.get("name") == "model_run"]
    start = runs[1]["ts"]  # skip the warm-up forward
    per_op: dict[str, float] = collections.Counter()
    for e in trace:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            per_op[e["args"]["op_name"]] += e["dur"]
    return dict(per_op), len(runs) - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="owlv2-b16")
    parser.add_argument("--precision", choices=["f32", "int8"], default="f32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--export", type=Path, default=None, help="an f32 export folder to reuse")
    args = parser.parse_args()
    from owl.export.quantize import quantize_image_encoder
    from owl.export.writer import export_model
    from owl.models.configs import get_variant
    from owl.models.model import OwlModel

    config = get_variant(args.variant)
    print(f"machine: {machine()}; {load_report()}")
    print(f"command: python {' '.join(sys.argv)}")
    work = Path(tempfile.mkdtemp(prefix="owl-onnx-profile-"))
    folder = args.export
    if folder is None:
        folder = work / "export"
        model = OwlModel(config, random_params(config), source=args.variant)
        export_model(model, folder, format="onnx", batch=1, tolerance=float("inf"))
    graph = folder / "image_encoder.onnx"
    if args.precision == "int8":
        graph = work / "image_encoder.int8.onnx"
        quantize_image_encoder(folder / "image_encoder.onnx", graph, config)
    per_op, runs = profile(graph, config.image_size, args.repeats, args.threads)
    total = sum(per_op.values())
    print(f"\n{args.variant} image encoder, {args.precision}, {args.threads} threads: "
          f"{total / runs / 1e6:.3f} s of kernels a forward (mean of {runs})")  # fmt: skip
    print("| operator | s a forward | share |")
    print("|---|---|---|")
    for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:8]:
        print(f"| {op} | {us / runs / 1e6:.3f} | {us / total:.0%} |")
    for f in work.glob("profile-*.json"):
        os.unlink(f)


if __name__ == "__main__":
    main()
