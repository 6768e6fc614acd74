"""Forward speed: owl against transformers, each in its own fresh process, alternating.

    python benchmarks/forward.py                          # B/32 @ 768, B/16 @ 768, OWLv2 B/16 @ 960
    python benchmarks/forward.py --batch 1,4 --rounds 2 --repeats 3
    python benchmarks/forward.py --sizes                  # + the L/14 variants
    python benchmarks/forward.py --models owlv2-b16 --device gpu --owl-precision bf16 \
        --hf-dtype bfloat16                               # what benchmarks/gpu.sh runs
    python benchmarks/forward.py --owl-backend onnx [--owl-precision int8]   # the default path

Same-process timings are not comparable: XLA and torch each start a thread pool sized to the
machine, and in one process the two pools fight over the same cores, which made the old
detect_bench report owl at 0.39x transformers on B/32 where separate processes give about 1.0x.
So every measurement here is a fresh subprocess that loads one library only, pinned to the same
`--threads` cores (sched_setaffinity; torch.set_num_threads too), and the two sides alternate
(owl, transformers, owl, transformers, ...) so that a change in machine load hits both.

Each child loads identical random weights (built once with transformers and saved in its format,
`owl.testing`), runs one call to warm up (for owl that is the compile), then `--repeats` timed
forwards of `--batch` images with 5 text queries: the image tower, the text tower and the heads
(`OwlModel.predict_raw` against the transformers model's forward). Reported: the median over
all timed forwards of all rounds, the owl/transformers ratio, owl's first call with a cold
compilation cache (round 1, a fresh cache folder) and with a warm one (later rounds), and the
peak RSS of each process (VmHWM) (on GPU, peak device memory as well).

`--owl-backend onnx` times owl's default CPU path instead (`--backend auto` with owl[export]):
the model exported to ONNX into the cache (once, before the clock starts, as a first `owl detect`
does) and run by ONNX Runtime: image encoder, text encoder and score graph, `--precision f32`
or `int8` (dynamic quantization of the vision blocks' weight matmuls, owl.export.quantize).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("owlvit-b32", "owlvit-b16", "owlv2-b16")
LARGE_MODELS = ("owlvit-l14", "owlv2-l14")

_PREPARE = r"""
import sys
from owl.models.configs import get_variant
from owl.testing import build_transformers_detector, save_transformers_detector
save_transformers_detector(build_transformers_detector(get_variant(sys.argv[1]), seed=0), sys.argv[2])
"""

_EXPORT = r"""
import sys
from owl.export.auto import open_backend
open_backend(sys.argv[1], "onnx", sys.argv[2])
"""

_CHILD = r"""
import json, os, statistics, sys, time
side, weights, batch, repeats, threads, device, precision, backend = sys.argv[1:9]
batch, repeats, threads = int(batch), int(repeats), int(threads)
if device == "cpu":
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
import numpy as np
from owl.models.configs import get_variant
from owl.testing import random_queries

rng = np.random.default_rng(0)
config = json.load(open(os.path.join(weights, "config.json")))
size = config["vision_config"]["image_size"]
pixels = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
ids = random_queries(5, rng)

if side == "owl" and backend == "onnx":
    from owl.export.auto import open_backend
    model, _ = open_backend(weights, "onnx", precision, threads=threads)
    def forward():
        image = model.embed_image(pixels)
        queries = np.asarray(model.embed_text(ids), np.float32)  # [5, E]
        return model.score(image["class_embeddings"], image["logit_shift"], image["logit_scale"], queries)
    def device_peak():
        return None
    import onnxruntime
    versions = f"onnxruntime {onnxruntime.__version__} (cpu)"
elif side == "owl":
    import jax
    if precision == "f32":
        jax.config.update("jax_default_matmul_precision", "highest")
    import owl
    model = owl.load(weights, precision=precision)
    def forward():
        out = model.predict_raw(pixels, ids)
        return out["logits"]
    def device_peak():
        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")
    versions = f"jax {jax.__version__} ({jax.default_backend()})"
else:
    import torch, transformers
    torch.set_num_threads(threads)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    cls = transformers.Owlv2ForObjectDetection if "owlv2" in config["model_type"] else transformers.OwlViTForObjectDetection
    dev = "cuda" if device == "gpu" else "cpu"
    model = cls.from_pretrained(weights, attn_implementation="sdpa", dtype=dtype).eval().to(dev)
    tiled = np.tile(ids.astype(np.int64), (batch, 1))
    inputs = dict(
        input_ids=torch.from_numpy(tiled).to(dev),
        attention_mask=torch.from_numpy((tiled > 0).astype(np.int64)).to(dev),
        pixel_values=torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).to(dev, dtype),
    )
    def forward():
        with torch.inference_mode():
            out = model(**inputs).logits
        if dev == "cuda":
            torch.cuda.synchronize()
        return out
    def device_peak():
        return torch.cuda.max_memory_allocated() if dev == "cuda" else None
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"

def peak_rss():  # VmHWM: this process's own peak (ru_maxrss would include the parent's at exec)
    with open("/proc/self/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0]) * 1024

t0 = time.perf_counter()
forward()
first = time.perf_counter() - t0
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    forward()
    times.append(time.perf_counter() - t0)
print(json.dumps({
    "first": first, "times": times,
    "peak_rss": peak_rss(),
    "device_peak": device_peak(), "versions": versions,
}))
"""


def machine() -> str:
    """The CPU (model and AVX-512/VNNI/BF16/AMX flags), cores, OS and Python: benchmarks/machine.py."""
    from machine import machine as describe

    return describe()


def run_child(side: str, weights: Path, args: argparse.Namespace, batch: int, env: dict) -> dict:
    precision = args.owl_precision if side == "owl" else args.hf_dtype
    cmd = [sys.executable, "-c", _CHILD, side, str(weights), str(batch), str(args.repeats)]
    cmd += [str(args.threads), args.device, precision, args.owl_backend]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{side} child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--sizes", action="store_true", help="add " + ", ".join(LARGE_MODELS))
    parser.add_argument("--batch", default="1", help="comma-separated batch sizes, e.g. 1,4")
    parser.add_argument("--rounds", type=int, default=2, help="owl/transformers alternations")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per process")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--owl-precision", choices=["f32", "bf16", "int8"], default="f32")
    parser.add_argument(
        "--owl-backend",
        choices=["jax", "onnx"],
        default="jax",
        help="onnx: owl's default CPU path (ONNX Runtime on the cached export)",
    )
    parser.add_argument("--hf-dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m] + (list(LARGE_MODELS) if args.sizes else [])
    batches = [int(b) for b in args.batch.split(",")]

    from machine import load_report

    from owl.models.configs import get_variant

    print(f"machine: {machine()}; {args.threads} threads for each side; device {args.device}")
    print(load_report())
    print(f"command: python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, OWL_CACHE_DIR=str(tmp / "owl-cache"), OWL_COMPILATION_CACHE="1")
        env.pop("OWL_ATTENTION", None)
        for name in models:
            cfg = get_variant(name)
            weights = tmp / name
            subprocess.run([sys.executable, "-c", _PREPARE, name, str(weights)], check=True)
            if args.owl_backend == "onnx":  # export into the cache in a process of its own, so
                # the timed children measure (time and peak RSS) running the export, as a second
                # `owl detect` does, not writing it
                subprocess.run([sys.executable, "-c", _EXPORT, str(weights), args.owl_precision],
                               check=True, env=env)  # fmt: skip
            for batch in batches:
                runs = {"owl": [], "transformers": []}
                for r in range(args.rounds):  # alternating which side goes first
                    for side in ("owl", "transformers") if r % 2 == 0 else ("transformers", "owl"):
                        runs[side].append(run_child(side, weights, args, batch, env))
                        print(
                            f"  {name} b{batch} {side}: {runs[side][-1]['times']}", file=sys.stderr
                        )
                owl_s = statistics.median(t for r in runs["owl"] for t in r["times"])
                hf_s = statistics.median(t for r in runs["transformers"] for t in r["times"])
                row = {
                    "model": name, "image_size": cfg.image_size, "tokens": cfg.num_patches + 1,
                    "batch": batch, "owl_s": owl_s, "transformers_s": hf_s, "ratio": owl_s / hf_s,
                    "owl_compile_cold_s": runs["owl"][0]["first"] - owl_s,
                    "owl_first_call_warm_cache_s": statistics.median(r["first"] for r in runs["owl"][1:])
                    if args.rounds > 1 else None,
                    "owl_peak_rss": max(r["peak_rss"] for r in runs["owl"]),
                    "transformers_peak_rss": max(r["peak_rss"] for r in runs["transformers"]),
                    "owl_device_peak": runs["owl"][0]["device_peak"],
                    "transformers_device_peak": runs["transformers"][0]["device_peak"],
                    "owl_precision": args.owl_precision, "transformers_dtype": args.hf_dtype,
                    "versions": [runs["owl"][0]["versions"], runs["transformers"][0]["versions"]],
                }  # fmt: skip
                rows.append(row)
    print(f"versions: {rows[0]['versions'][0]}; {rows[0]['versions'][1]}")
    gpu = args.device == "gpu"
    head = "| model | batch | owl s | transformers s | owl/transformers | owl compile (cold) s | owl first call (cached) s | peak RSS owl / transformers GB |"
    print(head + (" peak device GB owl / transformers |" if gpu else ""))
    print("|---" * (9 if gpu else 8) + "|")
    for r in rows:
        warm = r["owl_first_call_warm_cache_s"]
        line = (
            f"| {r['model']} @ {r['image_size']} ({r['tokens']} tokens) | {r['batch']} | "
            f"{r['owl_s']:.3f} | {r['transformers_s']:.3f} | {r['ratio']:.2f} | "
            f"{r['owl_compile_cold_s']:.1f} | {'-' if warm is None else f'{warm:.1f}'} | "
            f"{r['owl_peak_rss'] / 2**30:.2f} / {r['transformers_peak_rss'] / 2**30:.2f} |"
        )
        if gpu:
            o, t = r["owl_device_peak"] or 0, r["transformers_device_peak"] or 0
            line += f" {o / 2**30:.2f} / {t / 2**30:.2f} |"
        print(line)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
