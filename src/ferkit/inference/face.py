"""A face found in an image or a frame: the one record every front door returns (`Face`), and what a
face detector hands over (`DetectionLike`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ferkit.inference.scores import EmotionScores


class DetectionLike(Protocol):
    """What a face detector returns (ferkit.faces.Detection satisfies it)."""

    box: tuple[int, int, int, int]
    confidence: float
    landmarks: dict[str, tuple[float, float]] | None

@dataclass
class Face(EmotionScores):
    """One detected face: where it is and how it was classified.

    `box` is (x, y, width, height) in the input image's pixels (after EXIF rotation);
    `probabilities` are 8 floats in EMOTIONS order; `crop` is the aligned 48x48 uint8 face the
    classifier saw (left out of `to_dict`)."""

    box: tuple[int, int, int, int]
    probabilities: np.ndarray
    crop: np.ndarray = field(repr=False)
    landmarks: dict[str, tuple[float, float]] | None = None
    detection_confidence: float | None = None
    track: int | None = None  # in a video or live stream: the same number for the same face

    def __repr__(self) -> str:
        top = sorted(self.scores.items(), key=lambda item: -item[1])[:3]
        x, y, w, h = (int(v) for v in self.box)
        track = "" if self.track is None else f", track {self.track}"
        return (f"Face({self.emotion} {self.confidence:.0%} at x={x} y={y} {w}x{h}{track}; top 3: "
                + ", ".join(f"{name} {p:.0%}" for name, p in top) + ")")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box, emotion, confidence, probabilities by name, landmarks, detection score."""
        x, y, w, h = self.box
        return {
            "box": {"x": int(x), "y": int(y), "width": int(w), "height": int(h)},
            "emotion": self.emotion,
            "confidence": self.confidence,
            "probabilities": self.scores,
            "landmarks": ({k: [float(v[0]), float(v[1])] for k, v in self.landmarks.items()}
                          if self.landmarks else None),
            "detection_confidence": (None if self.detection_confidence is None
                                     else float(self.detection_confidence)),
            **({"track": self.track} if self.track is not None else {}),
        }
