"""The one image loader: only the allowed formats reach a decoder, and float arrays are read as meant."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ferkit.errors import ImageError, ImageTooLarge
from ferkit.images import FORMAT_NAMES, image_size, load_image

ALLOWED = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "AVIF", "PPM", "MPO")
REFUSED = ("EPS", "ICO", "PCX", "SGI", "TGA", "DDS", "IM", "QOI", "JPEG2000")


def encoded(fmt: str, size: tuple[int, int] = (16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 60)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ALLOWED)
def test_the_photo_formats_people_have_are_read(fmt):
    data = encoded(fmt)
    assert load_image(data).shape == (12, 16, 3)
    assert image_size(data) == (16, 12)


@pytest.mark.parametrize("fmt", REFUSED)
def test_other_formats_never_reach_a_decoder_whatever_the_file_is_called(fmt, tmp_path):
    path = tmp_path / "holiday.jpg"  # the name says JPEG; the magic bytes decide
    path.write_bytes(encoded(fmt))
    for source in (path, path.read_bytes()):
        with pytest.raises(ImageError, match=f"format ferkit does not read \\(supported: {FORMAT_NAMES}\\)"):
            load_image(source)
        with pytest.raises(ImageError, match="format ferkit does not read"):
            image_size(source)


def test_too_many_pixels_is_its_own_error_type():
    big = io.BytesIO()
    Image.new("L", (3000, 3000)).save(big, "PNG")
    with pytest.raises(ImageTooLarge, match="megapixels"):
        load_image(big.getvalue(), max_pixels=1_000_000)


def test_a_float_image_that_overshoots_1_after_a_resize_is_still_read_as_0_to_1():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    unit = rgb.astype(np.float64) / 255.0
    overshoot = unit * 1.0001  # what a bicubic resize does near bright edges
    overshoot[0, 0, 0] = 1.08
    overshoot[1, 1, 1] = -0.03
    got = load_image(overshoot)
    assert np.abs(got.astype(int) - rgb.astype(int))[2:, 2:].max() <= 1
    assert got[0, 0, 0] == 255 and got[1, 1, 1] == 0  # clipped
    assert load_image(unit * 255.0).max() == rgb.max()  # a 0..255 float image stays 0..255
