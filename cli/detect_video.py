"""The video part of `owl detect`: frame selection and tracking options, per-frame outputs.

`owl detect` hands every video argument (suffix in `owl.video.reader.VIDEO_SUFFIXES`) here after
its queries are prepared; images go the usual way. Decoding, tracking and writers live in
`owl.video`; this module handles options, printing and failures. Documentation: docs/video.md.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from owl.cli.options import check_extra, progress_bar, write_line

F = TypeVar("F", bound=Callable[..., Any])
VIDEO_EXTRA_MODULES = ("av",)
TRACK_EXTRA_MODULES = ("av", "trackers")


def video_options(f: F) -> F:
    """--stride/--fps/--start/--end, --track/--tracker and --save-frames (videos only)."""
    options = [
        click.option(
            "--stride",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Videos: detect in every N-th frame (from the first one at or after --start).",
        ),
        click.option(
            "--fps",
            "sample_fps",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="F",
            help="Videos: detect in at most F frames per second (the first frame at or after "
            "each start + k/F s); instead of --stride.",
        ),
        click.option(
            "--start",
            type=click.FloatRange(min=0),
            default=0.0,
            metavar="SECONDS",
            help="Videos: first time to detect at [default: 0].",
        ),
        click.option(
            "--end",
            type=click.FloatRange(min=0),
            default=None,
            metavar="SECONDS",
            help="Videos: stop before this time [default: the end].",
        ),
        click.option(
            "--track",
            is_flag=True,
            help="Videos: give each detection a track_id that follows its object across "
            "frames (one track per object and query; needs the video extra).",
        ),
        click.option(
            "--tracker",
            type=click.Choice(["bytetrack", "ocsort", "botsort"]),
            default="botsort",
            show_default=True,
            help="Videos: the tracking algorithm (from the `trackers` package).",
        ),
        click.option(
            "--query-video",
            "query_videos",
            multiple=True,
            metavar="VIDEO",
            type=click.Path(exists=True, dir_okay=False),
            help="Exemplars from a video: the frame at --query-frame is used as a --query-image "
            "(with --query-box on it; label: the video's file stem). Repeatable, paired with "
            "--query-frame in order.",
        ),
        click.option(
            "--query-frame",
            "query_frames",
            multiple=True,
            type=click.FloatRange(min=0),
            metavar="SECONDS",
            help="The time of --query-video's exemplar frame.",
        ),
        click.option(
            "--save-frames",
            is_flag=True,
            help="Videos, with --save-dir: also write each detected frame drawn, to "
            "DIR/<video stem>/<frame>.png.",
        ),
    ]
    return functools.reduce(lambda g, option: option(g), reversed(options), f)


@dataclasses.dataclass(frozen=True)
class VideoRun:
    """The video options of one `owl detect` call."""

    stride: int | None
    fps: float | None
    start: float
    end: float | None
    track: bool
    tracker: str
    save_frames: bool


def query_video_frames(videos: Sequence[str], times: Sequence[float]) -> list[str]:
    """Writes each --query-video frame as a PNG in a folder removed when the command ends.

    Returns the PNG paths, named after the videos' stems (the exemplars' default labels).
    Problems are usage errors (exit 2), like an unreadable --query-image.
    """
    import tempfile

    if len(videos) != len(times):
        raise click.UsageError(
            f"got {len(videos)} --query-video and {len(times)} --query-frame; give one time "
            "per video"
        )
    if not videos:
        return []
    check_extra("detect", "video", VIDEO_EXTRA_MODULES, "video")
    from PIL import Image

    from owl.video.reader import FrameSelection, VideoError, iter_frames

    folder = tempfile.TemporaryDirectory(prefix="owl-query-video-")
    click.get_current_context().call_on_close(folder.cleanup)
    out = []
    for n, (video, t) in enumerate(zip(videos, times, strict=True)):
        try:
            frame = next(iter(iter_frames(video, FrameSelection(start=t))), None)
        except VideoError as e:
            raise click.UsageError(f"--query-video {e}") from None
        if frame is None:
            raise click.UsageError(f"--query-video {video}: no frame at or after {t:g} s")
        path = Path(folder.name) / str(n) / f"{Path(video).stem}.png"
        path.parent.mkdir()
        Image.fromarray(frame.image).save(path)
        out.append(str(path))
    return out


def split_videos(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """(videos, everything else) from the expanded IMAGES, each keeping its order."""
    from owl.video.reader import is_video_name

    videos = [p for p in paths if is_video_name(p)]
    return videos, [p for p in paths if not is_video_name(p)]


def check_video_run(run: VideoRun, videos: Sequence[str], images: Sequence[str], fmt: str | None,
                    save_dir: Path | None) -> None:  # fmt: skip
    """Usage errors before any work: options that need videos, formats that do not fit."""
    from owl.video.reader import FrameSelection

    if not videos:
        used = [n for n, v in (("--stride", run.stride), ("--fps", run.fps), ("--end", run.end))
                if v is not None] + (["--track"] if run.track else []) + (
                ["--start"] if run.start else [])  # fmt: skip
        if used or fmt in ("jsonl", "mot"):
            what = ", ".join(used) if used else f"-o *.{'jsonl' if fmt == 'jsonl' else 'mot.txt'}"
            raise click.UsageError(f"{what} applies to video files; no video given")
        return
    check_extra("detect", "video", TRACK_EXTRA_MODULES if run.track else VIDEO_EXTRA_MODULES,
                "video")  # fmt: skip
    try:
        FrameSelection(stride=run.stride or 1, fps=run.fps, start=run.start, end=run.end)
    except ValueError as e:
        raise click.UsageError(
            str(e).replace("stride", "--stride").replace("fps", "--fps")
        ) from None
    if fmt in ("json", "coco"):
        raise click.UsageError(
            "video detections are written per frame: name the output *.jsonl, *.mot.txt or *.csv"
        )
    if fmt is not None and images:
        raise click.UsageError(
            f"-o *.{fmt} with videos takes videos only; write the {len(images)} image(s) in "
            "another run"
        )
    if fmt == "mot" and (len(videos) != 1 or not run.track):
        raise click.UsageError(
            "-o *.mot.txt holds the tracks of one video: give one video and --track"
        )
    if run.save_frames and save_dir is None:
        raise click.UsageError("--save-frames writes into --save-dir; give --save-dir DIR")


def run_videos(
    detector: Any,
    query_set: Any,
    videos: Sequence[str],
    run: VideoRun,
    *,
    output: Path | None,
    save_dir: Path | None,
    quiet: bool,
    detect_options: dict[str, Any],
    counts: list[int],
) -> list[str]:
    """Detects (and tracks) in each video; returns the failure lines (the others went on)."""
    from owl.inference.inputs import drawn_image_names
    from owl.video.outputs import open_video_output
    from owl.video.reader import FrameSelection, VideoError, probe

    selection = FrameSelection(stride=run.stride or 1, fps=run.fps, start=run.start, end=run.end)
    failures: list[str] = []
    writer = open_video_output(output) if output is not None else None
    names = drawn_image_names(videos, suffix="") if save_dir is not None else []
    try:
        for n, video in enumerate(videos):
            try:
                info = probe(video)
            except VideoError as e:
                failures.append(str(e))
                continue
            if info.variable_frame_rate:
                write_line(
                    f"note: {video} has a variable frame rate; timestamps are the stream's own, "
                    f"a drawn video plays at its average {info.fps:g} fps",
                    err=True,
                )
            error = _one_video(
                detector, query_set, info, selection, run, writer=writer,
                save_stem=None if save_dir is None else save_dir / names[n],
                quiet=quiet, detect_options=detect_options, counts=counts,
            )  # fmt: skip
            if error is not None:
                failures.append(error)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
        if not quiet and str(output) != "-":
            write_line(f"wrote {output} ({writer.frames} frames)", err=True)
    return failures


def _one_video(detector, query_set, info, selection, run, *, writer, save_stem, quiet,
               detect_options, counts) -> str | None:  # fmt: skip
    """One video through the detector; the summary line is printed here. Returns an error line."""
    from owl.video.detect import detect_video
    from owl.video.outputs import draw_tracked
    from owl.video.reader import read_frames
    from owl.video.tracking import Tracker, TrackerOptions

    rate = selection.fps or info.fps / (selection.stride or 1)
    tracker = None
    if run.track:
        tracker = Tracker(TrackerOptions(method=run.tracker), frame_rate=rate)
    expected = None
    if info.frames:
        span = info.frames
        if info.fps and (selection.start or selection.end):
            end = selection.end if selection.end is not None else info.frames / info.fps
            span = max(0, round((min(end, info.frames / info.fps) - selection.start) * info.fps))
        expected = -(-span // selection.stride) if selection.fps is None else None
    bar = progress_bar(expected or 0, quiet=quiet, unit="frame")
    drawn = None
    if save_stem is not None:
        from owl.video.writer import VideoWriter

        drawn = VideoWriter(save_stem.with_suffix(".mp4"), rate, info.width, info.height)
        if run.save_frames:
            save_stem.mkdir(parents=True, exist_ok=True)
    detected = 0
    reader = read_frames(info.path, selection, queue_size=2 * detector.batch_size)
    try:
        for result in detect_video(
            detector, reader, query_set, tracker=tracker, keep_images=drawn is not None,
            **detect_options,
        ):  # fmt: skip
            bar.update(1)
            detected += 1
            for q in result.detections.class_id:
                counts[int(q)] += 1
            if writer is not None:
                writer.add(result.detections)
            else:
                write_line(_format_frame(info.path, result))
            if drawn is not None:
                image = draw_tracked(result.image, result.detections)
                drawn.write(image)
                if run.save_frames:
                    from PIL import Image

                    Image.fromarray(image).save(save_stem / f"{result.index:06d}.png")
    except BaseException:
        reader.close()
        if drawn is not None:
            drawn.abort()
        raise
    finally:
        bar.close()
    reader.close()
    if drawn is not None:
        drawn.close()
    if not quiet:
        tracks = f", {tracker.num_tracks} tracks" if tracker is not None else ""
        write_line(
            f"{info.path}: {reader.stats['decoded']} frames read, {detected} detected{tracks}"
            + (f"; wrote {drawn.path}" if drawn is not None else ""),
            err=True,
        )
    if reader.error is not None:
        return f"{reader.error} ({detected} frames detected before it)"
    return None


def _format_frame(video: str, result) -> str:
    """A frame's detections as printed without -o: like an image's, headed by frame and time."""
    from owl.cli.options import format_image

    text = format_image(
        f"{video} frame {result.index} ({result.timestamp:.3f} s)", result.detections
    )
    ids = result.detections.data.get("track_id")
    if ids is None:
        return text
    lines = text.split("\n")
    for i, track in enumerate(ids, start=1):
        if track >= 0:
            lines[i] += f"  track {int(track)}"
    return "\n".join(lines)
