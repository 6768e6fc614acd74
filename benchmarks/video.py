"""Video benchmark: tracking quality, throughput against images, peak memory against length.

  python benchmarks/video.py track  [--seeds 0 1 2 3 4] [--frames 600]
        [--high 0.3 0.4 --min-iou 0.1 0.02 --min-frames 1 2 --relink 0 10]   (a sweep: medians)
      ShapesWorld videos (4 objects: bounces, crossings, one entering, one leaving), shapes-tiny,
      text queries = the objects' names, NMS on; each tracker of `trackers` (ByteTrack, OC-SORT,
      BoT-SORT) over the same detections, scored by py-motmetrics against the true tracks.
      Targets: IDF1 >= 0.90, MOTA >= 0.85, <= 3 ID switches.
  python benchmarks/video.py fps --model shapes-tiny|owlvit-b32 [--frames 120 --size 128]
      `owl detect` on a video against `owl detect` on the same frames as PNG files, each in its
      own process, alternating, `--repeats` times; prints the medians and the ratio. owlvit-b32
      uses random weights (no download): only speed is measured.
  python benchmarks/video.py rss [--minutes 10 --rate 2 --height 720]
      Peak RSS of `owl detect --stride 1` (shapes-tiny) on a long 1280x720 video against a
      10-second one, each in a fresh process. A low frame rate keeps the long file small enough
      for a shared machine; the length in frames is what could grow memory.

Every timing line also prints the CPU model and `uptime` (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from machine import load_report, machine  # benchmarks/machine.py: CPU model and flags

HERE = Path(__file__).resolve().parent


def track(args) -> None:
    import itertools

    from owl.data.shapes_video import sample_video, write_video
    from owl.inference.detector import Detector
    from owl.video.detect import detect_video
    from owl.video.mot_metrics import mot_scores
    from owl.video.outputs import MotWriter
    from owl.video.reader import read_frames
    from owl.video.tracking import TRACKERS, Tracker, TrackerOptions

    detector = Detector("shapes-tiny", batch_size=8)
    combos = list(
        itertools.product(TRACKERS, args.high, args.min_iou, args.min_frames, args.relink)
    )
    table: dict[tuple, list[dict]] = {c: [] for c in combos}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            spec = sample_video(seed, num_frames=args.frames)
            video, gt = write_video(spec, Path(tmp) / str(seed))
            names = [o.name for o in spec.objects]
            queries = detector.prepare_queries(names)
            frames = [
                f.detections
                for f in detect_video(
                    detector, read_frames(video), queries, threshold=args.threshold, nms=True
                )
            ]
            for combo in combos:
                method, high, min_iou, min_frames, relink = combo
                options = TrackerOptions(
                    method, high, min_iou=min_iou, min_frames=min_frames, relink_seconds=relink
                )
                tracker = Tracker(options, frame_rate=spec.fps)
                writer = MotWriter(Path(tmp) / f"{seed}.mot.txt")
                for d in frames:
                    writer.add(tracker.update(d))
                writer.close()
                s = mot_scores(gt, writer.path)
                s["tracks"] = tracker.num_tracks
                table[combo].append(s)
                if len(combos) <= len(TRACKERS):
                    print(
                        f"seed {seed} {method:9s} {', '.join(names):60s} IDF1 {s['idf1']:.3f}  "
                        f"MOTA {s['mota']:.3f}  IDsw {int(s['num_switches']):3d}  "
                        f"FP {int(s['num_false_positives']):4d}  FN {int(s['num_misses']):4d}  "
                        f"tracks {s['tracks']}",
                        flush=True,
                    )
    print(
        f"median over seeds {args.seeds} (method, high threshold, min IoU, min frames, "
        "re-link seconds):"
    )
    for combo, rows in table.items():
        med = {k: statistics.median(r[k] for r in rows) for k in ("idf1", "mota", "num_switches")}
        print(
            f"  {combo[0]:9s} {combo[1]:.2f} {combo[2]:.2f} {combo[3]} {combo[4]:4.1f}  "
            f"IDF1 {med['idf1']:.3f}  "
            f"MOTA {med['mota']:.3f}  IDsw {med['num_switches']:.0f}  "
            f"(worst seed IDF1 {min(r['idf1'] for r in rows):.3f})"
        )


def _owl(args_list: list[str]) -> tuple[float, float, str]:
    """Runs `owl ...` in a fresh process; (seconds, peak RSS MiB of the child, stderr tail)."""
    code = (
        "import resource, sys, time; from owl.cli.main import cli; t = time.perf_counter()\n"
        "try:\n    cli.main(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n    print('BENCH', time.perf_counter() - t, "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args_list], capture_output=True, text=True, check=False
    )
    line = [x for x in done.stderr.splitlines() if x.startswith("BENCH")]
    if done.returncode != 0 or not line:
        raise SystemExit(f"owl {' '.join(args_list)} failed:\n{done.stderr[-2000:]}")
    _, seconds, rss = line[-1].split()
    return float(seconds), float(rss), done.stderr[-300:]


def _random_b32(folder: Path) -> str:
    """A random-weight owlvit-b32 saved as an owl file (no download)."""
    import jax

    from owl.checkpoints.owl_format import save_owl
    from owl.models.configs import get_variant
    from owl.models.owl_vit import param_shapes

    cfg = get_variant("owlvit-b32")
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: (0.02 * rng.standard_normal(s)).astype(np.float32),
        param_shapes(cfg),
        is_leaf=lambda x: isinstance(x, tuple),
    )
    path = folder / "b32-random.safetensors"
    save_owl(path, cfg, params)
    return str(path)


def fps(args) -> None:
    from PIL import Image

    from owl.data.shapes_video import render_frames, sample_video
    from owl.video.writer import VideoWriter

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = sample_video(0, num_frames=args.frames, width=args.size, height=args.size)
        frames_dir = tmp / "frames"
        frames_dir.mkdir()
        video = tmp / "clip.mp4"
        with VideoWriter(video, spec.fps, spec.width, spec.height) as writer:
            for frame in render_frames(spec):
                writer.write(frame)
        from owl.video.reader import iter_frames

        for f in iter_frames(video):  # the decoded frames, so both runs see the same pixels
            Image.fromarray(f.image).save(frames_dir / f"{f.index:05d}.png", compress_level=1)
        model = _random_b32(tmp) if args.model == "owlvit-b32" else args.model
        common = ["-q", "red star", "-q", "green circle", "--model", model, "--quiet"]
        common += ["--batch-size", str(args.batch_size)]
        runs = {
            "images": ["detect", str(frames_dir), *common, "-o", str(tmp / "i.json")],
            "video": ["detect", str(video), *common, "-o", str(tmp / "v.jsonl")],
        }
        _owl(runs["video"])  # warm the OS file cache and the compilation cache
        times: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(args.repeats):
            for name, argv in runs.items():
                times[name].append(_owl(argv)[0])
        print(f"machine: {machine()}; {load_report()}")
        print(
            f"{args.model}: {args.frames} frames {args.size}x{args.size}, batch {args.batch_size}"
        )
        med = {k: statistics.median(v) for k, v in times.items()}
        for name, values in times.items():
            print(
                f"  {name:6s} median {med[name]:.2f} s = {args.frames / med[name]:.1f} frames/s "
                f"(runs {', '.join(f'{v:.2f}' for v in values)}; includes model load)"
            )
        print(f"  video/images fps ratio {med['images'] / med['video']:.3f}")


def rss(args) -> None:
    from owl.video.writer import VideoWriter

    width, height = round(args.height * 16 / 9) // 2 * 2, args.height
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for label, seconds in (("10 s", 10), (f"{args.minutes} min", args.minutes * 60)):
            path = tmp / f"{seconds}.mp4"
            n = int(seconds * args.rate)
            frame = np.full((height, width, 3), 120, np.uint8)
            with VideoWriter(path, args.rate, width, height, crf=35) as writer:
                for k in range(n):
                    frame[100:200, (k * 7) % (width - 100) :][:, :100] = (220, 30, 30)
                    writer.write(frame)
                    frame[100:200] = 120
            t, peak, _ = _owl(
                [
                    "detect",
                    str(path),
                    "-q",
                    "red square",
                    "--model",
                    "shapes-tiny",
                    "--quiet",
                    "-o",
                    str(tmp / "o.jsonl"),
                ]  # fmt: skip
            )
            results[label] = peak
            print(
                f"  {label:7s} {n:6d} frames {width}x{height}: peak RSS {peak:.0f} MiB, {t:.1f} s"
            )
        a, b = results.values()
        print(f"machine: {machine()}; {load_report()}")
        print(f"  peak RSS difference long - short: {b - a:+.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("track")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--high", type=float, nargs="+", default=[0.3])
    p.add_argument("--min-iou", type=float, nargs="+", default=[0.02])
    p.add_argument("--min-frames", type=int, nargs="+", default=[2])
    p.add_argument("--relink", type=float, nargs="+", default=[10.0], help="re-link seconds")
    p = sub.add_parser("fps")
    p.add_argument("--model", default="shapes-tiny")
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("rss")
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=float, default=2)
    p.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    {"track": track, "fps": fps, "rss": rss}[args.what](args)


if __name__ == "__main__":
    os.environ.setdefault("OWL_COMPILATION_CACHE", "0")
    main()
