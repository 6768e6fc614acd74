"""`owl index`: encode a photo collection once into a searchable index (`owl.Index`).

Argument handling and printing only: the index, its incremental update, sharding and pruning
live in `owl.search.index`. Bad images are reported as `owl detect` reports them (exit 1 at the
end); a model or settings that do not match the index are a usage error (exit 2).
Documentation for users: docs/search.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from owl.cli.options import (
    DEFAULT_MODEL,
    EXIT_CODES_HELP,
    MODEL_HELP,
    SEARCH_EXTRA_MODULES,
    UsageFailure,
    backend_option,
    check_extra,
    check_model_spec,
    expand_image_args,
    max_pixels_option,
    max_pixels_value,
    model_id,
    progress_bar,
    report_failures,
    verbose_option,
    write_line,
)

EPILOG = """\b
Examples:
  owl index photos/ --recursive --index photos.owlindex
  owl index photos/ -r --index photos.owlindex --prune      # again: only changes are encoded
  owl index "shots/*.png" --index shots.owlindex --model owlv2-b16-ensemble
  owl index photos/ -r --index photos.owlindex --num-shards 2 --shard-index 0 &
  owl index photos/ -r --index photos.owlindex --num-shards 2 --shard-index 1

"""


@click.command("index", epilog=EPILOG + EXIT_CODES_HELP)
@click.argument("images", nargs=-1, metavar="IMAGES...")
@click.option(
    "--index", "index_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH", help="The index file (SQLite); created if missing, updated if present.",
)  # fmt: skip
@click.option(
    "-m", "--model", default=None, metavar="NAME|PATH",
    help=f"{MODEL_HELP} Default: the index's own model, or {DEFAULT_MODEL} for a new index. "
    "Another model than the index's is refused.",
)  # fmt: skip
@click.option(
    "-k", "--boxes-per-image", type=click.IntRange(min=1), default=None,
    help="Boxes kept per image, best-ranked first (new index only) [default: 16].",
)  # fmt: skip
@click.option(
    "--rank", type=click.Choice(["auto", "objectness", "bound", "vocabulary"]), default="auto",
    show_default=True,
    help="How boxes are ranked for keeping (new index only): objectness (OWLv2), bound (the "
    "best logit any query could give, OWL-ViT), vocabulary (best logit over --rank-vocabulary); "
    "auto = objectness when the model has the head, else bound.",
)  # fmt: skip
@click.option(
    "--rank-vocabulary", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
    help="UTF-8 file, one prompt per line, for --rank vocabulary.",
)  # fmt: skip
@click.option(
    "--prune", is_flag=True,
    help="Also drop indexed images whose files no longer exist (this shard's only).",
)  # fmt: skip
@click.option(
    "-r", "--recursive", is_flag=True, help="Also take images from subfolders of the folders given."
)  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
    help="Images encoded per forward pass.",
)  # fmt: skip
@click.option(
    "--num-shards", type=click.IntRange(min=1), default=None,
    help="Split the images over this many processes, each writing to the same index "
    "[default: $OWL_NUM_PROCESSES, else 1].",
)  # fmt: skip
@click.option(
    "--shard-index", type=click.IntRange(min=0), default=None,
    help="This process's shard, 0 to --num-shards - 1 [default: $OWL_PROCESS_ID, else 0].",
)  # fmt: skip
@click.option("--quiet", is_flag=True, help="No progress bar or summary (failures still show).")
@click.option(
    "--every", default="1s", show_default=True, metavar="TIME",
    help="Videos (mp4, mov, mkv, webm, avi): index one frame every TIME (\"1s\", \"0.5s\"); "
    "results name the video and the time, as clip.mp4#t=4.000.",
)  # fmt: skip
@max_pixels_option
@backend_option
@verbose_option
def index(
    images: tuple[str, ...],
    index_path: Path,
    model: str | None,
    boxes_per_image: int | None,
    rank: str,
    rank_vocabulary: str | None,
    prune: bool,
    recursive: bool,
    batch_size: int,
    num_shards: int | None,
    shard_index: int | None,
    quiet: bool,
    every: str,
    max_image_pixels: int,
    backend: str,
    verbose: bool,
) -> None:
    """Encode images once into an index that `owl search` searches by text or by example.

    IMAGES are files, folders (add --recursive for subfolders) and glob patterns. Each image's
    best boxes are stored with what scoring needs (class embedding, the class head's shift and
    scale, box, objectness), so a search costs a dot product per box. Running it again is
    incremental: unchanged files are skipped, new and changed ones encoded; --prune drops the
    entries of deleted files. A killed run loses at most the batch in flight; run it again.
    """
    check_extra("index", "search", SEARCH_EXTRA_MODULES, "search")
    num_shards = num_shards or int(os.environ.get("OWL_NUM_PROCESSES", "1") or 1)
    shard_index = (
        int(os.environ.get("OWL_PROCESS_ID", "0") or 0) if shard_index is None else shard_index
    )
    if shard_index >= num_shards:
        raise click.UsageError(
            f"--shard-index {shard_index} must be below --num-shards {num_shards}"
        )
    if index_path.parent.exists() and not index_path.parent.is_dir():
        raise click.UsageError(f"--index {index_path}: {index_path.parent} is not a folder")
    if index_path.is_dir():
        raise click.UsageError(f"--index {index_path} is a folder; give a file name")
    paths = expand_image_args(images, recursive) if images else []
    if not paths and not prune:
        raise click.UsageError("no images given; pass image files, folders or glob patterns")
    if any(p.startswith(("http://", "https://")) for p in paths):
        raise click.UsageError("owl index takes local files only; download the images first")
    from owl.cli.detect_video import split_videos

    videos, paths = split_videos(paths)
    if videos:
        from owl.video.index import parse_every

        check_extra("index", "video", ("av",), "video")
        try:
            every_s = parse_every(every)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    vocabulary: list[str] = []
    if rank_vocabulary is not None:
        lines = Path(rank_vocabulary).read_text(encoding="utf-8").splitlines()
        vocabulary = [s.strip() for s in lines if s.strip() and not s.startswith("#")]
    if model is not None:
        check_model_spec(model)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    idx = open_index(
        index_path, model, create=True, boxes_per_image=boxes_per_image, rank=rank,
        vocabulary=vocabulary, batch_size=batch_size, max_pixels=max_pixels_value(max_image_pixels),
        backend=backend, progress=not quiet,
    )  # fmt: skip
    if verbose:
        write_line(idx.detector.backend.describe(), err=True)
    with idx:
        bar = progress_bar(len(paths), quiet=quiet)
        report = idx.add(
            paths, num_shards=num_shards, shard_index=shard_index, on_progress=bar.update
        )
        bar.close()
        video_frames = _index_videos(idx, videos, every_s, report, quiet) if videos else 0
        pruned = idx.prune(num_shards=num_shards, shard_index=shard_index) if prune else []
        total = len(idx)
    if not quiet:
        shard = f" (shard {shard_index} of {num_shards})" if num_shards > 1 else ""
        size = sum(
            p.stat().st_size for p in index_path.parent.glob(index_path.name + "*") if p.is_file()
        )
        write_line(
            f"indexed {len(paths) - report.skipped_other_shards} image(s){shard}: "
            f"{report.encoded} encoded, {report.copied} copied (same content), "
            f"{report.unchanged} unchanged, {len(report.failures)} failed, {len(pruned)} pruned; "
            + (f"{len(videos)} video(s): {video_frames} frames indexed; " if videos else "")
            + f"{index_path} holds {total} image(s), {size / 2**20:.1f} MiB",
            err=True,
        )
    report_failures(report.failures, len(paths) + len(videos) - report.skipped_other_shards)


def _index_videos(idx, videos, every: float, report, quiet: bool) -> int:
    """Indexes each video's frames (`owl.video.index`); failures join the report's."""
    from owl.video.index import index_video

    total = 0
    for video in videos:
        bar = progress_bar(0, quiet=quiet, unit="frame")
        count, error = index_video(idx, video, every, on_frame=bar.update)
        bar.close()
        if error is not None:
            report.failures.append(error)
        if count < 0:
            report.unchanged += 1
        else:
            total += count
    return total


def open_index(path: Path, model, *, create: bool, **options):
    """Opens (or creates) the index; a mismatched model or a non-index file is exit 2.

    `model`: a --model value, None (the index's own), or a loaded `Detector` to search with.

    Returns:
      An `owl.search.index.Index`.
    """
    from owl.checkpoints.download import DownloadError
    from owl.checkpoints.registry import UnknownModelError
    from owl.checkpoints.tree import CheckpointError
    from owl.search.index import Index, IndexMismatchError
    from owl.search.store import IndexStoreError, connect, read_settings

    if not create:
        if not path.is_file():
            raise UsageFailure(f"--index {path}: no such index; build it with `owl index`")
    try:
        if create:
            db = connect(path)
            recorded = read_settings(db)
            db.close()
            if model is None and not recorded:
                model = DEFAULT_MODEL
        if isinstance(model, str):
            model = model_id(model)
        # Searching (create=False) opens the file read-only: it is never created or changed.
        return Index(path, model, read_only=not create, **options)  # a Detector: used as it is
    except (IndexMismatchError, IndexStoreError, ValueError) as e:
        raise UsageFailure(str(e)) from None
    except UnknownModelError as e:
        raise click.UsageError(f"--model: {e}") from None
    except CheckpointError as e:
        raise click.UsageError(f"--model {model}: {e}") from None
    except DownloadError as e:
        raise click.ClickException(str(e)) from None
