"""ShapesWorld videos: ShapesWorld objects moving over a grey background, with true tracks.

A video is a list of `MovingObject`s rendered frame by frame (`render_frames`); `sample_video`
draws a random one from a seed. Motion, exactly:

* each object moves at a constant velocity (px / frame) and bounces off the image edges (the
  velocity component flips when the box would leave the image) while it is *inside*;
* an object with ``enter > 0`` starts just outside one edge at frame ``enter`` and flies in; it
  starts bouncing once it is wholly inside;
* an object with ``leave`` set stops bouncing at frame ``leave`` and flies out; it is gone once
  wholly outside;
* objects are painted in list order, so a later object covers an earlier one where they cross
  (occlusion); positions are rounded to whole pixels for drawing, boxes stay tight.

The background is one grey level plus fixed Gaussian noise (the same in every frame, so the
video compresses to a few hundred kB). Objects keep their exact colours (see `owl.data.shapes`).

Ground truth (`ground_truth`, `write_mot`): one row per frame and object at least partly in the
image, in MOT Challenge gt form ``frame, id, x, y, w, h, conf, class, visibility`` with frames
from 1, ids from 1, the box clipped to the image, class = COCO category id, visibility = drawn
pixels left visible (after clipping and occlusion) / pixels of the whole object, and conf = 1
when visibility >= `MIN_VISIBILITY`, else 0 (an evaluator then ignores the row, as MOT17 does
with heavily occluded people).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from owl.data.shapes import (
    BACKGROUND_LEVELS,
    BASE_CATEGORY_INDICES,
    CATEGORIES,
    COLOURS,
    NOISE_SIGMA,
    category_colour,
    category_shape,
    render_shape_mask,
)

#: A ground-truth row with less of its object visible than this is marked ignored (conf 0).
MIN_VISIBILITY = 0.25


@dataclasses.dataclass(frozen=True)
class MovingObject:
    """One object of a video.

    Attributes:
      category: 0-based ShapesWorld category index.
      size: (width, height) of the box in pixels.
      position: top-left corner (x, y) at frame `enter`, in pixels (may lie outside the image).
      velocity: (vx, vy) in pixels per frame.
      enter: first frame the object exists.
      leave: frame from which it stops bouncing and flies out (None: stays to the end).
    """

    category: int
    size: tuple[int, int]
    position: tuple[float, float]
    velocity: tuple[float, float]
    enter: int = 0
    leave: int | None = None

    @property
    def name(self) -> str:
        """Category name, "colour shape" (what to query it by)."""
        return CATEGORIES[self.category]


@dataclasses.dataclass(frozen=True)
class VideoSpec:
    """A whole video: frame size (width, height), frame rate, length, objects, background."""

    width: int
    height: int
    fps: float
    num_frames: int
    objects: tuple[MovingObject, ...]
    seed: int = 0


def trajectories(spec: VideoSpec) -> np.ndarray:
    """Top-left corners, float [num_objects, num_frames, 2]; NaN where an object does not exist.

    Integrates the motion rules of the module docstring frame by frame.
    """
    out = np.full((len(spec.objects), spec.num_frames, 2), np.nan)
    for k, obj in enumerate(spec.objects):
        w, h = obj.size
        x, y = obj.position
        vx, vy = obj.velocity
        inside = 0 <= x <= spec.width - w and 0 <= y <= spec.height - h
        for t in range(obj.enter, spec.num_frames):
            leaving = obj.leave is not None and t >= obj.leave
            if leaving and (x + w <= 0 or x >= spec.width or y + h <= 0 or y >= spec.height):
                break
            out[k, t] = (x, y)
            nx, ny = x + vx, y + vy
            if inside and not leaving:
                if nx < 0 or nx > spec.width - w:
                    vx = -vx
                    nx = x + vx
                if ny < 0 or ny > spec.height - h:
                    vy = -vy
                    ny = y + vy
            x, y = nx, ny
            inside = inside or (0 <= x <= spec.width - w and 0 <= y <= spec.height - h)
    return out


def _background(spec: VideoSpec) -> np.ndarray:
    rng = np.random.default_rng([int(spec.seed), 7])
    level = rng.integers(BACKGROUND_LEVELS[0], BACKGROUND_LEVELS[1] + 1)
    noise = rng.normal(0.0, NOISE_SIGMA, size=(spec.height, spec.width, 3))
    return np.clip(np.rint(level + noise), 0, 255).astype(np.uint8)


def _paint(
    canvas: np.ndarray, owner: np.ndarray | None, k: int, obj: MovingObject, x: float, y: float
):
    """Paints one object with its top-left corner at (x, y), clipped to the canvas."""
    w, h = obj.size
    x0, y0 = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
    mask = render_shape_mask(category_shape(obj.category), w, h)
    H, W = canvas.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    sub = mask[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    canvas[cy0:cy1, cx0:cx1][sub] = COLOURS[category_colour(obj.category)]
    if owner is not None:
        owner[cy0:cy1, cx0:cx1][sub] = k


def render_frames(spec: VideoSpec) -> Iterator[np.ndarray]:
    """Yields the frames, uint8 RGB [height, width, 3], one at a time."""
    background = _background(spec)
    paths = trajectories(spec)
    for t in range(spec.num_frames):
        frame = background.copy()
        for k, obj in enumerate(spec.objects):
            if not np.isnan(paths[k, t, 0]):
                _paint(frame, None, k, obj, *paths[k, t])
        yield frame


def ground_truth(
    spec: VideoSpec,
) -> list[tuple[int, int, float, float, float, float, int, int, float]]:
    """MOT gt rows ``(frame, id, x, y, w, h, conf, class, visibility)``, frames and ids from 1."""
    paths = trajectories(spec)
    rows = []
    for t in range(spec.num_frames):
        owner = np.full((spec.height, spec.width), -1, np.int64)
        scratch = np.zeros((spec.height, spec.width, 3), np.uint8)
        present = [k for k in range(len(spec.objects)) if not np.isnan(paths[k, t, 0])]
        for k in present:
            _paint(scratch, owner, k, spec.objects[k], *paths[k, t])
        for k in present:
            obj = spec.objects[k]
            w, h = obj.size
            x, y = paths[k, t]
            x0, y0 = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + w, spec.width), min(y0 + h, spec.height)
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            visible = int((owner == k).sum()) / int(
                render_shape_mask(category_shape(obj.category), w, h).sum()
            )
            conf = 1 if visible >= MIN_VISIBILITY else 0
            rows.append(
                (
                    t + 1,
                    k + 1,
                    cx0,
                    cy0,
                    cx1 - cx0,
                    cy1 - cy0,
                    conf,
                    obj.category + 1,
                    round(visible, 4),
                )
            )
    return rows


def write_mot(path: str | Path, rows: Sequence[Sequence[float]]) -> None:
    """Writes MOT rows as comma-separated text, one per line."""
    from owl.files import atomic_write

    with atomic_write(path) as f:
        for row in rows:
            f.write(",".join(_text(v) for v in row) + "\n")


def _text(value: float) -> str:
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):g}"


def sample_video(
    seed: int,
    *,
    width: int = 128,
    height: int = 128,
    fps: float = 25.0,
    num_frames: int = 600,
    num_objects: int = 4,
    side: tuple[int, int] = (22, 30),
    speed: tuple[float, float] = (0.6, 1.6),
    categories: Sequence[int] = BASE_CATEGORY_INDICES,
) -> VideoSpec:
    """A random video of world `seed`: `num_objects` categories of distinct colours.

    All but two objects are inside from the first frame; with 3 or more objects, the last one
    enters from an edge at about a quarter of the video and the one before it leaves at about
    three quarters, so every video has entering, leaving, bounces and (by chance, at these
    densities nearly always) crossings.
    """
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    rng = np.random.default_rng([int(seed), 11])
    chosen: list[int] = []
    for category in rng.permutation(np.asarray(categories)):  # distinct colours while they last
        colours = {category_colour(int(c)) for c in chosen}
        if category_colour(int(category)) not in colours or len(colours) == len(COLOURS):
            chosen.append(int(category))
        if len(chosen) == num_objects:
            break
    objects = []
    for k, category in enumerate(chosen):
        w = int(rng.integers(side[0], side[1] + 1))
        h = int(np.clip(round(w * rng.uniform(0.85, 1.15)), side[0], side[1]))
        angle = rng.uniform(0, 2 * math.pi)
        s = rng.uniform(*speed)
        vx, vy = s * math.cos(angle), s * math.sin(angle)
        enter, leave = 0, None
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        if num_objects >= 3 and k == num_objects - 1:  # enters from the left or the top
            enter = int(num_frames * 0.25)
            if rng.random() < 0.5:
                x, vx = -w + 0.5, abs(vx) + 0.3
            else:
                y, vy = -h + 0.5, abs(vy) + 0.3
        if num_objects >= 3 and k == num_objects - 2:
            leave = int(num_frames * 0.75)
        objects.append(MovingObject(int(category), (w, h), (x, y), (vx, vy), enter, leave))
    return VideoSpec(width, height, fps, num_frames, tuple(objects), seed)


def write_video(spec: VideoSpec, out_dir: str | Path, *, name: str = "video") -> tuple[Path, Path]:
    """Writes DIR/NAME.mp4 and DIR/NAME.gt.txt (MOT gt); returns both paths."""
    from owl.video.writer import VideoWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / f"{name}.mp4"
    with VideoWriter(video, spec.fps, spec.width, spec.height) as writer:
        for frame in render_frames(spec):
            writer.write(frame)
    gt = out_dir / f"{name}.gt.txt"
    write_mot(gt, ground_truth(spec))
    return video, gt


__all__ = [
    "MIN_VISIBILITY",
    "MovingObject",
    "VideoSpec",
    "ground_truth",
    "render_frames",
    "sample_video",
    "trajectories",
    "write_mot",
    "write_video",
]
