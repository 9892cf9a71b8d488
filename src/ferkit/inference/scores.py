"""What every prediction row (a face in a photo, a face in a video frame) derives from its
probabilities: the top emotion, its confidence, and a name -> probability mapping."""

from __future__ import annotations

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
