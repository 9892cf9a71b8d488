"""Face tracks across video frames, and each track's probabilities smoothed over time.

    tracker = FaceTracker(smooth_s=0.5)
    for t, faces in frames:                        # t in seconds, faces with .box and .probabilities
        tracks = tracker.update([f.box for f in faces], [f.probabilities for f in faces], t)
        # tracks[i].id is stable while face i stays in view; tracks[i].probabilities is smoothed

Matching is greedy by box overlap (IoU), highest first, as SORT does without its Kalman filter: at
video frame rates a face moves little between frames. A track unseen for `max_gap_s` is dropped.
Smoothing is an exponential moving average with a time constant in seconds, so it behaves the same
at 10 and at 60 frames/s: after a jump in the raw probabilities the average has moved 63% of the
way after `smooth_s` seconds (weight of a new frame: 1 - exp(-dt / smooth_s)). 0 turns it off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height
# seconds: steadies a face's label, and still follows a real change within 0.5 s (video and the
# webcam; bench/speed/realtime.py: a cut from happiness to surprise is read 0.33 s later, and 0.3 s left
# three times as many label changes on the hardest still faces)
DEFAULT_SMOOTH_S = 0.5
MAX_SMOOTH_S = 60.0  # longer would freeze a label for minutes: no longer smoothing


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    probabilities: np.ndarray  # smoothed, EMOTIONS order
    last_seen: float  # seconds


class FaceTracker:
    def __init__(self, smooth_s: float = DEFAULT_SMOOTH_S, iou_threshold: float = 0.3,
                 max_gap_s: float = 1.0):
        if not 0 <= smooth_s <= MAX_SMOOTH_S:  # NaN fails too: it would turn every probability to NaN
            from ferkit.errors import ArgumentError

            raise ArgumentError(f"--smooth must be between 0 and {MAX_SMOOTH_S:g} seconds, got {smooth_s}")
        self.smooth_s, self.iou_threshold, self.max_gap_s = smooth_s, iou_threshold, max_gap_s
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, boxes: Sequence[Box], probabilities: Sequence[np.ndarray], t: float) -> list[Track]:
        """This frame's faces -> their tracks (same order as `boxes`), smoothed probabilities inside."""
        self.tracks = [tr for tr in self.tracks if t - tr.last_seen <= self.max_gap_s]
        pairs = sorted(((iou(tuple(b), tr.box), i, j) for i, b in enumerate(boxes)
                        for j, tr in enumerate(self.tracks)), reverse=True)
        matched: dict[int, Track] = {}
        used: set[int] = set()
        for overlap, i, j in pairs:
            if overlap < self.iou_threshold:
                break
            if i not in matched and j not in used:
                matched[i], _ = self.tracks[j], used.add(j)
        out = []
        for i, (box, p) in enumerate(zip(boxes, probabilities, strict=True)):
            p = np.asarray(p, dtype=np.float64)
            track = matched.get(i)
            if track is None:
                track = Track(self._next_id, tuple(box), p.copy(), t)
                self._next_id += 1
                self.tracks.append(track)
            else:
                dt = max(0.0, t - track.last_seen)
                weight = 1.0 if self.smooth_s == 0 else 1.0 - math.exp(-dt / self.smooth_s)
                track.probabilities = (1 - weight) * track.probabilities + weight * p
                track.box, track.last_seen = tuple(box), t
            out.append(track)
        return out
