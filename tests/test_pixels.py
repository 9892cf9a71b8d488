"""ferkit.pixels gives OpenCV's bytes: the photo pipeline's figures were measured with OpenCV, and the
core install runs without it. Compared with opencv-python-headless (the video extra) byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit import pixels

cv2 = pytest.importorskip("cv2")

INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _images(seed: int, count: int):
    """Noise and smooth images, gray and colour, 1 to 300 pixels a side."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        height, width = (int(v) for v in rng.integers(1, 300, 2))
        shape = (height, width) if k % 2 else (height, width, 3)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        if k % 3 == 0:
            image = cv2.GaussianBlur(image, (0, 0), 3)
        yield rng, image


def _sizes(rng: np.random.Generator, image: np.ndarray):
    height, width = image.shape[:2]
    yield tuple(int(v) for v in rng.integers(1, 300, 2))  # any: enlarging, shrinking, or one of each
    yield max(1, width // 2), max(1, height // 2)  # OpenCV's exact 2x2 path when both divide
    yield max(1, width // 3), max(1, height // 3)
    yield width * 2, height * 3
    yield 48, 48


@pytest.mark.parametrize("resample", list(INTERPOLATION))
def test_resize_gives_opencvs_bytes(resample: str) -> None:
    for rng, image in _images(seed=1, count=120):
        for size in _sizes(rng, image):
            ours = pixels.resize(image, size, resample=resample)
            theirs = cv2.resize(image, size, interpolation=INTERPOLATION[resample])
            assert ours.shape == theirs.shape and np.array_equal(ours, theirs), (image.shape, size)


def test_resize_of_a_large_photo_for_detection_gives_opencvs_bytes() -> None:
    rng = np.random.default_rng(2)
    photo = cv2.GaussianBlur(rng.integers(0, 256, (3024, 4032, 3), dtype=np.uint8), (0, 0), 2)
    for size in ((1280, 960), (2016, 1512), (640, 480)):
        assert np.array_equal(pixels.resize(photo, size, resample="area"),
                              cv2.resize(photo, size, interpolation=cv2.INTER_AREA)), size


def test_warp_rotation_gray_and_pad_give_opencvs_bytes() -> None:
    for rng, image in _images(seed=3, count=150):
        height, width = image.shape[:2]
        center = tuple(float(v) for v in rng.uniform(-20, max(height, width) + 20, 2))
        angle, scale = float(rng.uniform(-40, 40)), float(rng.uniform(0.1, 3))
        matrix = cv2.getRotationMatrix2D(center, angle, scale)
        assert np.array_equal(pixels.rotation_matrix(center, angle, scale), matrix)
        size = tuple(int(v) for v in rng.integers(1, 200, 2))
        expected = warp(image, matrix, size)
        assert np.array_equal(pixels.warp_affine(image, matrix, size), expected), (image.shape, size)
        top, bottom, left, right = (int(v) for v in rng.integers(0, 30, 4))
        assert np.array_equal(pixels.pad(image, top, bottom, left, right),
                              cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE))
        assert np.array_equal(pixels.pad(image, top, bottom, left, right, border="constant"),
                              cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT))
        if image.ndim == 3:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            assert np.array_equal(pixels.gray(image), gray)
            expected = warp(gray, matrix, size)
            assert np.array_equal(pixels.warp_affine(image, matrix, size, to_gray=True), expected)


def test_resize_many_gives_each_image_opencvs_bytes() -> None:
    """MTCNN's patches: many sizes at once (shrinking by fractional and whole factors, enlarging)."""
    rng = np.random.default_rng(4)
    sizes = [*rng.integers(5, 160, (70, 2)), (96, 96)]
    patches = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in sizes]
    for side in (24, 48):
        resized = pixels.resize_many(patches, (side, side), resample="area")
        assert resized.shape == (len(patches), side, side, 3)
        for patch, ours in zip(patches, resized, strict=True):
            theirs = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA)
            assert np.array_equal(ours, theirs), patch.shape


def test_two_and_four_channels_and_a_near_singular_warp_give_opencvs_bytes() -> None:
    rng = np.random.default_rng(5)
    for channels in (2, 4):
        image = rng.integers(0, 256, (102, 110, channels), dtype=np.uint8)
        for size in ((55, 51), (51, 55), (200, 160)):
            for resample, flag in INTERPOLATION.items():
                assert np.array_equal(pixels.resize(image, size, resample=resample),
                                      cv2.resize(image, size, interpolation=flag)), (channels, size, resample)
    gray = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    for scale in (1e-3, 1e-5, 1e-7):  # coordinates beyond int32: OpenCV saturates, then wraps
        matrix = cv2.getRotationMatrix2D((50, 50), 10, scale)
        assert np.array_equal(pixels.warp_affine(gray, matrix, (64, 64)), warp(gray, matrix, (64, 64))), scale


def test_resize_refuses_an_empty_target() -> None:
    with pytest.raises(ValueError, match="at least 1x1"):
        pixels.resize(np.zeros((4, 4), np.uint8), (0, 3), resample="area")
    with pytest.raises(ValueError, match="at least 1x1"):
        pixels.warp_affine(np.zeros((4, 4), np.uint8), np.eye(2, 3), (3, 0))
    assert pixels.resize_many([], (24, 24), resample="area").shape == (0, 24, 24)
