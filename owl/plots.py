"""Pictures of owl's numbers: precision-recall curves, per-category AP, training curves.

Every plot here is drawn from data owl already computed (the metrics dict of
`owl.eval.metrics.evaluate`, the records of a run's ``metrics.jsonl``) and recomputes nothing.
Each function writes a PNG and, beside it, ``<name>.json`` holding the series exactly as drawn
(read back from the plotted artists), so tests and users can check a picture against the
metrics it claims to show without reading pixels.

matplotlib is imported lazily, inside the functions, with the non-interactive Agg backend; it
comes with the extras that draw (``owl[train]``, ``owl[plots]``). :func:`require_matplotlib`
gives the one-line message the CLI prints without it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from owl.files import atomic_write

#: File names written by :func:`eval_plots`.
PR_CURVES_FILE = "pr_curves.png"
PER_CATEGORY_FILE = "per_category_ap.png"
#: File name written by :func:`training_plot` into a run folder.
TRAINING_FILE = "training.png"

INSTALL_HINT = 'plots need matplotlib: pip install "owl[plots]"'


class MissingMatplotlibError(ImportError):
    """matplotlib is not installed; the message says what to install."""


def require_matplotlib() -> None:
    """Raises :class:`MissingMatplotlibError` (one line) when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingMatplotlibError(INSTALL_HINT) from None


def _pyplot() -> Any:
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Writes the PNG and its ``.json`` sidecar (the plotted series); closes the figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path.with_suffix(".json")) as f:
        f.write(json.dumps(data, indent=1) + "\n")
    _pyplot().close(fig)
    return data


def _line_data(line: Any) -> dict[str, list[float]]:
    return {"x": [float(v) for v in line.get_xdata()], "y": [float(v) for v in line.get_ydata()]}


# ----------------------------------------------------------------------------------------------
# Evaluation.


def pr_curves(metrics: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """Precision against recall, overall and (with a novel split) base and novel.

    Two panels: IoU 0.50 (the curve under AP50) and the mean over IoU 0.50:0.95 (under AP). The
    curves are ``metrics["pr_curves"]``; recall points where no category has ground truth (-1)
    are left out.

    Returns:
        ``{"panels": {"IoU=0.50": {group: {"x": recall, "y": precision}}, "IoU=0.50:0.95": ...}}``
        as drawn (also written to ``path`` with suffix .json).
    """
    plt = _pyplot()
    curves = metrics["pr_curves"]
    recall = curves["recall"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    panels: dict[str, dict[str, Any]] = {}
    stats = metrics["stats"]
    for ax, (title, key, stat) in zip(
        axes,
        (("IoU=0.50", "precision50", "AP50"), ("IoU=0.50:0.95", "precision", "AP")),
        strict=True,
    ):
        panels[title] = {}
        for group in ("overall", "base", "novel"):
            if group not in curves:
                continue
            points = [(r, p) for r, p in zip(recall, curves[group][key], strict=True) if p > -1]
            if not points:
                continue
            value = stats[stat if group == "overall" else f"{stat}_{group}"]
            (line,) = ax.plot(
                [r for r, _ in points],
                [p for _, p in points],
                label=f"{group} ({stat} {value:.3f})",
            )
            panels[title][group] = _line_data(line)
        ax.set_title(f"precision-recall, {title}")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left")
    axes[0].set_ylabel("precision (mean over categories)")
    return _save(fig, Path(path), {"panels": panels})


def per_category_ap(metrics: Mapping[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """A horizontal bar per category with ground truth: its AP, novel categories marked.

    Categories are sorted by AP (best on top); those without ground truth (AP -1) are left out.

    Returns:
        ``{"names": [...], "AP": [...], "novel": [bool, ...]}`` as drawn (top to bottom).
    """
    plt = _pyplot()
    novel_ids = set(metrics.get("novel_category_ids") or ())
    rows = sorted(
        ((name, r["AP"], r["id"] in novel_ids) for name, r in metrics["per_category"].items()),
        key=lambda row: -row[1],
    )
    rows = [row for row in rows if row[1] > -1]
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.17 * len(rows) + 1)))
    colours = ["tab:orange" if novel else "tab:blue" for _, _, novel in rows]
    bars = ax.barh(range(len(rows)), [ap for _, ap, _ in rows], color=colours)
    ax.set_yticks(range(len(rows)), [name for name, _, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AP (IoU 0.50:0.95)")
    ax.set_title(f"per-category AP ({metrics['format'].upper()}, {len(rows)} categories)")
    if novel_ids:
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(color="tab:blue", label="base"),
                Patch(color="tab:orange", label="novel"),
            ],
            loc="lower right",
        )
    ax.grid(axis="x", alpha=0.3)
    data = {
        "names": [t.get_text() for t in ax.get_yticklabels()],
        "AP": [float(b.get_width()) for b in bars],
        "novel": [c == "tab:orange" for c in colours],
    }
    return _save(fig, Path(path), data)


def eval_plots(metrics: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Writes :data:`PR_CURVES_FILE` and :data:`PER_CATEGORY_FILE` into ``out_dir``."""
    out_dir = Path(out_dir)
    pr_curves(metrics, out_dir / PR_CURVES_FILE)
    per_category_ap(metrics, out_dir / PER_CATEGORY_FILE)
    return [out_dir / PR_CURVES_FILE, out_dir / PER_CATEGORY_FILE]


# ----------------------------------------------------------------------------------------------
# Training.

#: Eval metrics drawn in the AP panel, when present.
AP_KEYS = ("AP", "AP50", "AP_base", "AP_novel", "AP50_base", "AP50_novel")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _series(records: Iterable[Mapping[str, Any]], split: str, key: str) -> tuple[list, list]:
    xs, ys = [], []
    for r in records:
        if r.get("split", "train") == split and _finite(r.get(key)):
            xs.append(int(r["step"]))
            ys.append(float(r[key]))
    return xs, ys


def training_plot(
    records: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, title: str = "training"
) -> dict[str, Any]:
    """Loss terms, learning rate and eval AP against step, from ``metrics.jsonl`` records.

    Panels: every train key starting with "loss" (and eval "loss*" dashed); "lr" (and
    "text_lr" when non-zero); eval AP keys (:data:`AP_KEYS`), or without any, every other eval
    key (pretraining's retrieval accuracies). A panel without data says so.

    Returns:
        ``{"loss": {name: {"x", "y"}}, "lr": {...}, "ap": {...}}`` as drawn.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    keys = sorted({k for r in records for k in r if k.startswith("loss")})
    data: dict[str, dict[str, Any]] = {"loss": {}, "lr": {}, "ap": {}}
    for split, style in (("train", "-"), ("eval", "--")):
        for key in keys:
            xs, ys = _series(records, split, key)
            if xs:
                name = key if split == "train" else f"eval {key}"
                (line,) = axes[0].plot(
                    xs, ys, style, label=name, marker="." if len(xs) < 20 else ""
                )
                data["loss"][name] = _line_data(line)
    for key in ("lr", "text_lr"):
        xs, ys = _series(records, "train", key)
        if xs and any(ys):
            (line,) = axes[1].plot(xs, ys, label=key)
            data["lr"][key] = _line_data(line)
    eval_keys = [k for k in AP_KEYS if any(k in r for r in records if r.get("split") == "eval")]
    if not eval_keys:  # e.g. pretraining's retrieval accuracies
        eval_keys = sorted(
            {k for r in records if r.get("split") == "eval" for k in r}
            - {"step", "split"}
            - set(keys)
        )
    for key in eval_keys:
        xs, ys = _series(records, "eval", key)
        if xs:
            (line,) = axes[2].plot(xs, ys, marker="o", label=key)
            data["ap"][key] = _line_data(line)
    for ax, panel, label in zip(
        axes, ("loss", "lr", "ap"), ("loss", "learning rate", "eval"), strict=True
    ):
        ax.set_xlabel("step")
        ax.set_title(f"{title}: {label}")
        ax.grid(alpha=0.3)
        if data[panel]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    if data["loss"]:
        axes[0].set_yscale(
            "log" if all(min(s["y"]) > 0 for s in data["loss"].values()) else "linear"
        )
    return _save(fig, Path(path), data)


def training_plot_of_run(workdir: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draws ``<workdir>/metrics.jsonl`` into ``<workdir>/training.png``; returns that path."""
    workdir = Path(workdir)
    lines = (workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    path = workdir / TRAINING_FILE
    training_plot(records, path, title=title or workdir.name)
    return path


__all__ = [
    "INSTALL_HINT",
    "PER_CATEGORY_FILE",
    "PR_CURVES_FILE",
    "TRAINING_FILE",
    "MissingMatplotlibError",
    "eval_plots",
    "per_category_ap",
    "pr_curves",
    "require_matplotlib",
    "training_plot",
    "training_plot_of_run",
]
