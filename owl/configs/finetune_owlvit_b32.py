"""Fine-tune OWL-ViT B/32 on a COCO-format dataset: the base training recipe every config extends.

The values follow the public scenic fine-tuning recipe (owl_vit_spec §5.1): Hungarian matching
with focal class cost + L1 + GIoU (all weights 1), focal alpha 0.3 / gamma 2, per-example
gradient clipping to norm 1, Adam (0.9, 0.999), text tower at 2e-6 and the rest at 5e-5 with
1000 warmup steps and cosine decay, stochastic depth 0.2 (vision) / 0.1 (text), mosaics of 1, 2
or 3 tiles, 100 queries and 100 instances per image, 50 negatives. The official run used batch
256 for 16,000 steps on TPUs; the batch here (16) fits one 80 GB GPU with per-example clipping,
so expect to tune ``optim.lr`` and ``train.num_steps`` for your data.

Run (COCO layout: annotations JSON + image folder):

    owl train --config finetune_owlvit_b32 --workdir runs/b32-coco \
        --set data.train_annotations=coco/annotations/instances_train2017.json \
        --set data.train_images=coco/train2017 \
        --set data.eval_annotations=coco/annotations/instances_val2017.json \
        --set data.eval_images=coco/val2017

Continue a stopped run with the same command plus ``--resume``. The result is
``runs/b32-coco/model.safetensors`` (``owl detect --model runs/b32-coco/model.safetensors``).
Expected: the scenic B/32 recipe reports LVIS AP 19.3-20.9 after its full schedule.
"""

from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The fine-tuning recipe for owlvit-b32 (see the module docstring)."""
    c = ml_collections.ConfigDict()

    # Model: a variant from owl.models.configs, optionally at another input size.
    c.model = ml_collections.ConfigDict()
    c.model.variant = "owlvit-b32"
    c.model.image_size = 0  # 0: the variant's own size (768 for B/32)
    c.model.vision_drop_path = 0.2  # stochastic depth of the image tower
    c.model.text_drop_path = 0.1  # stochastic depth of the text tower

    # Initial weights: "owl" (a checkpoint owl.load reads), "clip" (a CLIP backbone file) or
    # "random".
    c.init = ml_collections.ConfigDict()
    c.init.mode = "owl"
    c.init.source = "owlvit-b32"  # registry name or path

    # Data: "coco" (COCO/LVIS-format JSON + image folder) or "synthetic" (tests and smoke runs).
    c.data = ml_collections.ConfigDict()
    c.data.kind = "coco"
    c.data.train_annotations = ""
    c.data.train_images = ""
    c.data.eval_annotations = ""  # empty: no validation
    c.data.eval_images = ""  # empty: data.train_images
    c.data.format = "auto"  # coco, yolo, voc, or auto: told in one line at start
    c.data.min_score = 0.0  # pseudo-labels (COCO "score") below this are dropped
    c.data.remove_categories = ()  # category ids or names never trained on (zero-shot hygiene)
    c.data.max_queries = 100
    c.data.max_instances = 100
    c.data.num_negatives = 50
    c.data.mosaic_sizes = (1, 2, 3)
    c.data.mosaic_probs = (0.4, 0.3, 0.3)
    c.data.prompt_templates = ()  # (): owl.text.prompts.TRAINING_PROMPT_TEMPLATES
    c.data.crop_area_range = (0.3, 1.0)  # random crop area, fraction of the image
    c.data.workers = 4  # example-building processes per host (0: in the training process)
    c.data.seed = 0
    c.data.synthetic_examples = 64  # synthetic only: distinct examples
    c.data.synthetic_max_boxes = 2  # synthetic only: rectangles per image

    # Matching costs and loss weights.
    c.loss = ml_collections.ConfigDict()
    c.loss.focal_alpha = 0.3
    c.loss.focal_gamma = 2.0
    c.loss.cost_class = 1.0
    c.loss.cost_bbox = 1.0
    c.loss.cost_giou = 1.0
    c.loss.weight_class = 1.0
    c.loss.weight_bbox = 1.0
    c.loss.weight_giou = 1.0

    # Optimiser: Adam, two parameter groups, warmup + cosine to train.num_steps.
    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-5  # everything but the text tower
    c.optim.text_lr = 2e-6  # the text tower (backbone/clip/text/.*)
    c.optim.freeze_text = False  # True: the text tower gets no updates
    c.optim.text_regex = r"backbone/clip/text/.*"
    c.optim.freeze_regex = ""  # parameter paths that get no updates ("backbone/.*": heads only)
    c.optim.warmup_steps = 1000
    c.optim.clip = "per_example"  # "per_example", "global" or "none"
    c.optim.clip_norm = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8

    # The loop.
    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 16  # global: over all devices and processes
    c.train.num_steps = 16000
    c.train.seed = 0  # initialisation of new weights and stochastic depth
    c.train.log_every = 100
    c.train.checkpoint_every = 2000
    c.train.keep_checkpoints = 3
    c.train.async_checkpoints = True
    c.train.progress_bar = True
    c.train.tensorboard = True
    # Encode each distinct query text once per step and device instead of once per image row
    # (same loss; needs optim.clip != "per_example", so off in the official recipe).
    c.train.dedup_queries = False
    # The model written at the end: w * trained + (1 - w) * the starting weights (WiSE-FT).
    c.train.ensemble_weight = 1.0

    # Early stopping without a validation set (owl.train.stopping, docs/adapt.md): two seeded
    # instances of the last linear maps; stop when their cosine distance grows again, and keep
    # the model of its minimum as model.safetensors.
    c.cdc = ml_collections.ConfigDict()
    c.cdc.enabled = False
    c.cdc.lr = 1e-3  # Adam rate of the two head instances
    c.cdc.patience = 50  # steps above (1 + tol) * minimum before stopping
    c.cdc.tol = 0.02
    c.cdc.smoothing = 0.9  # EMA of the distance
    c.cdc.min_steps = 0  # never stop before this step
    c.cdc.seed = 0  # instance seeds (seed, seed + 1) and the split of images between them

    # Validation: loss on data.eval_* (and AP through owl eval) every `every` steps and at the end.
    c.eval = ml_collections.ConfigDict()
    c.eval.every = 4000  # 0: never
    c.eval.batch_size = 16
    c.eval.num_batches = 50  # validation-loss batches (0: the whole validation set)
    c.eval.ap = True  # also COCO/LVIS AP with the prompt ensemble
    c.eval.ap_max_images = 500  # 0: all validation images
    c.eval.ap_prompts = "ensemble"
    c.eval.ap_top_k = 300
    c.eval.ap_resize = "tf"
    # Ordinary early stopping on the validation loss: stop after this many evaluations without
    # improvement (0: never); model.safetensors is the model of the step it stopped at.
    c.eval.patience = 0
    return c
