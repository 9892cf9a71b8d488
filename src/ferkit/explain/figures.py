"""Grad-CAM figures: one per face image (face | heatmap | overlay), and the test-set gallery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ferkit.data import LabeledSplit
from ferkit.emotions import EMOTIONS
from ferkit.errors import DataError, ImageError
from ferkit.evaluation.plots import Cell, new_figure, plot_mosaic, save
from ferkit.evaluation.predict import predict_proba
from ferkit.explain.gradcam import gradcam, overlay
from ferkit.files import claim_folder
from ferkit.images import load_image, to_face
from ferkit.models import INPUT_SIZE, FerModel
from ferkit.models.classify import cpu_threads
from ferkit.priors import ClassPrior, PriorSpec

Box = tuple[int, int, int, int]  # (x, y, width, height) in the photo's pixels
# A photo (RGB uint8, as ferkit.images.load_image reads it) -> its faces as (48x48 uint8 grayscale
# crop, box), largest first; [] if none. The CLI passes a Predictor's detector + aligner, so a face is
# explained on the same crop that `ferkit predict` classifies.
FaceFinder = Callable[[np.ndarray], list[tuple[np.ndarray, Box]]]


@dataclass
class Explained:
    """One explained face and where its figure went."""

    source: Path
    figure: Path
    class_name: str
    probability: float
    predicted: str
    resized: bool  # the file was not 48x48 and, with no face finder, was resized whole
    box: Box | None = None  # where the face was found, for a photo


@dataclass
class _Face:
    source: Path
    face: np.ndarray  # (48, 48) uint8
    stem: str  # figure name without "-gradcam.png"
    resized: bool = False
    box: Box | None = None


def _faces_of(path: Path, find_faces: FaceFinder | None) -> list[_Face]:
    """A 48x48 file is one face crop; a larger photo gives its detected faces (or, with no finder,
    itself resized whole). The file is read once (ferkit.images.load_image, as `ferkit predict` does)."""
    try:
        rgb = load_image(path)
    except ImageError as exc:
        raise DataError(str(exc)) from None
    resized = rgb.shape[:2] != (INPUT_SIZE, INPUT_SIZE)
    if find_faces is None or not resized:
        return [_Face(path, to_face(rgb), path.stem, resized)]
    found = find_faces(rgb)
    if len(found) == 1:
        return [_Face(path, found[0][0], path.stem, box=found[0][1])]
    return [_Face(path, crop, f"{path.stem}-face{i}", box=box) for i, (crop, box) in enumerate(found, 1)]


def explain_files(model: FerModel, paths: list[Path], out_dir: Path, target: str | int | None = None,
                  layer: str | None = None, find_faces: FaceFinder | None = None,
                  prior: PriorSpec | ClassPrior = None) -> tuple[list[Explained], list[Path]]:
    """Grad-CAM figure `<out_dir>/<stem>-gradcam.png` for each 48x48 face file, and for each face
    found in a photo (`<stem>-face<i>-gradcam.png` when it has several), with probabilities under
    `prior` (ferkit.priors). Returns the figures and
    the photos in which no face was found. Every file is read before any figure is drawn."""
    paths = [Path(p) for p in paths]
    found = [(path, _faces_of(path, find_faces)) for path in paths]
    no_face = [path for path, faces in found if not faces]
    items = [face for _, faces in found for face in faces]
    if not items:
        return [], no_face
    out_dir = claim_folder(out_dir, [f"{item.stem}-gradcam.png" for item in items], inputs=paths)
    result = gradcam(model, np.stack([item.face for item in items]), target=target, layer=layer, prior=prior)
    done = []
    for i, item in enumerate(items):
        k = int(result.classes[i])
        p = float(result.probabilities[i, k])
        predicted = EMOTIONS[int(result.probabilities[i].argmax())]
        where = f" face at {item.box}" if item.box is not None else ""
        title = f"{item.source.name}{where}: {EMOTIONS[k]} (p = {p:.2f})"
        if EMOTIONS[k] != predicted:
            title += f", predicted {predicted}"
        path = out_dir / f"{item.stem}-gradcam.png"
        figure = save(plot_explanation(item.face, result.heatmaps[i], title), path)
        done.append(Explained(item.source, figure, EMOTIONS[k], p, predicted, item.resized, item.box))
    return done, no_face


def plot_explanation(face: np.ndarray, heatmap: np.ndarray, title: str) -> Figure:
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
    return fig


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
    return save(plot_mosaic(rows, 4, title or f"Grad-CAM gallery ({data.name}, protocol {data.protocol})",
                            caption_lines=1), path)
