"""owl serve's short videos: detect (and track) in an uploaded video, keep the drawn result.

`POST /v1/detect-video` hands the upload here. The frames are decoded, detected and tracked as
`owl detect clip.mp4 --track --save-dir` does (`owl.video`), the drawn video is written into a
private folder under a random id (`DrawnVideos`, a bounded LRU like the image store), and the
answer holds one record per detected frame, as `owl detect -o tracks.jsonl` writes it. The page
plays the drawn video with its time slider and offers the records as a JSON download.

Limits: the upload is under the server's body cap (`--max-upload-mb`), at most `max_frames`
frames are detected (the answer says `truncated` when more were selected), and the model lock is
held for the whole video, so a video keeps other requests waiting: the cap and `fps` keep it
short. Nothing the client names is ever opened: the upload is stored under a random name.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import secrets
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from owl.inference.detector import Detector, QuerySet

DEFAULT_MAX_FRAMES = 300
DEFAULT_FPS = 5.0


class DrawnVideos:
    """Drawn result videos by random id, the least recently used dropped past `capacity`."""

    def __init__(self, capacity: int = 4):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.folder = Path(tempfile.mkdtemp(prefix="owl-serve-videos-"))
        self._paths: collections.OrderedDict[str, Path] = collections.OrderedDict()
        self._lock = threading.Lock()

    def new_path(self) -> tuple[str, Path]:
        """A fresh id and the path to write its video to (registered by `add`)."""
        video_id = secrets.token_hex(8)
        return video_id, self.folder / f"{video_id}.mp4"

    def add(self, video_id: str, path: Path) -> None:
        with self._lock:
            self._paths[video_id] = path
            while len(self._paths) > self.capacity:
                _, old = self._paths.popitem(last=False)
                old.unlink(missing_ok=True)

    def get(self, video_id: str) -> Path | None:
        with self._lock:
            path = self._paths.get(video_id)
            if path is not None:
                self._paths.move_to_end(video_id)
            return path

    def __len__(self) -> int:
        return len(self._paths)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class VideoRequest:
    """What to do with one uploaded video (the form fields of /v1/detect-video).

    Attributes:
      fps: detect in at most this many frames a second (None: every `stride`-th frame).
      stride: every N-th frame, when `fps` is None.
      track: give each detection a track id (owl's default tracker, `owl.video.tracking`).
      max_frames: detect at most this many frames; the answer says `truncated` past it.
    """

    fps: float | None = DEFAULT_FPS
    stride: int = 1
    track: bool = True
    max_frames: int = DEFAULT_MAX_FRAMES


def detect_uploaded_video(
    detector: Detector,
    lock: threading.Lock,
    source: Path,
    name: str,
    queries: QuerySet,
    request: VideoRequest,
    drawn: Path,
    detect_options: dict[str, Any],
) -> dict[str, Any]:
    """Detects in the video file `source` (sent as `name`); writes the drawn video to `drawn`.

    Returns:
      {"video", "width", "height", "fps", "frames_read", "frames_detected", "truncated",
       "tracks", "frames": [one `owl.video.outputs.frame_record` per detected frame]}.
    Raises:
      owl.video.reader.VideoError: not a readable video (one line, naming `name`).
    """
    from owl.video.detect import detect_video
    from owl.video.outputs import draw_tracked, frame_record
    from owl.video.reader import FrameSelection, VideoError, probe, read_frames
    from owl.video.tracking import Tracker
    from owl.video.writer import VideoWriter

    try:
        info = probe(source)
    except VideoError as e:
        raise VideoError(str(e).replace(os.fspath(source), name)) from None
    selection = FrameSelection(stride=request.stride if request.fps is None else 1, fps=request.fps)
    rate = request.fps if request.fps is not None else info.fps / request.stride
    rate = min(rate, info.fps) if info.fps else rate
    tracker = Tracker(frame_rate=rate) if request.track else None
    frames: list[dict[str, Any]] = []
    truncated = False
    reader = read_frames(source, selection, queue_size=2 * detector.batch_size)
    writer = VideoWriter(drawn, rate, info.width, info.height)
    try:
        with lock:
            results = detect_video(
                detector, reader, queries, tracker=tracker, keep_images=True, **detect_options
            )
            for result in results:
                if len(frames) == request.max_frames:
                    truncated = True
                    break
                record = frame_record(result.detections)
                record["video"] = name
                frames.append(record)
                writer.write(draw_tracked(result.image, result.detections))
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    writer.close()
    if reader.error is not None and not frames:
        raise VideoError(str(reader.error).replace(os.fspath(source), name))
    return {
        "video": name,
        "width": info.width,
        "height": info.height,
        "fps": rate,
        "frames_read": reader.stats["decoded"],
        "frames_detected": len(frames),
        "truncated": truncated,
        "tracks": tracker.num_tracks if tracker is not None else 0,
        "frames": frames,
    }


__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_MAX_FRAMES",
    "DrawnVideos",
    "VideoRequest",
    "detect_uploaded_video",
]
