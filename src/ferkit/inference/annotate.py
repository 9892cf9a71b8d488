"""Draw predictions onto an image: a box per face, its top emotion, and all 8 probabilities.

Drawing uses Pillow (`PIL.ImageDraw`) and the scalable font bundled inside Pillow (no font file, no
OpenCV); sizes scale with the image, so labels stay readable on both a 640x480 video frame and a
12-megapixel photo. The input array is never modified: each function returns a new RGB array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ferkit.emotions import EMOTIONS
from ferkit.errors import FerkitError
from ferkit.images import rgb_array

# One colour per emotion (RGB), readable on photos.
COLORS: dict[str, tuple[int, int, int]] = {
    "neutral": (200, 200, 200), "happiness": (255, 210, 0), "surprise": (0, 200, 255),
    "sadness": (60, 110, 255), "anger": (255, 40, 40), "disgust": (60, 200, 60),
    "fear": (190, 80, 255), "contempt": (255, 130, 30),
}


class Drawable(Protocol):
    box: tuple[int, int, int, int]
    probabilities: np.ndarray


# Font pixels per unit of `Style.scale`: Pillow's font at this size matches the width and cap height
# OpenCV's Hershey font had at the same scale, so labels take the room (and crowd) as before.
PX_PER_SCALE = 36


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled Aileron Regular at `size` pixels (a TrueType font inside Pillow >= 10.1, so no
    font file and nothing downloaded); cached, as each load decodes the font anew."""
    try:
        return ImageFont.load_default(size=size)
    except ImportError:  # a Pillow built without FreeType has only a tiny bitmap font
        raise FerkitError("ferkit's drawing needs Pillow built with FreeType (its scalable font)") from None


def _text_box(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int, int]:
    """(width, height, baseline) of `text`'s strip as `_text` draws it: a margin either side of the
    text, the font's full ascent over the baseline and its descent under it (the same height for
    every text of one font, so labels line up)."""
    ascent, descent = font.getmetrics()
    right = max(font.getbbox(text, anchor="ls")[2], font.getlength(text)) if text else 0
    return int(np.ceil(right)) + 2 * _margin(font), ascent + descent, descent


def _margin(font: ImageFont.FreeTypeFont) -> int:
    return max(1, int(font.size) // 10)


def _text(canvas: ImageDraw.ImageDraw, text: str, xy: tuple[int, int], font: ImageFont.FreeTypeFont,
          color: tuple[int, int, int], background: tuple[int, int, int] | None = (0, 0, 0)) -> None:
    """`text` in its strip (`_text_box`) whose top-left corner is `xy`, on `background` if any."""
    width, height, base = _text_box(font, text)
    x, y = xy
    if background is not None:
        canvas.rectangle((x, y, x + width - 1, y + height - 1), fill=background)
    canvas.text((x + _margin(font), y + height - base), text, fill=color, font=font, anchor="ls")


def draw_text(image: np.ndarray, text: str, xy: tuple[int, int], color: tuple[int, int, int],
              background: tuple[int, int, int] | None = None, style: Style | None = None) -> np.ndarray:
    """A copy of the RGB image with `text` drawn in `color`, the top-left corner of its strip at `xy`
    (its size: `style.text_size(text)`; `style` defaults to the image's `Style.for_image`), on
    `background` if given: the routine the face labels are drawn with, for callers' own captions."""
    style = style or Style.for_image(image.shape[1], image.shape[0])
    picture = _picture(image)
    _text(ImageDraw.Draw(picture), text, xy, style.font, color, background)
    return np.array(picture)


Rect = tuple[int, int, int, int]  # x, y, width, height


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


SIDES = ("right", "left", "below", "above")


def place_panel(box: Rect, size: tuple[int, int], image_size: tuple[int, int], occupied: Sequence[Rect],
                gap: int = 2, sides: Sequence[str] = SIDES) -> Rect | None:
    """Where a (width, height) rectangle goes beside `box`: the first of `sides` (right, left, below,
    above) that lies inside the image and covers no rectangle in `occupied` (faces, labels, other
    panels); None when there is none (on crowded photos the numbers are still in the CSV)."""
    x, y, w, h = box
    pw, ph = size
    width, height = image_size
    spots = {"right": (x + w + gap, y), "left": (x - pw - gap, y), "below": (x, y + h + gap),
             "above": (x, y - ph - gap)}
    for side in sides:
        px, py = spots[side]
        rect = (px, py, pw, ph)
        inside = px >= 0 and py >= 0 and px + pw <= width and py + ph <= height
        if inside and not any(_overlaps(rect, other) for other in occupied):
            return rect
    return None


@dataclass(frozen=True)
class Placement:
    """Where one face's label and probability chart go (chart None: no free spot). `full_label` is
    what the face would say with room; `label` is what fits (its number alone on a crowded photo)."""

    label: str
    label_rect: Rect
    panel_rect: Rect | None
    full_label: str = ""

    @property
    def shortened(self) -> bool:
        return self.label != self.full_label


@dataclass(frozen=True)
class Style:
    """Sizes scaled to the image, so labels read alike on a video frame and a 12-megapixel photo."""

    thickness: int
    scale: float
    line: int
    text_w: int
    bar_w: int

    @classmethod
    def for_image(cls, width: int, height: int) -> Style:
        unit = max(min(height, width) / 480.0, 0.6)
        return cls(max(1, int(round(2 * unit))), 0.5 * unit, int(round(14 * unit)), int(round(70 * unit)),
                   int(round(60 * unit)))

    @property
    def panel_size(self) -> tuple[int, int]:
        return self.text_w + self.bar_w, len(EMOTIONS) * self.line + 4

    @property
    def font(self) -> ImageFont.FreeTypeFont:
        """The labels' font, the one their sizes are measured with."""
        return _font(max(1, round(self.scale * PX_PER_SCALE)))

    @property
    def small_font(self) -> ImageFont.FreeTypeFont:
        """The probability charts' font, a little smaller than the labels'."""
        return _font(max(1, round(0.75 * self.scale * PX_PER_SCALE)))  # fits in `text_w`

    def text_metrics(self, text: str) -> tuple[int, int, int]:
        """(width, height, baseline) of a label, background strip included as `_text` draws it."""
        return _text_box(self.font, text)

    def text_size(self, text: str) -> tuple[int, int]:
        return self.text_metrics(text)[:2]


def layout(faces: Sequence[Drawable], image_size: tuple[int, int], style: Style,
           probabilities: bool = True, labels: Sequence[str] | None = None) -> list[Placement]:
    """Labels first (above the box, else below; on a crowded photo only the face number, and inside
    the box when even that has no free spot), then charts: nothing covers a face, a label or
    another chart."""
    occupied: list[Rect] = [tuple(int(v) for v in f.box) for f in faces]
    placed_labels = []
    for index, face in enumerate(faces):
        box = occupied[index]
        probs = np.asarray(face.probabilities, dtype=float)
        top = int(np.argmax(probs))
        track = getattr(face, "track", None)  # video: the track id, which stays with the face
        number = getattr(face, "index", None)  # ferkit's one numbering (Face.index), else its place
        ident = f"#{track}" if track is not None else f"{number if number is not None else index + 1}"
        full = labels[index] if labels is not None else f"{ident}: {EMOTIONS[top]} {probs[top]:.0%}"
        texts = (full, full.split()[0].rstrip(":"))  # the number alone where the full label has no room
        for text in texts:
            rect = place_panel(box, style.text_size(text), image_size, occupied, gap=style.thickness,
                               sides=("above", "below"))
            if rect is not None:
                break
        else:  # no free spot: inside the box, clear of its edge
            rect = (box[0] + style.thickness, box[1] + style.thickness, *style.text_size(text))
        occupied.append(rect)
        placed_labels.append((text, rect, full))
    placements = []
    for face, (text, rect, full) in zip(faces, placed_labels, strict=True):
        panel = None
        if probabilities:
            panel = place_panel(tuple(int(v) for v in face.box), style.panel_size, image_size, occupied,
                                gap=style.thickness + 2)
            if panel is not None:
                occupied.append(panel)
        placements.append(Placement(text, rect, panel, full))
    return placements


def draw(image: np.ndarray, faces: Sequence[Drawable], *, probabilities: bool = False) -> np.ndarray:
    """A photo with its faces drawn, for people to read: every face boxed in its emotion's colour and
    labelled with its number, emotion and confidence. Where a label has no room on the photo (a
    crowded group), the face carries its number and its label goes into a key beside the photo; a
    legend of the colours closes the key. `probabilities` adds each face's 8-emotion chart where it
    fits. (Video frames keep their size: they are drawn by `draw_faces`, with no key.)"""
    picture, placements = _draw(image, faces, probabilities, None, None)
    keyed = sorted(((p.full_label, face) for p, face in zip(placements, faces, strict=True) if p.shortened),
                   key=lambda item: getattr(item[1], "index", None) or 0)  # in the faces' number order
    return _with_key(picture, keyed, Style.for_image(*picture.size))


def draw_faces(image: np.ndarray, faces: Sequence[Drawable], probabilities: bool = True,
               labels: Sequence[str] | None = None, color: tuple[int, int, int] | None = None) -> np.ndarray:
    """A copy of the RGB image, its size kept, with each face's box and label drawn; with
    `probabilities`, a small bar chart of all 8 emotions beside each box where it fits (`layout`).
    `labels` replaces the default label texts (number, emotion, confidence); `color` draws every box
    and label in one colour instead of its emotion's. The drawing routine under `draw`, video frames
    and the web app."""
    return np.array(_draw(image, faces, probabilities, labels, color)[0])  # writable, like its input


def _draw(image: np.ndarray, faces: Sequence[Drawable], probabilities: bool, labels: Sequence[str] | None,
          color: tuple[int, int, int] | None) -> tuple[Image.Image, list[Placement]]:
    picture = _picture(image)  # Pillow's own copy: the caller's array is never drawn on
    canvas = ImageDraw.Draw(picture)
    width, height = picture.size
    style = Style.for_image(width, height)
    line, small = style.line, style.small_font
    placements = layout(faces, (width, height), style, probabilities, labels)
    for face, placed in zip(faces, placements, strict=True):
        x, y, w, h = (int(v) for v in face.box)
        probs = np.asarray(face.probabilities, dtype=float)
        face_color = color or COLORS[EMOTIONS[int(np.argmax(probs))]]
        # inside the face's box, so the gap `layout` leaves between box and label stays clear
        corner = (x + max(w, 1) - 1, y + max(h, 1) - 1)  # Pillow refuses a box of no width
        canvas.rectangle((x, y, *corner), outline=face_color, width=style.thickness)
        _text(canvas, placed.label, placed.label_rect[:2], style.font, face_color)
        if placed.panel_rect is None:
            continue
        px, py0, pw, ph = placed.panel_rect
        # one dark backdrop for the chart: the rows are closer than the font's full line height
        canvas.rectangle((px, py0, px + pw - 1, py0 + ph - 1), fill=(0, 0, 0))
        for k, (name, p) in enumerate(zip(EMOTIONS, probs, strict=True)):
            py = py0 + (k + 1) * line  # the row's baseline
            text = f"{name[:4]} {p:.2f}"
            _, text_h, base = _text_box(small, text)
            _text(canvas, text, (px, py - text_h + base), small, (255, 255, 255), background=None)
            bx = px + style.text_w
            canvas.rectangle((bx, py - line + 4, bx + int(style.bar_w * p), py - 2), fill=COLORS[name])
    return picture, placements


def _picture(image: np.ndarray) -> Image.Image:
    """A Pillow RGB copy of the image array to draw on (gray, RGBA and float arrays converted by
    ferkit.images, the one loader; the caller's array is never touched)."""
    return Image.fromarray(rgb_array(np.asarray(image)))


def _with_key(image: Image.Image, keyed: Sequence[tuple[str, Drawable]], style: Style) -> np.ndarray:
    """The image with a white column on its right: the labels that had no room on it (in the face's
    colour), then the legend of the emotion colours."""
    entries = [(label, COLORS[EMOTIONS[int(np.argmax(face.probabilities))]]) for label, face in keyed]
    lines = [*entries, ("", None), *((name, COLORS[name]) for name in EMOTIONS)]
    line = style.line + 4
    swatch = style.line
    width = max(style.text_size(text)[0] for text, _ in lines if text) + swatch + 3 * style.line
    image_width, height = image.size
    picture = Image.new("RGB", (image_width + width, max(height, (len(lines) + 1) * line)), (255, 255, 255))
    picture.paste(image, (0, 0))
    canvas = ImageDraw.Draw(picture)
    x = image_width + style.line
    for k, (text, color) in enumerate(lines, start=1):
        if not text:
            continue
        y = k * line  # the entry's baseline
        canvas.rectangle((x, y - swatch + 2, x + swatch - 4, y - 2), fill=color)
        _, text_h, base = style.text_metrics(text)
        _text(canvas, text, (x + swatch, y - text_h + base), style.font, (0, 0, 0), background=None)
    return np.array(picture)
