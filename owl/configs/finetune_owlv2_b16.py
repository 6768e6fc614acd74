"""Fine-tune OWLv2 B/16 (960 px, objectness head) on a COCO-format dataset.

Extends finetune_owlvit_b32.py; only the model, the starting checkpoint and the batch
change. OWLv2's own training (self-training on web pseudo-labels) is not public (spec §5.6);
this is the v1 fine-tuning recipe applied to the v2 architecture, starting from the released
ensemble checkpoint. The objectness head is kept as loaded; its input gradient is stopped, so
the detection loss does not train it.

Run:

    owl train --config finetune_owlv2_b16 --workdir runs/v2-coco \
        --set data.train_annotations=coco/annotations/instances_train2017.json \
        --set data.train_images=coco/train2017 \
        --set data.eval_annotations=coco/annotations/instances_val2017.json \
        --set data.eval_images=coco/val2017

Add ``--set model.image_size=768`` to train at a lower resolution (the position embedding is
resized), and ``--resume`` to continue a stopped run.
"""

from __future__ import annotations

import finetune_owlvit_b32 as base
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The base recipe with owlv2-b16 weights (see the module docstring)."""
    c = base.get_config()
    c.model.variant = "owlv2-b16"
    c.init.source = "owlv2-b16"
    c.train.batch_size = 8  # 3600 patches per image at 960 px
    c.eval.batch_size = 8
    return c
