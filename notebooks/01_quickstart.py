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
# # 01 — Quickstart: find things by name
#
# Load a detector, ask for objects with text queries, give one query its own threshold, look at
# the drawn result, and take the detections out as numpy arrays, JSON and `supervision`.
#
# Runs offline on `shapes-tiny`, the small ShapesWorld detector that ships inside owl. With real
# weights, change `MODEL` to e.g. `"owlv2-b16-ensemble"` and `IMAGE` to a photo of yours.

# %%
MODEL = "shapes-tiny"  # any name of `owl models`, or a checkpoint path
IMAGE = "../examples/shapes/images/000000.png"
QUERIES = [
    "red circle",
    "purple hexagon",
    "purple triangle@0.2",
]  # "text@threshold" as `owl detect`

# %%
import json
from pathlib import Path

import numpy as np

import owl
from owl.inference.draw import draw_detections
from owl.inference.queries import parse_text_query

detector = owl.Detector(MODEL)
print(detector.model.config.family, detector.model.config.image_size, "px")

# %% [markdown]
# ## Text queries
#
# `detect` takes an image (path, array or PIL image) or a list, and queries: plain strings, or
# `TextQuery(text, threshold)` for a per-query threshold. `parse_text_query` reads the CLI's
# `"text@0.2"` form. The image is encoded once (cached); each text once.

# %%
queries = [parse_text_query(q) for q in QUERIES]
[dets] = detector.detect(IMAGE, queries, threshold=0.1)
for label, score, box in zip(dets.labels, dets.confidence, dets.xyxy.round(1), strict=True):
    print(f"{label:16s} {score:.3f} {box}")

# %% [markdown]
# ## Drawn inline
#
# `draw_detections` returns a PIL image (the same drawing as `owl detect --save-dir`).

# %%
drawn = draw_detections(IMAGE, dets)
drawn.resize((drawn.width * 3, drawn.height * 3))

# %% [markdown]
# ## Detections as data
#
# `Detections` holds numpy arrays (`xyxy` in pixels of the original image, `confidence`,
# `class_id` = the query index); indexing with a mask filters it; `with_nms` returns a new one.

# %%
confident = dets[dets.confidence > 0.3]
print(type(confident.xyxy), confident.xyxy.shape, confident.confidence.dtype)
print(len(dets), "detections,", len(confident), "above 0.3,", len(dets.with_nms(0.5)), "after NMS")
print(json.dumps(dets.to_dict(), indent=1)[:400])

# %% [markdown]
# The same record `owl detect -o dets.json` writes, through the one JSON writer:

# %%
from owl.inference.outputs import read_json, write_json

Path("runs").mkdir(exist_ok=True)
write_json("runs/quickstart_dets.json", [dets])
[back] = read_json("runs/quickstart_dets.json")
assert np.allclose(back.xyxy, dets.xyxy, atol=0.01)
print(open("runs/quickstart_dets.json").read()[:300])

# %% [markdown]
# ## supervision
#
# `to_supervision()` gives a `supervision.Detections` for its annotators and trackers
# (`pip install supervision`); `supervision_fields()` is what it is built from.

# %%
fields = dets.supervision_fields()
print({k: getattr(v, "shape", v) for k, v in fields.items()})
try:
    sv_dets = dets.to_supervision()
    print(type(sv_dets).__name__, len(sv_dets))
except ImportError as e:
    print(e)
