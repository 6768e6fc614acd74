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
# # 02 — One-shot: find things like the one in this box
#
# An exemplar box becomes a query (`owl.inference.queries.ImageQuery`); several exemplars are
# averaged; the token that stands for the box is picked by IoU (OWL-ViT) or objectness (OWLv2,
# `owl.inference.image_query`); an embedding is saved and reused; one query runs over a folder.
# Then the one-shot AP of `owl.eval.one_shot`.
#
# Runs offline on `shapes-tiny`; change `MODEL` for real weights.

# %%
MODEL = "shapes-tiny"
THRESHOLD = 0.1  # image-query scores; raise it for real weights

# %%
import json
from pathlib import Path

import numpy as np
from PIL import Image

import owl
from owl.data.shapes import write_coco_dataset
from owl.inference.draw import draw_detections
from owl.inference.queries import ImageQuery, load_query_embedding, save_query_embedding

detector = owl.Detector(MODEL)
# A few ShapesWorld scenes (COCO format) in which categories repeat across images.
ANNOTATIONS = write_coco_dataset("runs/one_shot/data", 16, seed=21, progress=False)
IMAGES = ANNOTATIONS.parent / "images"
data = json.load(open(ANNOTATIONS))
names = {c["id"]: c["name"] for c in data["categories"]}
files = {im["id"]: str(Path(IMAGES) / im["file_name"]) for im in data["images"]}


def box_of(ann):
    x, y, w, h = ann["bbox"]
    return (x, y, x + w, y + h)


# the exemplar: the first box of the category seen in most images
images_with = {}
for a in data["annotations"]:
    images_with.setdefault(a["category_id"], set()).add(a["image_id"])
common = max(images_with, key=lambda c: len(images_with[c]))
exemplar = next(a for a in data["annotations"] if a["category_id"] == common)
label = names[exemplar["category_id"]]
print("exemplar:", label, box_of(exemplar), "in", files[exemplar["image_id"]])

# %% [markdown]
# ## An exemplar box becomes a query
#
# Search the other images for things like it (NMS is on by default for image queries).

# %%
query = ImageQuery(((files[exemplar["image_id"]], box_of(exemplar)),), label=f"like {label}")
others = [files[i] for i in sorted(images_with[common]) if i != exemplar["image_id"]]
results = detector.detect(others, [query], threshold=THRESHOLD)
for path, dets in zip(others, results, strict=True):
    print(Path(path).name, len(dets), "found, best", dets.confidence[:1].round(3))
drawn = draw_detections(others[0], results[0])
drawn.resize((drawn.width * 3, drawn.height * 3))

# %% [markdown]
# ## Several exemplars, averaged
#
# Every box of the same category in the annotations, one embedding each, averaged.

# %%
same = [a for a in data["annotations"] if a["category_id"] == exemplar["category_id"]]
few = ImageQuery(
    tuple((files[a["image_id"]], box_of(a)) for a in same), label=f"{label} x{len(same)}"
)
one_emb, few_emb = detector.embed_image_query(query), detector.embed_image_query(few)
print(
    len(same),
    "exemplars; cosine(one, averaged) =",
    float(one_emb @ few_emb / np.linalg.norm(one_emb) / np.linalg.norm(few_emb)),
)

# %% [markdown]
# ## Objectness against IoU selection, side by side
#
# "iou" (OWL-ViT's heuristic) takes the predicted box that best overlaps the exemplar box, among
# those that do enough; "objectness" (OWLv2) takes the most object-like box inside it. Only a
# model with an objectness head (OWLv2) has the second; shapes-tiny is an OWL-ViT, so there the
# right panel compares with "the whole image" as exemplar instead.

# %%
has_objectness = detector.model.config.objectness
methods = ["iou", "objectness"] if has_objectness else ["iou", "iou (whole image)"]
panels = []
for method in methods:
    if method == "iou (whole image)":
        q = ImageQuery(((files[exemplar["image_id"]], None),), label=method, method="iou")
    else:
        q = ImageQuery(
            ((files[exemplar["image_id"]], box_of(exemplar)),), label=method, method=method
        )
    [dets] = detector.detect(others[0], [q], threshold=THRESHOLD)
    print(f"{method:18s}", len(dets), "detections", dets.confidence[:3].round(3))
    panels.append(draw_detections(others[0], dets))
side = Image.new("RGB", (panels[0].width * 2, panels[0].height))
for k, p in enumerate(panels):
    side.paste(p, (k * p.width, 0))
side.resize((side.width * 3, side.height * 3))

# %% [markdown]
# ## Save an embedding, reuse it
#
# `owl embed-query -o FILE.npz` writes the same file; `owl detect --query-embedding FILE.npz@0.2`
# reads it. It holds plain arrays (never a pickle) and the model it belongs to.

# %%
path = save_query_embedding("runs/exemplar.npz", few_emb, label=label, model=MODEL)
saved = load_query_embedding(path, threshold=THRESHOLD)
print(saved.label, saved.model, saved.embedding.shape)

# %% [markdown]
# ## The same query across a folder
#
# `detect_each` goes image by image and reports a bad image instead of stopping.

# %%
folder = sorted(str(p) for p in Path(IMAGES).glob("*.png"))[:8]
for result in detector.detect_each(folder, [saved]):
    if result.error:
        print("could not read", result.source, result.error)
    else:
        print(Path(result.source).name, [f"{s:.2f}" for s in result.detections.confidence])

# %% [markdown]
# ## One-shot AP
#
# `owl.eval.one_shot`: one exemplar per category from a support set, AP of those image queries
# on an evaluation set (here one small set serves as both, just to show the calls; `owl shapes
# reproduce` keeps them apart).

# %%
from owl.eval.one_shot import choose_exemplars, evaluate_one_shot

category_ids = sorted(images_with, key=lambda c: -len(images_with[c]))[:4]
exemplars = choose_exemplars(ANNOTATIONS, IMAGES, category_ids)
result = evaluate_one_shot(detector, ANNOTATIONS, IMAGES, exemplars, "runs/one_shot")
print("one-shot AP", round(result["AP"], 3), "AP50", round(result["AP50"], 3))
