"""`ferkit adapt`: a model adapted to the user's own labelled photos, with honest validation.

    result = adapt("default", "my-study/", out="my-model")      # labels.csv (+ subject) or class folders
    result.cv["balanced_accuracy"], result.shipped["balanced_accuracy"]
    Predictor(model="my-model")                                  # and every --model / FERKIT_MODEL

Steps: the photos through the photo pipeline (ferkit.adaptation.data), each member network's pooled
features of every face and its mirror, and of a few jittered copies (ferkit.adaptation.features);
cross-validation of the whole fit (person-disjoint with a group column), whose held-out logits also fit
the temperature; the heads fitted on all photos (ferkit.adaptation.heads); the model written as a model
folder in the bundled format (weights with their sha256, model.json with the adaptation record,
metrics.json with the cross-validated figures, and its fp32 ONNX export, checked against PyTorch).
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.adaptation.data import Faces, read_faces
from ferkit.adaptation.defaults import DEFAULT_ABSENT, DEFAULT_AUGMENT, DEFAULT_L2, DEFAULT_REMAP
from ferkit.adaptation.features import augmented_crops, member_networks, pooled_features
from ferkit.adaptation.heads import ABSENT, Heads, fit, fit_temperature
from ferkit.adaptation.validation import (
    balanced_accuracy,
    learning_curve,
    make_folds,
    out_of_fold_logits,
)
from ferkit.errors import ArgumentError, FerkitError, ModelFileError
from ferkit.evaluation.metrics import compute_metrics
from ferkit.models.folder import ModelFolder


@dataclass
class AdaptResult:
    """What `adapt` wrote and measured."""

    out: Path
    faces: Faces
    folds: str  # "grouped" (person-disjoint) or "stratified" (photos split)
    fold_count: int
    cv: dict[str, Any]  # the adapted fit's cross-validated metrics (compute_metrics)
    shipped: dict[str, Any]  # the source model's metrics on the same photos
    temperature: float
    curve: list[dict] | None = None
    ferplus_valid: dict[str, Any] | None = None
    onnx: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def warning(self) -> str | None:
        """Why the figures may be optimistic, or None."""
        if self.folds == "grouped":
            return None
        return ("no group column (subject/person, or --group-by): the folds split photos, not people, so "
                "these figures may be optimistic when one person appears in many photos")


def _check_out(out: Path, folder: Path, source: Path, force: bool) -> None:
    from ferkit.models.bundled import weights_root

    resolved = out.resolve()
    if resolved == folder.resolve() or resolved.is_relative_to(folder.resolve()):
        raise ArgumentError(f"{out}: is inside the photo folder {folder}; write the model elsewhere")
    if resolved == source.resolve() or resolved.is_relative_to(weights_root().resolve()):
        raise ArgumentError(f"{out}: would write over a model ferkit ships or the source; write it elsewhere")
    if out.exists():
        if not force:
            raise ArgumentError(f"{out}: already exists (use --force to replace it)")
        if not out.is_dir() or (any(out.iterdir()) and not ModelFolder(out).is_model()):
            raise ArgumentError(f"{out}: exists and is not a model folder; --force replaces only a model "
                                "folder (one with model.json)")


def _member_configs(config: dict[str, Any]) -> list[dict[str, Any]]:
    if config["architecture"] == "ensemble":
        return copy.deepcopy(config["model_args"]["members"])
    return [{"architecture": config["architecture"],
             "model_args": copy.deepcopy(config.get("model_args", {}))}]


def adapted_model(network: torch.nn.Module, heads: Heads) -> torch.nn.Module:
    """The source's member networks with `heads` as their last layers and flip built in."""
    from ferkit.models.ensemble import Ensemble

    members = [copy.deepcopy(m) for m in member_networks(network)]
    with torch.no_grad():
        for member, weight, bias in zip(members, heads.weight, heads.bias, strict=True):
            member.fc.weight.copy_(torch.from_numpy(weight))
            member.fc.bias.copy_(torch.from_numpy(bias))
    return Ensemble(members, flip=True).eval()


def shipped_heads(network: torch.nn.Module) -> Heads:
    """A model's own last layers (each member's), as Heads."""
    members = member_networks(network)
    return Heads(np.stack([m.fc.weight.detach().float().numpy() for m in members]),
                 np.stack([m.fc.bias.detach().float().numpy() for m in members]))


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _ferplus_valid(out: Path, source: str | Path, data_root: Path) -> dict[str, Any]:
    """FERPlus Valid (majority) accuracy of the adapted model and of its source: how much it forgets."""
    from ferkit.data import label_split, load_ferplus
    from ferkit.inference import Predictor

    valid = label_split(load_ferplus(data_root, splits=("valid",))["valid"], "majority")
    figures = {}
    for name, model in (("adapted", out), ("shipped", source)):
        predicted = Predictor(model=model, prior="ferplus").predict_faces(valid.images).argmax(1)
        figures[name] = {"accuracy": float((predicted == valid.labels).mean()),
                         "balanced_accuracy": balanced_accuracy(valid.labels, predicted)}
    return {"split": "valid", "protocol": "majority", "faces": len(valid), **figures}


def _export(out: Path, crops: np.ndarray, features: np.ndarray) -> dict[str, Any]:
    """The folder's fp32 ONNX export (parity-checked against PyTorch by export_onnx) and the top-1
    agreement of the two paths on the user's own faces. The PyTorch path's answers are its saved heads
    on the features already computed: its backbone is the frozen one they came from."""
    from ferkit.inference.backends import OnnxBackend
    from ferkit.models import load
    from ferkit.models.folder import ONNX_FP32
    from ferkit.release.export import export_onnx

    report = export_onnx(out, out / ONNX_FP32)
    onnx = OnnxBackend(out / ONNX_FP32, folder=out).probabilities(crops, None, 256).argmax(1)
    torch_top = shipped_heads(load(Path(out))).logits(features).argmax(1)
    return {"runs": ONNX_FP32, "precision": "fp32", "max_abs_diff_fp32": report.max_abs_diff,
            "agreement_on_photos": float((onnx == torch_top).mean()), "photos": len(crops)}


def adapt(model: str | Path | None, folder: str | Path, *, out: str | Path, labels: str | Path | None = None,
          group_by: str | None = None, skip_bad: bool = False, force: bool = False, l2: float = DEFAULT_L2,
          augment: int = DEFAULT_AUGMENT, remap: float = DEFAULT_REMAP, absent: str = DEFAULT_ABSENT,
          folds: int = 5, curve: bool = False, detector: str | None = None,
          data_root: str | Path | None = None, threads: int | None = None, command: str | None = None,
          progress: bool = False, log: Callable[[str], None] = lambda message: None) -> AdaptResult:
    """Adapt `model` (a bundled name or model folder; None: the default) to the labelled photos of
    `folder` and write the adapted model folder `out`. See the module doc; `data_root`, a FERPlus
    root, adds the adapted model's FERPlus Valid accuracy (how much it forgets)."""
    from ferkit.models import load, read_model_config
    from ferkit.models.bundled import resolve_model
    from ferkit.models.folder import append_command, weights_sha256
    from ferkit.models.io import model_config, save_model

    if not l2 > 0:
        raise ArgumentError(f"l2 must be > 0, got {l2}")
    if augment < 0:
        raise ArgumentError(f"augment must be >= 0, got {augment}")
    if folds < 2:
        raise ArgumentError(f"folds must be at least 2, got {folds}")
    if not 0 <= remap <= 1:
        raise ArgumentError(f"remap must be in [0, 1], got {remap}")
    if absent not in ABSENT:
        raise ArgumentError(f"absent classes must be one of {', '.join(ABSENT)}, not {absent!r}")
    source = resolve_model(model)
    source.pytorch_folder()  # an .onnx file has no heads to adapt: refused before any work
    out, folder = Path(out).expanduser(), Path(folder).expanduser()
    if not folder.is_dir():
        raise ArgumentError(f"{folder}: photo folder not found")
    _check_out(out, folder, source.path, force)
    network = load(source)
    members = member_networks(network)
    shipped = shipped_heads(network)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    faces = read_faces(folder, labels=labels, group_by=group_by, skip_bad=skip_bad, model=source.path,
                       detector=detector, threads=threads, progress=progress)
    seconds["faces"] = time.perf_counter() - start
    log(f"{len(faces):,} faces from {folder}: " + ", ".join(f"{k} {n}" for k, n in faces.counts().items()))

    start = time.perf_counter()
    features = pooled_features(members, faces.crops)
    jittered = None
    if augment:
        copies = pooled_features(members, augmented_crops(faces.crops, augment, seed=0))
        jittered = copies.reshape(augment, len(faces), *copies.shape[1:])
    seconds["features"] = time.perf_counter() - start

    start = time.perf_counter()
    split = make_folds(faces.labels, faces.groups, n_splits=folds, column=faces.group_column)
    held_out = out_of_fold_logits(features, faces.labels, shipped, split, l2=l2, augmented=jittered,
                                  remap=remap, absent=absent)
    temperature = fit_temperature(held_out, faces.labels)
    cv = compute_metrics(faces.labels, _softmax(held_out / temperature))
    cv["balanced_accuracy"] = balanced_accuracy(faces.labels, held_out.argmax(1))
    shipped_metrics = compute_metrics(faces.labels, faces.shipped_proba)
    shipped_metrics["balanced_accuracy"] = balanced_accuracy(faces.labels, faces.shipped_proba.argmax(1))
    seconds["cross_validation"] = time.perf_counter() - start
    rows = None
    if curve:
        start = time.perf_counter()
        rows = learning_curve(features, faces.labels, shipped, split, l2=l2, augmented=jittered, remap=remap,
                              absent=absent)
        seconds["curve"] = time.perf_counter() - start

    start = time.perf_counter()
    x, y = (features, faces.labels) if jittered is None else (
        np.concatenate([features, *jittered]), np.tile(faces.labels, augment + 1))
    heads = fit(x, y, shipped, l2=l2, remap=remap, absent=absent).scaled(temperature)
    adapted = adapted_model(network, heads)
    source_config = read_model_config(source.path)
    record = {
        "from": source.name, "photos": folder.name, "photo_count": len(faces), "per_class": faces.counts(),
        "group_column": faces.group_column,
        "groups": None if faces.groups is None else len(set(faces.groups.tolist())),
        "validation": {"folds": len(split.splits), "kind": split.kind},
        "features": "each member's pooled last feature map, face and mirror, frozen",
        "l2_to_shipped": l2, "remap": remap, "absent_classes": absent, "augment_copies": augment,
        "temperature": temperature,
        "skipped": len(faces.skipped), "command": command,
    }
    config = model_config("ensemble", {"members": _member_configs(source_config), "flip": True},
                          params=sum(p.numel() for p in adapted.parameters()),
                          protocol=source_config.get("protocol"), adapted=record)
    if out.exists():
        shutil.rmtree(out)  # checked above: --force, and a model folder
    save_model(adapted, out, config, source_config.get("weight_storage", "float32"))
    config["weights_sha256"] = weights_sha256(out)  # ties the ONNX export to these weights
    folder_out = ModelFolder(out)
    folder_out.write_config(config)
    if command:
        append_command(out, command)
    metrics = {"architecture": "ensemble", "evaluated_on": "cross-validation on the adaptation photos",
               "images": cv["images"], "accuracy": cv["accuracy"],
               "balanced_accuracy": cv["balanced_accuracy"],
               "per_class": cv["per_class"], "shipped_on_same_photos": _brief(shipped_metrics),
               "adapted": record, "person_disjoint": split.person_disjoint}
    folder_out.write_metrics(metrics)
    onnx = _export(out, faces.crops, features)
    metrics["onnx"] = onnx
    folder_out.write_metrics(metrics)
    seconds["fit_and_write"] = time.perf_counter() - start

    valid = None
    if data_root is not None:
        start = time.perf_counter()
        try:
            valid = _ferplus_valid(out, source.path, Path(data_root))
        except (FerkitError, OSError) as exc:
            log(f"FERPlus Valid not measured ({exc})")
        seconds["ferplus_valid"] = time.perf_counter() - start
    result = AdaptResult(out, faces, split.kind, len(split.splits), cv, shipped_metrics, temperature, rows,
                         valid, onnx, seconds)
    from ferkit.adaptation.report import write_report

    write_report(result)
    if valid is not None:
        metrics["ferplus_valid"] = valid
        folder_out.write_metrics(metrics)
    if not out.is_dir():  # pragma: no cover - written above
        raise ModelFileError(f"{out}: not written")
    return result


def _brief(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
            "per_class": {k: {"recall": v["recall"], "support": v["support"]}
                          for k, v in metrics["per_class"].items()}}


__all__ = ["DEFAULT_AUGMENT", "DEFAULT_L2", "AdaptResult", "adapt", "adapted_model",
           "shipped_heads"]
