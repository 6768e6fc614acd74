"""Contrastive pretraining of a tiny CLIP on ShapesWorld (stage 1 of issue 6).

OWL-ViT's recipe (Minderer et al. 2022) starts from a contrastively trained image-text backbone.
This config trains one from scratch on ShapesWorld image-caption pairs (all 64 categories, novel
ones included); `owl train` then fine-tunes `WORKDIR/backbone.safetensors` into a detector.

Command:

    owl pretrain --config shapes_clip --workdir runs/shapes_clip

Measured in `owl shapes reproduce` on this project's 2-core CPU (docs/shapes.md):
1,300 steps x 128 pairs in 662 s of training (about 230 pairs/s); loss 5.2 -> 1.58. Zero-shot
top-1 over the 64 prompts on held-out one-object scenes: base 0.734, novel 0.672 (chance 0.016;
colour 0.998, shape 0.721); caption retrieval among held-out one-object scenes: image->text
0.752, text->image 0.865 (chance 0.008).
"""

from __future__ import annotations

import ml_collections

from owl.models.configs import get_variant


def get_config() -> ml_collections.ConfigDict:
    """Returns the locked pretraining config; change values with `--set key=value`."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # ShapesWorld training world and parameter init

    # Model: the `shapes-tiny` variant of the variant table (owl/models/configs.py): 128 px,
    # patch 16 (8x8 grid), width 64 (head dim 16). Width 64 learns shape from as many images as
    # width 128 does, at twice the images/s.
    config.model = ml_collections.ConfigDict(get_variant("shapes-tiny").to_dict())
    config.vision_drop_path = 0.0
    config.text_drop_path = 0.0

    # Data: fresh scenes every step (no epochs, no augmentation needed), in groups of hard
    # negatives: a scene, its shape twin, colour twin and another shape twin (with one object
    # per scene there is no colour-shape binding to swap). One object per caption makes every
    # pair a clean 64-way lesson; shape is what a tiny ViT learns slowly.
    config.data = ml_collections.ConfigDict(dict(min_objects=1, max_objects=1, group_size=4))

    # Optimiser: AdamW, linear warmup then cosine decay to 0.
    config.batch_size = 128
    config.num_steps = 1300
    config.warmup_steps = 100
    config.learning_rate = 2e-3
    config.weight_decay = 0.1
    config.adam_b2 = 0.98
    config.grad_clip = 1.0

    # Logging and checkpoints (as `owl train`: metrics.jsonl, TensorBoard, orbax checkpoints that
    # `owl pretrain --resume` continues from).
    config.log_every = 10
    config.checkpoint_every = 100
    config.keep_checkpoints = 2
    config.tensorboard = True

    # Zero-shot retrieval on held-out worlds (eval.seed and eval.seed + 1).
    config.eval = ml_collections.ConfigDict(
        dict(seed=1_000_001, images_per_category=8, caption_images=512, caption_batch=128)
    )

    config.lock()
    return config
