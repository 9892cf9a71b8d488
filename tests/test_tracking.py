"""Face tracks and time-smoothed labels (ferkit.inference.tracking), on made-up detections."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError
from ferkit.inference.tracking import FaceTracker, iou

HAPPY, SURPRISE, NEUTRAL = (EMOTIONS.index(e) for e in ("happiness", "surprise", "neutral"))


def probs(top: int, second: int, margin: float) -> np.ndarray:
    p = np.full(8, 0.02)
    p[top], p[second] = 0.43 + margin / 2, 0.43 - margin / 2
    return p / p.sum()


def flips(labels: list[int]) -> int:
    return sum(a != b for a, b in zip(labels, labels[1:], strict=False))


def test_a_face_keeps_its_track_while_it_moves_and_a_new_face_gets_a_new_one():
    tracker = FaceTracker()
    rng = np.random.default_rng(0)
    ids = []
    for frame in range(30):
        x, y = 100 + rng.integers(-2, 3), 80 + frame  # jitter and a slow drift
        tracks = tracker.update([(x, y, 60, 60), (400, 50, 50, 50)], [probs(0, 1, 0.1)] * 2, frame / 30)
        ids.append((tracks[0].id, tracks[1].id))
    assert set(ids) == {(1, 2)}
    assert tracker.update([(300, 300, 40, 40)], [probs(0, 1, 0.1)], 31 / 30)[0].id == 3
    assert [t.id for t in tracker.update([(100, 110, 60, 60)], [probs(0, 1, 0.1)], 3.0)] == [4]  # gap > 1 s
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3)


def test_smoothing_keeps_a_noisy_still_face_on_one_label():
    """A still face whose two top emotions are close: per-frame noise flips the raw label."""
    rng = np.random.default_rng(1)
    raw, smoothed = [], []
    tracker, off = FaceTracker(smooth_s=0.3), FaceTracker(smooth_s=0)
    for frame in range(300):
        p = probs(HAPPY, NEUTRAL, 0.04) + rng.normal(0, 0.03, 8).clip(-0.02, None)
        box = (100 + rng.integers(-2, 3), 100 + rng.integers(-2, 3), 80, 80)
        raw.append(int(off.update([box], [p], frame / 30)[0].probabilities.argmax()))
        smoothed.append(int(tracker.update([box], [p], frame / 30)[0].probabilities.argmax()))
    assert flips(raw) > 20 and flips(smoothed[15:]) == 0  # after the first half second


@pytest.mark.parametrize("fps", [10, 30, 60])
def test_the_smoothed_label_follows_a_real_change_within_half_a_second_at_any_frame_rate(fps):
    tracker = FaceTracker(smooth_s=0.3)
    switched_at = None
    for frame in range(3 * fps):
        t = frame / fps
        p = probs(HAPPY, SURPRISE, 0.6) if t < 1.0 else probs(SURPRISE, HAPPY, 0.6)
        label = int(tracker.update([(50, 50, 80, 80)], [p], t)[0].probabilities.argmax())
        if t >= 1.0 and label == SURPRISE and switched_at is None:
            switched_at = t
    assert switched_at is not None and switched_at - 1.0 <= 0.5


def test_zero_smoothing_passes_the_probabilities_through_and_negative_is_refused():
    tracker = FaceTracker(smooth_s=0)
    tracker.update([(0, 0, 50, 50)], [probs(HAPPY, SURPRISE, 0.5)], 0.0)
    p = probs(SURPRISE, HAPPY, 0.5)
    np.testing.assert_allclose(tracker.update([(0, 0, 50, 50)], [p], 0.1)[0].probabilities, p)
    with pytest.raises(ArgumentError, match="--smooth"):
        FaceTracker(smooth_s=-1)
