"""Image loading and the resize/pad policies that turn a user's image into model pixels.

Everything here is numpy + Pillow + scipy (no JAX), so it can run in data loaders and CLIs before
any accelerator is touched. The pipeline is:

    decode_image(path) -> Raster: the stored dtype, [H, W, C]  (EXIF orientation, modes, errors)
    preprocess(image, image_size=S, pad_value=v) -> (CLIP-normalised [S, S, 3], ImageMeta)
        resizes straight from the Raster (owl/ops/resize.py): no float copy of the photo
    load_image(path) -> float32 [H, W, 3] in [0, 1]   (for drawing and training augmentation)
    boxes_to_pixels(pred_boxes, meta) -> xyxy pixels in the original image

Two resize policies exist upstream (owl_vit_spec §2.1); both pad at the bottom/right only, which
is what makes box mapping a single multiplication by max(H, W) (spec §3):

- ``"official"``: the scenic Colab / ``Model.preprocess_image`` path and transformers'
  ``Owlv2ImageProcessor``: pad to a max(H, W) square first, then a skimage-style anti-aliased
  bilinear resize to S x S.
- ``"tf"``: the scenic evaluator / training ``ResizeWithPad`` path (benchmark parity): bilinear
  resize without anti-aliasing so that the long side is S and the short side
  floor(short * S / long), then pad.

Pad values: 0.5 for OWL-ViT v1 checkpoints, 0.0 for OWLv2 (spec §2.1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from owl.ops.resize import Raster, ResizeMethod, resize_to_square

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Same number as Pillow's Image.MAX_IMAGE_PIXELS (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

Colour = float | Sequence[float]
ImageInput = str | os.PathLike | np.ndarray | Image.Image

# Pillow opens 16-bit greyscale PNG/TIFF as "I;16*" (older versions and some TIFFs as "I"): scale
# by 1/65535. 32-bit float ("F") images are taken to be in [0, 1] already and clipped.
_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_PIL_GLOBALS_LOCK = threading.Lock()


class ImageLoadError(ValueError):
    """An image could not be read; the message names the file, the problem and what to do."""


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What post-processing needs to know about an image after `preprocess`.

    Attributes:
        width: original width in pixels (after EXIF rotation).
        height: original height in pixels (after EXIF rotation).
        image_size: side S of the square model input.
        scale: S / max(width, height); model-input pixels per original pixel.
        path: the file the image came from, or None for in-memory images.
    """

    width: int
    height: int
    image_size: int
    scale: float
    path: str | None = None

    @property
    def name(self) -> str | None:
        """The file name without directories, or None for in-memory images."""
        return None if self.path is None else os.path.basename(self.path)


# --------------------------------------------------------------------------------------------------
# Decoding


def to_float_rgb(raster: Raster, background: Colour = 1.0) -> np.ndarray:
    """The whole image as float32 [H, W, 3] in [0, 1], alpha composited onto ``background``.

    This is a full-size float copy (12 bytes per pixel); model input does not need it (`preprocess`
    resizes straight from the raster).
    """
    bg = _background(background).astype(np.float32)
    x = raster.pixels().astype(np.float32) / np.float32(raster.scale)
    np.clip(x, 0.0, 1.0, out=x)
    if raster.channels in (2, 4):
        colour, alpha = x[..., : raster.channels - 1], x[..., raster.channels - 1 :]
        x = colour * alpha + bg * (1.0 - alpha)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(np.clip(x, 0.0, 1.0), dtype=np.float32)


def decode_image(
    image: ImageInput,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif: bool = True,
) -> Raster:
    """Reads an image file (or takes an array / PIL image) as a `Raster`, with every check.

    Args:
        image: a path to any Pillow-readable file, or a numpy array / PIL image (see
            `as_float_rgb` for what arrays may hold).
        max_pixels: refuse files with more than this many pixels before decoding them (a guard
            against decompression bombs); None disables the check.
        exif: apply the EXIF orientation tag (files and PIL images).

    Raises:
        ImageLoadError: missing, empty, unreadable, truncated, zero-size or too large file, or an
            unsupported array.
    """
    if isinstance(image, Image.Image):
        return _pil_raster(image, "PIL image", exif)
    if isinstance(image, np.ndarray):
        return _array_raster(image, f"array of shape {image.shape} and dtype {image.dtype}")
    if not isinstance(image, (str, os.PathLike)):
        raise ImageLoadError(
            f"{type(image).__name__}: not an image; pass a path, a numpy array or a PIL image."
        )
    path = Path(image)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image file; pass an image file.")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: the file is empty (0 bytes); re-export or re-download it.")
    with _pillow_bomb_check_disabled():
        try:
            pil = Image.open(path)
        except Image.UnidentifiedImageError as e:
            if _header_has_zero_size(path):
                raise ImageLoadError(
                    f"{path}: the image has zero width or height; it holds no pixels."
                ) from e
            raise ImageLoadError(
                f"{path}: not an image file Pillow can read; pass a JPEG, PNG, BMP, GIF, TIFF or "
                "WebP file."
            ) from e
        except OSError as e:
            raise ImageLoadError(f"{path}: cannot read the file ({e}).") from e
        try:
            _check_size(pil.size, path, max_pixels)
            # The full decode happens here (.load()), so truncation is caught here. The raster
            # reads its strips out of Pillow's buffer; the file itself is closed.
            raster = _pil_raster(pil, str(path), exif)
        except ImageLoadError:
            pil.close()
            raise
        except OSError as e:
            pil.close()
            raise ImageLoadError(f"{path}: cannot read the file ({e}).") from e
    return raster


def load_image(
    image: ImageInput,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    background: Colour = 1.0,
    exif: bool = True,
) -> np.ndarray:
    """Reads an image file (or takes an array / PIL image) as float32 RGB in [0, 1].

    EXIF orientation is applied (unless exif=False), so the result is the image as a viewer shows
    it. Dataset evaluation turns it off: annotations refer to the stored pixel grid, and the
    official pipeline ignores EXIF. Alpha is composited onto ``background``; for model input pass
    the checkpoint's pad value, so transparent areas look like padding. This makes a float32 copy
    of the whole image (12 bytes per pixel); model input goes through `preprocess`, which does not.

    Args:
        image: a path to any Pillow-readable file, or a numpy array / PIL image (see
            `as_float_rgb`).
        max_pixels: refuse images with more than this many pixels before decoding them (a guard
            against decompression bombs); None disables the check.
        background: grey level or RGB triple in [0, 1] under transparent pixels.
        exif: apply the EXIF orientation tag.

    Returns:
        float32 [H, W, 3] in [0, 1].

    Raises:
        ImageLoadError: missing, empty, unreadable, truncated, zero-size or too large file.
    """
    bg = _background(background)
    return to_float_rgb(decode_image(image, max_pixels=max_pixels, exif=exif), bg)


def as_float_rgb(
    image: np.ndarray | Image.Image,
    *,
    background: Colour = 1.0,
    name: str | None = None,
    exif: bool = True,
) -> np.ndarray:
    """Converts an in-memory image to float32 RGB [H, W, 3] in [0, 1].

    Arrays: uint8 (/255), uint16 (/65535), bool, or float already in [0, 1]; shape [H, W] (grey),
    [H, W, 1], [H, W, 3] or [H, W, 4] (RGBA, alpha composited onto ``background``). PIL images:
    any mode; EXIF orientation is applied, 16-bit greyscale is scaled by 1/65535, alpha modes and
    palette transparency are composited onto ``background``, CMYK/YCbCr/1-bit are converted.

    Args:
        image: the image.
        background: grey level or RGB triple in [0, 1] under transparent pixels.
        name: how to refer to the image in error messages.
        exif: apply the EXIF orientation of PIL images.

    Returns:
        float32 [H, W, 3] in [0, 1].

    Raises:
        ImageLoadError: unsupported dtype, shape, value range or mode, or zero size.
    """
    bg = _background(background)
    if isinstance(image, Image.Image):
        raster = _pil_raster(image, name or "PIL image", exif)
    elif isinstance(image, np.ndarray):
        raster = _array_raster(
            image, name or f"array of shape {image.shape} and dtype {image.dtype}"
        )
    else:
        raise ImageLoadError(
            f"{type(image).__name__}: not an image; pass a path, a numpy array or a PIL image."
        )
    return to_float_rgb(raster, bg)


# EXIF orientation tag -> (transpose, flip stored rows, flip stored columns): the same view as
# ImageOps.exif_transpose gives (tested against it).
_ORIENTATIONS = {
    1: (False, False, False),
    2: (False, False, True),  # mirrored left-right
    3: (False, True, True),  # rotated 180
    4: (False, True, False),  # mirrored top-bottom
    5: (True, False, False),  # transposed
    6: (True, True, False),  # rotated 90 clockwise to view
    7: (True, True, True),  # transversed
    8: (True, False, True),  # rotated 90 counter-clockwise to view
}

# Pillow modes read as they are: mode -> (numpy dtype of tobytes(), channels, scale).
_RAW_MODES = {
    "L": ("u1", 1, 255.0),
    "LA": ("u1", 2, 255.0),
    "RGB": ("u1", 3, 255.0),
    "RGBA": ("u1", 4, 255.0),
    "I;16": ("<u2", 1, 65535.0),
    "I;16L": ("<u2", 1, 65535.0),
    "I;16B": (">u2", 1, 65535.0),
    "I;16N": ("=u2", 1, 65535.0),
    "I": ("=i4", 1, 65535.0),  # 32-bit integer images are taken to be 16-bit data
    "F": ("=f4", 1, 1.0),  # float images are taken to be in [0, 1] already (clipped)
}


def _pil_raster(pil: Image.Image, name: str, exif: bool = True) -> Raster:
    """Decodes a PIL image of any mode into a Raster that reads strips out of Pillow's buffer.

    Modes without a direct layout (palette, CMYK, YCbCr, 1-bit, premultiplied alpha, ...) are
    converted one strip at a time, so the conversion never makes a second full-size image.
    """
    try:
        pil.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageLoadError(
            f"{name}: the image data is truncated or corrupt ({e}); re-export or re-download it."
        ) from e
    orientation = 1
    if exif:
        try:
            orientation = int(pil.getexif().get(0x0112, 1))
        except Exception:  # A broken EXIF block should not make an otherwise fine image unreadable.
            orientation = 1
    width, height = pil.size
    if width == 0 or height == 0:
        raise ImageLoadError(f"{name}: the image has zero width or height; it holds no pixels.")
    mode = pil.mode
    if mode in _MODES_16BIT and "transparency" in pil.info:  # A tRNS grey level: rare, say so.
        warnings.warn(f"{name}: 16-bit transparency is ignored.", stacklevel=3)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        "transparency" in pil.info and mode not in _MODES_16BIT
    )
    if mode in _RAW_MODES and (mode not in ("L", "RGB") or not has_alpha):
        target = mode
    else:
        target = "RGBA" if has_alpha else "RGB"
        try:  # fail now, not in the middle of a resize
            pil.crop((0, 0, 1, 1)).convert(target)
        except (ValueError, OSError) as e:
            raise ImageLoadError(
                f"{name}: cannot convert image mode {mode!r} to RGB ({e}); save it as RGB first."
            ) from e
    dtype, channels, scale = _RAW_MODES[target]

    def read(a: int, b: int) -> np.ndarray:  # stored columns a:b
        strip = pil.crop((a, 0, b, height))
        if target != mode:
            strip = strip.convert(target)
        return np.frombuffer(strip.tobytes(), dtype=dtype).reshape(height, b - a, channels)

    transpose, flip_rows, flip_cols = _ORIENTATIONS.get(orientation, _ORIENTATIONS[1])
    return Raster(read, height, width, channels, scale, transpose, flip_rows, flip_cols)


def _array_raster(array: np.ndarray, name: str) -> Raster:
    """Checks a numpy image array and wraps it as a Raster (no copy)."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(f"{name}: expected shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4].")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"{name}: the image has zero width or height; it holds no pixels.")
    if array.dtype == np.uint8:
        return Raster.from_array(array, 255.0)
    if array.dtype == np.uint16:
        return Raster.from_array(array, 65535.0)
    if array.dtype == np.bool_:
        return Raster.from_array(array, 1.0)
    if np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any():
            raise ImageLoadError(f"{name}: the image contains NaN pixels.")
        lo, hi = float(array.min()), float(array.max())
        if not (lo >= 0.0 and hi <= 1.0):
            raise ImageLoadError(
                f"{name}: float pixels must lie in [0, 1] (found {lo:.4g} to {hi:.4g}); divide "
                "0-255 data by 255 or pass uint8."
            )
        return Raster.from_array(array, 1.0)
    raise ImageLoadError(f"{name}: unsupported dtype; pass uint8, uint16, bool or float in [0, 1].")


def _background(background: Colour) -> np.ndarray:
    bg = np.broadcast_to(np.asarray(background, dtype=np.float64), (3,))
    if not np.all((bg >= 0.0) & (bg <= 1.0)):
        raise ValueError(
            f"background {background!r} must be in [0, 1] (a grey level or RGB triple)."
        )
    return bg


def _check_size(size: tuple[int, int], path: Path, max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(a guard against decompression bombs); raise the limit (max_pixels, or "
            "--max-image-pixels on the command line) if you trust the file, or downscale it."
        )


@contextlib.contextmanager
def _pillow_bomb_check_disabled() -> Iterator[None]:
    """Turns off Pillow's own decompression-bomb warning/error; `_check_size` replaces it.

    Pillow reads a process-wide global, so it is swapped under a lock and restored afterwards.
    """
    with _PIL_GLOBALS_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _header_has_zero_size(path: Path) -> bool:
    """Whether a PNG, GIF or BMP header declares zero width or height (Pillow rejects these)."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
    elif head.startswith(b"BM") and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
    else:
        return False
    return width == 0 or height == 0


# --------------------------------------------------------------------------------------------------
# Model input and box mapping


def preprocess(
    image: ImageInput,
    *,
    image_size: int,
    pad_value: float,
    method: ResizeMethod = "official",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    exif: bool = True,
) -> tuple[np.ndarray, ImageMeta]:
    """Turns one image into CLIP-normalised model pixels plus what is needed to map boxes back.

    Args:
        image: a path, a numpy array or a PIL image (see `load_image`). Transparent pixels are
            composited onto ``pad_value`` so they look like padding to the model.
        image_size: side S of the square model input (768 for B/32, 960 for OWLv2 B/16, ...).
        pad_value: padding grey level: 0.5 for OWL-ViT v1, 0.0 for OWLv2.
        method: resize policy, see `resize_square`. Memory: the decoded image in its own dtype
            (3 bytes per pixel for RGB photos) plus one S x min(H, W) float32 buffer.
        max_pixels: decompression-bomb guard for files, see `load_image`.
        exif: apply the EXIF orientation (see `load_image`).

    Returns:
        (pixels, meta): pixels float32 [S, S, 3], (x - CLIP_MEAN) / CLIP_STD; meta an `ImageMeta`.
    """
    path = None if isinstance(image, (np.ndarray, Image.Image)) else os.fspath(image)
    raster = decode_image(image, max_pixels=max_pixels, exif=exif)
    square = resize_to_square(raster, image_size, pad_value=pad_value, method=method)
    meta = ImageMeta(
        width=raster.width,
        height=raster.height,
        image_size=image_size,
        scale=image_size / max(raster.height, raster.width),
        path=path,
    )
    return normalize_pixels(square), meta


def resize_square(
    image: np.ndarray, size: int, *, pad_value: Colour, method: ResizeMethod = "official"
) -> np.ndarray:
    """Resizes float [H, W, 3] in [0, 1] to a padded [size, size, 3] square (image at top-left).

    Args:
        image: float [H, W, 3] in [0, 1].
        size: side S of the output.
        pad_value: fill for the padding (0.5 for OWL-ViT v1, 0.0 for OWLv2).
        method: ``"official"`` pads to a square, then resizes the skimage way (anti-aliased
            bilinear), as the scenic Colabs and transformers' Owlv2ImageProcessor do;
            ``"tf"`` resizes the long side to S with bilinear interpolation and no anti-aliasing,
            then pads, as scenic's evaluator and training pipeline do (owl/ops/resize.py).

    Returns:
        float32 [size, size, 3].
    """
    raster = _array_raster(np.asarray(image), f"array of shape {np.shape(image)}")
    return resize_to_square(raster, size, pad_value=pad_value, method=method)


def normalize_pixels(image: np.ndarray) -> np.ndarray:
    """CLIP normalisation, the one place it is written: (x - CLIP_MEAN) / CLIP_STD per channel.

    Args:
        image: float [..., 3] in [0, 1] (float64 input is computed in float64, then cast).

    Returns:
        float32 [..., 3].
    """
    mean = np.asarray(CLIP_MEAN, np.float32)
    std = np.asarray(CLIP_STD, np.float32)
    return ((image - mean) / std).astype(np.float32)


def boxes_to_pixels(pred_boxes_cxcywh: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Maps model boxes (cxcywh, normalised to the padded square) to xyxy pixels of the original.

    The image sits at the top-left of the padded square, so both axes scale by max(H, W)
    (spec §3); corners are then clipped to the image: x to [0, W], y to [0, H].

    Args:
        pred_boxes_cxcywh: [..., 4] in [0, 1] relative to the padded square.
        meta: from `preprocess`.

    Returns:
        float32 [..., 4] xyxy in original-image pixels.
    """
    b = np.asarray(pred_boxes_cxcywh, dtype=np.float64)
    side = max(meta.width, meta.height)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1) * side
    upper = np.array([meta.width, meta.height, meta.width, meta.height], dtype=np.float64)
    return np.clip(xyxy, 0.0, upper).astype(np.float32)


def pixels_to_normalized(box_xyxy: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """Inverse of `boxes_to_pixels` (without clipping): xyxy pixels -> cxcywh on the padded square.

    Used for image-query boxes drawn by the user on the original image.

    Args:
        box_xyxy: [..., 4] xyxy in original-image pixels.
        meta: from `preprocess`.

    Returns:
        float32 [..., 4] cxcywh normalised to the padded square.
    """
    b = np.asarray(box_xyxy, dtype=np.float64) / max(meta.width, meta.height)
    x0, y0, x1, y1 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    return np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=-1).astype(np.float32)
