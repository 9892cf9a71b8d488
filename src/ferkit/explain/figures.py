"""Grad-CAM figures: one per face image (face | heatmap | overlay), and the test-set gallery."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferkit.data import LabeledSplit
from ferkit.emotions import EMOTIONS
from ferkit.errors import DataError
from ferkit.evaluation.plots import Cell, new_figure, plot_mosaic, save
from ferkit.evaluation.predict import cpu_threads, predict_proba
from ferkit.explain.gradcam import gradcam, overlay
from ferkit.models import INPUT_SIZE, FerModel


@dataclass
class Explained:
    """One explained image file and where its figure went."""

    source: Path
    figure: Path
    class_name: str
    probability: float
    predicted: str
    resized: bool  # the file was not 48x48 and was resized whole


def load_face(path: str | Path) -> tuple[np.ndarray, bool]:
    """A face image file -> (48x48 uint8 grayscale, whether it had to be resized).

    TODO(face detection): a photo that is not a 48x48 face crop is, for now, resized whole to
    48x48; once ferkit has a face detector, crop the face first instead."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    resized = gray.size != (INPUT_SIZE, INPUT_SIZE)
    if resized:
        gray = gray.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8), resized


def plot_explanation(face: np.ndarray, heatmap: np.ndarray, title: str, path: Path) -> Path:
    """Three panels: the face, the heatmap (jet, with a colour bar), the overlay."""
    fig = new_figure(8.4, 3.2)
    ax_face, ax_map, ax_overlay = fig.subplots(1, 3)
    ax_face.imshow(face, cmap="gray", vmin=0, vmax=255)
    ax_face.set_title("face")
    image = ax_map.imshow(heatmap, cmap="jet", vmin=0, vmax=1)
    ax_map.set_title("Grad-CAM")
    fig.colorbar(image, ax=ax_map, fraction=0.046, pad=0.04)
    ax_overlay.imshow(overlay(face, heatmap))
    ax_overlay.set_title("overlay")
    for ax in (ax_face, ax_map, ax_overlay):
        ax.axis("off")
    fig.suptitle(title)
    return save(fig, path)


def explain_files(model: FerModel, paths: list[Path], out_dir: Path, target: str | int | None = None,
                  layer: str | None = None) -> list[Explained]:
    """Grad-CAM figure `<out_dir>/<stem>-gradcam.png` for each image file."""
    loaded = [load_face(p) for p in paths]  # every file is checked before any work
    if not loaded:
        return []
    faces = np.stack([face for face, _ in loaded])
    result = gradcam(model, faces, target=target, layer=layer)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for i, (path, (face, resized)) in enumerate(zip(paths, loaded, strict=True)):
        k = int(result.classes[i])
        p = float(result.probabilities[i, k])
        predicted = EMOTIONS[int(result.probabilities[i].argmax())]
        title = f"{Path(path).name}: {EMOTIONS[k]} (p = {p:.2f})"
        if EMOTIONS[k] != predicted:
            title += f", predicted {predicted}"
        figure = plot_explanation(face, result.heatmaps[i], title, out_dir / f"{Path(path).stem}-gradcam.png")
        done.append(Explained(Path(path), figure, EMOTIONS[k], p, predicted, resized))
    return done


def _pick(proba: np.ndarray, y_true: np.ndarray, k: int, correct: bool) -> int | None:
    """The most confident correct (or wrong) prediction among faces of true class k."""
    y_pred = proba.argmax(axis=1)
    candidates = np.flatnonzero((y_true == k) & ((y_pred == k) if correct else (y_pred != k)))
    if len(candidates) == 0:
        return None
    return int(candidates[np.argmax(proba[candidates].max(axis=1))])


def gallery(model: FerModel, data: LabeledSplit, path: Path, title: str = "",
            layer: str | None = None, threads: int | None = None, progress: bool = False) -> Path:
    """One figure, a row per emotion: its most confidently correct and most confidently wrong
    face of `data` (true class = that emotion), each followed by its Grad-CAM overlay for the
    predicted class (what the model saw in it); "none" where the split has no such face."""
    with cpu_threads(threads):
        proba = predict_proba(model, data.images, progress=progress)
    y_true = data.labels
    picks = {(k, ok): _pick(proba, y_true, k, ok) for k in range(len(EMOTIONS)) for ok in (True, False)}
    chosen = sorted({i for i in picks.values() if i is not None})
    maps = {}
    if chosen:
        with cpu_threads(threads):
            result = gradcam(model, data.images[chosen], layer=layer)
        maps = dict(zip(chosen, result.heatmaps, strict=True))

    rows = []
    for k, name in enumerate(EMOTIONS):
        cells: list[Cell] = []
        for ok in (True, False):
            i = picks[(k, ok)]
            if i is None:
                cells += [(None, "none"), (None, "")]
                continue
            predicted = int(proba[i].argmax())
            cells += [(data.images[i], ("correct" if ok else "wrong") + f": {EMOTIONS[predicted]}"),
                      (overlay(data.images[i], maps[i]), f"p = {proba[i, predicted]:.2f}")]
        rows.append((name, cells))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return plot_mosaic(rows, 4, path, title or f"Grad-CAM gallery ({data.name}, protocol {data.protocol})",
                       caption_lines=1)
