"""A face found in an image or a frame: the one record every front door returns (`Face`), its one row
schema (`ROW_TYPES`: what `ferkit predict --csv`, `ferkit video --csv`, `ferkit batch` write), and
what a face detector hands over (`DetectionLike`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ferkit.emotions import EMOTIONS
from ferkit.inference.scores import EmotionScores

# Every column a face row can have, with its type; each writer takes the columns that apply to it.
ROW_TYPES: dict[str, type] = {
    "file": str, "frame": int, "time_s": float, "face": int, "track": int,
    "x": int, "y": int, "width": int, "height": int, "emotion": str, "confidence": float,
    **dict.fromkeys(EMOTIONS, float), "error": str,
}
FACE_FIELDS = ["x", "y", "width", "height", "emotion", "confidence", *EMOTIONS]
PREDICT_COLUMNS = ["file", "face", *FACE_FIELDS, "error"]  # one row per face of a photo
VIDEO_COLUMNS = ["frame", "time_s", "face", "track", *FACE_FIELDS]  # one row per face per frame
DIGITS = 6  # probabilities in rows: enough to rank, short enough to read


def face_fields(box: Sequence[int], probabilities: np.ndarray) -> dict[str, Any]:
    """A face's columns in every flat row (FACE_FIELDS order): its box, top emotion, confidence and
    the 8 probabilities by name."""
    x, y, w, h = (int(v) for v in box)
    p = np.asarray(probabilities, dtype=float)
    return {"x": x, "y": y, "width": w, "height": h, "emotion": EMOTIONS[int(np.argmax(p))],
            "confidence": round(float(p.max()), DIGITS),
            **{e: round(float(v), DIGITS) for e, v in zip(EMOTIONS, p, strict=True)}}


class DetectionLike(Protocol):
    """What a face detector returns (ferkit.faces.Detection satisfies it)."""

    box: tuple[int, int, int, int]
    confidence: float
    landmarks: dict[str, tuple[float, float]] | None

def reading_order(faces: Sequence[Any]) -> list[Any]:
    """Faces in the order people read a group photo: rows top to bottom (a face whose centre is
    within half a face height of a row's first face joins that row), each row left to right. The
    order every front door numbers faces in, from 1 (`Face.index`)."""
    rows: list[list[Any]] = []
    for face in sorted(faces, key=lambda f: f.box[1] + f.box[3] / 2):
        first = rows[-1][0] if rows else None
        if first is not None and (face.box[1] + face.box[3] / 2) - (first.box[1] + first.box[3] / 2) \
                <= first.box[3] / 2:
            rows[-1].append(face)
        else:
            rows.append([face])
    return [face for row in rows for face in sorted(row, key=lambda f: f.box[0])]


def number_faces(faces: list[Face]) -> list[Face]:
    """Set each face's `index` to its place in reading order, from 1; the list keeps its order."""
    for number, face in enumerate(reading_order(faces), start=1):
        face.index = number
    return faces


@dataclass
class Face(EmotionScores):
    """One detected face: where it is and how it was classified.

    `box` is (x, y, width, height) in the input image's pixels (after EXIF rotation);
    `probabilities` are 8 floats in EMOTIONS order; `crop` is the aligned 48x48 uint8 face the
    classifier saw (left out of `to_json`). `index` is the face's number in its image or frame: from 1,
    in reading order (rows top to bottom, each left to right), the same in every front door; in a
    video, `frame` and `time_s` say where, and `track` follows the same face."""

    box: tuple[int, int, int, int]
    probabilities: np.ndarray
    crop: np.ndarray = field(repr=False)
    landmarks: dict[str, tuple[float, float]] | None = None
    detection_confidence: float | None = None
    track: int | None = None  # in a video or live stream: the same number for the same face
    index: int | None = None
    frame: int | None = None  # 0-based frame number in a video
    time_s: float | None = None  # frame / fps; None if the video does not say its frame rate

    @property
    def size(self) -> int:
        """The shorter side of the box, in pixels: what a minimum face size compares against."""
        return min(int(self.box[2]), int(self.box[3]))

    def __repr__(self) -> str:
        top = sorted(self.scores.items(), key=lambda item: -item[1])[:3]
        x, y, w, h = (int(v) for v in self.box)
        track = "" if self.track is None else f", track {self.track}"
        return (f"Face({self.emotion} {self.confidence:.0%} at x={x} y={y} {w}x{h}{track}; top 3: "
                + ", ".join(f"{name} {p:.0%}" for name, p in top) + ")")

    def to_row(self, **context: Any) -> dict[str, Any]:
        """The face's flat row (ROW_TYPES columns): where it is in its video when that applies, its
        box, emotion, confidence and the 8 probabilities; `context` adds what locates it (`file`)."""
        where = {"frame": self.frame, "time_s": self.time_s, "face": self.index, "track": self.track}
        return {**context, **{k: v for k, v in where.items() if v is not None},
                **face_fields(self.box, self.probabilities)}

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: box, emotion, confidence, probabilities by name, landmarks, detection score,
        and the track, frame and time where they apply."""
        x, y, w, h = self.box
        where = {"track": self.track, "frame": self.frame, "time_s": self.time_s}
        return {
            "face": self.index,
            "box": {"x": int(x), "y": int(y), "width": int(w), "height": int(h)},
            **self.summary(),
            "landmarks": ({k: [float(v[0]), float(v[1])] for k, v in self.landmarks.items()}
                          if self.landmarks else None),
            "detection_confidence": (None if self.detection_confidence is None
                                     else float(self.detection_confidence)),
            **{k: v for k, v in where.items() if v is not None},
        }


@dataclass
class ImageResult:
    """One file of `predict_many`: its faces, or the error that stopped it."""

    source: str
    faces: list[Face] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.source, "faces": [f.to_json() for f in self.faces], "error": self.error}
