"""The web app's logic (app.py), importable and testable without a browser or a Streamlit server.

app.py only lays out widgets; everything that decides something lives here as small functions over
plain data: reading an upload into a `PhotoResult` (never raising: a bad file becomes a readable
`error`), drawing numbered boxes, the probability chart in the fixed EMOTIONS order, the CSV
table, Grad-CAM overlays, the "About the model" facts read from the model's own files, and the
webcam frame processor that streamlit-webrtc calls on its worker thread.

Nothing here imports streamlit or streamlit-webrtc, so unit tests stay fast and the Predictor can
be any object with `predict(image) -> list[Face]`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import altair as alt
import cv2
import numpy as np
import pandas as pd

from ferkit import settings
from ferkit.emotions import EMOTIONS
from ferkit.errors import FerkitError
from ferkit.evaluation.metrics import recorded_metrics
from ferkit.inference.face import FACE_FIELDS, face_fields
from ferkit.inference.tracking import DEFAULT_SMOOTH_S  # live webcam label smoothing, seconds

AUTO_DETECTOR = "auto"  # the sidebar's default: ferkit.faces.DEFAULT_DETECTOR for photos, LIVE_DETECTOR live

log = logging.getLogger(__name__)

# What the uploader accepts (the browser's file picker filters on these; the content is still checked).
ACCEPTED_TYPES: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
# Upload and pixel limits: ferkit.settings (shared with the HTTP API).
MAX_UPLOAD_MB = settings.MAX_UPLOAD_MB
# Streamlit's own uploader limit, above the app's: a file between the two reaches the app and is
# refused with a sentence saying why (Streamlit itself shows only a red icon).
UPLOADER_LIMIT_MB = 4 * MAX_UPLOAD_MB
# Analysed photos are kept (cached) for display only, shrunk to this long side: a 7000x7000 upload
# would otherwise hold 147 MB of decoded pixels per cache entry for as long as the server runs.
DISPLAY_SIDE = 1600
MAX_PIXELS = settings.SERVER_MAX_PIXELS
# Faces smaller than this (shorter side, input pixels) are ignored unless the user lowers it.
DEFAULT_MIN_FACE = settings.MIN_FACE

# PyTorch intra-op threads in the app process. The app already works in parallel (browser sessions, the
# webcam worker thread), and torch's own threads then fight them and the rest of the machine: on 2 busy
# cores one webcam frame took 246 ms with 2 threads and 72 ms with 1 (classifying one face: 160 vs 3 ms).
DEFAULT_THREADS = 1

BOX_COLOR = (0, 255, 0)  # RGB; pure green so the browser test can find the boxes in the video


class FaceLike(Protocol):
    """What the app needs from ferkit's `Face` (see ferkit.inference)."""

    box: tuple[int, int, int, int]
    probabilities: np.ndarray
    emotion: str
    confidence: float
    crop: np.ndarray


class PredictorLike(Protocol):
    def predict(self, image: Any) -> Sequence[FaceLike]: ...


@dataclass(frozen=True)
class FaceResult:
    """One face as the app shows it; plain data so Streamlit's cache can pickle it."""

    number: int  # 1-based, the number drawn beside the box
    box: tuple[int, int, int, int]  # x, y, w, h in image pixels
    probabilities: np.ndarray  # (8,), EMOTIONS order
    emotion: str
    confidence: float
    crop: np.ndarray  # 48x48 uint8, the aligned face the model saw
    track: int | None = None  # live webcam: the face's track id, stable from frame to frame

    @property
    def size(self) -> int:
        """Shorter side of the box: what the minimum-face-size setting compares against."""
        return min(self.box[2], self.box[3])


@dataclass(frozen=True)
class PhotoResult:
    """One uploaded image after analysis: the image, its faces, or a readable error."""

    name: str
    image: np.ndarray | None = None  # RGB uint8, long side <= DISPLAY_SIDE; None if unreadable
    faces: tuple[FaceResult, ...] = ()  # boxes in the uploaded image's pixels
    error: str | None = None
    seconds: float = 0.0  # decode + detect + classify
    display_scale: float = 1.0  # `image` pixels per uploaded-image pixel

    @property
    def ok(self) -> bool:
        return self.error is None


def app_threads(environ: Mapping[str, str] = os.environ) -> int:
    """Torch threads for the app: $FERKIT_APP_THREADS if it is a positive integer, else 1."""
    text = environ.get(settings.APP_THREADS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_THREADS


def model_choices(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The models the sidebar offers: $FERKIT_MODEL alone when set (a bundled name, run folder or
    .onnx file), else every bundled model, `default` first."""
    from ferkit.models.bundled import DEFAULT_MODEL, list_bundled

    chosen = environ.get(settings.APP_MODEL_ENV, "").strip()
    if chosen:
        return [chosen]
    return list_bundled() or [DEFAULT_MODEL]


# ---------------------------------------------------------------- photos


def reading_order(faces: Sequence[FaceLike]) -> list[FaceLike]:
    """Faces in the order people read a group photo: rows top to bottom (a face whose centre is
    within half a face height of a row's first face joins that row), each row left to right."""
    rows: list[list[FaceLike]] = []
    for face in sorted(faces, key=lambda f: f.box[1] + f.box[3] / 2):
        first = rows[-1][0] if rows else None
        if first is not None and (face.box[1] + face.box[3] / 2) - (first.box[1] + first.box[3] / 2) \
                <= first.box[3] / 2:
            rows[-1].append(face)
        else:
            rows.append([face])
    return [face for row in rows for face in sorted(row, key=lambda f: f.box[0])]


def to_face_results(faces: Sequence[FaceLike]) -> tuple[FaceResult, ...]:
    """Predictor faces -> FaceResults numbered in reading order (see `reading_order`)."""
    ordered = reading_order(faces)
    return tuple(
        FaceResult(
            number=i,
            box=tuple(int(round(float(v))) for v in f.box),  # type: ignore[arg-type]
            probabilities=np.asarray(f.probabilities, dtype=np.float32).reshape(len(EMOTIONS)),
            emotion=str(f.emotion),
            confidence=float(f.confidence),
            crop=np.asarray(f.crop, dtype=np.uint8),
            track=getattr(f, "track", None),
        )
        for i, f in enumerate(ordered, start=1)
    )


def check_upload_size(data: bytes, name: str, max_mb: float = MAX_UPLOAD_MB) -> str | None:
    """A readable error when the upload is over the limit (Streamlit checks too; this holds for
    bytes that reach the logic by another way, e.g. a camera or a test)."""
    if len(data) > max_mb * settings.BYTES_PER_MB:
        return (f"{name}: file is {settings.megabytes(len(data))}, above the limit of {max_mb:g} MB; "
                "resize or compress it first")
    return None


def analyze_photo(predictor: PredictorLike, data: bytes, name: str, *, max_mb: float = MAX_UPLOAD_MB,
                  max_pixels: int = MAX_PIXELS) -> PhotoResult:
    """Read and analyse one uploaded file. Never raises for a bad file: the result carries the
    error as one sentence, so one bad upload does not hide the others and no traceback reaches
    the page. Unexpected failures are logged with their traceback on the server only."""
    from ferkit.images import load_image

    start = time.perf_counter()
    if not data:
        return PhotoResult(name, error=f"{name}: file is empty (0 bytes)")
    too_big = check_upload_size(data, name, max_mb)
    if too_big:
        return PhotoResult(name, error=too_big)
    try:
        image = load_image(data, max_pixels=max_pixels, name=name)
    except FerkitError as exc:
        return PhotoResult(name, error=str(exc))
    try:
        faces = predictor.predict(image)
    except FerkitError as exc:
        return PhotoResult(name, image=shrink_for_display(image)[0], error=str(exc))
    except Exception:  # a bug, not the user's fault: keep the page alive, keep the traceback in the log
        log.exception("analysing %s failed", name)
        return PhotoResult(name, image=shrink_for_display(image)[0],
                           error=f"{name}: the analysis failed unexpectedly (details are in the server log)")
    display, scale = shrink_for_display(image)
    result = PhotoResult(name, image=display, faces=to_face_results(faces),
                         seconds=time.perf_counter() - start, display_scale=scale)
    if scale < 1.0:
        del image
        release_freed_memory()
    return result


def release_freed_memory() -> None:
    """Hand memory freed by a large decode back to the OS. glibc keeps freed heap pages in each
    thread's arena (Streamlit runs every script run in a thread), so without this a few large
    uploads leave the server's RSS hundreds of MB up for good (bench/app_memory.py)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:  # not glibc: nothing to do
        pass


def shrink_for_display(image: np.ndarray, side: int = DISPLAY_SIDE) -> tuple[np.ndarray, float]:
    """The image with its long side at most `side` (area-averaged), and the scale applied."""
    scale = min(1.0, side / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def keep_faces_at_least(result: PhotoResult, min_face: int) -> PhotoResult:
    """Drop faces whose shorter side is under `min_face` pixels and renumber the rest, so changing
    the sidebar slider re-uses the cached analysis instead of running the model again."""
    kept = [f for f in result.faces if f.size >= min_face]
    return replace(result, faces=tuple(replace(f, number=i) for i, f in enumerate(kept, start=1)))


def face_label(face: FaceResult, with_emotion: bool = False) -> str:
    """Its number (live: "#" and its track id, which stays with the face) and, if asked, its emotion."""
    ident = f"#{face.track}" if face.track is not None else str(face.number)
    return f"{ident} {face.emotion} {face.confidence:.0%}" if with_emotion else ident


def draw_faces(image: np.ndarray, faces: Sequence[FaceResult], with_emotion: bool = False,
               box_scale: float = 1.0) -> np.ndarray:
    """A copy of the RGB image with each face boxed and labelled in BOX_COLOR (its number, and for the
    webcam its emotion and confidence), by ferkit's one drawing routine (ferkit.inference.annotate).
    `box_scale`: image pixels per box pixel (a PhotoResult's display_scale)."""
    from ferkit.inference.annotate import draw_faces as draw

    shown = [replace(f, box=tuple(round(v * box_scale) for v in f.box)) for f in faces]
    return draw(image, shown, probabilities=False, labels=[face_label(f, with_emotion) for f in faces],
                color=BOX_COLOR)


def enlarge(face: np.ndarray, factor: int = 3) -> np.ndarray:
    """A 48x48 crop scaled up with hard pixel edges (the browser would blur it)."""
    return cv2.resize(face, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)


def probability_frame(probabilities: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"emotion": list(EMOTIONS),
                         "probability": np.asarray(probabilities, dtype=float).reshape(len(EMOTIONS))})


def probability_chart(probabilities: np.ndarray, height: int = 200) -> alt.Chart:
    """Bars of the 8 probabilities in the fixed EMOTIONS order (an explicit sort: Vega-Lite would
    otherwise sort the labels alphabetically), the top emotion highlighted, 0-100 % axis so two
    charts can be compared by eye."""
    frame = probability_frame(probabilities)
    top = EMOTIONS[int(np.argmax(frame["probability"].to_numpy()))]
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("emotion:N", sort=list(EMOTIONS), title=None, axis=alt.Axis(labelAngle=-35)),
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), title=None, axis=alt.Axis(format="%")),
            color=alt.condition(alt.datum.emotion == top, alt.value("#e4572e"), alt.value("#8c9bab")),
            tooltip=[alt.Tooltip("emotion:N"), alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=height)
    )


def faces_table(results: Sequence[PhotoResult]) -> pd.DataFrame:
    """One row per face of every analysed image, in the columns of `ferkit predict --csv` (file, face,
    box, top emotion, confidence, the 8 probabilities). The page shows it; the CSV download holds it."""
    rows = [{"file": result.name, "face": face.number, **face_fields(face.box, face.probabilities)}
            for result in results for face in result.faces]
    return pd.DataFrame(rows, columns=["file", "face", *FACE_FIELDS])


def table_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode("utf-8")


# The class-prior setting (ferkit.priors): None keeps the model's own default.
PRIOR_CHOICES: dict[str | None, str] = {
    None: "the model's default",
    "ferplus": "FERPlus (as trained)",
    "neutral:0.7": "fewer neutral faces (photos of people)",
    "uniform": "uniform (posed or acted faces)",
}
PRIOR_HELP = ("How often each emotion is expected in your material. FERPlus: as the model was trained "
              "(a third of its faces neutral, as the crowd that labelled FERPlus saw them). Fewer neutral "
              "faces: neutral 0.7 times as likely, the bundled models' default, chosen on photos of people "
              "beyond FERPlus. Uniform: every emotion equally likely, right for posed or acted "
              "expressions, where the FERPlus prior calls subtle anger, fear and disgust 'neutral'.")


def gradcam_overlays(predictor: Any, crops: Sequence[np.ndarray], factor: int = 3) -> list[np.ndarray]:
    """Grad-CAM of each 48x48 face for the emotion the page shows (its top class under the
    predictor's prior: the model's own default when none was chosen), blended onto the face enlarged
    `factor` times (RGB uint8, the size the page shows crops at). One batched pass for all faces."""
    from ferkit.explain import gradcam, overlay

    if len(crops) == 0:
        return []
    faces = np.stack([np.asarray(c, dtype=np.uint8) for c in crops])
    heatmaps = gradcam(torch_model(predictor), faces, prior=predictor.prior).heatmaps
    return [overlay(enlarge(face, factor), heatmap) for face, heatmap in zip(faces, heatmaps, strict=True)]


# ---------------------------------------------------------------- about the model


def describe_architecture(config: dict[str, Any]) -> str:
    """model.json's architecture for people: "resnet", or "ensemble of 3 resnet" for an ensemble."""
    name = str(config.get("architecture", "unknown"))
    args = config.get("model_args")
    members = args.get("members") if isinstance(args, dict) else None
    if name == "ensemble" and isinstance(members, list) and members:
        kinds = sorted({str(m.get("architecture", "?")) for m in members if isinstance(m, dict)})
        flip = " (flip TTA)" if args.get("flip") else ""
        return f"ensemble of {len(members)} {' + '.join(kinds)}{flip}"
    return name


@dataclass(frozen=True)
class ModelReport:
    """The facts "About the model" shows, each read from the model's own files (never typed in)."""

    name: str
    architecture: str
    parameters: int | None
    accuracy: float | None  # None: not measured yet
    recall: dict[str, float | None] = field(default_factory=dict)  # empty: not measured yet
    support: dict[str, int | None] = field(default_factory=dict)  # test images per emotion
    balanced_accuracy: float | None = None  # mean per-class recall
    evaluated_on: str = ""  # e.g. "FERPlus test split, majority protocol, 3,137 images"
    confusion_image: Path | None = None
    split: str = "test"  # the split metrics.json was measured on

    @property
    def accuracy_label(self) -> str:
        """"FERPlus test accuracy", or the split the metrics file names if it is another one."""
        return f"FERPlus {self.split} accuracy"


def metrics_of(info: dict[str, Any]) -> dict[str, Any]:
    """The metrics part of `Predictor.model_info`: a nested "metrics" object if there is one,
    else the info itself (metrics.json merged into model.json)."""
    nested = info.get("metrics")
    return nested if isinstance(nested, dict) else info


def count_parameters(model: Any, info: dict[str, Any]) -> int | None:
    if model is not None and hasattr(model, "parameters"):
        return int(sum(p.numel() for p in model.parameters()))
    value = info.get("params", info.get("parameters"))  # model.json's count, for ONNX models
    return int(value) if isinstance(value, int | float) else None


def evaluated_on(metrics: dict[str, Any]) -> str:
    parts = []
    if metrics.get("split"):
        parts.append(f"FERPlus {metrics['split']} split")
    if metrics.get("protocol"):
        parts.append(f"{metrics['protocol']} protocol")
    if isinstance(metrics.get("images"), int):
        parts.append(f"{metrics['images']:,} images")
    return ", ".join(parts)


def model_folder(info: dict[str, Any]) -> Path | None:
    """The folder the model was loaded from (`source` in model_info), where a confusion matrix
    image may be shipped beside the weights; an .onnx file's folder for an exported model."""
    source = info.get("source")
    if not source:
        return None
    path = Path(str(source))
    return path if path.is_dir() else path.parent if path.parent.is_dir() else None


def torch_model(predictor: Any) -> Any:
    """The PyTorch model behind a Predictor (what Grad-CAM needs); None for an ONNX model."""
    model = getattr(predictor, "model", None)
    if model is None:
        model = getattr(getattr(predictor, "backend", None), "model", None)
    return model if hasattr(model, "parameters") else None


def model_report(info: dict[str, Any], model: Any) -> ModelReport:
    """What "About the model" shows, from `Predictor.model_info` (model.json under "model",
    metrics.json under "metrics"). Accuracy and recall come from metrics.json only; when the
    model ships none they are None / empty and the page says "not measured yet"."""
    config = info.get("model") if isinstance(info.get("model"), dict) else info
    folder = model_folder(info)
    metrics = metrics_of(info)
    measured = recorded_metrics(metrics)
    image = None
    if folder is not None:
        image = next((folder / n for n in ("confusion_matrix.png", "confusion.png")
                      if (folder / n).is_file()), None)
    return ModelReport(
        name=str(info.get("name") or (folder.name if folder else "") or "model"),
        architecture=describe_architecture(config),
        parameters=count_parameters(model, config),
        accuracy=measured.accuracy,
        recall=measured.recall,
        support=measured.support,
        balanced_accuracy=measured.balanced_accuracy,
        evaluated_on=evaluated_on(metrics) if measured.accuracy is not None else "",
        confusion_image=image,
        split=str(measured.split or "test"),
    )


def recall_table(report: ModelReport) -> pd.DataFrame:
    """Recall per emotion beside its number of test images (rare classes rest on few faces)."""
    return pd.DataFrame({"emotion": list(report.recall), "recall": list(report.recall.values()),
                         "test images": [report.support.get(e) for e in report.recall]})


# ---------------------------------------------------------------- webcam



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



@dataclass(frozen=True)
class LiveStats:
    """What the page shows beside the live video, read from the worker thread's latest frame."""

    fps: float = 0.0
    frames: int = 0
    faces: int = 0
    largest: FaceResult | None = None
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
            faces = [f for f in to_face_results(faces) if f.size >= self.min_face]
            error = None
        except Exception as exc:  # the video must keep flowing; the page shows the error
            log.exception("webcam frame failed")
            faces, error = [], str(exc) if isinstance(exc, FerkitError) else f"{type(exc).__name__}: {exc}"
        stats = self._record(faces, error)
        out = draw_faces(rgb, faces, with_emotion=True)
        cv2.putText(out, f"{stats.fps:.1f} fps", (8, out.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    BOX_COLOR, 2, cv2.LINE_AA)
        return out

    def _record(self, faces: list[FaceResult], error: str | None) -> LiveStats:
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
