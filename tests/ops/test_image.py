"""Tests for owl/ops/image.py: loading, resize parity with transformers, box mapping."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from owl.ops.image import (
    CLIP_MEAN,
    CLIP_STD,
    ImageLoadError,
    ImageMeta,
    as_float_rgb,
    boxes_to_pixels,
    load_image,
    pixels_to_normalized,
    preprocess,
    resize_square,
)

BG = (0.2, 0.4, 0.6)


# --------------------------------------------------------------------------------------------------
# Modes


def test_rgba_png_alpha_is_composited_onto_background(tmp_path):
    pixels = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [255, 255, 255, 102]]], dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(pixels, "RGBA").save(path)
    out = load_image(path, background=BG)
    assert out.dtype == np.float32 and out.shape == (1, 3, 3)
    np.testing.assert_allclose(out[0, 0], BG, atol=1e-6)  # fully transparent -> background
    np.testing.assert_allclose(out[0, 1], (0, 0, 1), atol=1e-6)  # opaque -> its own colour
    a = 102 / 255  # white at alpha 0.4 over BG
    np.testing.assert_allclose(out[0, 2], [a + b * (1 - a) for b in BG], atol=1e-6)


def test_la_png(tmp_path):
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[200, 0], [200, 255]]], dtype=np.uint8), "LA").save(path)
    out = load_image(path, background=0.5)
    np.testing.assert_allclose(out[0, 0], [0.5] * 3, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], [200 / 255] * 3, atol=1e-6)


def test_palette_png_with_transparent_index(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 255, 0, 0] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    im.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    im.save(path, transparency=1)
    assert Image.open(path).mode == "P"
    out = load_image(path, background=BG)
    np.testing.assert_allclose(out[0, 0], np.array([10, 20, 30]) / 255, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], BG, atol=1e-6)


def test_16bit_greyscale_png_is_scaled_by_65535_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(np.array([[65535, 32768, 0, 255]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    out = load_image(path)
    np.testing.assert_allclose(out[0, :, 0], [1.0, 32768 / 65535, 0.0, 255 / 65535], atol=1e-7)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)  # pure red
    out = load_image(path)
    np.testing.assert_allclose(out[4, 4], (1.0, 0.0, 0.0), atol=3 / 255)


def test_one_bit_image(tmp_path):
    im = Image.new("1", (2, 1), 0)
    im.putpixel((1, 0), 1)
    path = tmp_path / "bw.png"
    im.save(path)
    out = load_image(path)
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [1, 1, 1]])


def test_exif_orientation_6_rotates_and_moves_the_marked_corner(tmp_path):
    # A 40 wide x 20 tall black image with a red 8x8 block at the stored top-left. Orientation 6
    # means "rotate 90 degrees clockwise to display": the result is 20 wide x 40 tall and the
    # stored top-left corner lands at the displayed top-right.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (40, 20, 3)
    assert out[3, 16, 0] > 0.8 and out[3, 16, 1] < 0.2  # top-right: red
    assert out[3, 3].max() < 0.2  # top-left: black
    assert out[36, 16].max() < 0.2  # bottom-right: black


def test_pil_image_and_arrays_are_accepted():
    grey = np.array([[0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(as_float_rgb(grey), [[[0, 0, 0], [1, 1, 1]]])
    np.testing.assert_allclose(
        as_float_rgb(np.array([[[65535], [0]]], dtype=np.uint16)), [[[1, 1, 1], [0, 0, 0]]]
    )
    rgba = np.array([[[1.0, 1.0, 1.0, 0.0]]], dtype=np.float32)
    np.testing.assert_allclose(as_float_rgb(rgba, background=BG)[0, 0], BG, atol=1e-6)
    pil = Image.fromarray(np.array([[[255, 0, 0]]], dtype=np.uint8))
    np.testing.assert_array_equal(load_image(pil), [[[1, 0, 0]]])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((2, 2, 3), 255.0), "float pixels must lie in [0, 1]"),
        (np.zeros((2, 2, 3), dtype=np.int64), "unsupported dtype"),
        (np.zeros((2, 2, 2), dtype=np.uint8), "expected shape"),
        (np.zeros((0, 5, 3), dtype=np.uint8), "zero width or height"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(ImageLoadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        as_float_rgb(array)


# --------------------------------------------------------------------------------------------------
# Errors


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def _gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def _saved(tmp_path, name: str, fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / name, fmt)
    return (tmp_path / name).read_bytes()


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match=r"nope\.png: no such file"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello, I am text")
    with pytest.raises(ImageLoadError, match=r"notes\.png: not an image file"):
        load_image(tmp_path / "notes.png")


@pytest.mark.parametrize("fmt, name", [("PNG", "cut.png"), ("JPEG", "cut.jpg")])
def test_truncated_file(tmp_path, fmt, name):
    data = _saved(tmp_path, name, fmt)
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ImageLoadError, match=rf"{name.replace('.', '[.]')}: .*truncated or corrupt"
    ):
        load_image(tmp_path / name)


@pytest.mark.parametrize(
    "name, header",
    [
        ("zero.png", _png_header(0, 4)),
        ("zero.bmp", _bmp_header(0, 5)),
        ("zero.gif", _gif_header(3, 0)),
    ],
)
def test_zero_size_header(tmp_path, name, header):
    # Pillow itself refuses these at open ("cannot identify"); owl reads the header to say why.
    (tmp_path / name).write_bytes(header)
    with pytest.raises(
        ImageLoadError, match=rf"{name.replace('.', '[.]')}: .*zero width or height"
    ):
        load_image(tmp_path / name)


def test_over_the_pixel_limit(tmp_path):
    _saved(tmp_path, "big.png", "PNG")
    with pytest.raises(ImageLoadError, match=r"big\.png: 64x64 = 4096 pixels exceeds .* 4000"):
        load_image(tmp_path / "big.png", max_pixels=4000)
    assert load_image(tmp_path / "big.png", max_pixels=4096).shape == (64, 64, 3)


def test_pillow_bomb_warning_and_error_do_not_leak(tmp_path, monkeypatch):
    _saved(tmp_path, "big.png", "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 > 2 * 1000: Pillow would raise
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tmp_path / "big.png", max_pixels=None).shape == (64, 64, 3)
    with pytest.raises(ImageLoadError, match="exceeds the limit of 100"):
        load_image(tmp_path / "big.png", max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


# --------------------------------------------------------------------------------------------------
# Pad and resize


@pytest.mark.parametrize("shape, size", [((37, 53, 3), 32), ((53, 37, 3), 32), ((10, 7, 3), 32)])
def test_official_resize_matches_transformers_owlv2(shape, size):
    pil_processor = pytest.importorskip("transformers").Owlv2ImageProcessorPil
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    processor = pil_processor(size={"height": size, "width": size}, do_normalize=False)
    ref = processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
    ours = resize_square(as_float_rgb(image), size, pad_value=0.0)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # With normalisation, through the whole preprocess().
    ref_norm = pil_processor(size={"height": size, "width": size})(
        images=image, return_tensors="np"
    )
    pixels, _ = preprocess(image, image_size=size, pad_value=0.0)
    np.testing.assert_allclose(pixels, ref_norm["pixel_values"][0].transpose(1, 2, 0), atol=1e-5)


def test_official_resize_with_grey_padding_matches_transformers_pad_then_resize():
    pil_processor = pytest.importorskip("transformers").Owlv2ImageProcessorPil
    image = np.random.default_rng(2).random((30, 45, 3)).astype(np.float32)
    processor = pil_processor()
    padded = processor.pad(image.transpose(2, 0, 1), constant_value=0.5)
    ref = processor.resize(padded, {"height": 24, "width": 24}).transpose(1, 2, 0)
    np.testing.assert_allclose(resize_square(image, 24, pad_value=0.5), ref, atol=1e-5)


def test_tf_resize_matches_torch_bilinear_without_antialias_then_pads():
    torch = pytest.importorskip("torch")
    image = np.random.default_rng(3).random((13, 29, 3))
    # Long side 29 -> 16; short side floor(13 * 16 / 29) = 7; rows 7..15 are padding.
    out = resize_square(image, 16, pad_value=0.5, method="tf")
    chw = torch.tensor(image).permute(2, 0, 1)[None]
    ref = torch.nn.functional.interpolate(
        chw, size=(7, 16), mode="bilinear", align_corners=False, antialias=False
    )[0].permute(1, 2, 0)
    np.testing.assert_allclose(out[:7], ref.numpy(), atol=1e-6)
    np.testing.assert_array_equal(out[7:], 0.5)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown resize method 'bicubic'"):
        resize_square(np.zeros((4, 4, 3)), 8, pad_value=0.0, method="bicubic")


def test_preprocess_normalises_and_records_meta(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("RGB", (20, 10), (255, 128, 0)).save(path)
    pixels, meta = preprocess(path, image_size=8, pad_value=0.5)
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.float32
    assert meta == ImageMeta(width=20, height=10, image_size=8, scale=0.4, path=str(path))
    assert meta.name == "flat.png"
    colour = np.array([1.0, 128 / 255, 0.0])
    np.testing.assert_allclose(pixels[0, 0], (colour - CLIP_MEAN) / CLIP_STD, atol=1e-5)
    # Bottom row is pure padding (the image covers rows 0..3 of 8).
    np.testing.assert_allclose(pixels[7, 0], (0.5 - np.array(CLIP_MEAN)) / CLIP_STD, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Boxes


LANDSCAPE = ImageMeta(width=200, height=100, image_size=128, scale=128 / 200)
PORTRAIT = ImageMeta(width=100, height=300, image_size=128, scale=128 / 300)
SQUARE = ImageMeta(width=64, height=64, image_size=128, scale=2.0)


@pytest.mark.parametrize(
    "meta, cxcywh, xyxy",
    [
        # side = max(200, 100) = 200: cx=100, cy=50, w=h=100 -> (50, 0, 150, 100).
        (LANDSCAPE, (0.5, 0.25, 0.5, 0.5), (50, 0, 150, 100)),
        # side = 300: cx=30, cy=150, w=h=60 -> (0, 120, 60, 180).
        (PORTRAIT, (0.1, 0.5, 0.2, 0.2), (0, 120, 60, 180)),
        # side = 64: cx=16, cy=48, w=h=32 -> (0, 32, 32, 64).
        (SQUARE, (0.25, 0.75, 0.5, 0.5), (0, 32, 32, 64)),
        # side = 200: cx=180, cy=80, w=h=80 -> (140, 40, 220, 120), clipped to (140, 40, 200, 100).
        (LANDSCAPE, (0.9, 0.4, 0.4, 0.4), (140, 40, 200, 100)),
        # side = 200: (-20, -20, 20, 20) clipped to (0, 0, 20, 20).
        (LANDSCAPE, (0.0, 0.0, 0.2, 0.2), (0, 0, 20, 20)),
        # side = 300: a box in the padding to the right of the portrait image collapses to x = 100.
        (PORTRAIT, (0.6, 0.5, 0.2, 0.2), (100, 120, 100, 180)),
    ],
)
def test_boxes_to_pixels(meta, cxcywh, xyxy):
    out = boxes_to_pixels(np.array([cxcywh]), meta)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], xyxy, atol=1e-4)


def test_pixels_to_normalized_inverts_boxes_to_pixels():
    np.testing.assert_allclose(
        pixels_to_normalized(np.array([50.0, 0.0, 150.0, 100.0]), LANDSCAPE),
        (0.5, 0.25, 0.5, 0.5),
        atol=1e-7,
    )
    # Portrait, side 300: (30, 60, 90, 240) -> cx=60/300, cy=150/300, w=60/300, h=180/300.
    np.testing.assert_allclose(
        pixels_to_normalized(np.array([[30.0, 60.0, 90.0, 240.0]]), PORTRAIT),
        [[0.2, 0.5, 0.2, 0.6]],
        atol=1e-7,
    )
    boxes = np.array([[10.0, 5.0, 70.0, 200.0], [0.0, 0.0, 100.0, 300.0]])
    back = boxes_to_pixels(pixels_to_normalized(boxes, PORTRAIT), PORTRAIT)
    np.testing.assert_allclose(back, boxes, atol=1e-4)


def test_exif_orientation_can_be_ignored(tmp_path):
    # A 4x2 (w x h) image stored with orientation 6 (rotate 90 degrees clockwise to view).
    from PIL import Image

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (4, 2), (200, 10, 10)).save(path, exif=exif)
    from owl.ops.image import load_image

    assert load_image(path).shape[:2] == (4, 2)  # as viewed: rotated
    assert load_image(path, exif=False).shape[:2] == (2, 4)  # as stored
