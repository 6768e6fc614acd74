"""Reading video files as a stream of RGB frames with their index and timestamp.

A video is never held whole in memory: `read_frames` decodes on a background thread into a
queue of at most `queue_size` frames, so memory is bounded by that queue (plus the detector's
batch), not by the video's length. PyAV (FFmpeg's libraries, inside its wheels) decodes; it is
the `[video]` extra, imported only here and in `owl.video.writer`.

Frames and timestamps:
  * `Frame.index` is the frame's position in the decoded stream, from 0 at the file's first frame
    (whatever --start says), so index k of a 25 fps file is at about k / 25 s.
  * `Frame.timestamp` is the frame's presentation time in seconds, from the stream's own
    timestamps (pts * time_base), less the stream's start time, so the first frame is at 0. For a
    variable-frame-rate file these are the real times, not index / fps.
  * Rotation metadata (the display matrix a phone writes) is applied: frames come out upright,
    and `VideoInfo.width/height` are the upright size.

Frame selection (`FrameSelection`), applied in this order:
  * `start` / `end` (seconds): keep frames with start <= timestamp < end;
  * `stride` N: the first kept frame, then every N-th frame after it;
  * `fps` F (instead of a stride): keep the first frame at or after each time start + k / F
    (k = 0, 1, ...), so at most F frames per second and never a frame twice.
Frames before `start` are decoded and dropped (no seek), so the indices stay exact.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".avi")
#: Timestamps closer than this (seconds) count as equal when selecting frames.
_EPS = 1e-6


class VideoError(ValueError):
    """A video that cannot be read; the message is one line naming the file."""


def is_video_name(path: str | os.PathLike) -> bool:
    """Whether the file name ends in one of `VIDEO_SUFFIXES` (case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclasses.dataclass(frozen=True)
class FrameSelection:
    """Which frames of a video to use (see the module docstring for the exact rules)."""

    stride: int = 1
    fps: float | None = None
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.fps is not None and self.stride != 1:
            raise ValueError("give a stride or an fps, not both")
        if self.start < 0:
            raise ValueError(f"start must be >= 0 s, got {self.start}")
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end} s) must be after start ({self.start} s)")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video's container says, read without decoding.

    Attributes:
      path: the file.
      width, height: upright frame size in pixels (rotation applied).
      fps: average frame rate (frames per second).
      frames: frame count from the container, or None when it does not say.
      duration: seconds, or None when unknown.
      rotation: degrees counterclockwise that frames are turned to be upright (0, 90, 180, 270).
      variable_frame_rate: the average rate differs from the stream's base rate.
    """

    path: str
    width: int
    height: int
    fps: float
    frames: int | None
    duration: float | None
    rotation: int
    variable_frame_rate: bool


@dataclasses.dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: uint8 RGB [H, W, 3] upright, its index and timestamp (seconds)."""

    index: int
    timestamp: float
    image: np.ndarray


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError(
            'reading video needs the video extra (module "av" is not installed); install it '
            'with: pip install "owl[video]"'
        ) from None
    return av


def _open(path: str | os.PathLike):
    """(container, video stream) of a file; every failure is a one-line `VideoError`."""
    av = _import_av()
    name = os.fspath(path)
    if not os.path.exists(name):
        raise VideoError(f"{name}: file not found; check the path")
    if os.path.getsize(name) == 0:
        raise VideoError(f"{name}: the file is empty (0 bytes); give a video file")
    try:
        container = av.open(name)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoError(
            f"{name}: not a readable video ({_reason(e)}); give an mp4/mov/mkv/webm/avi"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: the file has no video stream (audio only?); give a video")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def probe(path: str | os.PathLike) -> VideoInfo:
    """Reads a video's size, rate, length and rotation (decodes its first frame only).

    Raises:
      VideoError: missing, empty, not a video, no video stream, or no decodable frame.
    """
    container, stream = _open(path)
    name = os.fspath(path)
    try:
        av = _import_av()
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"{name}: cannot decode the video ({_reason(e)})") from None
        if first is None:
            raise VideoError(f"{name}: the video stream holds no frame; the file may be cut short")
        rotation = _rotation(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        average = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(average) if average else 0.0
        base = stream.base_rate
        variable = bool(base and average and abs(float(base) - float(average)) > 1e-3 * fps)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        return VideoInfo(
            path=name, width=width, height=height, fps=fps, frames=stream.frames or None,
            duration=duration, rotation=rotation, variable_frame_rate=variable,
        )  # fmt: skip
    finally:
        container.close()


def _rotation(frame) -> int:
    """The frame's display rotation (degrees counterclockwise), snapped to a multiple of 90."""
    try:
        angle = frame.rotation
    except AttributeError:  # an old PyAV without display-matrix support
        return 0
    return int(round(angle / 90.0)) % 4 * 90 if angle else 0


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turns a decoded frame by its display rotation (counterclockwise degrees)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


def iter_frames(
    path: str | os.PathLike,
    selection: FrameSelection | None = None,
    stats: dict | None = None,
) -> Iterator[Frame]:
    """Decodes the selected frames of a video in the calling thread (see `read_frames`).

    `stats`, when given, gets "decoded": the number of frames decoded so far (selected or not).

    Raises:
      VideoError: the file cannot be opened, or decoding fails part-way (the frames before the
        failure have been yielded; the message says where it stopped).
    """
    selection = selection or FrameSelection()
    av = _import_av()
    name = os.fspath(path)
    container, stream = _open(path)
    try:
        time_base = float(stream.time_base) if stream.time_base else None
        start_pts = stream.start_time
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else None
        index = -1
        kept = 0
        next_time = selection.start
        decoded = container.decode(stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                break
            except (av.FFmpegError, OSError, ValueError) as e:
                raise VideoError(
                    f"{name}: decoding stopped after frame {index} ({_reason(e)}); the file may "
                    "be damaged or cut short"
                ) from None
            index += 1
            if stats is not None:
                stats["decoded"] = index + 1
            if frame.pts is not None and time_base is not None:
                timestamp = (frame.pts - (start_pts or 0)) * time_base
            elif fps:
                timestamp = index / fps
            else:
                timestamp = float(index)
            if timestamp < selection.start - _EPS:
                continue
            if selection.end is not None and timestamp >= selection.end - _EPS:
                break
            if selection.fps is not None:
                if timestamp < next_time - _EPS:
                    continue
                step = math.floor((timestamp - selection.start) * selection.fps + _EPS) + 1
                next_time = selection.start + step / selection.fps
            else:
                kept += 1
                if (kept - 1) % selection.stride:
                    continue
            image = _upright(frame.to_ndarray(format="rgb24"), _rotation(frame))
            yield Frame(index=index, timestamp=float(timestamp), image=image)
        if index < 0:
            raise VideoError(f"{name}: the video stream holds no frame; the file may be cut short")
    finally:
        container.close()


class FrameReader:
    """Decodes a video on a background thread; iterate it for `Frame`s in order.

    At most `queue_size` decoded frames wait in memory. A decoding failure ends the iteration
    early and is kept in `error` (one line), so the caller finishes the frames it has and reports
    the file. `stats["decoded"]` counts the frames decoded (selected or not). Use as a context manager, or call `close()`, to stop the thread early.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        selection: FrameSelection | None = None,
        *,
        queue_size: int = 8,
    ):
        self.path = os.fspath(path)
        self.error: str | None = None
        self.frames_read = 0
        self.stats: dict = {"decoded": 0}
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(selection,), name="owl-video-decode", daemon=True
        )
        self._thread.start()

    def _run(self, selection: FrameSelection | None) -> None:
        try:
            for frame in iter_frames(self.path, selection, self.stats):
                while not self._stop.is_set():
                    try:
                        self._queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except VideoError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's error line
            self.error = f"{self.path}: cannot decode the video ({_reason(e)})"
        finally:
            self._put_end()

    def _put_end(self) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self._queue.get()
            if frame is None:
                return
            self.frames_read += 1
            yield frame

    def close(self) -> None:
        """Stops the decoding thread and waits for it."""
        self._stop.set()
        while True:  # unblock a put waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_frames(
    path: str | os.PathLike, selection: FrameSelection | None = None, *, queue_size: int = 8
) -> FrameReader:
    """A `FrameReader` over the selected frames of `path`, decoding on a background thread."""
    return FrameReader(path, selection, queue_size=queue_size)


__all__ = [
    "VIDEO_SUFFIXES",
    "Frame",
    "FrameReader",
    "FrameSelection",
    "VideoError",
    "VideoInfo",
    "is_video_name",
    "iter_frames",
    "probe",
    "read_frames",
]
