"""The live webcam: the WebRTC configuration and the frame processor that streamlit-webrtc calls on its
worker thread."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferkit import settings
from ferkit.app.common import BOX_COLOR, DEFAULT_MIN_FACE, PredictorLike
from ferkit.app.photos import numbered_faces
from ferkit.errors import FerkitError
from ferkit.inference.annotate import Style, draw_faces, draw_text
from ferkit.inference.face import Face
from ferkit.inference.tracking import DEFAULT_SMOOTH_S

log = logging.getLogger(__name__)


def rtc_configuration(environ: Mapping[str, str] = os.environ) -> tuple[dict[str, Any], str | None]:
    """The WebRTC configuration: no ICE servers by default, so the live webcam works on this machine
    or a LAN with no internet (host candidates only); $FERKIT_ICE_SERVERS adds STUN/TURN servers for
    users behind NAT. Returns (configuration, problem): a malformed value is reported, not fatal."""
    text = environ.get(settings.ICE_SERVERS_ENV, "").strip()
    if not text:
        return {"iceServers": []}, None
    try:
        servers = json.loads(text)
    except json.JSONDecodeError as exc:
        return {"iceServers": []}, (f"${settings.ICE_SERVERS_ENV} is not valid JSON ({exc}); "
                                    "using no ICE servers")
    if not isinstance(servers, list) or not all(isinstance(s, dict) and "urls" in s for s in servers):
        return {"iceServers": []}, (f"${settings.ICE_SERVERS_ENV} must be a JSON list of objects with "
                                    "\"urls\"; using no ICE servers")
    return {"iceServers": servers}, None


def face_label(face: Face) -> str:
    """A live face's label: "#" and its track id (which stays with the face), emotion, confidence."""
    ident = f"#{face.track}" if face.track is not None else str(face.index)
    return f"{ident} {face.emotion} {face.confidence:.0%}"


def draw_frame(frame: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of the RGB video frame, its size kept, with each face boxed and labelled in BOX_COLOR by
    the drawing routine under `ferkit.draw` (ferkit.inference.annotate; a frame gets no key beside it)."""
    return draw_faces(frame, faces, probabilities=False, labels=[face_label(f) for f in faces],
                      color=BOX_COLOR)


@dataclass(frozen=True)
class LiveStats:
    """What the page shows beside the live video, read from the worker thread's latest frame."""

    fps: float = 0.0
    frames: int = 0
    faces: int = 0
    largest: Face | None = None
    error: str | None = None


def _answers_as(predictor: PredictorLike) -> tuple[str, str, str]:
    """What makes two predictors' answers comparable: model, prior and detector."""
    return (str(getattr(getattr(predictor, "source", None), "name", None)),
            str(getattr(predictor, "prior", None)), str(getattr(predictor, "detector_name", None)))


class LiveProcessor:
    """Runs the Predictor on every webcam frame streamlit-webrtc hands it (on its own thread) and
    keeps, under a lock, what the page's refresh loop reads: the frame rate and the largest face.
    One per browser session; the page updates `predictor` and `min_face` when the sidebar changes."""

    def __init__(self, predictor: PredictorLike, min_face: int = DEFAULT_MIN_FACE, window_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic, smooth_s: float = DEFAULT_SMOOTH_S) -> None:
        from ferkit.inference.stream import FaceStream

        # faces are tracked across frames and their probabilities smoothed over `smooth_s` seconds, so
        # a steady face keeps a steady label (the page sets tracker.smooth_s from the sidebar); the
        # same FaceStream as `ferkit video`
        self.stream = FaceStream(predictor, smooth_s=smooth_s)
        self.min_face = min_face
        self._window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self._stats = LiveStats()

    @property
    def predictor(self) -> PredictorLike:
        return self.stream.predictor

    @predictor.setter
    def predictor(self, predictor: PredictorLike) -> None:
        """The sidebar's predictor, set on every page run: the next frame uses it. Another model,
        prior or detector starts the tracks afresh, since smoothing across the change would mix two
        models' answers for a few seconds."""
        from ferkit.inference.stream import FaceStream

        if _answers_as(predictor) != _answers_as(self.stream.predictor):
            self.stream = FaceStream(predictor, smooth_s=self.stream.tracker.smooth_s)
        else:
            self.stream.predictor = predictor

    @property
    def tracker(self) -> Any:
        return self.stream.tracker

    def process(self, rgb: np.ndarray) -> np.ndarray:
        """One RGB frame in, the same frame with boxes, labels and the frame rate drawn on it out.
        A failing frame is passed through unchanged and its error kept for the page to show.
        streamlit-webrtc (async) hands over only the newest frame: when the CPU falls behind, frames
        are dropped, not queued, so the picture stays current."""
        try:
            faces = self.stream.update(rgb, self._clock())
            faces = [f for f in numbered_faces(faces) if f.size >= self.min_face]
            error = None
        except Exception as exc:  # the video must keep flowing; the page shows the error
            log.exception("webcam frame failed")
            faces, error = [], str(exc) if isinstance(exc, FerkitError) else f"{type(exc).__name__}: {exc}"
        stats = self._record(faces, error)
        out = draw_frame(rgb, faces)
        fps = f"{stats.fps:.1f} fps"  # bottom left, by the labels' own text routine and size
        style = Style.for_image(out.shape[1], out.shape[0])
        return draw_text(out, fps, (8, out.shape[0] - style.text_size(fps)[1] - 8), BOX_COLOR, style=style)

    def _record(self, faces: list[Face], error: str | None) -> LiveStats:
        now = self._clock()
        with self._lock:
            self._times.append(now)
            while self._times and now - self._times[0] > self._window_s:
                self._times.popleft()
            span = self._times[-1] - self._times[0]
            fps = (len(self._times) - 1) / span if span > 0 else 0.0
            largest = max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None
            self._stats = LiveStats(fps=fps, frames=self._stats.frames + 1, faces=len(faces),
                                    largest=largest, error=error)
            return self._stats

    def stats(self) -> LiveStats:
        with self._lock:
            return self._stats

    def callback(self, frame: Any) -> Any:
        """streamlit-webrtc's video_frame_callback: av.VideoFrame in, av.VideoFrame out."""
        import av

        out = self.process(frame.to_ndarray(format="rgb24"))
        return av.VideoFrame.from_ndarray(out, format="rgb24")


def live_caption(stats: LiveStats) -> str:
    """The line under the live chart; the browser test reads it to see the numbers move."""
    if stats.largest is None:
        return f"{stats.fps:.1f} fps · {stats.frames} frames · no face in view"
    face = stats.largest
    return (f"{stats.fps:.1f} fps · {stats.frames} frames · {stats.faces} face(s) · largest: "
            f"{face.emotion} {face.confidence:.1%}")
