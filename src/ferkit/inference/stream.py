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

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ferkit.errors import ArgumentError
from ferkit.inference.face import DetectionLike, Face
from ferkit.inference.tracking import DEFAULT_SMOOTH_S, FaceTracker


class StreamPredictor(Protocol):
    """What a stream needs of a Predictor: faces found in a frame, and faces read at given places."""

    def predict(self, image: np.ndarray) -> list[Face]: ...

    def faces_at(self, rgb: np.ndarray, detections: Sequence[DetectionLike]) -> list[Face]: ...


@dataclass(frozen=True)
class MovedDetection:
    """A detection carried to a later frame: box and landmarks shifted by (dx, dy)."""

    box: tuple[int, int, int, int]
    confidence: float | None
    landmarks: dict[str, tuple[float, float]] | None

    @classmethod
    def of(cls, face: DetectionLike | Face, dx: float, dy: float,
           frame: tuple[int, int] | None = None) -> MovedDetection:
        """From a detection or a predicted Face (its box, landmarks and detection confidence). With
        `frame` (width, height), the move stops where the box would leave the frame: a face followed
        towards an edge stays a box in the frame, as a detection would be."""
        x, y, w, h = face.box
        if frame is not None:
            dx = min(max(x + dx, 0), max(0, frame[0] - w)) - x
            dy = min(max(y + dy, 0), max(0, frame[1] - h)) - y
        marks = getattr(face, "landmarks", None)
        if marks is not None:
            marks = {k: (px + dx, py + dy) for k, (px, py) in marks.items()}
        confidence = (face.detection_confidence if hasattr(face, "detection_confidence")
                      else getattr(face, "confidence", None))
        return cls((int(round(x + dx)), int(round(y + dy)), int(w), int(h)), confidence, marks)


class FaceStream:
    """Detect every `detect_every` frames, follow the faces in between, track and smooth them."""

    def __init__(self, predictor: StreamPredictor, smooth_s: float = DEFAULT_SMOOTH_S, detect_every: int = 1):
        if detect_every < 1:
            raise ArgumentError(f"detect_every must be >= 1 frame, got {detect_every}")
        self.predictor = predictor
        self.tracker = FaceTracker(smooth_s=smooth_s)
        self.detect_every = detect_every
        self._frames = 0
        self._last: list[tuple[MovedDetection, int]] = []  # the last detections and their track ids
        self._last_time = 0.0  # when they were made
        # per live track: (centre, time) of its last detection, and its velocity in pixels per second
        self._detected: dict[int, tuple[tuple[float, float], float]] = {}
        self._velocity: dict[int, tuple[float, float]] = {}

    def update(self, rgb: np.ndarray, t: float) -> list[Face]:
        """One RGB uint8 frame at time `t` (seconds) -> its faces, largest first, with their track id
        and probabilities smoothed over the track. With no face in view, every frame is searched."""
        detect = self._frames % self.detect_every == 0 or not self._last
        self._frames += 1
        if detect:
            faces = list(self.predictor.predict(rgb))
        else:
            dt = t - self._last_time
            frame = (rgb.shape[1], rgb.shape[0])
            faces = self.predictor.faces_at(rgb, [MovedDetection.of(d, *self._shift(track, dt), frame=frame)
                                                  for d, track in self._last])
        tracks = self.tracker.update([f.box for f in faces], [f.probabilities for f in faces], t)
        if detect:
            self._remember(faces, [tr.id for tr in tracks], t)
        return [replace(f, probabilities=tr.probabilities.astype(np.float32), track=tr.id)
                for f, tr in zip(faces, tracks, strict=True)]

    def _remember(self, faces: list[Face], ids: list[int], t: float) -> None:
        """Keep this detection for the frames until the next one; velocity from detection to detection
        of the same track (never from guessed boxes). Tracks no longer seen are forgotten."""
        detected, velocity = {}, {}
        for face, track in zip(faces, ids, strict=True):
            x, y, w, h = face.box
            centre = (x + w / 2, y + h / 2)
            if track in self._detected and t > self._detected[track][1]:
                (px, py), seen = self._detected[track]
                velocity[track] = ((centre[0] - px) / (t - seen), (centre[1] - py) / (t - seen))
            detected[track] = (centre, t)
        self._detected, self._velocity = detected, velocity
        self._last = [(MovedDetection.of(f, 0.0, 0.0), track) for f, track in zip(faces, ids, strict=True)]
        self._last_time = t

    def _shift(self, track: int, dt: float) -> tuple[float, float]:
        vx, vy = self._velocity.get(track, (0.0, 0.0))
        return vx * dt, vy * dt
