"""Detection over a video: frames stream from the decoder thread into `Detector.detect_each`.

Three threads overlap: the decoder (`owl.video.reader.FrameReader`) fills a bounded queue, the
Detector's own prefetch thread preprocesses the next batch, and the caller's thread runs the
model and everything after it (tracking, writers). At most `queue_size` decoded frames wait in
the queue and at most two batches are in flight, so memory does not grow with the video's length.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from owl.inference.detections import Detections
from owl.inference.detector import Detector, QuerySet
from owl.video.reader import FrameReader
from owl.video.tracking import Tracker


@dataclasses.dataclass(frozen=True, eq=False)
class FrameDetections:
    """One selected frame's result.

    Attributes:
      index: frame position in the video (from 0); timestamp: seconds.
      detections: boxes in the upright frame's pixels; with tracking, ``data["track_id"]``.
        metadata holds "path" (the video), "frame", "timestamp", "width" and "height".
      image: the decoded frame (uint8 RGB), kept for drawing; None once dropped.
    """

    index: int
    timestamp: float
    detections: Detections
    image: np.ndarray | None = None


def detect_video(
    detector: Detector,
    reader: FrameReader,
    queries: QuerySet,
    *,
    tracker: Tracker | None = None,
    keep_images: bool = False,
    **options: Any,
) -> Iterator[FrameDetections]:
    """Detects (and tracks) in every frame `reader` yields, in order.

    Args:
      detector: the Detector; options are those of `Detector.detect_each`.
      reader: the decoding thread; a decoding error ends the stream early and stays in
        `reader.error` for the caller to report.
      queries: the prepared query set.
      tracker: gives track ids when set.
      keep_images: keep each frame's pixels in the result (for drawing).
    """
    pending: collections.deque = collections.deque()

    def frames():
        for frame in reader:
            pending.append(frame)
            yield frame.image

    # The Detector's encoding cache is an LRU of fixed size, so it too is bounded.
    for result in detector.detect_each(frames(), queries, **options):
        frame = pending.popleft()
        if result.error is not None:  # a frame array always preprocesses; keep the stream whole
            detections = Detections.empty()
        else:
            detections = result.detections
        height, width = frame.image.shape[:2]
        detections = dataclasses.replace(
            detections,
            metadata={
                "path": os.fspath(reader.path), "frame": frame.index,
                "timestamp": round(frame.timestamp, 6), "width": width, "height": height,
            },
        )  # fmt: skip
        if tracker is not None:
            detections = tracker.update(detections, frame.timestamp)
        yield FrameDetections(
            frame.index, frame.timestamp, detections, frame.image if keep_images else None
        )


__all__ = ["FrameDetections", "detect_video"]
