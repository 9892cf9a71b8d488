"""Draw predictions onto an image: a box per face, its top emotion, and all 8 probabilities.

Drawing uses OpenCV on the RGB array; sizes scale with the image, so labels stay readable on
both a 640x480 video frame and a 12-megapixel photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ferkit.emotions import EMOTIONS

# One colour per emotion (RGB), readable on photos.
COLORS: dict[str, tuple[int, int, int]] = {
    "neutral": (200, 200, 200), "happiness": (255, 210, 0), "surprise": (0, 200, 255),
    "sadness": (60, 110, 255), "anger": (255, 40, 40), "disgust": (60, 200, 60),
    "fear": (190, 80, 255), "contempt": (255, 130, 30),
}


class Drawable(Protocol):
    box: tuple[int, int, int, int]
    probabilities: np.ndarray


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int],
          thickness: int, background: tuple[int, int, int] | None = (0, 0, 0)) -> None:
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = org
    if background is not None:
        cv2.rectangle(img, (x, y - th - base), (x + tw, y + base), background, -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def draw_faces(image: np.ndarray, faces: Sequence[Drawable], probabilities: bool = True) -> np.ndarray:
    """A copy of the RGB image with each face's box and label drawn; with `probabilities`, a
    small bar chart of all 8 emotions beside each box (skipped if there is no room)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    height, width = out.shape[:2]
    unit = max(min(height, width) / 480.0, 0.6)
    thickness = max(1, int(round(2 * unit)))
    scale = 0.5 * unit
    line = int(round(14 * unit))
    for index, face in enumerate(faces):
        x, y, w, h = (int(v) for v in face.box)
        probs = np.asarray(face.probabilities, dtype=float)
        top = int(np.argmax(probs))
        color = COLORS[EMOTIONS[top]]
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thickness)
        label = f"{index}: {EMOTIONS[top]} {probs[top]:.0%}"
        _text(out, label, (x, max(line, y - thickness - 2)), scale, color, max(1, thickness - 1))
        if not probabilities:
            continue
        bar_w = int(round(60 * unit))
        panel_w = int(round(70 * unit)) + bar_w
        px = x + w + thickness + 2 if x + w + panel_w < width else x - panel_w - thickness - 2
        if px < 0:
            continue
        for k, (name, p) in enumerate(zip(EMOTIONS, probs, strict=True)):
            py = y + (k + 1) * line
            if py > height:
                break
            _text(out, f"{name[:4]} {p:.2f}", (px, py), scale * 0.8, (255, 255, 255), 1)
            bx = px + int(round(70 * unit))
            cv2.rectangle(out, (bx, py - line + 4), (bx + int(bar_w * p), py - 2), COLORS[name], -1)
    return out
