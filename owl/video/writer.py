"""Writing RGB frames to a video file (H.264 in mp4/mov/mkv, VP9 in webm, MPEG-4 in avi).

Used for drawn videos (`owl detect --save-dir`) and ShapesWorld videos (`owl shapes video`).
Frames are encoded as they come (nothing is kept), into a temporary file beside the target that
replaces it when the writer closes, so a reader never sees half a video. Odd frame sizes keep
their size: H.264 then uses 4:4:4 chroma (yuv420p needs even sides).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from owl.files import atomic_path
from owl.video.reader import _import_av

_CODECS = {".webm": "libvpx-vp9", ".avi": "mpeg4"}


class VideoWriter:
    """Encodes uint8 RGB [H, W, 3] frames of one size at a constant frame rate.

    Args:
      path: the output file; its suffix picks the container and codec.
      fps: frames per second (a float is kept as an exact fraction, e.g. 29.97 -> 2997/100).
      width, height: frame size in pixels.
      crf: H.264 / VP9 quality (lower is better; 18 is visually lossless).
      rotation: display rotation to record (degrees counterclockwise), for tests of readers.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        crf: int = 18,
        rotation: int = 0,
    ):
        av = _import_av()
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.frames_written = 0
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        suffix = self.path.suffix.lower()
        fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
        self._container = av.open(str(self._tmp), mode="w", format=fmt.get(suffix, "mp4"))
        codec = _CODECS.get(suffix, "libx264")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        even = self.width % 2 == 0 and self.height % 2 == 0
        self._stream.pix_fmt = "yuv420p" if even or codec != "libx264" else "yuv444p"
        if codec != "mpeg4":
            self._stream.options = {"crf": str(crf)}
            if codec == "libx264":
                self._stream.options["preset"] = "veryfast"
        else:
            self._stream.bit_rate = 4_000_000
        if rotation:
            self._stream.set_display_rotation(rotation)
        self._av = av

    def write(self, image: np.ndarray) -> None:
        """Encodes one frame (uint8 RGB [height, width, 3])."""
        image = np.asarray(image)
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"frame {self.frames_written} is {image.shape} {image.dtype}; this video takes "
                f"uint8 ({self.height}, {self.width}, 3)"
            )
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flushes the encoder and puts the file in place."""
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drops the partial file (the target is left as it was)."""
        if self._container is None:
            return
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - the partial file is removed anyway
            pass
        self._container = None
        try:
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


__all__ = ["VideoWriter"]
