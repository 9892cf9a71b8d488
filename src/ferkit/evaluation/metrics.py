"""`compute_metrics(y_true, proba, targets)`: every number of an evaluation, as a JSON-ready dict.

Conventions (the report and `compare` rely on them):
- Class order is EMOTIONS; `proba` rows are softmax outputs in that order.
- Macro averages run over the classes that occur in `y_true`: a class with no test image has no
  recall, and averaging a made-up 0 for it would punish a model for the data, not its errors.
  Weighted averages weight by support, so absent classes drop out there anyway.
- A number that is undefined (recall or AUC of a class with no support) is `None` (JSON null).
- `balanced_accuracy` is the mean per-class recall over the classes present (the macro recall).
- A photo pipeline can fail to give a prediction (no face found): `missed` holds the true labels of
  those photos. They count as errors in accuracy, recall, F1 and balanced accuracy, and in each
  class's support; the confusion matrix, precision, AUC and calibration are over the predicted ones.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from ferkit.emotions import EMOTIONS
from ferkit.errors import EvaluationError

N_CLASSES = len(EMOTIONS)
ECE_BINS = 15
_EPS = 1e-12


def _check_inputs(y_true: np.ndarray, proba: np.ndarray, targets: np.ndarray | None) -> None:
    if proba.ndim != 2 or proba.shape[1] != N_CLASSES:
        raise EvaluationError(f"proba: expected shape (N, {N_CLASSES}), got {proba.shape}")
    if len(y_true) != len(proba):
        raise EvaluationError(f"y_true has {len(y_true)} labels but proba has {len(proba)} rows")
    if len(y_true) == 0:
        raise EvaluationError("no images to evaluate (y_true is empty)")
    if y_true.min() < 0 or y_true.max() >= N_CLASSES:
        raise EvaluationError(f"y_true: labels must be class indices 0..{N_CLASSES - 1}")
    if not np.all(np.isfinite(proba)):
        raise EvaluationError("proba contains NaN or infinite values")
    if targets is not None and targets.shape != proba.shape:
        raise EvaluationError(f"targets: expected shape {proba.shape}, got {targets.shape}")


def calibration_bins(proba: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> list[dict]:
    """Equal-width confidence bins (lo, hi] of the top-class probability (Guo et al. 2017):
    count, mean confidence and accuracy per bin. Empty bins have None for both means."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        inside = index == b
        n = int(inside.sum())
        bins.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return bins


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap |accuracy - confidence| over the confidence bins."""
    total = len(y_true)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in calibration_bins(proba, y_true, n_bins) if b["count"]))


def mean_kl_divergence(targets: np.ndarray, proba: np.ndarray) -> float:
    """Mean KL(target || predicted) in nats, with 0 log 0 = 0: how far the predicted
    distribution is from the annotators' vote distribution."""
    t = np.asarray(targets, dtype=np.float64)
    p = np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1.0)
    terms = np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - np.log(p)), 0.0)
    return float(terms.sum(axis=1).mean())


def negative_log_likelihood(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean -log p(true class), probabilities clipped at 1e-12 so one confident miss stays finite.
    (Written out rather than sklearn's log_loss, which rejects rows that miss 1 by float error.)"""
    p_true = np.clip(proba[np.arange(len(y_true)), y_true], _EPS, 1.0)
    return float(-np.log(p_true).mean())


def _roc_auc(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float | None]:
    """One-vs-rest AUC per class; None when a class has no positives or no negatives."""
    out: dict[str, float | None] = {}
    for k, name in enumerate(EMOTIONS):
        positives = y_true == k
        if positives.all() or not positives.any():
            out[name] = None
        else:
            out[name] = float(roc_auc_score(positives, proba[:, k]))
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def most_confused(matrix: np.ndarray, top: int = 5, support: np.ndarray | None = None) -> list[dict]:
    """The largest off-diagonal cells: which true class is most often taken for which. `rate` is the
    share of the true class's `support` (default: the matrix row; photos with no face add to it)."""
    support = matrix.sum(axis=1) if support is None else np.asarray(support)
    cells = [(int(matrix[i, j]), i, j) for i in range(N_CLASSES) for j in range(N_CLASSES)
             if i != j and matrix[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [{"true": EMOTIONS[i], "predicted": EMOTIONS[j], "count": n,
             "rate": n / int(support[i])} for n, i, j in cells[:top]]


def _f1(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    total = precision + recall
    return np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)


def compute_metrics(y_true, proba, targets=None, n_bins: int = ECE_BINS, missed=None) -> dict:
    """All metrics of hard labels `y_true` (N,) against predicted probabilities `proba` (N, 8).

    `targets` (N, 8), the label distributions of a soft protocol, adds `kl_divergence`.
    `missed` (M,): true labels of images that got no prediction (counted as errors; see above).
    Returns plain Python types (JSON-ready)."""
    y_true = np.asarray(y_true).astype(int).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    targets = None if targets is None else np.asarray(targets, dtype=np.float64)
    missed = np.zeros(0, dtype=int) if missed is None else np.asarray(missed).astype(int).ravel()
    _check_inputs(y_true, proba, targets)
    if len(missed) and (missed.min() < 0 or missed.max() >= N_CLASSES):
        raise EvaluationError(f"missed: labels must be class indices 0..{N_CLASSES - 1}")
    y_pred = proba.argmax(axis=1)
    all_labels = list(range(N_CLASSES))

    precision, _, _, found = precision_recall_fscore_support(
        y_true, y_pred, labels=all_labels, zero_division=0)
    support = found + np.bincount(missed, minlength=N_CLASSES)
    hits = np.bincount(y_true[y_true == y_pred], minlength=N_CLASSES)
    recall = np.divide(hits, support, out=np.zeros(N_CLASSES), where=support > 0)
    f1 = _f1(precision, recall)
    present = support > 0
    predicted_counts = np.bincount(y_pred, minlength=N_CLASSES)
    auc = _roc_auc(y_true, proba)
    per_class = {}
    for k, name in enumerate(EMOTIONS):
        has_support = support[k] > 0
        per_class[name] = {
            # precision of a never-predicted class is 0 by convention only if the class exists
            "precision": float(precision[k]) if has_support or predicted_counts[k] else None,
            "recall": float(recall[k]) if has_support else None,
            "f1": float(f1[k]) if has_support else None,
            "support": int(support[k]),
            "auc": auc[name],
        }
    # Macro: the plain mean over the classes present; weighted: by support (as scikit-learn's).
    averages = {}
    for average, w in (("macro", present.astype(float)), ("weighted", support.astype(float))):
        averages[average] = {metric: float(np.average(values, weights=w))
                             for metric, values in (("precision", precision), ("recall", recall),
                                                    ("f1", f1))}

    matrix = confusion_matrix(y_true, y_pred, labels=all_labels)
    images = len(y_true) + len(missed)
    metrics = {
        "images": images,
        "accuracy": int(hits.sum()) / images,
        "balanced_accuracy": averages["macro"]["recall"],
        "correct": int(hits.sum()),
        "macro": averages["macro"],
        "weighted": averages["weighted"],
        "macro_auc": _mean(auc.values()),
        "ece": expected_calibration_error(proba, y_true, n_bins),
        "nll": negative_log_likelihood(y_true, proba),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "most_confused": most_confused(matrix, support=support),
        "calibration": {"bins": n_bins, "table": calibration_bins(proba, y_true, n_bins)},
    }
    if len(missed):
        metrics["missed"] = len(missed)
        metrics["missed_per_class"] = {name: int(n) for name, n in
                                       zip(EMOTIONS, np.bincount(missed, minlength=N_CLASSES), strict=True)}
    if targets is not None:
        metrics["kl_divergence"] = mean_kl_divergence(targets, proba)
    return _finite(metrics)


def _finite(value):
    """JSON has no NaN: turn any stray NaN into None, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
