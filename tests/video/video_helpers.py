"""Shared helpers of the video tests: small generated videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def numbered_frame(k: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame k: grey, with a white block whose column says k (k < width // 4)."""
    image = np.full((height, width, 3), 100, np.uint8)
    image[:8, 4 * k : 4 * k + 4] = 255
    return image


def write_numbered(path: Path, n: int, fps: float = 10.0, **kwargs) -> Path:
    from owl.video.writer import VideoWriter

    with VideoWriter(path, fps, 64 * 2, 48, **kwargs) as w:
        for k in range(n):
            w.write(np.concatenate([numbered_frame(k), numbered_frame(0) * 0 + 100], axis=1))
    return path


def frame_number(image: np.ndarray) -> int:
    """Which frame `numbered_frame` drew (the white block's column)."""
    cols = np.flatnonzero(image[:8, :64, 0].mean(axis=0) > 200)
    return int(cols.min()) // 4


def write_audio_only(path: Path) -> Path:
    """An m4a-in-mp4 with one AAC stream and no video."""
    import av

    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_variable_rate(path: Path, times: list[float]) -> Path:
    """An mkv whose frame k (numbered as `numbered_frame`) is shown at times[k] seconds."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for k, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(numbered_frame(k), format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
