"""Image loading and the resize/pad policies that turn a user's image into model pixels.

Everything here is numpy + Pillow + scipy (no JAX), so it can run in data loaders and CLIs before
any accelerator is touched. The pipeline is:

    load_image(path) -> float32 [H, W, 3] in [0, 1]   (EXIF orientation, modes, alpha, errors)
    preprocess(image, image_size=S, pad_value=v) -> (CLIP-normalised [S, S, 3], ImageMeta)
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
import math
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Same number as Pillow's Image.MAX_IMAGE_PIXELS (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 89_478_485

ResizeMethod = Literal["official", "tf"]
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
# Loading


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
    official pipeline ignores EXIF. Alpha is
    composited onto ``background``; for model input pass the checkpoint's pad value (as
    `preprocess` does), so transparent areas look like padding.

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
    if isinstance(image, (np.ndarray, Image.Image)):
        return as_float_rgb(image, background=background, exif=exif)
    path = Path(image)
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a directory, not an image file; pass an image file.")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path}: the file is empty (0 bytes); re-export or re-download it.")
    with _pillow_bomb_check_disabled():
        try:
            with Image.open(path) as pil:
                _check_size(pil.size, path, max_pixels)
                # as_float_rgb forces the full decode (.load()), so truncation is caught here.
                return as_float_rgb(pil, background=background, name=str(path), exif=exif)
        except ImageLoadError:
            raise
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
        name = name or "PIL image"
        rgba = _pil_to_float(image, name, exif)
    elif isinstance(image, np.ndarray):
        name = name or f"array of shape {image.shape} and dtype {image.dtype}"
        rgba = _array_to_float(image, name)
    else:
        raise ImageLoadError(
            f"{type(image).__name__}: not an image; pass a path, a numpy array or a PIL image."
        )
    if rgba.shape[0] == 0 or rgba.shape[1] == 0:
        raise ImageLoadError(f"{name}: the image has zero width or height; it holds no pixels.")
    if rgba.shape[-1] == 4:
        alpha = rgba[..., 3:]
        rgba = rgba[..., :3] * alpha + bg * (1.0 - alpha)
    return np.ascontiguousarray(np.clip(rgba, 0.0, 1.0), dtype=np.float32)


def _pil_to_float(pil: Image.Image, name: str, exif: bool = True) -> np.ndarray:
    """Returns float64 [H, W, 3 or 4] in [0, 1] from a PIL image of any mode."""
    try:
        pil.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageLoadError(
            f"{name}: the image data is truncated or corrupt ({e}); re-export or re-download it."
        ) from e
    try:
        if exif:
            pil = ImageOps.exif_transpose(pil)
    except Exception:  # A broken EXIF block should not make an otherwise fine image unreadable.
        pass
    mode = pil.mode
    if mode in _MODES_16BIT:
        grey = np.asarray(pil).astype(np.float64) / 65535.0
        if "transparency" in pil.info:  # A tRNS grey level; rare enough to drop, but say so.
            warnings.warn(f"{name}: 16-bit transparency is ignored.", stacklevel=3)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":
        grey = np.asarray(pil).astype(np.float64)
        return np.repeat(grey[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in pil.info
    target = "RGBA" if has_alpha else "RGB"
    try:
        converted = pil if mode == target else pil.convert(target)
    except (ValueError, OSError) as e:
        raise ImageLoadError(
            f"{name}: cannot convert image mode {mode!r} to RGB ({e}); save it as RGB first."
        ) from e
    return np.asarray(converted).astype(np.float64) / 255.0


def _array_to_float(array: np.ndarray, name: str) -> np.ndarray:
    """Returns float64 [H, W, 3 or 4] in [0, 1] from a numpy image array."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(f"{name}: expected shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4].")
    if array.dtype == np.uint8:
        out = array.astype(np.float64) / 255.0
    elif array.dtype == np.uint16:
        out = array.astype(np.float64) / 65535.0
    elif array.dtype == np.bool_:
        out = array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.floating):
        out = array.astype(np.float64)
        if out.size and not (np.nanmin(out) >= 0.0 and np.nanmax(out) <= 1.0):
            raise ImageLoadError(
                f"{name}: float pixels must lie in [0, 1] (found {np.nanmin(out):.4g} to "
                f"{np.nanmax(out):.4g}); divide 0-255 data by 255 or pass uint8."
            )
        if np.isnan(out).any():
            raise ImageLoadError(f"{name}: the image contains NaN pixels.")
    else:
        raise ImageLoadError(
            f"{name}: unsupported dtype; pass uint8, uint16, bool or float in [0, 1]."
        )
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out


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
# Pad and resize


def pad_to_square(image: np.ndarray, pad_value: Colour) -> np.ndarray:
    """Pads [H, W, C] at the bottom and right to a max(H, W) square filled with ``pad_value``."""
    height, width = image.shape[:2]
    side = max(height, width)
    out = np.empty((side, side, *image.shape[2:]), dtype=image.dtype)
    out[...] = np.asarray(pad_value, dtype=image.dtype)
    out[:height, :width] = image
    return out


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
            then pads, as scenic's evaluator and training pipeline do.

    Returns:
        float32 [size, size, 3].
    """
    if size <= 0:
        raise ValueError(f"image size {size} must be positive.")
    image = np.asarray(image, dtype=np.float64)
    if method == "official":
        return _skimage_resize(pad_to_square(image, pad_value), (size, size)).astype(np.float32)
    if method == "tf":
        height, width = image.shape[:2]
        long_side = max(height, width)
        new_h = size if height == long_side else math.floor(height * size / long_side)
        new_w = size if width == long_side else math.floor(width * size / long_side)
        resized = _bilinear_resize(image, (max(new_h, 1), max(new_w, 1)))
        out = np.empty((size, size, image.shape[2]), dtype=np.float64)
        out[...] = np.asarray(pad_value, dtype=np.float64)
        out[: resized.shape[0], : resized.shape[1]] = resized
        return out.astype(np.float32)
    raise ValueError(f"unknown resize method {method!r}; use 'official' or 'tf'.")


def _skimage_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order=1, anti_aliasing=True)`` for [H, W, C].

    Follows skimage (and transformers' Owlv2ImageProcessor, which copies it): Gaussian blur with
    sigma = max(0, (factor - 1) / 2) per axis, bilinear ``ndimage.zoom`` with grid_mode=True, mode
    "mirror" (skimage's "reflect"), then clip to the input's range.
    """
    factors = np.array([image.shape[0] / shape[0], image.shape[1] / shape[1], 1.0])
    sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    filtered = ndimage.gaussian_filter(image, sigma, mode="mirror", cval=0.0)
    out = ndimage.zoom(filtered, 1.0 / factors, order=1, mode="mirror", cval=0.0, grid_mode=True)
    return np.clip(out, image.min(), image.max())


def _bilinear_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``tf.image.resize(image, shape, "bilinear", antialias=False)`` (half-pixel centres)."""
    out = image
    for axis, (n_in, n_out) in enumerate(zip(image.shape[:2], shape, strict=True)):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (src - lo).reshape((-1,) + (1,) * (out.ndim - 1 - axis))
        a, b = np.take(out, lo, axis=axis), np.take(out, hi, axis=axis)
        out = a + (b - a) * frac
    return out


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
        method: resize policy, see `resize_square`.
        max_pixels: decompression-bomb guard for files, see `load_image`.
        exif: apply the EXIF orientation (see `load_image`).

    Returns:
        (pixels, meta): pixels float32 [S, S, 3], (x - CLIP_MEAN) / CLIP_STD; meta an `ImageMeta`.
    """
    path = None if isinstance(image, (np.ndarray, Image.Image)) else os.fspath(image)
    rgb = load_image(image, max_pixels=max_pixels, background=pad_value, exif=exif)
    height, width = rgb.shape[:2]
    square = resize_square(rgb, image_size, pad_value=pad_value, method=method)
    pixels = normalize_pixels(square)
    meta = ImageMeta(
        width=width,
        height=height,
        image_size=image_size,
        scale=image_size / max(height, width),
        path=path,
    )
    return pixels.astype(np.float32), meta


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
