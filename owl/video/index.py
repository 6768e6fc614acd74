"""Videos in a search index (`owl index clip.mp4 --every 1s`): one indexed frame every so often.

A frame is stored like an image, under the path ``/abs/clip.mp4#t=4.000`` (the media-fragment
form browsers understand), so `owl search` answers name the video and the time, and the HTML
gallery's link opens the video there. `frame_path` / `split_frame_path` make and read those names;
`load_frame` decodes the named frame (for drawing and thumbnails).

Incremental like images: a video whose size and mtime match its indexed frames is skipped; a
changed one has its old frames removed and is indexed again. `Index.prune` drops a video's frames
when the video file is gone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import numpy as np

from owl.video.reader import FrameSelection, VideoError, iter_frames, read_frames

_FRAGMENT = re.compile(r"^(?P<file>.+)#t=(?P<t>\d+(?:\.\d+)?)$")


def frame_path(video: str | os.PathLike, timestamp: float) -> str:
    """The indexed name of a video frame: "/abs/clip.mp4#t=4.000"."""
    return f"{os.path.abspath(os.fspath(video))}#t={timestamp:.3f}"


def split_frame_path(path: str) -> tuple[str, float] | None:
    """(video file, seconds) of a frame name; None for an ordinary file path."""
    m = _FRAGMENT.match(path)
    if m is None or os.path.isfile(path):
        return None
    return m["file"], float(m["t"])


def load_frame(path: str) -> np.ndarray:
    """The frame a "clip.mp4#t=T" name names (the first decoded frame at or after T - 1 ms).

    Raises:
      VideoError: not a frame name, or the video cannot be read there.
    """
    parts = split_frame_path(path)
    if parts is None:
        raise VideoError(f"{path}: not a video frame name (FILE#t=SECONDS)")
    video, t = parts
    for frame in iter_frames(video, FrameSelection(start=max(0.0, t - 1e-3))):
        return frame.image
    raise VideoError(f"{path}: the video has no frame at {t:g} s")


def parse_every(spec: str) -> float:
    """ "1s", "0.5s", "2" (seconds) -> seconds.

    Raises:
      ValueError: not a positive number of seconds.
    """
    text = spec.strip().lower().removesuffix("s")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"--every {spec!r}: give a time such as 1s or 0.5s")
    return value


def index_video(
    index, video: str, every: float, *, on_frame: Callable[[int], None] | None = None
) -> tuple[int, str | None]:
    """Indexes one frame of `video` every `every` seconds into an `owl.search.index.Index`.

    Returns:
      (frames indexed, or -1 when the video was unchanged and skipped; the error line or None).
    """
    from owl.search import store

    video = os.path.abspath(video)
    try:
        st = os.stat(video)
    except OSError as e:
        return 0, f"{video}: cannot read the file ({e.strerror or e})"
    prefix = video + "#t="
    with index._lock:
        states = store.file_states(index._db)
    mine = {p: s for p, s in states.items() if p.startswith(prefix)}
    if mine and all(s[1:] == (st.st_size, st.st_mtime_ns) for s in mine.values()):
        return -1, None
    if mine:
        index.remove(list(mine))
    tag = f"video:{st.st_size}:{st.st_mtime_ns}:"
    reader = read_frames(
        video, FrameSelection(fps=1.0 / every), queue_size=2 * index.detector.batch_size
    )
    count = 0
    batch: list = []

    def flush() -> None:
        nonlocal count
        encodings = index.detector.encode_images([f.image for f in batch])
        records = []
        for frame, enc in zip(batch, encodings, strict=True):
            path = frame_path(video, frame.timestamp)
            fake = os.stat_result((0, 0, 0, 0, 0, 0, st.st_size, 0, 0, 0))
            record = index._record(path, tag + path, fake, enc)
            records.append(_with_mtime(record, st.st_mtime_ns))
        with index._lock, store.write(index._db) as db:
            store.put_images(db, records)
        count += len(batch)
        if on_frame is not None:
            on_frame(len(batch))
        batch.clear()

    try:
        for frame in reader:
            batch.append(frame)
            if len(batch) == index.detector.batch_size:
                flush()
        if batch:
            flush()
    finally:
        reader.close()
    return count, reader.error


def _with_mtime(record, mtime_ns: int):
    import dataclasses

    return dataclasses.replace(record, mtime_ns=mtime_ns)


__all__ = ["frame_path", "index_video", "load_frame", "parse_every", "split_frame_path"]
