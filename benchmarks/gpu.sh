#!/usr/bin/env bash
# One prepared GPU run (H100/H200 class), under 5 minutes, on the GPU image as it is: owl from
# this source tree (PYTHONPATH, nothing of owl installed) against the image's own jax 0.11.2
# (CUDA 13), torch 2.11 and transformers 5.17 on Python 3.12. Only the packages owl imports that
# the image lacks are installed, offline, from the wheels carried in .gpu-wheels/.
#
#   python benchmarks/gpu_env.py prepare   # here, once: download .gpu-wheels/ (lists it, < 64 MiB)
#   bash benchmarks/gpu.sh                 # there, from the repository root
#   GPU_SH_DRY_RUN=1 bash benchmarks/gpu.sh   # on a CPU: the same steps, tiny models, no GPU
#
# It prints the versions it finds, fails in one line if jax sees no GPU, then runs
# benchmarks/forward.py (owl against transformers, each side in its own process) for
# owlvit-b16 @ 768 and owlv2-b16 @ 960 at batch 1 and 8, as one table:
#   owl f32 (matmul precision "highest")  vs  transformers sdpa float16
#   owl bf16                              vs  transformers sdpa bfloat16
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
dry=${GPU_SH_DRY_RUN:-0}
start=$(date +%s)

site="$(mktemp -d)/site"
"$PY" benchmarks/gpu_env.py versions
"$PY" benchmarks/gpu_env.py install "$site"
export PYTHONPATH="$(pwd):$site${PYTHONPATH:+:$PYTHONPATH}"
export OWL_CACHE_DIR="$(mktemp -d)"  # nothing to download: forward.py builds random weights

if [ "$dry" = "1" ]; then
    device=cpu
    common=(--device cpu --models tiny-owlvit,tiny-owlv2 --batch 1 --rounds 1 --repeats 2)
    "$PY" -c 'import jax; print(f"dry run on {jax.default_backend()}: {jax.devices()}")'
else
    device=gpu
    "$PY" - <<'PY'
import sys
import jax
if jax.default_backend() != "gpu":
    sys.exit(f"gpu.sh: jax {jax.__version__} sees no GPU (devices {jax.devices()}); check the CUDA plugin")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu.sh: torch {torch.__version__} sees no GPU")
print(f"GPU: {torch.cuda.get_device_name(0)}; jax {jax.__version__} on {jax.devices()[0]}")
PY
    common=(--device gpu --models owlvit-b16,owlv2-b16 --batch 1,8 --rounds 1 --repeats 10)
fi
out=$(mktemp -d)
"$PY" benchmarks/forward.py "${common[@]}" --owl-precision f32 --hf-dtype float16 --json "$out/f32.json"
"$PY" benchmarks/forward.py "${common[@]}" --owl-precision bf16 --hf-dtype bfloat16 --json "$out/bf16.json"
"$PY" - "$device" "$out/f32.json" "$out/bf16.json" <<'PY'
import json, sys
device, paths = sys.argv[1], sys.argv[2:]
rows = [r for path in paths for r in json.load(open(path))]
print(f"versions: {rows[0]['versions'][0]}; {rows[0]['versions'][1]}")
print(f"| model | batch | owl precision | owl ms | transformers dtype | transformers ms | owl/transformers | owl compile s | {device} memory GB owl / transformers |")
print("|---|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["model"], r["batch"], r["owl_precision"])):
    o, t = (r["owl_device_peak"] or 0) / 2**30, (r["transformers_device_peak"] or 0) / 2**30
    print(f"| {r['model']} @ {r['image_size']} | {r['batch']} | {r['owl_precision']} | "
          f"{r['owl_s'] * 1e3:.1f} | {r['transformers_dtype']} | {r['transformers_s'] * 1e3:.1f} | "
          f"{r['ratio']:.2f} | {r['owl_compile_cold_s']:.1f} | {o:.1f} / {t:.1f} |")
PY
echo "gpu.sh: done in $(( $(date +%s) - start )) s"
