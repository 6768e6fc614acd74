"""`owl eval`: COCO or LVIS box metrics for a detections file, or for a model run over a dataset.

Argument handling and printing only. The callback first obtains a results source: an existing
``--detections`` file, or a model run by :func:`owl.eval.predict.predict_dataset` (prompt
ensembling, top-k pairs, resumable log in ``--output-dir``); then it evaluates and reports it the
same way whatever produced it, with :func:`owl.eval.metrics.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from owl.cli.options import EXIT_CODES_HELP, UsageFailure

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("eval", epilog=EXIT_CODES_HELP)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Predict the detections with this model: a registry name (see `owl models`) or a "
    "checkpoint path. Needs --images and --output-dir.",
)
@click.option(
    "--images",
    "images_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="With --model: the folder holding the dataset's images (COCO: file_name; LVIS: the "
    "file name of coco_url, directly there or in val2017/ or train2017/).",
)
@click.option(
    "--detections",
    type=_FILE,
    default=None,
    help="Results JSON to evaluate: [{image_id, category_id, bbox: [x, y, w, h], score}, ...] "
    "with the dataset's real category ids.",
)
@click.option(
    "--annotations",
    type=_FILE,
    required=True,
    help="Dataset JSON, COCO style (instances_val2017.json) or LVIS style (lvis_v1_val.json).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "coco", "lvis"]),
    default="auto",
    show_default=True,
    help="Evaluation protocol; auto picks LVIS when the dataset has federated label lists or "
    "category frequencies.",
)
@click.option(
    "--novel-categories",
    default=None,
    help="Also report AP over these (novel) categories and over the rest (base): a text file "
    "with one name or id per line, or a comma-separated list of names or ids.",
)
@click.option(
    "--prompts",
    default="ensemble",
    show_default=True,
    help="With --model: 'ensemble' (the 7 official templates, logits averaged), 'none' (the "
    "class name alone) or one template such as 'a photo of a {}'.",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="With --model: (box, class) pairs kept per image, best first, no NMS.",
)
@click.option(
    "--max-images",
    type=click.IntRange(min=1),
    default=None,
    help="With --model: predict and evaluate only the first N images (by id).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="With --model: images per forward pass.",
)
@click.option(
    "--resize",
    type=click.Choice(["tf", "official"]),
    default="tf",
    show_default=True,
    help="With --model: 'tf' resizes then pads as the official evaluator does; 'official' pads "
    "then resizes as the official notebooks do.",
)
@click.option(
    "--long-prompts",
    type=click.Choice(["official", "truncate"]),
    default="official",
    show_default=True,
    help="With --model: prompts over 14 tokens are cut as the official tokenizer cuts them "
    "(end token dropped), or truncated keeping the end token.",
)
@click.option(
    "--skip-missing",
    is_flag=True,
    help="With --model: go on when image files listed in the annotations are missing, and "
    "evaluate the others.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="With --model: discard predictions already in --output-dir instead of resuming them.",
)
@click.option(
    "--max-dets",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="LVIS only: detections kept per image (the official protocol uses 300).",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write metrics.json (all numbers, per-category AP included) into this folder. With "
    "--model also predictions.jsonl (resumable log), run.json and detections.json.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show pycocotools' own progress output.")
def eval_cmd(
    model_name: str | None,
    images_dir: Path | None,
    detections: Path | None,
    annotations: Path,
    fmt: str,
    novel_categories: str | None,
    prompts: str,
    top_k: int,
    max_images: int | None,
    batch_size: int,
    resize: str,
    long_prompts: str,
    skip_missing: bool,
    overwrite: bool,
    max_dets: int,
    output_dir: Path | None,
    verbose: bool,
) -> None:
    """Compute COCO or LVIS box metrics (AP, AP50, APr, ...) for a detections file or a model.

    The numbers equal pycocotools' COCOeval and the official LVIS API (federated protocol,
    300 detections per image). With --model, detections are predicted by the official protocol:
    every category in each prompt template, class logits averaged over templates, the top-k
    (box, class) pairs per image without NMS, the dataset's real category ids. Predictions are
    logged per image in --output-dir, so a stopped run started again with the same command
    resumes where it stopped.

    \b
    Examples:
      owl eval --detections dets.json --annotations instances_val2017.json
      owl eval --detections dets.json --annotations lvis_v1_val.json --output-dir runs/eval
      owl eval --detections dets.json --annotations lvis_v1_val.json --novel-categories rare.txt
      owl eval --detections dets.json --annotations ann.json --novel-categories "cat,umbrella"
      owl eval --model owlv2-b16 --annotations lvis_v1_val.json --images coco/ \\
               --output-dir runs/lvis --novel-categories rare.txt
      owl eval --model owlvit-b32 --annotations instances_val2017.json --images val2017/ \\
               --output-dir runs/coco --max-images 500 --prompts "a photo of a {}"
    """
    from owl.eval.metrics import evaluate
    from owl.eval.results import CategoryMap, EvalDataError, load_annotations

    if detections is not None and model_name is not None:
        raise click.UsageError("pass either --detections or --model, not both")
    if detections is None and model_name is None:
        raise click.UsageError(
            "nothing to evaluate: pass --detections RESULTS.json, or --model NAME|PATH with --images DIR and --output-dir DIR to "
            "predict them"
        )
    if model_name is not None:
        if images_dir is None or output_dir is None:
            raise click.UsageError(
                "--model needs --images DIR (the dataset's images) and --output-dir DIR "
                "(for the predictions log, detections.json and metrics.json)"
            )
        _evaluate_model(
            model_name=model_name, images_dir=images_dir, annotations=annotations, fmt=fmt,
            novel_categories=novel_categories, prompts=prompts, top_k=top_k,
            max_images=max_images, batch_size=batch_size, resize=resize,
            long_prompts=long_prompts, skip_missing=skip_missing, overwrite=overwrite,
            max_dets=max_dets, output_dir=output_dir, verbose=verbose,
        )  # fmt: skip
        return
    if images_dir is not None:
        raise click.UsageError("--images only applies with --model")
    try:
        dataset = load_annotations(annotations)
        novel = None
        if novel_categories is not None:
            novel = CategoryMap.from_annotations(dataset).resolve(_tokens(novel_categories))
        metrics = evaluate(
            dataset,
            detections,
            fmt=None if fmt == "auto" else fmt,
            novel_category_ids=novel,
            max_dets=max_dets,
            verbose=verbose,
        )
    except EvalDataError as e:  # an annotations, detections or log file that cannot be used
        raise UsageFailure(str(e)) from None

    click.echo(_table(metrics))
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "metrics.json"
        record = {"annotations": str(annotations), "detections": str(detections), **metrics}
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {path}")


def _evaluate_model(
    *,
    model_name: str,
    images_dir: Path,
    annotations: Path,
    fmt: str,
    novel_categories: str | None,
    prompts: str,
    top_k: int,
    max_images: int | None,
    batch_size: int,
    resize: str,
    long_prompts: str,
    skip_missing: bool,
    overwrite: bool,
    max_dets: int,
    output_dir: Path,
    verbose: bool,
) -> None:
    """The --model path: predict (resumable), write detections.json and metrics.json, report."""
    from owl.cli.options import check_model_spec
    from owl.eval import predict
    from owl.eval.metrics import evaluate
    from owl.eval.results import CategoryMap, EvalDataError, detect_format, load_annotations

    check_model_spec(model_name)

    try:
        templates = predict.resolve_templates(prompts)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--prompts") from None
    try:
        dataset = load_annotations(annotations)
        fmt = detect_format(dataset) if fmt == "auto" else fmt
        categories = CategoryMap.from_annotations(dataset)
        novel = None
        if novel_categories is not None:
            novel = categories.resolve(_tokens(novel_categories))
        found, missing = predict.find_images(dataset, images_dir)
        total = len(dataset["images"])
        if missing:
            line = predict.describe_missing(missing, total, images_dir)
            if not skip_missing:
                raise click.ClickException(
                    f"{line}; check --images, or pass --skip-missing to evaluate the others"
                )
            click.echo(f"warning: {line}; skipping them (--skip-missing)", err=True)
        if not found:
            raise click.ClickException(f"none of the {total} images is in {images_dir}")
        selected = found[:max_images] if max_images is not None else found
        # A checkpoint path is recorded absolute, so a resume from another folder matches.
        model_id = str(Path(model_name).resolve()) if Path(model_name).exists() else model_name
        settings = predict.run_settings(
            model=model_id, prompts=prompts, templates=templates, top_k=top_k, resize=resize,
            long_prompts=long_prompts, categories=categories,
        )  # fmt: skip
        # Checked before the model is loaded: a settings mismatch fails at once, and a finished
        # run is re-evaluated without loading the model at all.
        detector = ensemble = None
        if predict.pending_images(output_dir, selected, settings, overwrite=overwrite):
            detector = _detector(model_name, batch_size=batch_size, resize=resize)
            click.echo(
                f"embedding {len(templates)} template(s) x {len(categories)} categories "
                f"with {model_name}",
                err=True,
            )
            ensemble = predict.embed_prompts(
                detector, categories, templates, long_prompts=long_prompts
            )
            if ensemble.long_prompts:
                how = "truncated"
                if long_prompts == "official":
                    how = "cut as the official tokenizer does"
                click.echo(
                    f"note: {len(ensemble.long_prompts)} prompt(s) longer than the text context "
                    f"were {how}, e.g. {ensemble.long_prompts[0]!r}",
                    err=True,
                )
        run = predict.predict_dataset(
            detector, selected, ensemble, output_dir, settings=settings, top_k=top_k,
            overwrite=overwrite, progress=True,
        )  # fmt: skip
    except EvalDataError as e:  # an annotations, detections or log file that cannot be used
        raise UsageFailure(str(e)) from None

    click.echo(
        f"predicted {run.new} image(s), {run.resumed} already in {output_dir / predict.LOG_FILE}; "
        f"wrote {run.results_path}",
        err=True,
    )
    if run.size_mismatches:
        click.echo(
            f"warning: {len(run.size_mismatches)} image file(s) differ in size from the "
            f"annotations (EXIF rotation?), their boxes may not line up: image ids "
            f"{', '.join(map(str, run.size_mismatches[:10]))}",
            err=True,
        )
    failed = _failure_lines(run.failures)
    if not run.predicted_ids:
        raise click.ClickException(f"no image could be read; nothing to evaluate{failed}")

    try:
        gt = dataset
        if len(run.predicted_ids) < total:
            gt = load_annotations(predict.subset_annotations(dataset, run.predicted_ids))
        metrics = evaluate(
            gt, run.results, fmt=fmt, novel_category_ids=novel, max_dets=max_dets,
            verbose=verbose,
        )  # fmt: skip
    except EvalDataError as e:  # an annotations, detections or log file that cannot be used
        raise UsageFailure(str(e)) from None

    click.echo(_table(metrics))
    path = output_dir / "metrics.json"
    record = {
        "annotations": str(annotations),
        "images": str(images_dir),
        "detections": str(run.results_path),
        "settings": settings,
        "evaluated_images": len(run.predicted_ids),
        "dataset_images": total,
        "missing_images": len(missing),
        "failed_images": [{"image_id": f.image_id, "error": f.error} for f in run.failures],
        **metrics,
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    click.echo(f"wrote {path}")
    if run.failures:
        raise click.ClickException(
            f"{len(run.failures)} image(s) could not be read; the metrics cover the "
            f"{len(run.predicted_ids)} that were{failed}"
        )


def _failure_lines(failures: Any) -> str:
    """Up to ten unreadable images, one per line (with a count of the rest)."""
    if not failures:
        return ""
    lines = [f"  {f.error}" for f in failures[:10]]
    if len(failures) > 10:
        lines.append(f"  (and {len(failures) - 10} more)")
    return ":\n" + "\n".join(lines)


def _detector(model_name: str, *, batch_size: int, resize: str) -> Any:
    """Loads the model (registry name or path) into a Detector; load errors become one line."""
    from owl.checkpoints.download import DownloadError
    from owl.checkpoints.formats import CheckpointError
    from owl.checkpoints.load import load
    from owl.checkpoints.registry import UnknownModelError
    from owl.inference.detector import Detector

    try:
        model = load(model_name)
    except (CheckpointError, UnknownModelError) as e:
        raise click.UsageError(f"--model {model_name}: {e}") from None
    except DownloadError as e:
        raise click.ClickException(f"--model {model_name}: {e}") from None
    return Detector(model, batch_size=batch_size, resize_method=resize)


def _tokens(value: str) -> list[str]:
    """--novel-categories: an existing file (one per line, '#' comments) or a comma list."""
    path = Path(value)
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise click.BadParameter(
                f"cannot read {path}: {e}", param_hint="--novel-categories"
            ) from None
        tokens = [line.strip() for line in lines]
        tokens = [t for t in tokens if t and not t.startswith("#")]
    else:
        tokens = [t.strip() for t in value.split(",") if t.strip()]
    if not tokens:
        raise click.BadParameter(f"no categories in {value!r}", param_hint="--novel-categories")
    return tokens


def _value(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.4f}"


def _table(metrics: dict[str, Any]) -> str:
    """The human-readable summary: headline stats, then the base/novel split if any."""
    head = (
        f"{metrics['format'].upper()} bbox metrics: {metrics['num_images']} images, "
        f"{metrics['num_categories']} categories, {metrics['num_detections']} detections"
    )
    if metrics["max_dets"] is not None:
        head += f" (at most {metrics['max_dets']} per image)"
    stats = metrics["stats"]
    split_keys = ("AP_base", "AP50_base", "AP_novel", "AP50_novel")
    width = max(len(k) for k in stats)
    lines = [head, ""]
    lines += [f"  {k:<{width}}  {_value(v)}" for k, v in stats.items() if k not in split_keys]
    if metrics["novel_category_ids"] is not None:
        n_novel = len(metrics["novel_category_ids"])
        rows = (
            (f"base ({metrics['num_categories'] - n_novel} categories)", "base"),
            (f"novel ({n_novel} categories)", "novel"),
        )
        lines += ["", f"  {'split':<24}{'AP':>8}{'AP50':>8}"]
        for label, part in rows:
            ap, ap50 = _value(stats[f"AP_{part}"]), _value(stats[f"AP50_{part}"])
            lines.append(f"  {label:<24}{ap:>8}{ap50:>8}")
    if any(v < 0 for v in stats.values()):
        lines += ["", "  n/a: no ground truth in that group"]
    return "\n".join(lines)
