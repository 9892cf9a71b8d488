"""About the model: the facts the app shows, read from the model's own files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ferkit.evaluation.recorded import recorded_metrics


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
    """The PyTorch model behind a Predictor (what Grad-CAM needs; `Predictor.pytorch_model`), or
    None: for a bare .onnx file, or a stand-in predictor that has none."""
    pytorch_model = getattr(predictor, "pytorch_model", None)
    return pytorch_model() if callable(pytorch_model) else None


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
