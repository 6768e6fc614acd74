"""`evaluate(detector, annotations, images, output_dir)`: predict a dataset, then score it.

The one entry point for model evaluation: `owl eval --model`, the trainer's periodic AP, the
ShapesWorld recipe and one-shot evaluation all call it, so they find images, embed prompts,
predict, resume and score the same way. The prediction settings come from the Detector (its
model, batch size, resize method and pixel limit); what is left to say is what to query with
(prompt templates, or a ready `PromptEnsemble` such as one-shot's exemplars), how many pairs to
keep and how to score.

Steps: load and validate the annotations; locate the image files (`owl.eval.predict`); embed the
prompts once (`owl.eval.prompts`); predict into ``output_dir`` with the resumable log
(`owl.eval.runlog`); score the predicted images with `owl.eval.metrics.evaluate`; write
``metrics.json`` beside ``detections.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from owl.data.annotations import (
    AnnotationSet,
    CategoryMap,
    EvalDataError,
    Source,
    detect_format,
    load_annotations,
)
from owl.eval import metrics as metrics_lib
from owl.eval.predict import DatasetImage, describe_missing, find_images, subset_annotations
from owl.eval.prompts import PromptEnsemble, embed_prompts, resolve_templates
from owl.eval.runlog import DatasetRun, pending_images, predict_dataset, run_settings
from owl.files import atomic_write
from owl.inference.detector import Detector

#: The metrics file written into the output folder.
METRICS_FILE = "metrics.json"


class MissingImagesError(EvalDataError):
    """Image files listed in the annotations are not in the images folder.

    Attributes:
        missing: their names (file_name, the URL's file name, or ``id <n>``).
        total: images in the annotations.
    """

    def __init__(self, message: str, missing: Sequence[str], total: int) -> None:
        super().__init__(message)
        self.missing = tuple(missing)
        self.total = total


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` did and measured.

    Attributes:
        metrics: `owl.eval.metrics.evaluate`'s result ("stats", "per_category", ...), or None
            when no image could be read.
        run: the prediction run (results, resumed/new counts, unreadable images).
        settings: the run settings recorded in ``run.json``.
        dataset_images: images in the annotations.
        missing: names of the annotated images whose file was not found (skipped).
        long_prompts: prompts longer than the text context (cut as ``long_prompts`` says).
        metrics_path: the ``metrics.json`` written (None without metrics).
    """

    metrics: dict[str, Any] | None
    run: DatasetRun
    settings: dict[str, Any]
    dataset_images: int
    missing: tuple[str, ...]
    long_prompts: tuple[str, ...]
    metrics_path: Path | None

    @property
    def stats(self) -> dict[str, float]:
        """The headline numbers (AP, AP50, ...) as floats; empty without metrics."""
        if self.metrics is None:
            return {}
        stats = self.metrics["stats"].items()
        return {k: float(v) for k, v in stats if isinstance(v, int | float)}


def evaluate(
    detector: Detector,
    annotations: Source,
    images: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    prompts: str = "ensemble",
    ensemble: PromptEnsemble | None = None,
    long_prompts: str = "official",
    top_k: int = 300,
    max_images: int | None = None,
    skip_missing: bool = True,
    overwrite: bool = False,
    model_id: str | None = None,
    fmt: str | None = None,
    novel_category_ids: Iterable[int] | None = None,
    max_dets: int = 300,
    progress: bool = False,
    verbose: bool = False,
) -> Evaluation:
    """Predicts the dataset's images with ``detector`` (resumable) and scores the detections.

    Args:
        detector: the model and the prediction settings (batch size, resize method, pixels).
        annotations: the dataset, COCO or LVIS style (JSON path or dict).
        images: the folder holding its images (see `owl.eval.predict.find_images`).
        output_dir: gets run.json, predictions.jsonl, detections.json and metrics.json.
        prompts: "ensemble", "none" or one template with ``{}`` (see
            `owl.eval.prompts.resolve_templates`); with ``ensemble``, the name recorded for it.
        ensemble: ready query embeddings (e.g. one-shot exemplars) instead of text prompts; its
            categories are the ones predicted.
        long_prompts: "official" or "truncate" (see `owl.eval.prompts`).
        top_k: (box, class) pairs kept per image.
        max_images: predict and score only the first this-many images by id (None: all).
        skip_missing: go on without image files that are missing; if False they raise.
        overwrite: discard predictions already in ``output_dir`` instead of resuming them.
        model_id: how the model is recorded in the settings (default: ``detector.model.source``).
        fmt: "coco", "lvis" or None (detected from the dataset).
        novel_category_ids: also report AP over these categories and over the rest.
        max_dets: LVIS only: detections kept per image.
        progress: show a progress bar on stderr.
        verbose: show pycocotools' own output.

    Returns:
        An :class:`Evaluation`.

    Raises:
        MissingImagesError: image files are missing and ``skip_missing`` is False.
        EvalDataError: bad annotations, no image file found, or a log made with other settings
            (`owl.eval.runlog.SettingsMismatchError`).
        ValueError: a prompt template without exactly one ``{}``.
    """
    dataset = load_annotations(annotations)
    fmt = detect_format(dataset) if fmt is None else fmt
    novel = None if novel_category_ids is None else [int(c) for c in novel_category_ids]
    found, missing = find_images(dataset, images)
    total = len(dataset["images"])
    if missing and not skip_missing:
        raise MissingImagesError(describe_missing(missing, total, images), missing, total)
    if not found:
        raise EvalDataError(f"none of the {total} images is in {images}")
    selected: list[DatasetImage] = found[:max_images] if max_images is not None else found
    if ensemble is None:
        templates = resolve_templates(prompts)
        categories = CategoryMap.from_annotations(dataset)
    else:
        templates, categories = ensemble.templates, ensemble.categories
    settings = run_settings(
        model=model_id if model_id is not None else str(detector.model.source),
        prompts=prompts, templates=templates, top_k=top_k, resize=detector.resize_method,
        long_prompts=long_prompts, categories=categories,
    )  # fmt: skip
    # Prompts are embedded only when some image is still to predict (not for a finished log).
    if ensemble is None and pending_images(output_dir, selected, settings, overwrite=overwrite):
        ensemble = embed_prompts(detector, categories, templates, long_prompts=long_prompts)
    run = predict_dataset(
        detector, selected, ensemble, output_dir, settings=settings, top_k=top_k,
        overwrite=overwrite, progress=progress,
    )  # fmt: skip
    result = dict(
        run=run, settings=settings, dataset_images=total, missing=tuple(missing),
        long_prompts=ensemble.long_prompts if ensemble is not None else (),
    )  # fmt: skip
    if not run.predicted_ids:
        return Evaluation(metrics=None, metrics_path=None, **result)
    truth: AnnotationSet = dataset
    if len(run.predicted_ids) < total:
        truth = load_annotations(subset_annotations(dataset, run.predicted_ids))
    metrics = metrics_lib.evaluate(
        truth, run.results, fmt=fmt, novel_category_ids=novel, max_dets=max_dets,
        verbose=verbose,
    )  # fmt: skip
    record = {
        "annotations": str(annotations) if isinstance(annotations, str | os.PathLike) else None,
        "images": str(images),
        "detections": str(run.results_path),
        "settings": settings,
        "evaluated_images": len(run.predicted_ids),
        "dataset_images": total,
        "missing_images": len(missing),
        "failed_images": [{"image_id": f.image_id, "error": f.error} for f in run.failures],
        **metrics,
    }
    path = Path(output_dir) / METRICS_FILE
    with atomic_write(path) as f:
        f.write(json.dumps(record, indent=2) + "\n")
    return Evaluation(metrics=metrics, metrics_path=path, **result)


__all__ = ["METRICS_FILE", "Evaluation", "MissingImagesError", "evaluate"]
