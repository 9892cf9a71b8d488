"""Photos: an upload (or an example photo) read into a `PhotoResult` (never raising: a bad file becomes a
readable `error`), its faces in reading order, the labelled photo, each face's card (thumbnail, top
emotions, probability chart), the table and Grad-CAM overlays."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from ferkit import pixels, settings
from ferkit.app.about import torch_model
from ferkit.app.common import DISPLAY_SIDE, MAX_PIXELS, FaceLike, PredictorLike
from ferkit.emotions import EMOTIONS
from ferkit.errors import FerkitError
from ferkit.inference.face import PREDICT_COLUMNS, Face, reading_order

log = logging.getLogger(__name__)

# Photos the page offers to analyse with one click (public domain, see examples/SOURCES.md): file -> who.
EXAMPLES_DIR = Path(__file__).with_name("examples")
EXAMPLES: dict[str, str] = {"astronaut.jpg": "Eileen Collins", "grace-hopper.jpg": "Grace Hopper"}
THUMBNAIL_SIDE = 160  # px: a face card's colour picture of the face
TOP_EMOTIONS = 3  # a face card names this many emotions; its chart shows all 8


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


def check_upload_size(data: bytes, name: str, max_mb: float) -> str | None:
    """A readable error when the upload is over the limit. Streamlit enforces the same limit on its
    uploader; this holds for bytes that reach the page another way (the camera, a script, a test)."""
    if len(data) > max_mb * settings.BYTES_PER_MB:
        return (f"{name}: file is {settings.megabytes(len(data))}, above the limit of {max_mb:g} MB; "
                "resize or compress it first")
    return None


def analyze_photo(predictor: PredictorLike, data: bytes, name: str, *, max_mb: float | None = None,
                  max_pixels: int = MAX_PIXELS) -> PhotoResult:
    """Read and analyse one uploaded file. Never raises for a bad file: the result carries the
    error as one sentence, so one bad upload does not hide the others and no traceback reaches
    the page. Unexpected failures are logged with their traceback on the server only. `max_mb`: the
    upload limit the page states (None: no size check; the pixel limit holds either way)."""
    from ferkit.images import load_image

    start = time.perf_counter()
    if not data:
        return PhotoResult(name, error=f"{name}: file is empty (0 bytes)")
    too_big = check_upload_size(data, name, max_mb) if max_mb is not None else None
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
    return pixels.resize(image, size, resample="area"), scale


def keep_faces_at_least(result: PhotoResult, min_face: int) -> PhotoResult:
    """Drop faces whose shorter side is under `min_face` pixels and renumber the rest, so changing
    the sidebar slider re-uses the cached analysis instead of running the model again."""
    kept = [f for f in result.faces if f.size >= min_face]
    return replace(result, faces=tuple(replace(f, index=i) for i, f in enumerate(kept, start=1)))


def example_bytes(name: str) -> bytes:
    """The file of one of EXAMPLES, shipped with the package."""
    return (EXAMPLES_DIR / name).read_bytes()


def example_thumbnail(name: str, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """The middle square of an example photo, side x side: the examples' buttons line up."""
    from ferkit.images import load_image

    image = load_image(example_bytes(name), name=name)
    height, width = image.shape[:2]
    square = min(height, width)
    top, left = (height - square) // 2, (width - square) // 2
    return pixels.resize(image[top:top + square, left:left + square], (side, side), resample="area")


def shown_box(face: Face, scale: float) -> tuple[int, int, int, int]:
    """A face's box in the pixels of the photo as shown (`scale`: a PhotoResult's display_scale)."""
    return tuple(round(v * scale) for v in face.box)  # type: ignore[return-value]


def annotated_image(result: PhotoResult) -> np.ndarray:
    """The photo as the page shows it, drawn by ferkit's one drawing routine (`ferkit.draw`): every face
    boxed in its emotion's colour and labelled with its number, emotion and confidence, with a key
    beside the photo for labels that have no room and a legend of the colours."""
    from ferkit.inference.annotate import draw

    return draw(result.image, [replace(f, box=shown_box(f, result.display_scale)) for f in result.faces])


def face_thumbnail(result: PhotoResult, face: Face, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """The face in colour, cut from the photo as shown: a square around its box with some hair and
    chin (half the box again), kept inside the photo, resized to side x side."""
    image = result.image
    height, width = image.shape[:2]
    x, y, w, h = shown_box(face, result.display_scale)
    square = max(1, min(round(1.5 * max(w, h)), width, height))
    left = min(max(0, round(x + w / 2 - square / 2)), width - square)
    top = min(max(0, round(y + h / 2 - square / 2)), height - square)
    crop = image[top:top + square, left:left + square]
    return pixels.resize(crop, (side, side), resample="area")  # bilinear when enlarging a small face


def percent(p: float) -> str:
    """A probability as people read it: 0.873 -> "87%"."""
    return f"{p:.0%}"


def top_emotions(face: FaceLike, count: int = TOP_EMOTIONS) -> list[tuple[str, float]]:
    """The face's `count` most likely emotions with their probabilities, most likely first."""
    probabilities = np.asarray(face.probabilities, dtype=float)
    return [(EMOTIONS[k], float(probabilities[k])) for k in np.argsort(-probabilities, kind="stable")[:count]]


def face_summary(face: Face) -> str:
    """A face card's text (Markdown): its number and top emotion in bold ("Face 1 · happiness 87%"),
    then the next ones on a second line ("neutral 9% · surprise 2%")."""
    (top, p), *rest = top_emotions(face)
    others = " · ".join(f"{emotion} {percent(v)}" for emotion, v in rest)
    return f"**Face {face.index} · {top} {percent(p)}**  \n{others}"


def enlarge(face: np.ndarray, factor: int = 3) -> np.ndarray:
    """A 48x48 crop scaled up with hard pixel edges (the browser would blur it)."""
    return pixels.resize(face, (face.shape[1] * factor, face.shape[0] * factor), resample="nearest")


def probability_frame(probabilities: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"emotion": list(EMOTIONS),
                         "probability": np.asarray(probabilities, dtype=float).reshape(len(EMOTIONS))})


def probability_chart(probabilities: np.ndarray, height: int = 180) -> alt.Chart:
    """Horizontal bars of the 8 probabilities (the names stay readable in a narrow face card) in the
    fixed EMOTIONS order (an explicit sort: Vega-Lite would otherwise sort the names alphabetically),
    the top emotion highlighted, 0-100 % axis so two charts can be compared by eye."""
    frame = probability_frame(probabilities)
    top = EMOTIONS[int(np.argmax(frame["probability"].to_numpy()))]
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("emotion:N", sort=list(EMOTIONS), title=None,
                    axis=alt.Axis(labelOverlap=False)),  # all 8 names, even in a small chart
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), title=None,
                    axis=alt.Axis(format="%", tickCount=4)),
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


# The table's columns on the page: the box and the confidence (the top emotion's own column) stay in the
# CSV, so all 8 emotions fit the page's width with no sideways scroll.
SHOWN_COLUMNS = ["file", "face", "emotion", *EMOTIONS]
PERCENT_COLUMNS = list(EMOTIONS)


def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """The faces table as the page shows it: SHOWN_COLUMNS, probabilities in percent (0-100; the page
    formats them as "87%", and they still sort as numbers)."""
    shown = table[SHOWN_COLUMNS].copy()
    shown[PERCENT_COLUMNS] = shown[PERCENT_COLUMNS] * 100
    return shown


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
