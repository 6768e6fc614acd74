"""owl's preprocessing as it was before owl/ops/resize.py (commit d684b55), frozen as a reference.

It decodes to float64 RGB, pads to a float64 max(H, W) square and filters all of it (the
definition of the two resize policies, written the slow and obvious way). The new path must give
the same pixels to 1e-5 (issue 10); this copy is never imported by owl itself.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from owl.ops.image import CLIP_MEAN, CLIP_STD

_MODES_16BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pil_to_float(pil: Image.Image, name: str, exif: bool = True) -> np.ndarray:
    """Returns float64 [H, W, 3 or 4] in [0, 1] from a PIL image of any mode."""
    try:
        pil.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ValueError(
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
        raise ValueError(
            f"{name}: cannot convert image mode {mode!r} to RGB ({e}); save it as RGB first."
        ) from e
    return np.asarray(converted).astype(np.float64) / 255.0


def _array_to_float(array: np.ndarray, name: str) -> np.ndarray:
    """Returns float64 [H, W, 3 or 4] in [0, 1] from a numpy image array."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name}: expected shape [H, W], [H, W, 1], [H, W, 3] or [H, W, 4].")
    if array.dtype == np.uint8:
        out = array.astype(np.float64) / 255.0
    elif array.dtype == np.uint16:
        out = array.astype(np.float64) / 65535.0
    elif array.dtype == np.bool_:
        out = array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.floating):
        out = array.astype(np.float64)
        if out.size and not (np.nanmin(out) >= 0.0 and np.nanmax(out) <= 1.0):
            raise ValueError(
                f"{name}: float pixels must lie in [0, 1] (found {np.nanmin(out):.4g} to "
                f"{np.nanmax(out):.4g}); divide 0-255 data by 255 or pass uint8."
            )
        if np.isnan(out).any():
            raise ValueError(f"{name}: the image contains NaN pixels.")
    else:
        raise ValueError(f"{name}: unsupported dtype; pass uint8, uint16, bool or float in [0, 1].")
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return out


def pad_to_square(image: np.ndarray, pad_value: float) -> np.ndarray:
    """Pads [H, W, C] at the bottom and right to a max(H, W) square filled with ``pad_value``."""
    height, width = image.shape[:2]
    side = max(height, width)
    out = np.empty((side, side, *image.shape[2:]), dtype=image.dtype)
    out[...] = np.asarray(pad_value, dtype=image.dtype)
    out[:height, :width] = image
    return out


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


def reference_pixels(image, size, *, pad_value, method="official", exif=True):
    """Model pixels [S, S, 3] the old way: float64 decode, composite, pad, resize, normalise."""
    if isinstance(image, Image.Image):
        rgba = _pil_to_float(image, "image", exif)
    else:
        rgba = _array_to_float(image, "image")
    if rgba.shape[-1] == 4:
        alpha = rgba[..., 3:]
        rgba = rgba[..., :3] * alpha + pad_value * (1.0 - alpha)
    rgb = np.clip(rgba, 0.0, 1.0).astype(np.float32).astype(np.float64)
    if method == "official":
        square = _skimage_resize(pad_to_square(rgb, pad_value), (size, size)).astype(np.float32)
    else:
        height, width = rgb.shape[:2]
        long_side = max(height, width)
        new_h = size if height == long_side else math.floor(height * size / long_side)
        new_w = size if width == long_side else math.floor(width * size / long_side)
        resized = _bilinear_resize(rgb, (max(new_h, 1), max(new_w, 1)))
        square = np.full((size, size, 3), pad_value, dtype=np.float64)
        square[: resized.shape[0], : resized.shape[1]] = resized
        square = square.astype(np.float32)
    mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
    return ((square - mean) / std).astype(np.float32)
