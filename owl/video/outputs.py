"""Writers of per-frame video detections: JSON Lines, MOT Challenge text, CSV; and MOT reading.

Each writer streams (one frame at a time, nothing kept) into a temporary file that replaces the
target when it is closed (`owl.files.atomic_write`), so a run's memory does not grow with the
video and a reader never sees half a file.

* ``*.jsonl`` (`JsonlWriter`): one JSON object per selected frame::

    {"video": "clip.mp4", "frame": 12, "timestamp": 0.48, "width": 640, "height": 360,
     "detections": [{"box": [x0, y0, x1, y1], "score": 0.87, "label": "red car",
                     "query_index": 0, "track_id": 3}]}

  ``detections`` are as in `owl detect`'s JSON (`Detections.to_dict`), plus ``track_id`` with
  --track (null for a box no confirmed track holds).
* ``*.mot.txt`` (`MotWriter`): MOT Challenge results, one line per tracked box,
  ``frame,id,x,y,w,h,score,-1,-1,-1`` with frame = video frame index + 1 and id = track id;
  boxes without a track are left out (MOT has no row for them).
* ``*.csv`` (`CsvWriter`): owl detect's CSV columns (`owl.inference.outputs.CSV_HEADER`, the
  video in the ``image`` column), then ``frame, timestamp, track_id``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from owl.files import atomic_write
from owl.inference.detections import Detections, float32_list
from owl.inference.outputs import CSV_HEADER, to_csv_rows

VIDEO_OUTPUT_SUFFIXES = (".jsonl", ".mot.txt", ".csv")
VIDEO_CSV_HEADER = (*CSV_HEADER, "frame", "timestamp", "track_id")


def video_output_format(path: str | os.PathLike) -> str | None:
    """ "jsonl", "mot" or "csv" from a file name; None for any other suffix."""
    name = Path(path).name.lower()
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".mot.txt"):
        return "mot"
    if name.endswith(".csv"):
        return "csv"
    return None


def _track_ids(detections: Detections) -> np.ndarray | None:
    ids = detections.data.get("track_id")
    return None if ids is None else np.asarray(ids)


def frame_record(detections: Detections) -> dict[str, Any]:
    """The JSON Lines record of one frame (see the module docstring)."""
    meta = detections.metadata
    record = detections.to_dict()
    ids = _track_ids(detections)
    rows = []
    for i, row in enumerate(record["detections"]):
        data = dict(row.pop("data", {}) or {})
        data.pop("track_id", None)
        if data:
            row["data"] = data
        if ids is not None:
            row["track_id"] = int(ids[i]) if ids[i] >= 0 else None
        rows.append(row)
    return {
        "video": meta.get("path"), "frame": meta.get("frame"), "timestamp": meta.get("timestamp"),
        "width": meta.get("width"), "height": meta.get("height"), "detections": rows,
    }  # fmt: skip


def draw_tracked(image: np.ndarray, detections: Detections) -> np.ndarray:
    """The frame with its boxes drawn; tags read "#ID label score" for tracked boxes."""
    from owl.inference.draw import draw_detections

    ids = _track_ids(detections)
    if ids is not None:
        labels = [f"#{int(i)} {label}" if i >= 0 else str(label)
                  for i, label in zip(ids, detections.labels, strict=True)]  # fmt: skip
        detections = dataclasses.replace(detections, labels=labels)
    return np.asarray(draw_detections(image, detections))


class _StreamWriter:
    """An atomic text file kept open while frames are added; `close()` puts it in place."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._context = atomic_write(self.path, newline="")
        self._file: IO[str] = self._context.__enter__()
        self.frames = 0

    def add(self, detections: Detections) -> None:
        self._write(detections)
        self.frames += 1

    def _write(self, detections: Detections) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._context.__exit__(None, None, None)

    def abort(self) -> None:
        try:
            self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


class JsonlWriter(_StreamWriter):
    """``*.jsonl``: one record per frame."""

    def _write(self, detections: Detections) -> None:
        self._file.write(json.dumps(frame_record(detections)) + "\n")


class MotWriter(_StreamWriter):
    """``*.mot.txt``: ``frame,id,x,y,w,h,score,-1,-1,-1`` per tracked box, frames from 1."""

    def _write(self, detections: Detections) -> None:
        ids = _track_ids(detections)
        if ids is None:
            raise ValueError("MOT output needs track ids; run with --track")
        frame = int(detections.metadata["frame"]) + 1
        for box, score, track in zip(
            detections.xyxy, float32_list(detections.confidence), ids, strict=True
        ):
            if track < 0:
                continue
            x0, y0, x1, y1 = float32_list(np.asarray(box))
            w, h = float32_list(np.array([x1 - x0, y1 - y0]))
            self._file.write(f"{frame},{int(track)},{x0},{y0},{w},{h},{score},-1,-1,-1\n")


class CsvWriter(_StreamWriter):
    """``*.csv``: owl detect's columns, then frame, timestamp, track_id."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(VIDEO_CSV_HEADER)

    def _write(self, detections: Detections) -> None:
        meta = detections.metadata
        ids = _track_ids(detections)
        for i, row in enumerate(to_csv_rows(detections, str(meta.get("path")))):
            track = "" if ids is None or ids[i] < 0 else int(ids[i])
            self._csv.writerow([*row, meta.get("frame"), meta.get("timestamp"), track])


def open_video_output(path: str | os.PathLike) -> _StreamWriter:
    """The streaming writer for `path`'s suffix (*.jsonl, *.mot.txt, *.csv).

    Raises:
      ValueError: any other suffix.
    """
    fmt = video_output_format(path)
    if fmt is None:
        raise ValueError(f"{path}: name video outputs *.jsonl, *.mot.txt or *.csv")
    return {"jsonl": JsonlWriter, "mot": MotWriter, "csv": CsvWriter}[fmt](path)


def read_mot(path: str | os.PathLike) -> np.ndarray:
    """A MOT text file as float [N, columns] (gt or results); empty [0, 10] for an empty file."""
    rows = [
        [float(v) for v in line.split(",")]
        for line in Path(path).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    return np.array(rows, np.float64) if rows else np.zeros((0, 10))


__all__ = [
    "VIDEO_CSV_HEADER",
    "VIDEO_OUTPUT_SUFFIXES",
    "CsvWriter",
    "JsonlWriter",
    "MotWriter",
    "draw_tracked",
    "frame_record",
    "open_video_output",
    "read_mot",
    "video_output_format",
]
