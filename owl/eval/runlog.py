"""The resumable run log of a dataset prediction: predictions.jsonl, run.json, detections.json.

:func:`predict_dataset` appends one JSON line per image to ``predictions.jsonl`` as soon as the
image is done (flushed and fsynced per batch), records the settings in ``run.json``, and on a new
start skips the images already in the log (a torn last line, left by a kill during a write, is
cut off). It refuses to continue a log made with other settings unless told to overwrite. The
final ``detections.json`` (COCO results format) is assembled from the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from owl.data.annotations import CategoryMap, EvalDataError, ResultsTable, write_results
from owl.eval.predict import DatasetImage, ImageFailure, ImagePrediction, predict_images
from owl.eval.prompts import PromptEnsemble
from owl.files import atomic_write
from owl.inference.detector import Detector

#: Files in an evaluation's output folder.
RUN_FILE, LOG_FILE, RESULTS_FILE = "run.json", "predictions.jsonl", "detections.json"


class SettingsMismatchError(EvalDataError):
    """An output folder holds predictions made with other settings."""


def run_settings(
    *,
    model: str,
    prompts: str,
    templates: Sequence[str],
    top_k: int,
    resize: str,
    long_prompts: str,
    categories: CategoryMap,
) -> dict[str, Any]:
    """The settings a log's predictions depend on (compared on resume)."""
    digest = hashlib.sha256(
        json.dumps([list(categories.ids), list(categories.names)]).encode()
    ).hexdigest()
    return {
        "model": str(model),
        "prompts": prompts,
        "templates": list(templates),
        "top_k": int(top_k),
        "resize": resize,
        "long_prompts": long_prompts,
        "categories_sha256": digest,
    }


def _write_json_atomic(path: Path, value: Any) -> None:
    with atomic_write(path) as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _repair_log(path: Path) -> None:
    """Cuts a torn last line (no newline: the process died while writing it)."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


def read_log(path: str | os.PathLike) -> Iterator[ImagePrediction]:
    """Reads a predictions log (JSONL), ignoring a torn last line.

    Raises:
        EvalDataError: a complete line that is not a prediction record (``file:line``).
    """
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                return  # torn by a kill during the write
            if not line.strip():
                continue
            try:
                yield ImagePrediction.from_record(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                raise EvalDataError(
                    f"{path}:{number}: not a prediction record ({e}); delete that line or pass "
                    "--overwrite to start again"
                ) from None


def prepare_output(
    output_dir: str | os.PathLike, settings: Mapping[str, Any], *, overwrite: bool = False
) -> set[int]:
    """Readies an output folder and returns the image ids already predicted there.

    A new folder (or ``overwrite``) gets a fresh ``run.json`` and an empty log. An existing log is
    continued only if its ``run.json`` holds the same settings; a torn last line is cut off.

    Raises:
        SettingsMismatchError: the log was made with other settings (or has no run.json).
        EvalDataError: a corrupt line in the log.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_FILE
    if overwrite or not check_resumable(out, settings):
        log_path.unlink(missing_ok=True)
        _write_json_atomic(out / RUN_FILE, {"settings": dict(settings)})
        return set()
    _repair_log(log_path)
    return logged_image_ids(log_path)


def logged_image_ids(path: str | os.PathLike) -> set[int]:
    """The image ids in a predictions log, read from each line's start (fast; no full parse).

    Lines are written as ``{"image_id":N,...}``; a line that does not start so is parsed whole.
    A torn last line is ignored. Malformed lines are reported when the log is assembled.
    """
    path = Path(path)
    ids: set[int] = set()
    if not path.exists():
        return ids
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n") or not line.strip():
                continue
            match = _ID_PREFIX.match(line)
            if match:
                ids.add(int(match.group(1)))
                continue
            try:
                ids.add(int(json.loads(line)["image_id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


_ID_PREFIX = re.compile(rb'\{"image_id":(-?\d+),')


def check_resumable(output_dir: str | os.PathLike, settings: Mapping[str, Any]) -> bool:
    """Whether ``output_dir`` holds a log to resume; checks its settings without changing files.

    Returns:
        True if there is a non-empty log made with ``settings``, False if there is no log.

    Raises:
        SettingsMismatchError: the log was made with other settings (or has no run.json).
    """
    out = Path(output_dir)
    run_path, log_path = out / RUN_FILE, out / LOG_FILE
    if not (log_path.exists() and log_path.stat().st_size > 0):
        return False
    try:
        saved = json.loads(run_path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SettingsMismatchError(
            f"{log_path} exists but {run_path} is missing or unreadable, so its settings are "
            "unknown; pass --overwrite to start again or use another --output-dir"
        ) from None
    changed = [k for k in settings if saved.get(k) != settings[k]]
    if changed:
        diffs = "; ".join(
            f"{k}: {_short(saved.get(k))} there, {_short(settings[k])} now" for k in changed
        )
        raise SettingsMismatchError(
            f"{out} holds predictions made with other settings ({diffs}); pass --overwrite to "
            "discard them or use another --output-dir"
        )
    return True


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclasses.dataclass(frozen=True)
class DatasetRun:
    """What :func:`predict_dataset` did.

    Attributes:
        results: the detections of all requested images that have predictions, from the log.
        predicted_ids: those images' ids, in request order.
        resumed: images found already done in the log.
        new: images predicted in this call.
        failures: images that could not be read.
        size_mismatches: ids of images whose file size differs from the annotations' width/height
            (e.g. an EXIF rotation the annotations did not apply).
        results_path: the detections.json written.
    """

    results: ResultsTable
    predicted_ids: tuple[int, ...]
    resumed: int
    new: int
    failures: tuple[ImageFailure, ...]
    size_mismatches: tuple[int, ...]
    results_path: Path


def predict_dataset(
    detector: Detector | None,
    images: Sequence[DatasetImage],
    ensemble: PromptEnsemble | None,
    output_dir: str | os.PathLike,
    *,
    settings: Mapping[str, Any],
    top_k: int = 300,
    overwrite: bool = False,
    progress: bool = False,
    on_result: Callable[[ImagePrediction | ImageFailure], None] | None = None,
) -> DatasetRun:
    """Predicts a dataset into ``output_dir`` with resume, then writes ``detections.json``.

    Args:
        detector: see :func:`owl.eval.predict.predict_images`; may be None when every image is
            in the log already (see :func:`pending_images`).
        images: the images to predict, in order (from :func:`owl.eval.predict.find_images`).
        ensemble: from :func:`owl.eval.prompts.embed_prompts`; None under the same condition.
        output_dir: gets run.json, predictions.jsonl and detections.json.
        settings: from :func:`run_settings`; must match a log being resumed.
        top_k: pairs per image.
        overwrite: discard an existing log instead of resuming it.
        progress: show a tqdm bar (images/s, ETA) on stderr.
        on_result: called after each image's result is recorded (for progress or tests).

    Returns:
        A :class:`DatasetRun`.

    Raises:
        SettingsMismatchError, EvalDataError: see :func:`prepare_output`.
    """
    out = Path(output_dir)
    done = prepare_output(out, settings, overwrite=overwrite)
    todo = [im for im in images if im.image_id not in done]
    if todo and (detector is None or ensemble is None):
        raise ValueError(f"{len(todo)} image(s) to predict, but no detector or ensemble given")
    failures, mismatches, new = [], [], 0
    expected = {im.image_id: (im.width, im.height) for im in images}
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", desc="predict", dynamic_ncols=True)
    try:
        with open(out / LOG_FILE, "a", encoding="utf-8") as log:
            unsynced, batch_size = 0, detector.batch_size if todo else 1
            results = predict_images(detector, todo, ensemble, top_k=top_k) if todo else ()
            for result in results:
                if isinstance(result, ImageFailure):
                    failures.append(result)
                else:
                    log.write(json.dumps(result.to_record(), separators=(",", ":")) + "\n")
                    unsynced += 1
                    new += 1
                    want = expected[result.image_id]
                    if None not in want and want != (result.width, result.height):
                        mismatches.append(result.image_id)
                    if unsynced >= batch_size:
                        _sync(log)
                        unsynced = 0
                if bar is not None:
                    bar.update(1)
                if on_result is not None:
                    on_result(result)
            _sync(log)
    finally:
        if bar is not None:
            bar.close()
    table, predicted = load_log_results(out / LOG_FILE, [im.image_id for im in images])
    path = write_results(out / RESULTS_FILE, table)
    return DatasetRun(
        results=table,
        predicted_ids=tuple(predicted),
        resumed=len(images) - len(todo),
        new=new,
        failures=tuple(failures),
        size_mismatches=tuple(mismatches),
        results_path=path,
    )


def pending_images(
    output_dir: str | os.PathLike,
    images: Sequence[DatasetImage],
    settings: Mapping[str, Any],
    *,
    overwrite: bool = False,
) -> list[DatasetImage]:
    """The images :func:`predict_dataset` would still predict; changes no file.

    Raises:
        SettingsMismatchError: as :func:`prepare_output` would (unless ``overwrite``).
    """
    if overwrite or not check_resumable(output_dir, settings):
        return list(images)
    done = logged_image_ids(Path(output_dir) / LOG_FILE)
    return [im for im in images if im.image_id not in done]


def _sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def load_log_results(
    log_path: str | os.PathLike, image_ids: Sequence[int]
) -> tuple[ResultsTable, list[int]]:
    """Assembles the detections of ``image_ids`` (in that order) from a predictions log.

    Returns:
        (table, ids): the detections, and the requested ids that the log holds (the last record
        of an image wins).
    """
    wanted = set(int(i) for i in image_ids)
    latest: dict[int, ImagePrediction] = {}
    for p in read_log(log_path):
        if p.image_id in wanted:
            latest[p.image_id] = p
    present = [int(i) for i in image_ids if int(i) in latest]
    parts = [latest[i] for i in present]
    if not parts:
        return ResultsTable.empty(), present
    return (
        ResultsTable(
            image_ids=np.concatenate([np.full(len(p.scores), p.image_id, np.int64) for p in parts]),
            category_ids=np.concatenate([p.category_ids for p in parts]).astype(np.int64),
            boxes=np.concatenate([p.boxes for p in parts]).astype(np.float64).reshape(-1, 4),
            scores=np.concatenate([p.scores for p in parts]).astype(np.float64),
        ),
        present,
    )
