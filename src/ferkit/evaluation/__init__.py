"""Evaluation: predictions, metrics, plots and reports for trained runs.

    proba = predict_proba(model, faces_uint8, tta="flip")     # (N, 8) softmax
    metrics = compute_metrics(y_true, proba, targets=None)    # JSON-ready dict
    evaluation = evaluate("runs/x", data_root="...")          # writes runs/x/eval-test/
    evaluation = evaluate_photos("default", "my-photos/")     # labelled photos, whole photo pipeline
    comparison = compare("runs/a", "runs/b", data_root="...") # writes runs/b/compare-a-vs-b/

Names are imported on first use (PEP 562), so `from ferkit.evaluation import predict_proba`
in an app does not pull in matplotlib and scikit-learn.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from ferkit.errors import require_extra

_WHERE = {
    "Comparison": "comparison",
    "compare": "comparison",
    "Evaluation": "result",
    "evaluate": "pipeline",
    "evaluate_run": "pipeline",
    "evaluate_photos": "photos",
    "read_photo_labels": "photos",
    "load_eval_split": "pipeline",
    "compute_metrics": "metrics",
    "expected_calibration_error": "metrics",
    "mean_kl_divergence": "metrics",
    "negative_log_likelihood": "metrics",
    "predict_proba": "predict",
}
__all__ = [
    "Comparison",
    "Evaluation",
    "compare",
    "compute_metrics",
    "evaluate",
    "evaluate_photos",
    "evaluate_run",
    "expected_calibration_error",
    "load_eval_split",
    "mean_kl_divergence",
    "negative_log_likelihood",
    "predict_proba",
    "read_photo_labels",
]

if TYPE_CHECKING:
    from ferkit.evaluation.comparison import Comparison, compare
    from ferkit.evaluation.metrics import (
        compute_metrics,
        expected_calibration_error,
        mean_kl_divergence,
        negative_log_likelihood,
    )
    from ferkit.evaluation.photos import evaluate_photos, read_photo_labels
    from ferkit.evaluation.pipeline import evaluate, evaluate_run, load_eval_split
    from ferkit.evaluation.predict import predict_proba
    from ferkit.evaluation.result import Evaluation


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'ferkit.evaluation' has no attribute {name!r}")
    require_extra("eval", f"ferkit.evaluation.{name}", "sklearn", "matplotlib")  # not in the core install
    return getattr(import_module(f"ferkit.evaluation.{_WHERE[name]}"), name)
