"""Decoding: frame selection, timestamps, rotation, bounded memory, bad files."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

pytest.importorskip("av")

from video_helpers import frame_number, write_numbered  # noqa: E402

from owl.video.reader import FrameSelection, VideoError, iter_frames, probe, read_frames  # noqa: E402


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_numbered(tmp_path_factory.mktemp("v") / "clip.mp4", 16, fps=10.0)


def picked(path, **kwargs):
    frames = list(read_frames(path, FrameSelection(**kwargs)))
    for f in frames:  # the pixels are those of the frame the index names
        assert frame_number(f.image) == f.index
    return [(f.index, round(f.timestamp, 6)) for f in frames]


def test_all_frames_and_timestamps(clip):
    info = probe(clip)
    assert (info.width, info.height, info.fps, info.frames, info.rotation) == (128, 48, 10.0, 16, 0)
    assert picked(clip) == [(k, k / 10) for k in range(16)]


def test_stride_start_end(clip):
    assert picked(clip, stride=4) == [(0, 0.0), (4, 0.4), (8, 0.8), (12, 1.2)]
    # the first frame at or after --start, then every 3rd; --end is exclusive
    assert picked(clip, stride=3, start=0.25, end=1.0) == [(3, 0.3), (6, 0.6), (9, 0.9)]
    assert picked(clip, start=1.3) == [(13, 1.3), (14, 1.4), (15, 1.5)]


def test_fps_keeps_first_frame_at_or_after_each_tick(clip):
    # ticks at 0, 1/3, 2/3, 1, 4/3 s -> frames at 0.0, 0.4, 0.7, 1.0, 1.4
    assert picked(clip, fps=3) == [(0, 0.0), (4, 0.4), (7, 0.7), (10, 1.0), (14, 1.4)]
    # a rate above the video's keeps every frame once
    assert [i for i, _ in picked(clip, fps=25)] == list(range(16))
    assert picked(clip, fps=2, start=0.45) == [(5, 0.5), (10, 1.0), (15, 1.5)]


@pytest.mark.parametrize(("rotation", "size", "block"), [(90, (48, 128), "bottom-left"),
                                                         (-90, (48, 128), "top-right"),
                                                         (180, (128, 48), "bottom-right")])  # fmt: skip
def test_rotation_metadata_is_applied(tmp_path, rotation, size, block):
    from owl.video.writer import VideoWriter

    image = np.full((48, 128, 3), 100, np.uint8)
    image[:8, :16] = (250, 20, 20)  # a red block at the coded frame's top-left
    path = tmp_path / "rot.mp4"
    with VideoWriter(path, 10, 128, 48, rotation=rotation) as w:
        for _ in range(3):
            w.write(image)
    info = probe(path)
    assert (info.width, info.height) == size
    [first, *_] = iter_frames(path)
    h, w_ = first.image.shape[:2]
    assert (w_, h) == size
    ys, xs = np.nonzero(first.image[..., 0] > 200)
    where = (
        ("top" if ys.mean() < h / 2 else "bottom")
        + "-"
        + ("left" if xs.mean() < w_ / 2 else "right")
    )
    assert where == block  # counterclockwise display rotation, as ffmpeg's autorotate


def test_memory_is_bounded_by_the_queue_not_the_length(tmp_path):
    """A slow consumer of a long video holds at most the queue's frames (numpy is traced)."""
    from owl.video.writer import VideoWriter

    frame = np.full((96, 128, 3), 90, np.uint8)
    path = tmp_path / "long.mp4"
    with VideoWriter(path, 25, 128, 96) as w:
        for k in range(1500):
            frame[:, :, 1] = k % 256
            w.write(frame)
    frame_bytes = frame.nbytes
    tracemalloc.start()
    count = 0
    with read_frames(path, queue_size=4) as reader:
        for f in reader:
            count += 1
            del f
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 1500
    # 4 queued + 1 in hand + 1 being decoded, with slack; the whole video is 1500 frames
    assert peak < 12 * frame_bytes, (peak, frame_bytes)


def test_bad_files_are_one_line_errors(tmp_path):
    good = write_numbered(tmp_path / "good.mp4", 8)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 50)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path, words in ((empty, "empty"), (text, "not a readable video"), (cut, "")):
        with pytest.raises(VideoError) as e:
            list(iter_frames(path))
        message = str(e.value)
        assert "\n" not in message and str(path) in message and words in message
