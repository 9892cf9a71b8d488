"""What every prediction derives from its probabilities: the top emotion, its confidence, and a
name -> probability mapping (the face's row and JSON are in ferkit.inference.face)."""

from __future__ import annotations

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

    def summary(self) -> dict[str, Any]:
        """JSON-ready: emotion, confidence and the probabilities by name."""
        return {"emotion": self.emotion, "confidence": self.confidence, "probabilities": self.scores}


@dataclass(frozen=True)
class Scores(EmotionScores):
    """Probabilities alone (a face crop's, with no box): emotion, confidence, scores as for a Face."""

    probabilities: np.ndarray
