"""Detection speed: owl against transformers on identical weights, same machine, same run.

    python benchmarks/detect_bench.py [--model owlvit-b32] [--images 10] [--queries 20] [--repeats 5]

(a) single-image forward at the model's input size (768 px for owlvit-b32): owl's jitted forward
    (image encoder + text encoder + heads, `OwlModel.predict_raw`) versus transformers'
    `OwlViTForObjectDetection.forward`, on the same preprocessed pixels and token ids; median of
    `--repeats` after a warm-up; owl's compile time reported separately.
(b) `--queries` text queries x `--images` images end to end from image files: `owl.Detector.detect`
    versus transformers' "zero-shot-object-detection" pipeline (which runs the model once per
    label and image).
(c) a new query set on an already-encoded image: `Detector.detect` on a cached image with a query
    set it has not seen (text encoding included), and with pre-embedded queries (scoring and
    post-processing only). Median over several different query sets.

Weights are random but identical on both sides (transformers model built offline, re-drawn
weights, saved and loaded into owl; see `owl.testing`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = (
    "red green blue yellow small large striped wooden metal plastic old shiny dark bright round "
    "square tall short soft hard"
).split()
NOUNS = (
    "car bicycle dog cat person chair table bottle cup phone laptop book clock vase plant bird "
    "horse boat truck bus kite umbrella bag shoe hat"
).split()


def _queries(n: int, offset: int) -> list[str]:
    rng = np.random.default_rng(offset)
    return [f"a {rng.choice(WORDS)} {rng.choice(NOUNS)} {i + offset}" for i in range(n)]


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="owlvit-b32")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import jax
    import torch
    import transformers

    import owl
    from owl.inference.detector import Detector
    from owl.models.configs import get_variant
    from owl.testing import (
        build_transformers_detector,
        build_transformers_tokenizer,
        random_queries,
        save_transformers_detector,
        transformers_outputs,
    )

    torch.set_num_threads(os.cpu_count() or 1)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__}, transformers {transformers.__version__}"
    )
    cfg = get_variant(args.model)
    hf_model = build_transformers_detector(cfg, seed=0)
    tmp = Path(tempfile.mkdtemp())
    save_transformers_detector(hf_model, tmp / "model")
    model = owl.load(tmp / "model")
    print(f"model: {args.model} at {cfg.image_size} px, {cfg.num_patches} boxes per image")

    rng = np.random.default_rng(0)
    if "a" not in skip:
        pixels = rng.normal(size=(1, cfg.image_size, cfg.image_size, 3)).astype(np.float32)
        ids = random_queries(1, rng)
        t0 = time.perf_counter()
        model.predict_raw(pixels, ids)
        compile_s = time.perf_counter() - t0
        owl_s = _median_time(lambda: model.predict_raw(pixels, ids), args.repeats)
        transformers_outputs(hf_model, pixels, ids)  # warm-up
        hf_s = _median_time(lambda: transformers_outputs(hf_model, pixels, ids), args.repeats)
        print(
            f"(a) single-image forward, median of {args.repeats}: owl {owl_s * 1e3:.0f} ms, "
            f"transformers {hf_s * 1e3:.0f} ms, owl/transformers = {owl_s / hf_s:.2f}x "
            f"(owl first call incl. compile {compile_s:.1f} s)"
        )

    image_dir = tmp / "images"
    image_dir.mkdir()
    sizes = [(640, 480), (480, 640), (800, 600), (500, 500), (1024, 768)]
    paths = []
    for i in range(args.images):
        w, h = sizes[i % len(sizes)]
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        paths.append(image_dir / f"img{i:02d}.jpg")
        Image.fromarray(arr).save(paths[-1], quality=90)
    queries = _queries(args.queries, 0)

    detector = Detector(model, batch_size=1)
    if "b" not in skip:
        detector.detect([paths[0]], _queries(args.queries, 1000))  # compile outside the timing
        detector._images.clear()
        t0 = time.perf_counter()
        detector.detect(paths, queries, threshold=0.1)
        owl_b = time.perf_counter() - t0

        tok = build_transformers_tokenizer(tmp / "tokenizer", pad_token="!", model_max_length=16)
        if cfg.family == "owlv2":
            image_processor = transformers.Owlv2ImageProcessorPil(
                size={"height": cfg.image_size, "width": cfg.image_size}
            )
        else:
            image_processor = transformers.OwlViTImageProcessorPil(
                size={"height": cfg.image_size, "width": cfg.image_size},
                crop_size={"height": cfg.image_size, "width": cfg.image_size},
            )
        pipe = transformers.pipeline(
            "zero-shot-object-detection", model=hf_model, tokenizer=tok,
            image_processor=image_processor, device="cpu",
        )  # fmt: skip
        t0 = time.perf_counter()
        for p in paths:
            pipe(str(p), candidate_labels=queries, threshold=0.1)
        hf_b = time.perf_counter() - t0
        print(
            f"(b) {args.queries} queries x {args.images} images from files: owl Detector "
            f"{owl_b:.1f} s ({args.images / owl_b:.2f} img/s), transformers pipeline {hf_b:.1f} s "
            f"({args.images / hf_b:.3f} img/s): owl is {hf_b / owl_b:.1f}x faster"
        )

    if "c" not in skip:
        detector.detect([paths[0]], queries)  # image encoded and cached; scorer compiled
        calls = detector.image_encoder_calls
        sets = [_queries(args.queries, 100 * (k + 1)) for k in range(args.repeats + 1)]
        detector.detect([paths[0]], sets[0])  # warm-up: text encoder at this bucket
        new_text = _median_time_iter(lambda q: detector.detect([paths[0]], q), sets[1:])
        prepared = [
            detector.prepare_queries(_queries(args.queries, 7000 + k)) for k in range(args.repeats)
        ]
        pre_embedded = _median_time_iter(lambda q: detector.detect([paths[0]], q), prepared)
        assert detector.image_encoder_calls == calls, "the cached image was encoded again"
        print(
            f"(c) new query set ({args.queries} queries) on an encoded image, median: "
            f"{new_text * 1e3:.1f} ms including text encoding; {pre_embedded * 1e3:.2f} ms with "
            f"pre-embedded queries (image cache hits; no image re-encoding)"
        )


def _median_time_iter(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
