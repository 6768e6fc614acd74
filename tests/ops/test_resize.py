"""The banded-operator preprocessing equals the old pad-filter-zoom definition (issue 10, item 5).

The reference is tests/ops/reference_preprocess.py, a frozen copy of owl's float64 preprocessing
before this change; transformers' Owlv2ImageProcessor and torch's bilinear resize are checked
against the same functions in test_image.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps
from reference_preprocess import reference_pixels  # tests/ops/, on sys.path under pytest

from owl.ops.image import decode_image, load_image, preprocess
from owl.ops.resize import apply_operator, resize_operator

ATOL = 1e-5


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 image with smooth regions and sharp edges (a pure-noise image hides blur errors)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / max(width, 1), y / max(height, 1), ((x // 7 + y // 5) % 2)], -1)
    noise = rng.normal(0, 0.1, (height, width, 3))
    return (np.clip(base + noise, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["official", "tf"])
@pytest.mark.parametrize("pad_value", [0.0, 0.5])
@pytest.mark.parametrize(
    "shape, size",
    [
        ((480, 640), 96),  # landscape
        ((640, 480), 96),  # portrait
        ((300, 300), 96),  # square (no padding, no clip widening)
        ((3, 2), 96),  # tiny: upsampled, no blur
        ((1, 1), 16),
        ((77, 1000), 64),  # a strip: long blur radius, one-row-thick image region
        ((96, 96), 96),  # identity size
    ],
)
def test_preprocess_equals_reference(shape, size, pad_value, method):
    image = _photo(*shape)
    pixels, meta = preprocess(image, image_size=size, pad_value=pad_value, method=method)
    ref = reference_pixels(image, size, pad_value=pad_value, method=method)
    assert pixels.shape == (size, size, 3) and pixels.dtype == np.float32
    assert (meta.height, meta.width) == shape
    np.testing.assert_allclose(pixels, ref, atol=ATOL, rtol=0)


def test_huge_synthetic_image_equals_reference():
    # 2400 x 1700: a blur radius of 12 pixels at S = 96; the old path's float64 square is 55 MB.
    image = _photo(1700, 2400, seed=3)
    pixels, _ = preprocess(image, image_size=96, pad_value=0.0)
    np.testing.assert_allclose(pixels, reference_pixels(image, 96, pad_value=0.0), atol=ATOL)


@pytest.mark.parametrize("method", ["official", "tf"])
def test_rgba_is_composited_onto_the_pad_value(tmp_path, method):
    rgba = np.concatenate([_photo(120, 90, 1), _photo(120, 90, 2)[..., :1]], axis=-1)
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels, _ = preprocess(path, image_size=48, pad_value=0.5, method=method)
    with Image.open(path) as pil:
        ref = reference_pixels(pil, 48, pad_value=0.5, method=method)
    np.testing.assert_allclose(pixels, ref, atol=ATOL)


@pytest.mark.parametrize("mode", ["I;16", "L", "LA", "P", "CMYK"])
def test_other_modes_equal_reference(tmp_path, mode):
    rgb = _photo(70, 110, 4)
    if mode == "I;16":
        pil = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257 + 3)
        assert pil.mode == "I;16"
        path = tmp_path / "deep.png"
    elif mode == "P":
        pil = Image.fromarray(rgb).quantize(32)
        path = tmp_path / "palette.png"
    elif mode == "CMYK":
        pil = Image.fromarray(rgb).convert("CMYK")
        path = tmp_path / "cmyk.tiff"
    else:
        pil = Image.fromarray(rgb).convert(mode)
        path = tmp_path / f"{mode}.png"
    pil.save(path)
    pixels, _ = preprocess(path, image_size=40, pad_value=0.5)
    with Image.open(path) as reopened:
        ref = reference_pixels(reopened, 40, pad_value=0.5)
    np.testing.assert_allclose(pixels, ref, atol=ATOL)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_views_equal_pillow_transpose(tmp_path, orientation):
    rgb = _photo(30, 50, 5)
    path = tmp_path / f"o{orientation}.png"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, exif=exif)
    with Image.open(path) as pil:
        expected = np.asarray(ImageOps.exif_transpose(pil))
    raster = decode_image(path)
    np.testing.assert_array_equal(raster.pixels(), expected)
    np.testing.assert_array_equal(load_image(path), expected / np.float32(255))
    pixels, meta = preprocess(path, image_size=32, pad_value=0.0)
    assert (meta.height, meta.width) == expected.shape[:2]
    np.testing.assert_allclose(pixels, reference_pixels(expected, 32, pad_value=0.0), atol=ATOL)


def test_operator_rows_sum_to_one_and_padding_rows_are_empty():
    # tf, 13 rows into a 29-long square at S = 16: 7 image rows, 9 padding rows (floor(13*16/29)).
    op = resize_operator(13, 29, 16, "tf").toarray()
    np.testing.assert_allclose(op[:7].sum(1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(op[7:], 0.0)
    # official, the image part of the same square: rows near the bottom read padding only.
    op = resize_operator(13, 29, 16, "official").toarray()
    assert op.shape == (16, 13)
    assert op[0].sum() == pytest.approx(1.0) and op[-1].sum() == pytest.approx(0.0)


def test_apply_operator_checks_the_length():
    with pytest.raises(ValueError, match="operator takes 13 rows, got an array of 12"):
        apply_operator(resize_operator(13, 29, 16, "tf"), np.zeros((12, 3)))
