"""Resize-and-pad as two small linear operators, applied to the image region only.

Both resize policies (owl_vit_spec §2.1) are separable and linear in the pixels, so each is one
matrix per axis: ``out = c + A_y (I - c) A_x^T`` per channel, where ``I`` is the H x W image, ``c``
the pad value, and ``A_y`` (S x H), ``A_x`` (S x W) are the resize operators restricted to the
columns where the image is. The padding is a constant, so it never has to exist in memory: the
rows of every operator sum to one, and the padded part of ``(I - c)`` is zero.

- ``"official"`` (the scenic Colab, transformers' Owlv2ImageProcessor): pad to a max(H, W) = L
  square, Gaussian blur with sigma = max(0, (L / S - 1) / 2) truncated at 4 sigma, then bilinear
  ``ndimage.zoom(grid_mode=True)``, both with whole-sample mirror boundaries, then clip to the
  padded image's range. ``A = Z G`` composes the zoom's two taps with the blur's taps.
- ``"tf"`` (scenic's evaluator and training): bilinear with half-pixel centres and no
  anti-aliasing, long side to S, then pad; ``A`` has two taps per row and zero rows where the
  padding is.

The operators are banded, so they are applied as dense blocks (BLAS, float32, one thread) to
strips of stored columns, each converted from the decoded dtype (uint8, uint16, ...) on the fly;
EXIF orientation is folded into the operators. Beyond the decoded image (Pillow's buffer), peak
memory is one strip and the S x S output: about 7 bytes per pixel in all for a 12-megapixel JPEG,
in 0.3-0.4 s with decoding (benchmarks/preprocess.py), where the old float64 path took 120 bytes
per pixel. This equals the pad-then-filter-then-zoom definition to about 1e-6 (tested against a
frozen copy of that definition in tests/ops/reference_preprocess.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import sparse

ResizeMethod = Literal["official", "tf"]

# Input rows per dense block: large enough for BLAS to be efficient, small enough that the
# block's wasted zeros (the band is narrow) and the per-strip conversion buffer stay small.
_SPAN = 192


def resize_operator(
    n_image: int, n_padded: int, n_out: int, method: ResizeMethod
) -> sparse.csr_matrix:
    """The 1-D resize operator of one axis, restricted to the image's part of the padded axis.

    Args:
        n_image: image pixels along this axis (H or W).
        n_padded: length of the padded square's side, max(H, W).
        n_out: output side S.
        method: ``"official"`` or ``"tf"`` (module docstring).

    Returns:
        float64 CSR matrix [n_out, n_image]; each nonzero row sums to 1 over the padded axis.
    """
    if method == "official":
        op = _official_operator(n_padded, n_out)
    elif method == "tf":
        out_image = n_out if n_image == n_padded else math.floor(n_image * n_out / n_padded)
        op = _bilinear_operator(n_image, max(out_image, 1), n_out)
    else:
        raise ValueError(f"unknown resize method {method!r}; use 'official' or 'tf'.")
    return op[:, :n_image].tocsr()


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """ndimage's "mirror" boundary (d c b | a b c d | c b a), periodic with period 2n - 2."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * n - 2
    index = np.mod(index, period)
    return np.where(index > n - 1, period - index, index)


def _official_operator(n: int, n_out: int) -> sparse.csr_matrix:
    """``zoom(gaussian_filter(x, sigma, mode="mirror"), order=1, grid_mode=True, mode="mirror")``."""
    factor = n / n_out
    sigma = max(0.0, (factor - 1.0) / 2.0)
    if sigma > 1e-15:  # scipy skips axes whose sigma is (numerically) zero
        radius = int(4.0 * sigma + 0.5)
        taps = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 / (sigma * sigma) * taps.astype(np.float64) ** 2)
        kernel /= kernel.sum()
    else:
        taps, kernel = np.zeros(1, np.int64), np.ones(1)
    # Zoom: source coordinate of output j is (j + 0.5) * n / n_out - 0.5, two linear taps.
    coord = (np.arange(n_out) + 0.5) * factor - 0.5
    lo = np.floor(coord).astype(np.int64)
    frac = coord - lo
    rows, cols, vals = [], [], []
    for offset, weight in ((0, 1.0 - frac), (1, frac)):
        centre = _mirror(lo + offset, n)  # the blurred sample the zoom reads
        for tap, k in zip(taps, kernel, strict=True):
            rows.append(np.arange(n_out))
            cols.append(_mirror(centre + tap, n))
            vals.append(weight * k)
    op = sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_out, n)
    )
    return op.tocsr()  # duplicates (mirrored taps) are summed


def _bilinear_operator(n_in: int, n_resized: int, n_out: int) -> sparse.csr_matrix:
    """Half-pixel bilinear without anti-aliasing to n_resized samples; rows past it are padding."""
    src = (np.arange(n_resized) + 0.5) * (n_in / n_resized) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    rows = np.concatenate([np.arange(n_resized)] * 2)
    op = sparse.coo_matrix(
        (np.concatenate([1.0 - frac, frac]), (rows, np.concatenate([lo, hi]))),
        shape=(n_out, n_in),
    )
    return op.tocsr()


@dataclasses.dataclass(frozen=True)
class _Block:
    """Rows j0:j1 of an operator, dense over the input range a:b that those rows read."""

    j0: int
    j1: int
    a: int
    b: int
    weights: np.ndarray  # float32 [j1 - j0, b - a]


def _blocks(op: sparse.csr_matrix, span: int) -> list[_Block]:
    """Cuts a banded operator into dense blocks that each read about ``span`` inputs."""
    n_out, n_in = op.shape
    counts = np.diff(op.indptr)
    nonempty = counts > 0
    starts = np.full(n_out, n_in, np.int64)
    ends = np.zeros(n_out, np.int64)
    starts[nonempty] = np.minimum.reduceat(op.indices, op.indptr[:-1][nonempty])
    ends[nonempty] = np.maximum.reduceat(op.indices, op.indptr[:-1][nonempty]) + 1
    rows_per_block = max(1, int(span * n_out / max(1, n_in)))
    blocks = []
    for j0 in range(0, n_out, rows_per_block):
        j1 = min(n_out, j0 + rows_per_block)
        if not nonempty[j0:j1].any():
            continue  # padding rows: they stay zero
        a, b = int(starts[j0:j1].min()), int(ends[j0:j1].max())
        blocks.append(_Block(j0, j1, a, b, op[j0:j1, a:b].toarray().astype(np.float32)))
    return blocks


def apply_operator(op: sparse.csr_matrix, x: np.ndarray) -> np.ndarray:
    """``op @ x`` along axis 0 of x, in float32, one dense block of the band at a time.

    Args:
        op: [n_out, n_in] banded operator (from `resize_operator`).
        x: float32 [n_in, ...], contiguous.

    Returns:
        float32 [n_out, ...].
    """
    n_out, n_in = op.shape
    if x.shape[0] != n_in:
        raise ValueError(f"operator takes {n_in} rows, got an array of {x.shape[0]}.")
    return _apply_blocks(_blocks(op, _SPAN), n_out, x)


def _apply_blocks(blocks: list[_Block], n_out: int, x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0], -1)
    out = np.zeros((n_out, flat.shape[1]), np.float32)
    for blk in blocks:
        out[blk.j0 : blk.j1] = blk.weights @ flat[blk.a : blk.b]
    return out.reshape(n_out, *x.shape[1:])


@dataclasses.dataclass(frozen=True)
class Raster:
    """A decoded image as the resizer reads it: strips of stored columns on demand, stored dtype.

    Reading strips on demand is what bounds memory: the resizer converts one strip to float at a
    time, so a photo is never held as float, and a Pillow image is read straight out of Pillow's
    own buffer. Strips are columns because the first (full-resolution) pass then reduces the
    leading axis of a contiguous strip, which BLAS does fastest. EXIF orientation is not applied to the pixels; it is folded into the
    operators (a flip reverses an operator's columns, a transpose swaps the two operators and
    transposes the S x S result), which is exact.

    Attributes:
        read: stored columns [a, b) -> array [stored_height, b - a, channels] of any dtype.
        stored_height: rows as stored in the file.
        stored_width: columns as stored in the file.
        channels: 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
        scale: ``pixels / scale`` lies in [0, 1] (255 for 8-bit, 65535 for 16-bit, 1 for float).
        transpose: the viewed image is the stored one transposed (EXIF orientations 5 to 8) ...
        flip_rows: ... with the stored rows reversed ...
        flip_cols: ... and/or the stored columns reversed.
    """

    read: Callable[[int, int], np.ndarray]
    stored_height: int
    stored_width: int
    channels: int
    scale: float
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @classmethod
    def from_array(cls, pixels: np.ndarray, scale: float) -> Raster:
        """Wraps an in-memory [H, W, C] array (no copy)."""
        return cls(
            read=lambda a, b: pixels[:, a:b],
            stored_height=pixels.shape[0],
            stored_width=pixels.shape[1],
            channels=pixels.shape[2],
            scale=scale,
        )

    @property
    def height(self) -> int:
        """Rows of the image as viewed (after the orientation)."""
        return self.stored_width if self.transpose else self.stored_height

    @property
    def width(self) -> int:
        """Columns of the image as viewed (after the orientation)."""
        return self.stored_height if self.transpose else self.stored_width

    def pixels(self) -> np.ndarray:
        """The whole image as viewed, [height, width, channels] in the stored dtype."""
        stored = self.read(0, self.stored_width)
        if self.flip_rows:
            stored = stored[::-1]
        if self.flip_cols:
            stored = stored[:, ::-1]
        return stored.transpose(1, 0, 2) if self.transpose else stored


def resize_to_square(
    raster: Raster,
    size: int,
    *,
    pad_value: float | np.ndarray,
    method: ResizeMethod = "official",
) -> np.ndarray:
    """Resizes and pads an image to the model's [size, size, 3] square, image at the top-left.

    Alpha is composited onto ``pad_value``, so transparent areas look like padding. Pixels are
    read one strip of stored columns at a time: each strip is converted to float, reduced along
    the rows to S rows, and added into the output columns that read it. Peak memory beyond the
    raster itself is one strip and the S x S output.

    Args:
        raster: the image (see `Raster`; `Raster.from_array` for an in-memory array).
        size: side S of the output.
        pad_value: fill for the padding, a grey level or an RGB triple (0.5 for OWL-ViT v1, 0.0 for
            OWLv2).
        method: ``"official"`` or ``"tf"`` (module docstring).

    Returns:
        float32 [size, size, 3] in [0, 1].
    """
    if size <= 0:
        raise ValueError(f"image size {size} must be positive.")
    if raster.channels not in (1, 2, 3, 4):
        raise ValueError(f"expected 1, 2, 3 or 4 channels, got {raster.channels}.")
    height, width = raster.height, raster.width
    if height == 0 or width == 0:
        raise ValueError("the image has zero width or height.")
    has_alpha = raster.channels in (2, 4)
    pad_rgb = np.broadcast_to(np.asarray(pad_value, np.float64), (3,)).astype(np.float32)
    # A grey image stays one channel unless the padding is coloured.
    colours = 3 if raster.channels >= 3 or not np.all(pad_rgb == pad_rgb[0]) else 1
    pad = pad_rgb[:colours]

    side = max(height, width)
    op_y = resize_operator(height, side, size, method)
    op_x = resize_operator(width, side, size, method)
    # The operators acting on the stored rows and the stored columns.
    row_op, col_op = (op_x, op_y) if raster.transpose else (op_y, op_x)
    if raster.flip_rows:
        row_op = row_op[:, ::-1]
    if raster.flip_cols:
        col_op = col_op[:, ::-1]
    with _one_blas_thread():
        return _resize(raster, size, method, row_op, col_op, has_alpha, colours, pad)


def _resize(raster, size, method, row_op, col_op, has_alpha, colours, pad) -> np.ndarray:
    """The strip loop of `resize_to_square` (its arguments already prepared)."""

    def composited_minus_pad(strip: np.ndarray) -> np.ndarray:
        x = strip.astype(np.float32)
        x *= np.float32(1.0 / raster.scale)
        np.clip(x, 0.0, 1.0, out=x)
        if not has_alpha and x.shape[-1] == colours:
            x -= pad  # in place: the common case makes one float copy of the strip
            return x
        colour = x[..., : raster.channels - int(has_alpha)]
        if colour.shape[-1] != colours:
            colour = np.repeat(colour, colours, axis=-1)
        return (colour - pad) * x[..., -1:] if has_alpha else colour - pad

    height, width = raster.height, raster.width
    row_blocks = _blocks(row_op.tocsr(), _SPAN)
    col_op = col_op.tocsc()

    # The result in stored orientation is R = row_op X col_op^T. A strip gives a few columns of R;
    # they are added straight into the final layout (R itself, or R^T when the view transposes).
    out = np.zeros((size, size, colours), np.float32)
    lo, hi = np.inf, -np.inf
    # About 2 MB of float per strip: few temporaries, and still wide enough for BLAS.
    cols = max(8, min(_SPAN, (1 << 19) // max(1, raster.stored_height * raster.channels)))
    for a in range(0, raster.stored_width, cols):
        b = min(raster.stored_width, a + cols)
        block = col_op[:, a:b].tocsr()
        readers = np.flatnonzero(np.diff(block.indptr))  # output columns that read columns a:b
        if len(readers) == 0 and method != "official":
            continue  # nothing reads these columns (and no clip needs their range)
        strip = composited_minus_pad(raster.read(a, b))  # [stored_height, b - a, colours]
        if method == "official":
            lo, hi = min(lo, float((strip + pad).min())), max(hi, float((strip + pad).max()))
        if len(readers) == 0:
            continue
        reduced = _apply_blocks(row_blocks, size, strip)  # [S, b - a, colours]
        by_column = np.ascontiguousarray(reduced.transpose(1, 0, 2)).reshape(b - a, -1)
        j0, j1 = readers[0], readers[-1] + 1
        columns = block[j0:j1].toarray().astype(np.float32) @ by_column  # R[:, j0:j1]^T
        columns = columns.reshape(j1 - j0, size, colours)
        if raster.transpose:
            out[j0:j1] += columns
        else:
            out[:, j0:j1] += columns.transpose(1, 0, 2)
    out += pad
    if method == "official":  # skimage clips to the input's range: the padded square's, here
        if height != width:
            lo, hi = min(lo, float(pad.min())), max(hi, float(pad.max()))
        np.clip(out, lo, hi, out=out)
    if colours == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


_BLAS = None


def _one_blas_thread():
    """BLAS limited to one thread: the blocks are small, and a second OpenBLAS thread that spins
    on a busy core made a 12-megapixel resize 15x slower (measured: 0.26 s against 4 s)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")
