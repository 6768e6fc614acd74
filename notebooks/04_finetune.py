# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 — Fine-tune on a small COCO-format dataset
#
# A short fine-tune with `owl.train.trainer.train_and_evaluate` (what `owl train` runs), the loss
# curve it draws (`training.png`), and detections before and after.
#
# The data is a small ShapesWorld set in COCO format (an annotations JSON and a folder of
# images): swap in your own files. The recipe is `configs/train_tiny` (`owl/configs/`), started
# from `MODEL`'s weights; for real weights use the `finetune_owlvit_b32` or `finetune_owlv2_b16`
# recipe and far more steps. Needs `pip install "owl[train]"`.

# %%
MODEL = "shapes-tiny"
VARIANT = "shapes-tiny"  # the architecture of MODEL (see `owl models`)
STEPS = 30  # a demonstration; a real fine-tune runs thousands

# %%
import json
import shutil
from pathlib import Path

from IPython.display import Image
from PIL import Image as PILImage

import owl
from owl.data.shapes import write_coco_dataset
from owl.inference.draw import draw_detections
from owl.train.config import load_config, resolve_config
from owl.train.trainer import train_and_evaluate

out = Path("runs/finetune")
train_json = write_coco_dataset(out / "train", 32, seed=3, progress=False)
val_json = write_coco_dataset(out / "val", 8, seed=4, progress=False)
image = out / "val" / "images" / "000000.png"
val = json.load(open(val_json))
names = {c["id"]: c["name"] for c in val["categories"]}
queries = sorted({names[a["category_id"]] for a in val["annotations"] if a["image_id"] == 1})
print("queries: the objects of", image.name, queries)

# %% [markdown]
# ## Before

# %%
before = owl.Detector(MODEL)
[dets_before] = before.detect(image, queries, threshold=0.2)
print(
    len(dets_before),
    "detections before:",
    list(zip(dets_before.labels, dets_before.confidence.round(2), strict=True)),
)

# %% [markdown]
# ## Fine-tune
#
# The same `key=value` overrides as `owl train --set`.

# %%
workdir = out / "run"
shutil.rmtree(workdir, ignore_errors=True)  # start afresh each time (or pass resume=True)
config = load_config(
    resolve_config("train_tiny"),
    [
        f"model.variant={VARIANT}",
        "init.mode=owl",
        f"init.source={MODEL}",
        "data.kind=coco",
        f"data.train_annotations={train_json}",
        f"data.train_images={train_json.parent / 'images'}",
        f"data.eval_annotations={val_json}",
        f"data.eval_images={val_json.parent / 'images'}",
        "data.max_queries=16",
        "data.max_instances=8",
        "optim.lr=1e-4",
        "optim.warmup_steps=5",
        "optim.freeze_text=True",
        "train.batch_size=4",
        f"train.num_steps={STEPS}",
        "train.log_every=5",
        f"train.checkpoint_every={STEPS}",
        f"eval.every={STEPS}",
        "eval.ap=True",
        "eval.ap_max_images=8",
        "train.progress_bar=False",
        "train.tensorboard=False",
    ],
)
train_and_evaluate(config, workdir)
print(sorted(p.name for p in workdir.iterdir()))

# %% [markdown]
# ## The loss curve
#
# `owl train` redraws `training.png` at each evaluation and at the end: loss terms, learning
# rate, and the eval AP; the numbers are in `metrics.jsonl`.

# %%
Image(filename=str(workdir / "training.png"))

# %% [markdown]
# ## After
#
# The fine-tuned model is `model.safetensors` in the run folder, loadable like any checkpoint
# (`owl detect --model runs/finetune/run/model.safetensors ...`).

# %%
after = owl.Detector(workdir / "model.safetensors")
[dets_after] = after.detect(image, queries, threshold=0.2)
print(
    len(dets_after),
    "detections after:",
    list(zip(dets_after.labels, dets_after.confidence.round(2), strict=True)),
)

left, right = draw_detections(image, dets_before), draw_detections(image, dets_after)
side = PILImage.new("RGB", (left.width * 2, left.height))
side.paste(left, (0, 0))
side.paste(right, (left.width, 0))
side.resize((side.width * 3, side.height * 3))
