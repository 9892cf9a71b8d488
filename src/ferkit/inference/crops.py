"""Face crops in any form a user has -> the classifier's input: uint8 (N, 48, 48)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ImageError
from ferkit.images import Color, load_image, to_face
from ferkit.settings import FACE_SIDE


def prepare_faces(faces: np.ndarray | Sequence[Any] | str | Path | bytes, color: Color = "rgb") -> np.ndarray:
    """Faces in any of the accepted forms -> uint8 (N, 48, 48), C-contiguous.

    Accepted: a uint8 array (N, 48, 48) or (N, 1, 48, 48) (used as is), a single face (H, W) or
    (H, W, 3), an array (N, H, W) / (N, H, W, 3) of other-sized crops (any strides: flipped or
    sliced views are fine), a single path or encoded bytes (one face image), or a list whose items
    are arrays, PIL images, paths or bytes (each converted to gray and resized). An empty batch
    (N, 0, 0), pixels that are NaN or infinite, or anything else get an ImageError."""
    if isinstance(faces, str | Path | bytes | bytearray):
        faces = [faces]  # one image file, not a sequence of characters
    if isinstance(faces, np.ndarray):
        if faces.ndim == 4 and faces.shape[1] == 1:
            faces = faces[:, 0]
        if faces.size == 0 and faces.ndim >= 2 and (faces.shape[-1] == 0 or faces.shape[-2] == 0):
            raise ImageError(f"faces: the crops have no pixels (shape {faces.shape})")
        if faces.ndim == 3 and faces.shape[1:] == (FACE_SIDE, FACE_SIDE) and faces.dtype == np.uint8:
            return np.ascontiguousarray(faces)
        if faces.ndim == 2 or (faces.ndim == 3 and faces.shape[2] in (3, 4)
                               and faces.shape[1:] != (FACE_SIDE, FACE_SIDE)):
            return to_face(faces, color)[None]
        if faces.ndim in (3, 4):
            faces = list(faces)
        else:
            raise ImageError(f"faces: expected (N, 48, 48) uint8 or a list of crops, got shape {faces.shape}")
    out = np.zeros((len(faces), FACE_SIDE, FACE_SIDE), dtype=np.uint8)
    for i, item in enumerate(faces):
        arr = item if isinstance(item, np.ndarray) else load_image(item)
        try:
            out[i] = to_face(np.ascontiguousarray(arr), color if isinstance(item, np.ndarray) else "rgb")
        except ImageError as exc:
            raise ImageError(f"face {i}: {exc}") from None
    return out
