"""The evaluation figures. Each `plot_*` function returns a matplotlib Figure; `save` writes one.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot): no global figure
state, no display needed, and safe to call from an app's worker threads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from ferkit.emotions import EMOTIONS

DPI = 110
# One fixed colour per emotion, so every figure of every run uses the same colours.
EMOTION_COLORS = ("tab:gray", "tab:orange", "tab:green", "tab:blue", "tab:red", "tab:olive",
                  "tab:purple", "tab:brown")


def new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    """A figure on the Agg canvas; constrained layout keeps titles and colour bars apart (grids of
    many small images pass layout=None and space themselves: constrained layout is slow there)."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return Path(path)


def row_normalize(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the true class's support); empty rows stay 0. (scikit-learn's
    confusion_matrix(normalize="true") needs the labels; the comparison has only stored counts.)"""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def _matrix_panel(ax, values: np.ndarray, title: str, fmt: str, cmap: str,
                  vmin: float | None = None, vmax: float | None = None) -> None:
    """One matrix (true rows x predicted columns) with its values written in, by scikit-learn's
    ConfusionMatrixDisplay (it picks light or dark text per cell)."""
    display = ConfusionMatrixDisplay(np.asarray(values), display_labels=list(EMOTIONS))
    display.plot(ax=ax, cmap=cmap, values_format=fmt, xticks_rotation=45,
                 im_kw={"vmin": vmin, "vmax": vmax}, text_kw={"fontsize": 7})
    if vmin is not None and vmin < 0:  # a diverging map is dark at both ends: light text on both
        limit = max(abs(vmin), abs(vmax or 0))
        for text, value in zip(display.text_.ravel(), np.asarray(values).ravel(), strict=True):
            text.set_color("white" if abs(value) > 0.6 * limit else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def plot_confusion(matrix: np.ndarray, title: str = "") -> Figure:
    """Counts and the row-normalised version (each row: where that true class went)."""
    matrix = np.asarray(matrix)
    fig = new_figure(14, 6)
    ax_counts, ax_norm = fig.subplots(1, 2)
    _matrix_panel(ax_counts, matrix, f"{title} confusion matrix (counts)".strip(), "d", "Blues")
    _matrix_panel(ax_norm, row_normalize(matrix), f"{title} row-normalised (recall on diagonal)".strip(),
                  ".2f", "Blues", 0.0, 1.0)
    return fig


def plot_confusion_comparison(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> Figure:
    """Row-normalised matrices of A and B and their difference B - A (blue: B better on the
    diagonal / more of that confusion off it)."""
    norm_a, norm_b = row_normalize(a), row_normalize(b)
    diff = norm_b - norm_a
    fig = new_figure(21, 6)
    axes = fig.subplots(1, 3)
    _matrix_panel(axes[0], norm_a, f"A: {name_a}", ".2f", "Blues", 0.0, 1.0)
    _matrix_panel(axes[1], norm_b, f"B: {name_b}", ".2f", "Blues", 0.0, 1.0)
    limit = max(float(np.abs(diff).max()), 0.05)
    _matrix_panel(axes[2], diff, "B - A (row-normalised)", "+.2f", "RdBu", -limit, limit)
    return fig


def plot_roc(y_true: np.ndarray, proba: np.ndarray, auc: dict[str, float | None],
             title: str = "") -> Figure:
    """One-vs-rest ROC curve per emotion (AUC in the legend) and the chance diagonal."""
    fig = new_figure(7, 6)
    ax = fig.subplots()
    for k, name in enumerate(EMOTIONS):
        if auc.get(name) is None:
            ax.plot([], [], color=EMOTION_COLORS[k], label=f"{name} (no support)")
            continue
        RocCurveDisplay.from_predictions(y_true == k, proba[:, k], name=name, ax=ax,
                                         curve_kwargs={"color": EMOTION_COLORS[k], "lw": 1.6})
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title} ROC, one vs rest".strip())
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_reliability(table: list[dict], ece: float, title: str = "") -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect
    calibration, with the share of images per bin underneath."""
    fig = new_figure(6, 7)
    ax, ax_count = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    lower = np.array([b["lower"] for b in table])
    width = table[0]["upper"] - table[0]["lower"]
    accuracy = np.array([b["accuracy"] if b["count"] else 0.0 for b in table])
    confidence = np.array([b["confidence"] if b["count"] else np.nan for b in table])
    counts = np.array([b["count"] for b in table])
    ax.bar(lower, accuracy, width=width, align="edge", edgecolor="black", color="tab:blue",
           label="accuracy")
    gap_bottom = np.where(counts > 0, np.minimum(accuracy, confidence), 0)
    gap = np.where(counts > 0, np.abs(confidence - accuracy), 0)
    ax.bar(lower, gap, bottom=gap_bottom, width=width, align="edge", color="tab:red", alpha=0.3,
           hatch="//", edgecolor="tab:red", label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} reliability (ECE {ece:.3f}, {len(table)} bins)".strip())
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    total = max(int(counts.sum()), 1)
    ax_count.bar(lower, counts / total, width=width, align="edge", color="tab:gray", edgecolor="black")
    ax_count.set_xlabel("confidence (top-class probability)")
    ax_count.set_ylabel("share of images")
    ax_count.grid(alpha=0.3)
    return fig


def plot_text(text: str, title: str = "") -> Figure:
    """A monospaced text block as an image (the classification report for slides/HTML)."""
    lines = text.splitlines()
    fig = new_figure(0.095 * max(len(line) for line in lines) + 0.6, 0.22 * len(lines) + 0.8)
    fig.text(0.02, 0.98, "\n".join(lines), family="monospace", fontsize=10, va="top")
    if title:
        fig.suptitle(title, fontsize=11, y=1.02)
    return fig


Cell = tuple[np.ndarray | None, str]  # (gray (H, W) or RGB (H, W, 3) uint8 image, caption)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def plot_mosaic(rows: list[tuple[str, list[Cell]]], columns: int, title: str = "",
                caption_lines: int = 3, size: int = 48) -> Figure:
    """A labelled grid of captioned size x size images, drawn as ONE image in one axes (a grid
    of 40 matplotlib axes takes seconds to lay out). A cell whose image is None shows its
    caption in grey in the middle instead ("none")."""
    pad, caption = 6, 5 * caption_lines + 3  # in image pixels
    cell_w, cell_h = size + pad, size + caption + pad
    canvas = np.full((len(rows) * cell_h, columns * cell_w, 3), 255, dtype=np.uint8)
    texts = []
    for r, (_, cells) in enumerate(rows):
        y0 = r * cell_h + caption
        for c, (image, text) in enumerate(cells[:columns]):
            x0 = c * cell_w + pad // 2
            if image is None:
                texts.append((x0 + size / 2, y0 + size / 2, text, "center", 10, "gray"))
                continue
            canvas[y0:y0 + size, x0:x0 + size] = _rgb(image)[:size, :size]
            texts.append((x0 + size / 2, y0 - 1, text, "bottom", 7, "black"))
    label_in, title_in, cell_in = 1.1, 0.45 if title else 0.1, 1.5
    width, height = label_in + columns * cell_in, title_in + len(rows) * cell_in * cell_h / cell_w
    fig = new_figure(width, height, layout=None)
    ax = fig.add_axes((label_in / width, 0, columns * cell_in / width, 1 - title_in / height))
    ax.imshow(canvas, interpolation="antialiased")
    ax.axis("off")
    for x, y, text, va, fontsize, color in texts:
        ax.text(x, y, text, ha="center", va=va, fontsize=fontsize, color=color, linespacing=1.1)
    for r, (label, _) in enumerate(rows):
        ax.text(-4, r * cell_h + caption + size / 2, label, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.08 / height)
    return fig


def plot_face_grid(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], columns: int,
                   title: str = "") -> Figure:
    """Rows of captioned faces (at most `columns` each); a row with no faces says "none"."""
    return plot_mosaic([(label, list(faces) or [(None, "none")]) for label, faces in rows], columns, title)


def plot_per_class_bars(values: dict[str, list[float | None]], metric: str) -> Figure:
    """Grouped bars per emotion, one bar per run (compare: per-class recall or F1)."""
    fig = new_figure(10, 4)
    ax = fig.subplots()
    x = np.arange(len(EMOTIONS))
    width = 0.8 / max(len(values), 1)
    for i, (name, series) in enumerate(values.items()):
        heights = [np.nan if v is None else v for v in series]
        ax.bar(x + i * width - 0.4 + width / 2, heights, width=width, label=name)
    ax.set_xticks(x, EMOTIONS, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.set_title(f"per-class {metric}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return fig
