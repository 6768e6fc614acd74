"""ShapesWorld stage 2: fine-tune the contrastively pretrained tiny CLIP into a detector.

Stage 1 (configs/shapes_clip.py, `owl pretrain`) writes ``WORKDIR/backbone.safetensors``; this
recipe starts from it (``init.mode=clip``) and trains detection on the 48 *base* categories only.
The 16 novel categories stay in the images, unlabelled, and are never used as negatives
(``data.remove_categories``, the LVIS rare-class hygiene of spec §5.5). ShapesWorld is
exhaustively annotated, so every absent base class of an image is a true negative.

The architecture is the `shapes-tiny` variant (the stage-1 model: 128 px, patch 16, 8x8 grid).
`owl shapes reproduce` runs generate -> pretrain -> this -> evaluate in one command; by hand:

    owl shapes generate --out data/shapes-train --num-images 20000 --seed 100
    owl train --config shapes_detect --workdir runs/shapes_detect \
        --set init.source=runs/shapes_clip/backbone.safetensors \
        --set data.train_annotations=data/shapes-train/annotations.json \
        --set data.train_images=data/shapes-train/images

Measured numbers: docs/shapes.md.
"""

from __future__ import annotations

import finetune_owlvit_b32 as base
import ml_collections

# The 16 novel ShapesWorld categories ("colour shape" with (shape - colour) % 8 in {0, 4}); kept
# literal so this file needs no owl import. tests/recipes/test_shapes_recipe.py checks them against
# owl.data.shapes.NOVEL_CATEGORY_IDS.
NOVEL_CATEGORIES = (
    "red circle", "red hexagon", "green square", "green cross", "blue triangle", "blue diamond",
    "yellow star", "yellow ring", "purple circle", "purple hexagon", "orange square",
    "orange cross", "black triangle", "black diamond", "white star", "white ring",
)  # fmt: skip


def get_config() -> ml_collections.ConfigDict:
    """The stage-2 recipe (see the module docstring)."""
    c = base.get_config()
    c.model.variant = "shapes-tiny"
    c.model.vision_drop_path = 0.0
    c.model.text_drop_path = 0.0
    c.init.mode = "clip"
    c.init.source = ""  # the stage-1 backbone.safetensors

    c.data.kind = "coco"
    c.data.remove_categories = NOVEL_CATEGORIES
    c.data.max_queries = 16
    c.data.max_instances = 16
    c.data.num_negatives = 48
    c.data.mosaic_sizes = (1,)  # held-out scenes are plain 128 px scenes
    c.data.mosaic_probs = (1.0,)
    c.data.prompt_templates = ("{}",)  # bare names, as `owl detect --query "red circle"` sends
    c.data.crop_area_range = (1.0, 1.0)  # no crops: held-out scenes are whole scenes
    c.data.workers = 0

    c.optim.lr = 2e-3
    c.optim.text_lr = 3e-4
    c.optim.freeze_text = False
    c.optim.warmup_steps = 250
    c.optim.clip = "global"

    c.train.batch_size = 32
    c.train.num_steps = 6500
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.dedup_queries = True  # 48 base names: encode each once per step
    c.train.keep_checkpoints = 1
    c.train.async_checkpoints = False
    c.train.progress_bar = False
    c.train.tensorboard = False

    c.eval.every = 0
    c.eval.batch_size = 32
    c.eval.num_batches = 0
    c.eval.ap = False
    c.eval.ap_prompts = "none"
    return c
