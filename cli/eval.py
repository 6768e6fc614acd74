"""`owl eval`: COCO or LVIS box metrics for a detections file.

Argument handling and printing only; the metrics are :func:`owl.eval.metrics.evaluate`. The
command is built so that model-driven prediction can be added beside ``--detections``: the
callback first obtains a results source (today only ``--detections``), then evaluates and reports
it the same way whatever produced it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("eval")
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
    help="Write metrics.json (all numbers, per-category AP included) into this folder.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show pycocotools' own progress output.")
def eval_cmd(
    detections: Path | None,
    annotations: Path,
    fmt: str,
    novel_categories: str | None,
    max_dets: int,
    output_dir: Path | None,
    verbose: bool,
) -> None:
    """Compute COCO or LVIS box metrics (AP, AP50, APr, ...) for a detections file.

    The numbers equal pycocotools' COCOeval and the official LVIS API (federated protocol,
    300 detections per image).

    \b
    Examples:
      owl eval --detections dets.json --annotations instances_val2017.json
      owl eval --detections dets.json --annotations lvis_v1_val.json --output-dir runs/eval
      owl eval --detections dets.json --annotations lvis_v1_val.json --novel-categories rare.txt
      owl eval --detections dets.json --annotations ann.json --novel-categories "cat,umbrella"
    """
    from owl.eval.metrics import evaluate
    from owl.eval.results import CategoryMap, EvalDataError, load_annotations

    if detections is None:
        raise click.UsageError(
            "prediction from a model is not available yet in this build; "
            "pass --detections RESULTS.json (a COCO/LVIS results file)"
        )
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
    except EvalDataError as e:
        raise click.ClickException(str(e)) from None

    click.echo(_table(metrics))
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "metrics.json"
        record = {"annotations": str(annotations), "detections": str(detections), **metrics}
        path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {path}")


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
