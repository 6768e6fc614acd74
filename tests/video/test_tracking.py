"""owl.video.tracking: re-linking a lost track to the new track of the same query.

Constructed detections, no model: an object moves right at 2 px per frame, is missed for longer
than the underlying tracker keeps a lost track, and reappears where its motion takes it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trackers")

from owl.inference.detections import Detections  # noqa: E402
from owl.video.tracking import Tracker, TrackerOptions  # noqa: E402

FPS = 25.0
SIDE = 20.0


def frame(boxes: list[tuple[float, float, int]], labels: tuple[str, ...]) -> Detections:
    """Detections at top-left corners (x, y) of SIDE-pixel boxes, with query indices."""
    xyxy = np.array([[x, y, x + SIDE, y + SIDE] for x, y, _ in boxes], np.float32).reshape(-1, 4)
    queries = np.array([q for _, _, q in boxes], int)
    return Detections(
        xyxy=xyxy,
        confidence=np.full(len(boxes), 0.9, np.float32),
        class_id=queries,
        labels=np.array([labels[q] for q in queries], dtype=object),
        data={},
        metadata={},
    )


def run(tracker: Tracker, frames: list[Detections]) -> list[list[int]]:
    return [tracker.update(f).data["track_id"].tolist() for f in frames]


def moving(start: int, stop: int, query: int = 0, y: float = 50.0) -> list[list]:
    """The object's box in frames [start, stop): x = 10 + 2 * frame."""
    return [[(10 + 2.0 * t, y, query)] for t in range(start, stop)]


def gap(frames: int) -> list[list]:
    return [[] for _ in range(frames)]


# Lost for 60 frames (2.4 s): past BoT-SORT's lost-track buffer (30 frames at 30 fps).
SEEN, MISSED = 20, 60


def test_a_track_lost_past_the_buffer_keeps_its_id_when_its_object_comes_back():
    labels = ("red star",)
    boxes = moving(0, SEEN) + gap(MISSED) + moving(SEEN + MISSED, SEEN + MISSED + 20)
    frames = [frame(b, labels) for b in boxes]
    ids = run(Tracker(TrackerOptions(), frame_rate=FPS), frames)
    before = {i for f in ids[:SEEN] for i in f if i > 0}
    after = {i for f in ids[SEEN + MISSED + 2 :] for i in f if i > 0}
    assert before == {1} and after == {1}

    # Without re-linking, the same detections end in a second track: the case it fixes.
    plain = run(Tracker(TrackerOptions(relink_seconds=0), frame_rate=FPS), frames)
    assert {i for f in plain[SEEN + MISSED + 2 :] for i in f if i > 0} == {2}


def test_another_query_at_the_same_place_never_continues_the_track():
    labels = ("red star", "blue ring")
    boxes = moving(0, SEEN, 0) + gap(MISSED) + moving(SEEN + MISSED, SEEN + MISSED + 20, 1)
    tracker = Tracker(TrackerOptions(), frame_rate=FPS)
    ids = run(tracker, [frame(b, labels) for b in boxes])
    assert {i for f in ids[SEEN + MISSED + 2 :] for i in f if i > 0} == {2}
    assert tracker.labels == {1: "red star", 2: "blue ring"}


def test_a_far_reappearance_or_one_after_the_window_gets_a_new_id():
    labels = ("red star",)
    far = moving(0, SEEN) + gap(MISSED) + moving(SEEN + MISSED, SEEN + MISSED + 20, y=300.0)
    ids = run(Tracker(TrackerOptions(), frame_rate=FPS), [frame(b, labels) for b in far])
    assert {i for f in ids[SEEN + MISSED + 2 :] for i in f if i > 0} == {2}

    # 2.4 s lost against a 2 s window.
    late = moving(0, SEEN) + gap(MISSED) + moving(SEEN + MISSED, SEEN + MISSED + 20)
    options = TrackerOptions(relink_seconds=2.0)
    ids = run(Tracker(options, frame_rate=FPS), [frame(b, labels) for b in late])
    assert {i for f in ids[SEEN + MISSED + 2 :] for i in f if i > 0} == {2}


def test_two_objects_of_one_query_keep_their_own_ids_through_a_gap():
    labels = ("star",)
    top = moving(0, SEEN + MISSED + 20, y=20.0)
    bottom = moving(0, SEEN + MISSED + 20, y=120.0)
    boxes = [
        t + b if not (SEEN <= k < SEEN + MISSED) else []
        for k, (t, b) in enumerate(zip(top, bottom, strict=True))
    ]
    ids = run(Tracker(TrackerOptions(), frame_rate=FPS), [frame(b, labels) for b in boxes])
    assert ids[SEEN - 1] == ids[-1] and sorted(ids[-1]) == [1, 2]


def test_bad_relink_options_are_refused():
    with pytest.raises(ValueError, match="relink_seconds"):
        TrackerOptions(relink_seconds=-1)
