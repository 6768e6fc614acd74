"""The ShapesWorld open-vocabulary recipe end to end: `owl shapes reproduce` as library code.

Issue 6's question is whether OWL-ViT's two-stage recipe (contrastive image-text pretraining,
then detection fine-tuning) transfers to classes never seen as boxes, at a size that runs on a
laptop CPU. `reproduce` answers it in one call, from nothing but seeds:

1. **generate**: three disjoint ShapesWorld worlds as COCO datasets: ``train`` (fine-tuning),
   ``heldout`` (evaluation, all 64 categories annotated) and ``support`` (one-shot exemplars).
2. **pretrain**: `owl.train.pretrain.pretrain` with configs/shapes_clip.py (captions of all 64
   categories, the image-text stage sees every concept) -> ``pretrain/backbone.safetensors``.
3. **finetune**: `owl.train.trainer.train_and_evaluate` with configs/shapes_detect.py on the 48
   base categories; the 16 novel ones stay in the images, unlabelled, never negatives ->
   ``detector/model.safetensors``.
4. **evaluate**: text queries (`owl.eval.predict` + `owl.eval.metrics`, as `owl eval
   --novel-categories`) on the held-out set: AP / AP50 on base and on novel categories; then
   one-shot (`owl.eval.one_shot`): one support box per novel category as an image query.

Everything lands in the work folder (``results.json`` holds the table and the seconds per
stage; ``shapes-tiny.safetensors.gz`` is the detector in the form owl ships it, see
`export_model`, and is the file the table evaluates). `FAST` is a test-sized setting that
exercises every stage in well under a minute; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from owl.data import shapes

if TYPE_CHECKING:  # imported lazily at run time: `owl shapes --help` stays light
    from owl.inference.detector import Detector

#: The detector architecture: the stage-1 backbone's ("shapes-tiny" in owl.models.configs).
VARIANT = "shapes-tiny"
PRETRAIN_CONFIG = "shapes_clip.py"
FINETUNE_CONFIG = "shapes_detect.py"
RESULTS_FILE = "results.json"
SHIPPED_FILE = "shapes-tiny.safetensors.gz"  # the model in the form the package ships it
STAGES = ("generate", "pretrain", "finetune", "evaluate")


@dataclasses.dataclass(frozen=True)
class RecipeSettings:
    """Sizes, seeds and config overrides of one `reproduce` run.

    Attributes:
        num_train: fine-tuning images.
        num_heldout: evaluation images (all 64 categories annotated).
        num_support: images the one-shot exemplars are taken from.
        train_seed, heldout_seed, support_seed: ShapesWorld world seeds (pairwise different, and
            different from the pretraining worlds of configs/shapes_clip.py).
        pretrain_overrides: ``key=value`` items applied to configs/shapes_clip.py.
        finetune_overrides: ``key=value`` items applied to configs/shapes_detect.py.
        eval_prompts: ``owl eval --prompts`` value for the text evaluation ("none": the bare
            category name, as `owl detect --query "red circle"` embeds it).
        eval_batch_size: images per forward pass in evaluation.
        top_k: (box, category) pairs kept per image in evaluation.
    """

    num_train: int = 20_000
    num_heldout: int = 500
    num_support: int = 200
    train_seed: int = 100
    heldout_seed: int = 101
    support_seed: int = 102
    pretrain_overrides: tuple[str, ...] = ()
    finetune_overrides: tuple[str, ...] = ()
    eval_prompts: str = "none"
    eval_batch_size: int = 32
    top_k: int = 300

    def __post_init__(self) -> None:
        for name in ("num_train", "num_heldout", "num_support", "eval_batch_size", "top_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        seeds = (self.train_seed, self.heldout_seed, self.support_seed)
        if len(set(seeds)) != 3:
            raise ValueError(f"train, held-out and support seeds must differ, got {seeds}")


#: The recipe of docs/shapes.md.
FULL = RecipeSettings()

#: Test-sized: every stage runs, on a handful of images and a few steps (numbers are noise).
FAST = RecipeSettings(
    num_train=48,
    num_heldout=8,
    num_support=200,
    pretrain_overrides=(
        "num_steps=2", "warmup_steps=1", "batch_size=8", "log_every=1", "checkpoint_every=0",
        "eval.images_per_category=1", "eval.caption_images=8", "eval.caption_batch=8",
    ),
    finetune_overrides=(
        "train.num_steps=2", "optim.warmup_steps=1", "train.batch_size=4", "train.log_every=1",
        "data.mosaic_sizes=(1,)", "data.mosaic_probs=(1.0,)",
    ),
    eval_batch_size=8,
    top_k=50,
)  # fmt: skip


class RecipeError(RuntimeError):
    """The recipe cannot run as asked; the message says what to do."""


def default_configs_dir() -> Path:
    """The recipes shipped with the package (owl/configs/), so the recipe runs from a wheel too."""
    return Path(__file__).resolve().parent.parent / "configs"


def _config_path(configs_dir: Path, name: str) -> Path:
    path = configs_dir / name
    if not path.is_file():
        raise RecipeError(
            f"{path} not found; reinstall owl, or pass --configs-dir, the folder holding "
            f"{PRETRAIN_CONFIG} and {FINETUNE_CONFIG}"
        )
    return path


def pretrain_config(configs_dir: Path, overrides: Sequence[str] = ()) -> Any:
    """configs/shapes_clip.py with overrides, locked."""
    from owl.train.config import load_config

    return load_config(_config_path(configs_dir, PRETRAIN_CONFIG), overrides)


def finetune_config(
    configs_dir: Path,
    overrides: Sequence[str] = (),
    *,
    backbone: str | Path = "",
    train_dir: str | Path = "",
) -> Any:
    """configs/shapes_detect.py with the backbone and training set filled in, then overrides."""
    from owl.train.config import load_config

    items = []
    if backbone:
        items.append(f"init.source={backbone}")
    if train_dir:
        items += [
            f"data.train_annotations={Path(train_dir) / 'annotations.json'}",
            f"data.train_images={Path(train_dir) / 'images'}",
        ]
    return load_config(_config_path(configs_dir, FINETUNE_CONFIG), [*items, *overrides])


def check_backbone(backbone: str | Path) -> None:
    """Raises `RecipeError` unless the backbone's architecture is the `shapes-tiny` variant."""
    from owl.models.configs import VARIANTS
    from owl.train.pretrain import read_backbone

    config, _, _ = read_backbone(backbone)
    expected = VARIANTS.get(VARIANT)
    if expected is None:
        raise RecipeError(f"owl.models.configs has no {VARIANT!r} variant; upgrade owl")
    if config != expected:
        raise RecipeError(
            f"{backbone}: its architecture differs from the {VARIANT!r} variant the detector "
            "config uses; keep configs/shapes_clip.py's model section equal to that variant"
        )


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def generate_datasets(workdir: Path, settings: RecipeSettings) -> dict[str, Path]:
    """Writes data/{train,heldout,support} (COCO); returns their folders."""
    out = {}
    for name, count, seed in (
        ("train", settings.num_train, settings.train_seed),
        ("heldout", settings.num_heldout, settings.heldout_seed),
        ("support", settings.num_support, settings.support_seed),
    ):
        folder = workdir / "data" / name
        shapes.write_coco_dataset(folder, count, seed, progress=False)
        out[name] = folder
    return out


def evaluation_detector(model_path: Path, batch_size: int = 32) -> Detector:
    """The `Detector` both evaluations share (as `owl eval` builds it: TF-style resizing)."""
    from owl.inference.detector import Detector

    return Detector(str(model_path), batch_size=batch_size, resize_method="tf")


def evaluate_text(
    detector: Detector,
    heldout: Path,
    output_dir: Path,
    *,
    prompts: str = "none",
    top_k: int = 300,
) -> dict[str, float]:
    """Text-query AP/AP50 on base and novel categories of the held-out set (`owl eval`'s code)."""
    from owl.eval.evaluation import evaluate

    result = evaluate(
        detector, heldout / "annotations.json", heldout / "images", output_dir, prompts=prompts,
        top_k=top_k, overwrite=True, novel_category_ids=shapes.NOVEL_CATEGORY_IDS,
    )  # fmt: skip
    keys = ("AP", "AP50", "AP_base", "AP50_base", "AP_novel", "AP50_novel")
    return {k: result.stats[k] for k in keys}


def evaluate_one_shot_novel(
    detector: Detector,
    heldout: Path,
    support: Path,
    output_dir: Path,
    *,
    top_k: int = 300,
) -> dict[str, Any]:
    """One-shot AP/AP50 on the novel categories: one support box each as the image query."""
    from owl.eval.one_shot import choose_exemplars, evaluate_one_shot

    exemplars = choose_exemplars(
        support / "annotations.json", support / "images", shapes.NOVEL_CATEGORY_IDS
    )
    result = evaluate_one_shot(
        detector, heldout / "annotations.json", heldout / "images", exemplars, output_dir,
        top_k=top_k,
    )  # fmt: skip
    (output_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# The whole recipe
# ---------------------------------------------------------------------------------------------


def reproduce(
    workdir: str | Path,
    settings: RecipeSettings = FULL,
    *,
    configs_dir: str | Path | None = None,
    backbone: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> dict[str, Any]:
    """Runs generate -> pretrain -> fine-tune -> evaluate into ``workdir``; returns the results.

    Args:
        workdir: the run folder (created); it must not hold a finished detector already.
        settings: sizes, seeds and overrides (`FULL` or `FAST`).
        configs_dir: folder of shapes_clip.py and shapes_detect.py (default: the checkout's).
        backbone: an existing stage-1 backbone to start from; then stage 1 is skipped.
        log: receives one line per stage.
        progress: progress bars for the training stages.

    Returns:
        {"table": {...}, "seconds": {stage: s, "total": s}, "settings": {...}, paths}; also
        written to ``workdir/results.json``.

    Raises:
        RecipeError: missing configs, an unfit backbone or a workdir holding a finished run.
    """
    from owl.train.pretrain import pretrain
    from owl.train.trainer import MODEL_FILE, train_and_evaluate

    workdir = Path(workdir).absolute()
    configs_dir = Path(configs_dir) if configs_dir else default_configs_dir()
    detector_dir = workdir / "detector"
    if (detector_dir / MODEL_FILE).exists() or (detector_dir / "checkpoints").exists():
        raise RecipeError(f"{detector_dir} already holds a run; choose a new --workdir")
    pre_config = pretrain_config(configs_dir, settings.pretrain_overrides)
    finetune_config(configs_dir, settings.finetune_overrides)  # fail early on a bad override
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    def done(stage: str, began: float, detail: str) -> None:
        seconds[stage] = round(time.perf_counter() - began, 1)
        log(f"[{stage}] {detail} ({seconds[stage]:.0f} s)")

    t = time.perf_counter()
    data = generate_datasets(workdir, settings)
    done("generate", t, f"{settings.num_train} train, {settings.num_heldout} held-out, "
         f"{settings.num_support} support images in {workdir / 'data'}")  # fmt: skip

    t = time.perf_counter()
    if backbone is None:
        # A recipe stopped during stage 1 continues it from its last checkpoint.
        summary = pretrain(pre_config, workdir / "pretrain", resume=True, progress=progress)
        backbone = Path(summary["backbone"])
        retrieval = summary["retrieval"]
        done("pretrain", t, f"{pre_config.num_steps} steps -> {backbone}")
    else:
        backbone = Path(backbone).absolute()
        retrieval = None
        done("pretrain", t, f"skipped: using {backbone}")
    check_backbone(backbone)

    t = time.perf_counter()
    config = finetune_config(
        configs_dir, settings.finetune_overrides, backbone=backbone, train_dir=data["train"]
    )
    config.train.progress_bar = bool(progress)
    train_and_evaluate(config, detector_dir)
    trained = detector_dir / MODEL_FILE
    # The package form (pruned vocabulary, gzip), which is also what gets evaluated.
    model_path = export_model(trained, workdir / SHIPPED_FILE)
    done("finetune", t, f"{config.train.num_steps} steps -> {trained}, {model_path}")

    t = time.perf_counter()
    eval_dir = workdir / "eval"
    detector = evaluation_detector(model_path, settings.eval_batch_size)
    text = evaluate_text(
        detector, data["heldout"], eval_dir / "text", prompts=settings.eval_prompts,
        top_k=settings.top_k,
    )  # fmt: skip
    one_shot = evaluate_one_shot_novel(
        detector, data["heldout"], data["support"], eval_dir / "one_shot", top_k=settings.top_k
    )
    done("evaluate", t, f"{settings.num_heldout} held-out images")
    seconds["total"] = round(time.perf_counter() - start, 1)

    table = {
        "base_AP": text["AP_base"],
        "base_AP50": text["AP50_base"],
        "novel_AP": text["AP_novel"],
        "novel_AP50": text["AP50_novel"],
        "one_shot_novel_AP": one_shot["AP"],
        "one_shot_novel_AP50": one_shot["AP50"],
    }
    results = {
        "table": table,
        "seconds": seconds,
        "pretrain_retrieval": retrieval,
        "settings": dataclasses.asdict(settings),
        "backbone": str(backbone),
        "model": str(model_path),
    }
    (workdir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return results


# ---------------------------------------------------------------------------------------------
# The shipped model
# ---------------------------------------------------------------------------------------------

_TOKEN_EMBEDDING = ("backbone", "clip", "text", "token_embedding", "embedding")


def vocabulary_texts() -> list[str]:
    """Every text the ShapesWorld recipe shows the text tower, word for word.

    Category names, their article forms and size words (the captions of `owl.data.shapes` and
    `owl.train.pretrain`), the joining words of captions, and the 7 prompt templates of
    `owl eval --prompts ensemble`.
    """
    from owl.text.prompts import CLIP_BEST_PROMPT_TEMPLATES

    names = list(shapes.CATEGORIES)
    texts = names + [f"a {n}" for n in names] + [f"an {n}" for n in names]
    texts += [f"a small {n}, a large {n} and {n}" for n in names]
    texts += [t.format(n) for t in CLIP_BEST_PROMPT_TEMPLATES for n in names]
    return texts


def vocabulary_token_ids() -> np.ndarray:
    """Sorted token ids of `vocabulary_texts`, with the start and end tokens."""
    from owl.text.tokenizer import get_tokenizer

    ids = get_tokenizer().tokenize(vocabulary_texts(), context_length=32, truncate=True)
    return np.unique(ids[ids > 0])


def export_model(model_path: str | Path, out_path: str | Path) -> Path:
    """Writes the package form of a trained ShapesWorld detector: gzip-compressed, and every
    row of the 49,408-token CLIP vocabulary table that no ShapesWorld text uses set to zero.

    The detector never saw those tokens (their rows are still random initial values), so
    outputs for ShapesWorld texts are unchanged while the file shrinks from ~30 MB to a few.

    Returns:
        ``out_path`` (name it "*.safetensors.gz" to get the compressed form).
    """
    from owl.checkpoints.owl_format import read_owl, save_owl

    config, params = read_owl(model_path)
    node = params
    for key in _TOKEN_EMBEDDING[:-1]:
        node = node[key]
    table = np.asarray(node[_TOKEN_EMBEDDING[-1]])
    keep = vocabulary_token_ids()
    pruned = np.zeros_like(table)
    pruned[keep] = table[keep]
    node[_TOKEN_EMBEDDING[-1]] = pruned
    return save_owl(out_path, config, params)


#: Issue 6's targets (AP50): the table marks each number against its target.
TARGETS = {"base_AP50": 0.85, "novel_AP50": 0.5, "one_shot_novel_AP50": 0.5}


def format_table(results: dict[str, Any]) -> str:
    """The results as a small Markdown table (metric, value, target) plus the stage times."""
    table, seconds = results["table"], results["seconds"]
    rows = ["| metric | value | target |", "|---|---|---|"]
    for key, value in table.items():
        target = TARGETS.get(key)
        mark = f">= {target:.2f}" if target is not None else ""
        rows.append(f"| {key.replace('_', ' ')} | {value:.3f} | {mark} |")
    times = ", ".join(f"{stage} {seconds[stage]:.0f} s" for stage in STAGES if stage in seconds)
    rows.append("")
    rows.append(f"Wall time {seconds['total'] / 60:.1f} min ({times})")
    return "\n".join(rows)


__all__ = [
    "FAST",
    "FULL",
    "RecipeError",
    "RecipeSettings",
    "format_table",
    "reproduce",
]
