"""`owl eval`: COCO or LVIS box metrics for a detections file, or for a model run over a dataset.

Argument handling and printing only. The callback first obtains a results source: an existing
``--detections`` file, scored with :func:`owl.eval.metrics.evaluate`, or a model, loaded with the
shared `load_detector` and run by :func:`owl.eval.evaluation.evaluate` (prompt ensembling, top-k
pairs, resumable log in ``--output-dir``); both are reported the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from owl.cli.options import (
    DEFAULT_MAX_IMAGE_PIXELS,
    EXIT_CODES_HELP,
    UsageFailure,
    backend_option,
    check_model_spec,
    check_plots_extra,
    load_detector,
    model_id,
    precision_option,
)

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
@click.option(
    "--plots",
    "plots_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write pr_curves.png (precision-recall overall, base and novel) and "
    "per_category_ap.png into this folder, each with a .json of the plotted values "
    '(needs matplotlib: pip install "owl[plots]").',
)
@click.option(
    "-v", "--verbose", is_flag=True,
    help="Show pycocotools' own progress output, and which backend encodes images and why.",
)  # fmt: skip
@precision_option
@backend_option
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
    plots_dir: Path | None,
    verbose: bool,
    precision: str,
    backend: str,
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
      owl eval --detections dets.json --annotations ann.json --plots plots/
      owl eval --model owlv2-b16 --annotations lvis_v1_val.json --images coco/ \\
               --output-dir runs/lvis --novel-categories rare.txt
      owl eval --model owlvit-b32 --annotations instances_val2017.json --images val2017/ \\
               --output-dir runs/coco --max-images 500 --prompts "a photo of a {}"
    """
    from owl.data.annotations import CategoryMap, EvalDataError, load_annotations
    from owl.eval.metrics import evaluate

    if plots_dir is not None:
        check_plots_extra("--plots")
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
            max_dets=max_dets, output_dir=output_dir, plots_dir=plots_dir, verbose=verbose,
            precision=precision, backend=backend,
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
    _write_plots(metrics, plots_dir)


def _write_plots(metrics: dict[str, Any], plots_dir: Path | None) -> None:
    """--plots: the precision-recall and per-category AP pictures (owl.plots)."""
    if plots_dir is None:
        return
    from owl.plots import eval_plots

    for path in eval_plots(metrics, plots_dir):
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
    plots_dir: Path | None,
    verbose: bool,
    precision: str = "f32",
    backend: str = "auto",
) -> None:
    """The --model path: `owl.eval.evaluation.evaluate` (resumable), then the report."""
    from owl.data.annotations import CategoryMap, EvalDataError, load_annotations
    from owl.eval.evaluation import MissingImagesError, evaluate
    from owl.eval.predict import describe_missing
    from owl.eval.prompts import resolve_templates
    from owl.eval.runlog import LOG_FILE

    check_model_spec(model_name)

    try:
        resolve_templates(prompts)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--prompts") from None
    try:
        dataset = load_annotations(annotations)
        novel = None
        if novel_categories is not None:
            novel = CategoryMap.from_annotations(dataset).resolve(_tokens(novel_categories))
    except EvalDataError as e:
        raise UsageFailure(str(e)) from None
    detector = load_detector(
        model_name, batch_size=batch_size, max_pixels=DEFAULT_MAX_IMAGE_PIXELS, quiet=False,
        resize_method=resize, precision=precision, backend=backend, verbose=verbose,
    )  # fmt: skip
    try:
        result = evaluate(
            detector, annotations, images_dir, output_dir, prompts=prompts, top_k=top_k,
            long_prompts=long_prompts, max_images=max_images, skip_missing=skip_missing,
            overwrite=overwrite, model_id=model_id(model_name), fmt=None if fmt == "auto" else fmt,
            novel_category_ids=novel, max_dets=max_dets, progress=True, verbose=verbose,
        )  # fmt: skip
    except MissingImagesError as e:
        raise click.ClickException(
            f"{e}; check --images, or pass --skip-missing to evaluate the others"
        ) from None
    except EvalDataError as e:  # an annotations, detections or log file that cannot be used
        raise UsageFailure(str(e)) from None

    run = result.run
    if result.missing:
        click.echo(
            f"warning: {describe_missing(result.missing, result.dataset_images, images_dir)}; "
            "skipped them (--skip-missing)",
            err=True,
        )
    if result.long_prompts:
        how = "cut as the official tokenizer does" if long_prompts == "official" else "truncated"
        click.echo(
            f"note: {len(result.long_prompts)} prompt(s) longer than the text context were "
            f"{how}, e.g. {result.long_prompts[0]!r}",
            err=True,
        )
    click.echo(
        f"predicted {run.new} image(s), {run.resumed} already in {output_dir / LOG_FILE}; "
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
    if result.metrics is None:
        raise click.ClickException(f"no image could be read; nothing to evaluate{failed}")
    click.echo(_table(result.metrics))
    click.echo(f"wrote {result.metrics_path}")
    _write_plots(result.metrics, plots_dir)
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
