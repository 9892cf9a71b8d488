"""What every prediction row (a face in a photo, a face in a video frame) derives from its
probabilities: the top emotion, its confidence, and a name -> probability mapping; and the one flat
face-row schema (`face_fields`) that `ferkit predict --csv`, `ferkit video --csv`, `ferkit batch` and
the app's table share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferkit.emotions import EMOTIONS


class EmotionScores:
    """Mixin for dataclasses with a `probabilities` field (8 floats, EMOTIONS order)."""

    probabilities: np.ndarray

    @property
    def emotion(self) -> str:
        return EMOTIONS[int(np.argmax(self.probabilities))]

    @property
    def confidence(self) -> float:
        """Probability of the top emotion."""
        return float(np.max(self.probabilities))

    @property
    def scores(self) -> dict[str, float]:
        return {e: float(p) for e, p in zip(EMOTIONS, self.probabilities, strict=True)}


@dataclass(frozen=True)
class Scores(EmotionScores):
    """Probabilities alone (a face crop's, with no box): emotion, confidence, scores as for a Face."""

    probabilities: np.ndarray


FACE_FIELDS = ["x", "y", "width", "height", "emotion", "confidence", *EMOTIONS]
DIGITS = 6  # probabilities in rows: enough to rank, short enough to read


def face_fields(box: Sequence[int], probabilities: np.ndarray) -> dict[str, Any]:
    """A face's columns in every flat row (FACE_FIELDS order): its box, top emotion, confidence and
    the 8 probabilities by name. Callers add what locates the face (file, frame, face number)."""
    x, y, w, h = (int(v) for v in box)
    p = np.asarray(probabilities, dtype=float)
    return {"x": x, "y": y, "width": w, "height": h, "emotion": EMOTIONS[int(np.argmax(p))],
            "confidence": round(float(p.max()), DIGITS),
            **{e: round(float(v), DIGITS) for e, v in zip(EMOTIONS, p, strict=True)}}
