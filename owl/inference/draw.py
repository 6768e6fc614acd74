"""Drawing `Detections` onto their image: boxes, and a "label 0.87" tag per box.

Each query index gets a fixed colour from a palette of distinct colours, so the same query has the
same colour in every image. Tags sit on a filled background in the box colour, with black or white
text chosen by the colour's luminance, and are kept inside the image. Line width and font size scale
with the image so drawings read the same on a thumbnail and on a 4K photo.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from owl.inference.detections import Detections
from owl.ops.image import load_image

# Kelly's colours of maximum contrast (without black, white and greys), then a few Tableau ones.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 179, 0),
    (128, 62, 117),
    (255, 104, 0),
    (166, 189, 215),
    (193, 0, 32),
    (206, 162, 98),
    (0, 125, 52),
    (246, 118, 142),
    (0, 83, 138),
    (255, 122, 92),
    (83, 55, 122),
    (255, 142, 0),
    (179, 40, 81),
    (244, 200, 0),
    (127, 24, 13),
    (147, 170, 0),
    (89, 51, 21),
    (241, 58, 19),
    (35, 44, 22),
    (31, 119, 180),
    (23, 190, 207),
    (148, 103, 189),
)


def colour_for(query_index: int) -> tuple[int, int, int]:
    """The box colour for a query index (cycles through `PALETTE`)."""
    return PALETTE[int(query_index) % len(PALETTE)]


def text_colour_on(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_detections(
    image: np.ndarray | Image.Image | str | os.PathLike,
    detections: Detections,
    *,
    out_path: str | os.PathLike | None = None,
    line_width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """Draws boxes and "label score" tags; the image keeps its size.

    Args:
        image: uint8 or float ([0, 1]) [H, W, 3] array, a PIL image, or a path (EXIF orientation is
            applied, as in `load_image`, so boxes line up with what the detector saw).
        detections: boxes in this image's pixel coordinates.
        out_path: also save the drawing here (format from the suffix).
        line_width: box outline width in pixels; default about 1/200 of the shorter side.
        font_size: tag text size; default about 1/40 of the shorter side, at least 10.

    Returns:
        A new RGB PIL image.

    Raises:
        ValueError: the detections' metadata names a width/height that differs from the image's.
    """
    canvas = Image.fromarray(_to_uint8(image), "RGB")
    width, height = canvas.size
    meta = detections.metadata
    if ("width" in meta and meta["width"] != width) or (
        "height" in meta and meta["height"] != height
    ):
        raise ValueError(
            f"detections are for a {meta.get('width')}x{meta.get('height')} image but the image "
            f"is {width}x{height}; draw on the image that was detected (EXIF-rotated)."
        )
    short = min(width, height)
    line_width = line_width or max(1, round(short / 200))
    font = _font(font_size or max(10, round(short / 40)))
    draw = ImageDraw.Draw(canvas)
    order = np.argsort(detections.confidence, kind="stable")  # most confident drawn last, on top
    for i in order:
        box = _pixel_box(detections.xyxy[i], width, height)
        draw.rectangle(box, outline=colour_for(detections.class_id[i]), width=line_width)
    for i in order:  # tags after all boxes, so no box line crosses a tag
        text = f"{detections.labels[i]} {detections.confidence[i]:.2f}"
        colour = colour_for(detections.class_id[i])
        _draw_tag(draw, text, detections.xyxy[i], colour, font, canvas.size)
    if out_path is not None:
        canvas.save(out_path)
    return canvas


def _to_uint8(image: np.ndarray | Image.Image | str | os.PathLike) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[-1:] == (3,):
        return np.array(image)  # a copy: drawing must never touch the caller's array
    rgb = load_image(image, max_pixels=None, background=1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def _pixel_box(xyxy: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Continuous xyxy -> the inclusive pixel rectangle it covers, inside the image."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in xyxy)
    x0, x1 = min(max(x0, 0), width - 1), min(max(x1 - 1, 0), width - 1)
    y0, y1 = min(max(y0, 0), height - 1), min(max(y1 - 1, 0), height - 1)
    return x0, y0, max(x0, x1), max(y0, y1)


def _draw_tag(
    draw: ImageDraw.ImageDraw,
    text: str,
    xyxy: np.ndarray,
    colour: tuple[int, int, int],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    size: tuple[int, int],
) -> None:
    """A filled tag above the box's top-left corner, or just inside it at the top edge."""
    width, height = size
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(1, (bottom - top) // 5)
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    x0, y0, _, _ = _pixel_box(xyxy, width, height)
    x = min(max(x0, 0), max(width - tag_w, 0))
    y = y0 - tag_h if y0 - tag_h >= 0 else y0  # above the box if it fits, else inside it
    y = min(y, max(height - tag_h, 0))
    draw.rectangle((x, y, x + tag_w - 1, y + tag_h - 1), fill=colour)
    draw.text((x + pad - left, y + pad - top), text, fill=text_colour_on(colour), font=font)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at ``size`` (a fixed-size bitmap font if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
