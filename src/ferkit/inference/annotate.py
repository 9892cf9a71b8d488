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


Rect = tuple[int, int, int, int]  # x, y, width, height


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def place_panel(box: Rect, size: tuple[int, int], image_size: tuple[int, int], occupied: Sequence[Rect],
                gap: int = 2) -> Rect | None:
    """Where a (width, height) panel goes beside `box`: right, left, below or above it, the first
    spot inside the image that covers no face box and no earlier panel; None when there is none
    (on crowded photos the numbers are still in the CSV)."""
    x, y, w, h = box
    pw, ph = size
    width, height = image_size
    for px, py in ((x + w + gap, y), (x - pw - gap, y), (x, y + h + gap), (x, y - ph - gap)):
        rect = (px, py, pw, ph)
        inside = px >= 0 and py >= 0 and px + pw <= width and py + ph <= height
        if inside and not any(_overlaps(rect, other) for other in occupied):
            return rect
    return None


def draw_faces(image: np.ndarray, faces: Sequence[Drawable], probabilities: bool = True) -> np.ndarray:
    """A copy of the RGB image with each face's box and label drawn; with `probabilities`, a
    small bar chart of all 8 emotions beside each box where it fits without covering a face or
    another chart (`place_panel`)."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    height, width = out.shape[:2]
    unit = max(min(height, width) / 480.0, 0.6)
    thickness = max(1, int(round(2 * unit)))
    scale = 0.5 * unit
    line = int(round(14 * unit))
    text_w, bar_w = int(round(70 * unit)), int(round(60 * unit))
    panel_size = (text_w + bar_w, len(EMOTIONS) * line + 4)
    # face boxes and the label strip above each: no chart may cover them
    label_h = line + thickness
    occupied: list[Rect] = [(int(f.box[0]), int(f.box[1]) - label_h, int(f.box[2]), int(f.box[3]) + label_h)
                            for f in faces]
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
        panel = place_panel((x, y, w, h), panel_size, (width, height), occupied, gap=thickness + 2)
        if panel is None:
            continue
        occupied.append(panel)
        px, py0 = panel[0], panel[1]
        for k, (name, p) in enumerate(zip(EMOTIONS, probs, strict=True)):
            py = py0 + (k + 1) * line
            _text(out, f"{name[:4]} {p:.2f}", (px, py), scale * 0.8, (255, 255, 255), 1)
            bx = px + text_w
            cv2.rectangle(out, (bx, py - line + 4), (bx + int(bar_w * p), py - 2), COLORS[name], -1)
    return out
