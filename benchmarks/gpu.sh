#!/usr/bin/env bash
# One prepared GPU run (H100/H200 class), under 5 minutes: owl against transformers on the GPU for
# owlvit-b16 @ 768 and owlv2-b16 @ 960 at batch 1 and 8, each side in its own process
# (benchmarks/forward.py), printed as one table:
#   owl f32 (matmul precision "highest")  vs  transformers sdpa float16
#   owl bf16                              vs  transformers sdpa bfloat16
#
#   bash benchmarks/gpu.sh            # from the repository root, on the GPU machine
#
# Installs from the repository's own files: with a .whl/ folder of wheels (jax[cuda12] 0.10.2 and
# its CUDA plugin, a CUDA torch 2.13, transformers, the owl dependencies), offline, into
# /tmp/site; otherwise with pip from the registries (jax[cuda12] and a CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
else
    "$PY" -m pip install -q "jax[cuda12]==0.10.2" "torch==2.13.0" "transformers==5.24.0"
    "$PY" -m pip install -q -e .
fi
"$PY" - <<'PY'
import jax, torch
assert jax.default_backend() == "gpu", f"jax sees no GPU: {jax.devices()}"
assert torch.cuda.is_available(), "torch sees no GPU"
print(f"GPU: {torch.cuda.get_device_name(0)}; jax {jax.__version__}, torch {torch.__version__}")
PY
out=$(mktemp -d)
common=(--device gpu --models owlvit-b16,owlv2-b16 --batch 1,8 --rounds 1 --repeats 10)
"$PY" benchmarks/forward.py "${common[@]}" --owl-precision f32 --hf-dtype float16 --json "$out/f32.json"
"$PY" benchmarks/forward.py "${common[@]}" --owl-precision bf16 --hf-dtype bfloat16 --json "$out/bf16.json"
"$PY" - "$out/f32.json" "$out/bf16.json" <<'PY'
import json, sys
rows = [r for path in sys.argv[1:] for r in json.load(open(path))]
print("| model | batch | owl precision | owl ms | transformers dtype | transformers ms | owl/transformers | owl compile s | GPU memory GB owl / transformers |")
print("|---|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["model"], r["batch"], r["owl_precision"])):
    o, t = (r["owl_device_peak"] or 0) / 2**30, (r["transformers_device_peak"] or 0) / 2**30
    print(f"| {r['model']} @ {r['image_size']} | {r['batch']} | {r['owl_precision']} | "
          f"{r['owl_s'] * 1e3:.1f} | {r['transformers_dtype']} | {r['transformers_s'] * 1e3:.1f} | "
          f"{r['ratio']:.2f} | {r['owl_compile_cold_s']:.1f} | {o:.1f} / {t:.1f} |")
PY
