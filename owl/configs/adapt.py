"""Adapt a detector to a user's classes from a few dozen labelled images (`owl train --data`).

The small-data recipe behind the front door (docs/adapt.md):

    owl train --data mydata/ --model owlv2-b16 --out mine.safetensors

* CDC early stopping on (configs key ``cdc``): no validation set needed; ``--out`` holds the model
  of CDC's step;
* the text tower frozen (a few dozen images cannot teach it language; it keeps the open
  vocabulary's query side intact), lower image-side rates than the big recipes;
* no mosaics, crops or flips (so each image keeps its CDC half, see owl/train/cdc.py);
* ``train.num_steps`` is scaled to the data set's size by the front door (`steps_for`), and every
  value it sets is printed at start; ``--config``/``--set`` override anything.

`get_config()` is the OWL-ViT v1 recipe; `for_model(name)` gives the one for a model name
(v1 ``owlvit-*``, v2 ``owlv2-*``, and ``shapes-tiny``).
"""

from __future__ import annotations

import finetune_owlvit_b32 as base
import ml_collections

# (variant family prefix, image-side lr, text lr, batch size)
_RATES = {"owlvit": (2e-5, 0.0, 8), "owlv2": (1e-5, 0.0, 4), "shapes-tiny": (5e-4, 0.0, 8)}


def family(model: str) -> str:
    """ "shapes-tiny", "owlv2" or "owlvit" for a model name or path."""
    name = str(model).lower()
    if "shapes" in name:
        return "shapes-tiny"
    return "owlv2" if "owlv2" in name or "v2" in name else "owlvit"


def steps_for(num_images: int, batch_size: int) -> int:
    """The schedule length for a data set of ``num_images``: 100 epochs, within [100, 3000]."""
    epochs = 100
    return max(100, min(3000, -(-num_images * epochs // batch_size)))


def for_model(model: str) -> ml_collections.ConfigDict:
    """The recipe for ``model`` (a registry name such as owlv2-b16 or shapes-tiny, or a path)."""
    c = base.get_config()
    fam = family(model)
    lr, text_lr, batch = _RATES[fam]
    c.init.mode = "owl"
    c.init.source = str(model)
    c.model.variant = {"shapes-tiny": "shapes-tiny", "owlv2": "owlv2-b16"}.get(fam, "owlvit-b32")
    c.model.vision_drop_path = 0.0
    c.model.text_drop_path = 0.0
    c.data.mosaic_sizes = (1,)
    c.data.mosaic_probs = (1.0,)
    c.data.crop_area_range = (1.0, 1.0)
    c.data.workers = 0
    c.data.max_queries = 16 if fam == "shapes-tiny" else 50
    c.data.max_instances = 16 if fam == "shapes-tiny" else 50
    c.data.num_negatives = 8 if fam == "shapes-tiny" else 30
    if fam == "shapes-tiny":
        c.data.prompt_templates = ("{}",)  # shapes-tiny was trained on bare names
    c.optim.lr = lr
    c.optim.text_lr = text_lr
    c.optim.freeze_text = True
    c.optim.warmup_steps = 10
    c.optim.clip = "global"
    c.train.batch_size = batch
    c.train.num_steps = 300
    c.train.log_every = 25
    c.train.checkpoint_every = 100
    c.train.keep_checkpoints = 1
    c.train.async_checkpoints = False
    c.train.tensorboard = False
    c.train.dedup_queries = True
    c.cdc.enabled = True
    c.cdc.patience = 60
    c.cdc.min_steps = 30
    c.eval.every = 0
    c.eval.ap = False
    return c


def get_config() -> ml_collections.ConfigDict:
    """The OWL-ViT v1 (owlvit-b32) adaptation recipe."""
    return for_model("owlvit-b32")
