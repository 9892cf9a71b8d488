"""Faces through consecutive frames (a video file, a webcam): detect, track, smooth.

    stream = FaceStream(predictor, smooth_s=0.3, detect_every=2)
    for t, rgb in frames:                     # t in seconds
        faces = stream.update(rgb, t)         # Faces with .track and smoothed .probabilities

The one mechanism behind `ferkit video`, `Predictor.predict_video` and the app's live webcam.
Every `detect_every`-th frame runs the face detector; the frames in between reuse the last
detections, each moved by its track's velocity (a face moves a few pixels between frames), and are
aligned and classified as usual, so the labels stay live while detection, the costly step, runs less
often. Tracking and smoothing: ferkit.inference.tracking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ferkit.errors import ArgumentError
from ferkit.inference.tracking import DEFAULT_SMOOTH_S, FaceTracker

if TYPE_CHECKING:
    from ferkit.inference.predictor import DetectionLike, Face, Predictor


@dataclass(frozen=True)
class MovedDetection:
    """A detection carried to a later frame: box and landmarks shifted by (dx, dy)."""

    box: tuple[int, int, int, int]
    confidence: float | None
    landmarks: dict[str, tuple[float, float]] | None

    @classmethod
    def of(cls, face: DetectionLike | Face, dx: float, dy: float) -> MovedDetection:
        """From a detection or a predicted Face (its box, landmarks and detection confidence)."""
        x, y, w, h = face.box
        marks = getattr(face, "landmarks", None)
        if marks is not None:
            marks = {k: (px + dx, py + dy) for k, (px, py) in marks.items()}
        confidence = (face.detection_confidence if hasattr(face, "detection_confidence")
                      else getattr(face, "confidence", None))
        return cls((int(round(x + dx)), int(round(y + dy)), int(w), int(h)), confidence, marks)


class FaceStream:
    """Detect every `detect_every` frames, follow the faces in between, track and smooth them."""

    def __init__(self, predictor: Predictor, smooth_s: float = DEFAULT_SMOOTH_S, detect_every: int = 1):
        if detect_every < 1:
            raise ArgumentError(f"detect_every must be >= 1 frame, got {detect_every}")
        self.predictor = predictor
        self.tracker = FaceTracker(smooth_s=smooth_s)
        self.detect_every = detect_every
        self._frames = 0
        self._last: list[tuple[DetectionLike, float]] = []  # (detection, time) of the last detect
        self._last_tracks: list[int] = []  # their track ids
        self._velocity: dict[int, tuple[float, float]] = {}  # track id -> pixels per second
        self._detected: dict[int, tuple[tuple[float, float], float]] = {}  # track id -> (centre, time)

    def update(self, rgb: np.ndarray, t: float) -> list[Face]:
        """One RGB uint8 frame at time `t` (seconds) -> its faces, largest first, with their track id
        and probabilities smoothed over the track."""
        detect = self._frames % self.detect_every == 0 or not self._last
        if detect:
            faces = list(self.predictor.predict(rgb))
        else:
            moved = [MovedDetection.of(d, *self._shift(track, t - seen))
                     for (d, seen), track in zip(self._last, self._last_tracks, strict=True)]
            faces = self.predictor.faces_at(rgb, moved)
        self._frames += 1
        tracks = self.tracker.update([f.box for f in faces], [f.probabilities for f in faces], t)
        if detect:  # velocity from detection to detection of the same track (never from guesses)
            for face, track in zip(faces, tracks, strict=True):
                x, y, w, h = face.box
                centre = (x + w / 2, y + h / 2)
                if track.id in self._detected and t > self._detected[track.id][1]:
                    (px, py), seen = self._detected[track.id]
                    self._velocity[track.id] = ((centre[0] - px) / (t - seen), (centre[1] - py) / (t - seen))
                self._detected[track.id] = (centre, t)
        if detect:
            self._last = [(MovedDetection.of(f, 0.0, 0.0), t) for f in faces]
            self._last_tracks = [tr.id for tr in tracks]
        return [replace(f, probabilities=tr.probabilities.astype(np.float32), track=tr.id)
                for f, tr in zip(faces, tracks, strict=True)]

    def _shift(self, track: int, dt: float) -> tuple[float, float]:
        vx, vy = self._velocity.get(track, (0.0, 0.0))
        return vx * dt, vy * dt
