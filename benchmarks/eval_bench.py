"""Throughput of `owl eval --model`'s prediction loop: images/s with the 7-template ensemble.

    python benchmarks/eval_bench.py [--models tiny-owlv2,owlvit-b32] [--images 8] [--batch-size 8]

For each model (random weights from `init_params`; speed does not depend on the values) it writes
a COCO-style dataset of ``--images`` random 640x480 JPEGs with the 80 COCO categories (real,
non-contiguous ids) to a temp folder, then times:

* prompt embedding: 7 templates x 80 categories = 560 prompts, embedded once (compile included);
* warm-up: one full pass of `owl.eval.runlog.predict_dataset` (compiles the image tower and the
  ensemble scoring);
* steady state: a second full pass with ``overwrite=True`` (decode + resize in threads, image
  encoding, class head x 7 templates, mean, top-300, JSONL log with fsync, detections.json).

It prints images/s of the steady-state pass and the machine it ran on.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite baseball_bat "
    "baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork knife spoon bowl "
    "banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair couch "
    "potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave "
    "oven toaster sink refrigerator book clock vase scissors teddy_bear hair_drier toothbrush"
).split()
COCO_IDS = (
    list(range(1, 12)) + list(range(13, 26)) + [27, 28] + list(range(31, 45))
    + list(range(46, 66)) + [67, 70] + list(range(72, 83)) + list(range(84, 91))
)  # fmt: skip


def _machine() -> str:
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

    return f"{machine()}; jax {jax.__version__} on {jax.default_backend()} ({devices}); {load_report()}"


def write_dataset(root: Path, num_images: int, seed: int = 0) -> tuple[Path, Path]:
    """Random 640x480 JPEGs (upscaled noise, so decoding costs about what a photo costs) + json."""
    rng = np.random.default_rng(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, annotations = [], []
    for n in range(num_images):
        small = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(small).resize((640, 480), Image.BILINEAR).save(
            images_dir / f"{n:012d}.jpg", quality=90
        )
        images.append({"id": n + 1, "file_name": f"{n:012d}.jpg", "width": 640, "height": 480})
        for _ in range(3):
            box = [float(rng.uniform(0, 400)), float(rng.uniform(0, 300)), 120.0, 90.0]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": n + 1,
                 "category_id": int(rng.choice(COCO_IDS)), "bbox": box}
            )  # fmt: skip
    categories = [
        {"id": i, "name": name.replace("_", " ")}
        for i, name in zip(COCO_IDS, COCO_NAMES, strict=True)
    ]
    ann = root / "instances.json"
    ann.write_text(
        json.dumps({"images": images, "categories": categories, "annotations": annotations})
    )
    return ann, images_dir


def run_model(name: str, num_images: int, batch_size: int) -> dict:
    from owl.data.annotations import CategoryMap, load_annotations
    from owl.eval.predict import find_images
    from owl.eval.prompts import embed_prompts
    from owl.eval.runlog import predict_dataset, run_settings
    from owl.inference.detector import Detector
    from owl.models.configs import get_variant
    from owl.models.model import OwlModel
    from owl.models.owl_vit import init_params
    from owl.text.prompts import CLIP_BEST_PROMPT_TEMPLATES

    cfg = get_variant(name)
    params = jax.jit(functools.partial(init_params, cfg))(jax.random.PRNGKey(0))
    model = OwlModel(cfg, params, source=name)
    detector = Detector(model, batch_size=batch_size, resize_method="tf")
    with tempfile.TemporaryDirectory() as tmp:
        ann, images_dir = write_dataset(Path(tmp), num_images)
        dataset = load_annotations(ann)
        images, _ = find_images(dataset, images_dir)
        categories = CategoryMap.from_annotations(dataset)

        t0 = time.perf_counter()
        ensemble = embed_prompts(detector, categories, CLIP_BEST_PROMPT_TEMPLATES)
        embed_s = time.perf_counter() - t0
        settings = run_settings(
            model=name, prompts="ensemble", templates=CLIP_BEST_PROMPT_TEMPLATES, top_k=300,
            resize="tf", long_prompts="official", categories=categories,
        )  # fmt: skip
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        predict_dataset(detector, images, ensemble, out, settings=settings)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        run = predict_dataset(detector, images, ensemble, out, settings=settings, overwrite=True)
        steady_s = time.perf_counter() - t0
        assert run.new == num_images and len(run.results) == num_images * 300
    return {
        "model": name,
        "image_size": cfg.image_size,
        "patches": cfg.num_patches,
        "prompts": len(CLIP_BEST_PROMPT_TEMPLATES) * len(categories),
        "embed_s": embed_s,
        "first_pass_s": warm_s,
        "images_per_s": num_images / steady_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny-owlv2,owlvit-b32")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: {_machine()}")
    print(f"dataset: {args.images} random 640x480 JPEGs, 80 COCO categories, 7 templates, "
          f"top-300, batch {args.batch_size}")  # fmt: skip
    for name in args.models.split(","):
        r = run_model(name.strip(), args.images, args.batch_size)
        print(
            f"{r['model']:<12} {r['image_size']} px, {r['patches']} boxes, {r['prompts']} prompts: "
            f"embedding {r['embed_s']:.1f} s, first pass (compiles) {r['first_pass_s']:.1f} s, "
            f"steady state {r['images_per_s']:.2f} images/s"
        )


if __name__ == "__main__":
    main()
