"""Input images for detection and alignment: one converter, so every caller accepts the same inputs."""

from __future__ import annotations

import cv2
import numpy as np

from ferkit.errors import FaceDetectorError


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Return `image` as a contiguous HxWx3 uint8 RGB array.

    Accepts HxW or HxWx1 gray (repeated to 3 channels), HxWx3 RGB, and HxWx4 RGBA (alpha dropped:
    a transparent background is whatever colour the pixels hold, as every viewer but the browser shows).
    """
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise FaceDetectorError(
            f"expected a uint8 image (0..255), got dtype {array.dtype}; "
            "convert first, e.g. (img * 255).clip(0, 255).astype(np.uint8) for floats in 0..1"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_GRAY2RGB)
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, :3]
    else:
        raise FaceDetectorError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise FaceDetectorError(f"the image is empty (shape {array.shape})")
    return np.ascontiguousarray(array)


def to_gray(image: np.ndarray) -> np.ndarray:
    """Return `image` as HxW uint8 gray (ITU-R 601 luma, as PIL's 'L' that made FERPlus)."""
    array = np.asarray(image)
    if array.ndim == 2 and array.dtype == np.uint8 and array.size:
        return array
    return cv2.cvtColor(to_rgb(array), cv2.COLOR_RGB2GRAY)
