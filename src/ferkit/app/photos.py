"""Photos: an upload read into a `PhotoResult` (never raising: a bad file becomes a readable `error`),
its faces in reading order, numbered boxes, the probability chart, the table and Grad-CAM overlays."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import altair as alt
import cv2
import numpy as np
import pandas as pd

from ferkit import settings
from ferkit.app.about import torch_model
from ferkit.app.common import BOX_COLOR, DISPLAY_SIDE, MAX_PIXELS, MAX_UPLOAD_MB, FaceLike, PredictorLike
from ferkit.emotions import EMOTIONS
from ferkit.errors import FerkitError
from ferkit.inference.face import PREDICT_COLUMNS, Face, reading_order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotoResult:
    """One uploaded image after analysis: the image, its faces, or a readable error."""

    name: str
    image: np.ndarray | None = None  # RGB uint8, long side <= DISPLAY_SIDE; None if unreadable
    faces: tuple[Face, ...] = ()  # numbered from 1 in reading order; boxes in the uploaded image's pixels
    error: str | None = None
    seconds: float = 0.0  # decode + detect + classify
    display_scale: float = 1.0  # `image` pixels per uploaded-image pixel

    @property
    def ok(self) -> bool:
        return self.error is None


def numbered_faces(faces: Sequence[FaceLike]) -> tuple[Face, ...]:
    """Predictor faces -> Faces numbered (`index`) from 1 in reading order (see `reading_order`)."""
    return tuple(
        Face(box=tuple(int(round(float(v))) for v in f.box),  # type: ignore[arg-type]
             probabilities=np.asarray(f.probabilities, dtype=np.float32).reshape(len(EMOTIONS)),
             crop=np.asarray(f.crop, dtype=np.uint8), track=getattr(f, "track", None), index=i)
        for i, f in enumerate(reading_order(faces), start=1))


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
    result = PhotoResult(name, image=display, faces=numbered_faces(faces),
                         seconds=time.perf_counter() - start, display_scale=scale)
    if scale < 1.0:
        del image
        release_freed_memory()
    return result


def release_freed_memory() -> None:
    """Hand memory freed by a large decode back to the OS. glibc keeps freed heap pages in each
    thread's arena (Streamlit runs every script run in a thread), so without this a few large
    uploads leave the server's RSS hundreds of MB up for good (bench/speed/app_memory.py)."""
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
    return replace(result, faces=tuple(replace(f, index=i) for i, f in enumerate(kept, start=1)))


def face_label(face: Face, with_emotion: bool = False) -> str:
    """Its number (live: "#" and its track id, which stays with the face) and, if asked, its emotion."""
    ident = f"#{face.track}" if face.track is not None else str(face.index)
    return f"{ident} {face.emotion} {face.confidence:.0%}" if with_emotion else ident


def draw_faces(image: np.ndarray, faces: Sequence[Face], with_emotion: bool = False,
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
    rows = [face.to_row(file=result.name) for result in results for face in result.faces]
    return pd.DataFrame(rows, columns=[c for c in PREDICT_COLUMNS if c != "error"])


def table_csv(table: pd.DataFrame) -> bytes:
    return table.to_csv(index=False).encode("utf-8")


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
