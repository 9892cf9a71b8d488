"""A model's recorded accuracy, read from its metrics.json: what `ferkit models`, the app's "About
the model", the API's /v1/model and the model card show. Reading needs no scikit-learn (the core
install has none); computing the figures is `ferkit.evaluation.metrics`'."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferkit.emotions import EMOTIONS


def balanced_accuracy_of(metrics: dict) -> float | None:
    """A metrics.json's balanced accuracy; older files without the key give their macro recall,
    which is the same number (mean per-class recall over the classes present)."""
    value = metrics.get("balanced_accuracy", (metrics.get("macro") or {}).get("recall"))
    if value is None:  # a hand-made metrics.json: the mean of the recalls it has
        recalls = [c.get("recall") for c in (metrics.get("per_class") or {}).values() if isinstance(c, dict)]
        recalls = [r for r in recalls if isinstance(r, int | float)]
        value = float(np.mean(recalls)) if recalls else None
    return value


@dataclass(frozen=True)
class RecordedMetrics:
    """A model's measured accuracy as its metrics.json records it: what the app's "About the model"
    and the API's /v1/model both show (read here once, never typed in)."""

    accuracy: float | None  # None: not measured yet
    balanced_accuracy: float | None
    recall: dict[str, float | None]  # by emotion; empty: not measured yet
    support: dict[str, int | None]  # evaluation images per emotion (rare classes rest on few)
    split: str | None = None
    protocol: str | None = None
    images: int | None = None
    tta: str | None = None
    provisional: bool = False


def recorded_metrics(metrics: dict) -> RecordedMetrics:
    """Read a metrics.json object (possibly hand-made or partial) into RecordedMetrics."""
    per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
    recall: dict[str, float | None] = {}
    support: dict[str, int | None] = {}
    for emotion in EMOTIONS:
        entry = per_class.get(emotion) if isinstance(per_class.get(emotion), dict) else {}
        value, count = entry.get("recall"), entry.get("support")
        recall[emotion] = float(value) if isinstance(value, int | float) else None
        support[emotion] = int(count) if isinstance(count, int | float) else None
    if not any(v is not None for v in recall.values()):
        recall, support = {}, {}
    accuracy = metrics.get("accuracy")
    images = metrics.get("images")
    return RecordedMetrics(
        accuracy=float(accuracy) if isinstance(accuracy, int | float) else None,
        balanced_accuracy=balanced_accuracy_of(metrics) if recall else None,
        recall=recall, support=support,
        split=metrics.get("split"), protocol=metrics.get("protocol"),
        images=int(images) if isinstance(images, int | float) else None,
        tta=metrics.get("tta"), provisional=bool(metrics.get("provisional", False)))
