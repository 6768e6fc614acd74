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
# # 03 — Evaluate: AP on base and novel categories
#
# Generate a ShapesWorld evaluation set, run `owl eval`'s code through the Python API
# (`owl.eval.evaluation.evaluate`: predict with the official protocol, then score with
# pycocotools), compare AP on the categories the detector was trained on (base) with those it
# never saw a box of (novel), and look at precision-recall curves and per-category AP.
#
# With real weights, set `MODEL` and point `ANNOTATIONS`/`IMAGES` at COCO or LVIS val.

# %%
MODEL = "shapes-tiny"
NUM_IMAGES = 24  # a small set, so this runs in seconds; docs/shapes.md uses 500
SEED = 11  # a world shapes-tiny was not trained on

# %%
from pathlib import Path

from IPython.display import Image

import owl
from owl.data.shapes import write_coco_dataset
from owl.eval.evaluation import evaluate
from owl.plots import eval_plots

out = Path("runs/evaluate")
ANNOTATIONS = write_coco_dataset(out / "data", NUM_IMAGES, SEED, progress=False)
IMAGES = out / "data" / "images"
print(ANNOTATIONS)

# %% [markdown]
# ## Predict and score
#
# The dataset's categories carry `split` "base" or "novel"; the novel ids make `evaluate` report
# AP over each part too. The run is resumable: run the cell again and nothing is predicted anew.

# %%
import json

categories = json.load(open(ANNOTATIONS))["categories"]
novel = [c["id"] for c in categories if c["split"] == "novel"]
detector = owl.Detector(MODEL, batch_size=8, resize_method="tf")
result = evaluate(detector, ANNOTATIONS, IMAGES, out / "eval", novel_category_ids=novel)
stats = result.stats
for key in ("AP", "AP50", "AP_base", "AP50_base", "AP_novel", "AP50_novel"):
    print(f"{key:11s} {stats[key]:.4f}")

# %% [markdown]
# ## Precision-recall curves and per-category AP
#
# `owl.plots` draws the metrics' own curves (the same files as `owl eval --plots DIR`), and
# writes the plotted values beside each PNG as JSON.

# %%
pr_png, per_category_png = eval_plots(result.metrics, out / "plots")
Image(filename=str(pr_png))

# %%
Image(filename=str(per_category_png))

# %% [markdown]
# The numbers behind the pictures are the metrics themselves:

# %%
curves = result.metrics["pr_curves"]
print(
    "precision at recall 0.5, IoU 0.50:",
    {g: round(curves[g]["precision50"][50], 3) for g in ("overall", "base", "novel")},
)
worst = sorted(result.metrics["per_category"].items(), key=lambda kv: kv[1]["AP"])
print("hardest categories:", [(n, round(r["AP"], 3)) for n, r in worst if r["AP"] > -1][:5])
