"""A tiny detector trained from scratch on synthetic data in about a minute on a laptop CPU.

For tests and for checking an installation: the `tiny-owlvit` architecture (128 px, 4x4 patch
grid, two narrow layers per tower), random initialisation, synthetic scenes of coloured
rectangles (`owl.data.synthetic`), 8 queries and 4 instances per image. Extends
configs/finetune_owlvit_b32.py.

Run:

    owl train --config train_tiny --workdir runs/tiny
    owl train --config train_tiny --workdir runs/tiny-v2 --set model.variant=tiny-owlv2

On ShapesWorld instead (``owl shapes generate`` writes a COCO-format dataset):

    owl shapes generate --out data/shapes --num-images 512
    owl train --config train_tiny --workdir runs/tiny-shapes --set data.kind=coco \
        --set data.train_annotations=data/shapes/annotations.json \
        --set data.train_images=data/shapes/images --set data.max_queries=16 \
        --set data.max_instances=8

From a CLIP-style backbone (e.g. one written by ShapesWorld contrastive pretraining) instead of
random weights: ``--set init.mode=clip --set init.source=PATH/backbone.safetensors``.
"""

from __future__ import annotations

import finetune_owlvit_b32 as base
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Tiny model, synthetic data, a short schedule (see the module docstring)."""
    c = base.get_config()
    c.model.variant = "tiny-owlvit"
    c.model.vision_drop_path = 0.0
    c.model.text_drop_path = 0.0
    c.init.mode = "random"
    c.init.source = ""
    c.data.kind = "synthetic"
    c.data.max_queries = 8
    c.data.max_instances = 4
    c.data.num_negatives = 4
    c.data.mosaic_sizes = (1,)
    c.data.mosaic_probs = (1.0,)
    c.data.workers = 0
    c.data.synthetic_examples = 8
    c.optim.lr = 3e-3
    c.optim.text_lr = 3e-3
    c.optim.freeze_text = True  # the random text tower is a fixed query encoder here
    c.optim.warmup_steps = 20
    c.optim.clip = "global"
    c.train.batch_size = 8
    c.train.num_steps = 300
    c.train.log_every = 25
    c.train.checkpoint_every = 100
    c.eval.every = 100
    c.eval.batch_size = 8
    c.eval.num_batches = 1
    c.eval.ap = False
    return c
