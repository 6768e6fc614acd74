"""Tests for owl/inference/draw.py: box outlines, tags, colours and image handling."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from owl.inference.detections import Detections
from owl.inference.draw import PALETTE, colour_for, draw_detections, text_colour_on

GREY = (128, 128, 128)


def grey_image(width: int = 100, height: int = 80) -> np.ndarray:
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def one_box(xyxy, class_id: int = 0, label: str = "cat", **metadata) -> Detections:
    return Detections(
        xyxy=[xyxy], confidence=[0.9], class_id=[class_id], labels=[label], metadata=metadata
    )


def test_box_edges_take_the_query_colour_and_size_is_unchanged():
    image = grey_image()
    out = draw_detections(image, one_box([20, 30, 60, 70], class_id=1))
    assert out.size == (100, 80) and out.mode == "RGB"
    pixels = np.asarray(out)
    colour = PALETTE[1]
    # Shorter side 80 -> line width max(1, round(80 / 200)) = 1; box pixels: 20..59 x 30..69.
    for x, y in [(20, 50), (59, 50), (40, 30), (40, 69)]:
        assert tuple(pixels[y, x].tolist()) == colour, (x, y)
    for x, y in [(21, 50), (58, 50), (40, 50), (19, 50), (60, 50), (40, 70)]:
        assert tuple(pixels[y, x].tolist()) == GREY, (x, y)
    assert tuple(image[30, 20].tolist()) == GREY  # the caller's array is untouched


def test_line_width_scales_with_image_size():
    out = np.asarray(draw_detections(grey_image(1000, 800), one_box([100, 300, 600, 700])))
    # Shorter side 800 -> line width round(800 / 200) = 4: columns 100..103 are drawn, 104 is not.
    assert all(tuple(out[500, x].tolist()) == PALETTE[0] for x in range(100, 104))
    assert tuple(out[500, 104].tolist()) == GREY


def test_tag_sits_above_the_box_with_readable_text():
    # PALETTE[0] is light (luma 181): black text. PALETTE[1] is dark (luma 87): white text.
    assert text_colour_on(PALETTE[0]) == (0, 0, 0) and text_colour_on(PALETTE[1]) == (255, 255, 255)
    luma = np.array([0.299, 0.587, 0.114])
    for class_id, text_is_dark in [(0, True), (1, False)]:
        box = [40, 60, 150, 150]
        out = np.asarray(draw_detections(grey_image(200, 160), one_box(box, class_id)))
        band = out[30:60, 40:150].reshape(-1, 3)  # just above the box's top edge (y = 60)
        assert colour_for(class_id) in {tuple(p) for p in band.tolist()}  # the tag fill
        assert tuple(out[62, 100].tolist()) == GREY  # nothing drawn inside the box
        text_luma = band @ luma  # anti-aliased glyphs: the extreme pixels are the text colour
        if text_is_dark:
            assert text_luma.min() < 40
        else:
            assert text_luma.max() > 215


def test_tag_is_kept_inside_the_image_at_the_top_right_corner():
    # No room above (y0 = 0) and the tag is wider than the 10 pixels left of x = 90: the tag is
    # drawn inside the box's top edge and shifted left so it ends at the image's right border.
    out = np.asarray(draw_detections(grey_image(), one_box([90, 0, 100, 10], label="a long label")))
    assert tuple(out[0, 70].tolist()) == PALETTE[0]  # tag fill, left of the box
    assert tuple(out[0, 99].tolist()) == PALETTE[0]


def test_float_input_path_input_and_out_path(tmp_path):
    det = one_box([10, 30, 50, 45], width=60, height=50)
    from_float = draw_detections(np.full((50, 60, 3), 0.5, dtype=np.float32), det)
    assert from_float.size == (60, 50)
    assert tuple(np.asarray(from_float)[38, 10].tolist()) == PALETTE[0]  # left edge
    assert tuple(np.asarray(from_float)[38, 30].tolist()) == GREY  # round(0.5 * 255) = 128
    src = tmp_path / "in.png"
    Image.fromarray(grey_image(60, 50)).save(src)
    out_path = tmp_path / "out.png"
    drawn = draw_detections(src, det, out_path=out_path)
    np.testing.assert_array_equal(np.asarray(Image.open(out_path)), np.asarray(drawn))
    assert tuple(np.asarray(drawn)[38, 10].tolist()) == PALETTE[0]


def test_metadata_size_mismatch_is_an_error():
    with pytest.raises(
        ValueError, match="detections are for a 50x80 image but the image is 100x80"
    ):
        draw_detections(grey_image(), one_box([0, 0, 5, 5], width=50, height=80))


def test_empty_detections_leave_the_image_as_is():
    out = draw_detections(grey_image(), Detections.empty())
    np.testing.assert_array_equal(np.asarray(out), grey_image())


def test_palette_cycles_and_colours_are_distinct():
    assert len(set(PALETTE)) == len(PALETTE)
    assert colour_for(len(PALETTE) + 3) == colour_for(3)
