"""The detectors' input contract: uint8 images only (a detector given floats is a caller's mistake
worth naming), converted by ferkit.images like every other image."""

from __future__ import annotations

import numpy as np

from ferkit.errors import FaceDetectorError, ImageError
from ferkit.images import rgb_array


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
    try:
        return rgb_array(array, label="the image")
    except ImageError as exc:
        raise FaceDetectorError(str(exc)) from None

