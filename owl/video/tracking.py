"""Tracking over `Detections`: a `track_id` per detection that follows an object across frames.

The association itself is Roboflow's `trackers` package (ByteTrack, OC-SORT, BoT-SORT; the
`[video]` extra). This module feeds it owl's `Detections` frame by frame and returns them with a
``data["track_id"]`` column (-1 where no track is confirmed yet).

One tracker runs per query, so a track always has the label of its query and boxes of different
queries never join one track. When two queries claim one object (say "green circle" and "circle"
both fire on it), each query keeps its own track on it: the object then has two track ids, one
per label. With `--class-agnostic-nms` only the better-scoring query's box survives where
they overlap, so the object has one box per frame; but the box belongs to whichever query won in
that frame, and its track id changes when the winner does.
Track ids are numbered 1, 2, ... across
all queries in order of first confirmation.

Re-linking: when the underlying tracker starts a new track after losing one (the detector
missed the object for longer than `lost_frames`, typically behind another object, or the
motion model drifted), owl gives the new track the id of a lost track of the same query if one
was last seen at most `relink_seconds` ago and the new box lies within `relink_distance` box
sizes of where the lost track's last velocity would have taken it. The label (the query) is
what makes this safe for an open-vocabulary tracker: a lost "red star" is only ever continued by
a "red star". On the ShapesWorld benchmark it lifted the median IDF1 from 0.74 to 0.91 and cut
the ID switches from 4 to 0 (docs/video.md).

Why BoT-SORT (without camera-motion compensation) by default: on the ShapesWorld benchmark
(benchmarks/video.py, 5 videos of 600 frames, shapes-tiny) it had the best median IDF1 and MOTA
of the three after a small sweep of the shared settings (docs/video.md has the figures); a low
`min_iou` matters most, since a small object that moves a few pixels soon stops overlapping
its predicted box.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from owl.inference.detections import Detections

TRACKERS = ("bytetrack", "ocsort", "botsort")


def _import_trackers():
    try:
        import trackers
    except ImportError:
        raise ImportError(
            'tracking needs the video extra (module "trackers" is not installed); install it '
            'with: pip install "owl[video]"'
        ) from None
    return trackers


@dataclasses.dataclass(frozen=True)
class TrackerOptions:
    """How tracks are made.

    Attributes:
      method: one of `TRACKERS`.
      high_threshold: detections scoring at least this are matched first and may start tracks;
        lower ones (down to the detection threshold) only continue tracks (ByteTrack's second
        stage). OWL scores run lower than a closed-set detector's, hence well under the
        packages' default of 0.6.
      lost_frames: frames (at 30 fps; scaled to the video's rate) a lost track is kept.
      min_frames: consecutive frames before a track gets an id.
      min_iou: IoU needed to match a detection to a track.
      relink_seconds: how long a lost track may be continued by a new track of its query
        (0: never; see the module docstring).
      relink_distance: how far from the lost track's predicted centre the new box may start, in
        box sizes (the square root of the new box's area).
    """

    method: str = "botsort"
    high_threshold: float = 0.3
    lost_frames: int = 30
    min_frames: int = 2
    min_iou: float = 0.02
    relink_seconds: float = 10.0
    relink_distance: float = 6.0

    def __post_init__(self) -> None:
        if self.method not in TRACKERS:
            raise ValueError(f"tracker must be one of {', '.join(TRACKERS)}, got {self.method!r}")
        if self.relink_seconds < 0 or self.relink_distance < 0:
            raise ValueError(
                f"relink_seconds and relink_distance must be >= 0, got {self.relink_seconds} "
                f"and {self.relink_distance}"
            )


@dataclasses.dataclass
class _Seen:
    """Where a track id was last seen: frame number, box (xyxy), centre velocity per frame."""

    frame: int
    box: np.ndarray
    velocity: np.ndarray
    query: int


def _make(options: TrackerOptions, frame_rate: float) -> Any:
    trackers = _import_trackers()
    common = dict(
        lost_track_buffer=options.lost_frames,
        frame_rate=frame_rate,
        minimum_consecutive_frames=options.min_frames,
        high_conf_det_threshold=options.high_threshold,
    )
    if options.method == "bytetrack":
        return trackers.ByteTrackTracker(
            track_activation_threshold=options.high_threshold,
            minimum_iou_threshold=options.min_iou,
            **common,
        )
    if options.method == "ocsort":
        return trackers.OCSORTTracker(minimum_iou_threshold=options.min_iou, **common)
    return trackers.BoTSORTTracker(
        track_activation_threshold=options.high_threshold,
        enable_cmc=False,  # a fixed camera; CMC would need the frames
        minimum_iou_threshold_first_assoc=options.min_iou,
        **common,
    )


class Tracker:
    """Gives each frame's detections track ids; one underlying tracker per query index.

    Call `update` with every selected frame in order (an empty `Detections` where nothing was
    found, so lost tracks age).
    """

    def __init__(self, options: TrackerOptions | None = None, *, frame_rate: float = 30.0):
        self.options = options or TrackerOptions()
        self.frame_rate = float(frame_rate) if frame_rate and frame_rate > 0 else 30.0
        _import_trackers()
        self._per_query: dict[int, Any] = {}
        self._ids: dict[tuple[int, int], int] = {}  # (query, the tracker's own id) -> track id
        self._seen: dict[int, _Seen] = {}  # track id -> where it was last seen
        self._frame = -1
        self.labels: dict[int, str] = {}  # track id -> label

    @property
    def num_tracks(self) -> int:
        """Track ids handed out so far."""
        return len(self.labels)

    def _relink(self, query: int, box: np.ndarray, taken: set[int]) -> int | None:
        """The lost track id of `query` that a new track starting at `box` continues, if any."""
        window = self.options.relink_seconds * self.frame_rate
        centre = (box[:2] + box[2:]) / 2
        size = max(float(np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 0.0))), 1.0)
        best, best_distance = None, self.options.relink_distance
        for track, seen in self._seen.items():
            gap = self._frame - seen.frame
            if seen.query != query or track in taken or gap < 1 or gap > window:
                continue
            predicted = (seen.box[:2] + seen.box[2:]) / 2 + seen.velocity * gap
            distance = float(np.linalg.norm(centre - predicted)) / size
            if distance <= best_distance:
                best, best_distance = track, distance
        return best

    def _track_id(self, key: tuple[int, int], box: np.ndarray, taken: set[int]) -> int:
        """The track id of the underlying tracker's `key` (new, re-linked or known)."""
        if key in self._ids:
            return self._ids[key]
        track = self._relink(key[0], box, taken) if self.options.relink_seconds > 0 else None
        if track is None:
            track = len(self.labels) + 1
        else:  # the old track's own key, should it come back, starts afresh
            self._ids = {k: v for k, v in self._ids.items() if v != track}
        self._ids[key] = track
        return track

    def _saw(self, track: int, box: np.ndarray, query: int) -> None:
        centre = (box[:2] + box[2:]) / 2
        velocity = np.zeros(2)
        seen = self._seen.get(track)
        if seen is not None and self._frame > seen.frame:
            step = (centre - (seen.box[:2] + seen.box[2:]) / 2) / (self._frame - seen.frame)
            velocity = 0.5 * step + 0.5 * seen.velocity  # smoothed: one box is noisy
        self._seen[track] = _Seen(self._frame, box, velocity, query)

    def update(self, detections: Detections, timestamp: float | None = None) -> Detections:
        """The same detections, in the same order, with ``data["track_id"]`` (int, -1: none)."""
        import supervision as sv

        self._frame += 1
        track_ids = np.full(len(detections), -1, np.int64)
        queries = set(int(q) for q in detections.class_id) | set(self._per_query)
        for query in sorted(queries):
            tracker = self._per_query.get(query)
            if tracker is None:
                tracker = self._per_query[query] = _make(self.options, self.frame_rate)
            rows = np.flatnonzero(detections.class_id == query)
            sub = sv.Detections(
                xyxy=np.array(detections.xyxy[rows], np.float32).reshape(-1, 4),
                confidence=np.array(detections.confidence[rows], np.float32),
                class_id=np.full(len(rows), query, int),
                data={"owl_row": rows.astype(np.int64)},
            )
            out = tracker.update(sub)
            if len(out) == 0 or out.tracker_id is None:
                continue
            taken: set[int] = set()  # track ids given in this frame
            for row, local in zip(out.data["owl_row"], out.tracker_id, strict=True):
                if local < 0:
                    continue
                box = np.asarray(detections.xyxy[row], np.float64)
                track = self._track_id((query, int(local)), box, taken)
                self.labels.setdefault(track, str(detections.labels[row]))
                self._saw(track, box, query)
                taken.add(track)
                track_ids[row] = track
        data = {**detections.data, "track_id": track_ids}
        return dataclasses.replace(detections, data=data)


__all__ = ["TRACKERS", "Tracker", "TrackerOptions"]
