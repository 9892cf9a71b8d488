"""Knowledge distillation: a trained teacher's soft predictions mixed into the training targets.

The teacher (usually an ensemble, `ferkit ensemble`) predicts every training face once, before
training; its tempered softmax is mixed into the label protocol's vote distribution:

    target = (1 - distill_weight) * votes + distill_weight * softmax(log p_teacher / T)

Predicting once on the clean faces, instead of running the teacher on every augmented batch,
keeps a distilled run as cheap as a plain one (an online 3-member teacher would double the
cost of every step on this CPU); the augmentations are mild enough (shift/rotate/zoom by ~10%,
mirror) that the clean face's distribution still describes the augmented one. Validation keeps
the plain vote targets, so the best checkpoint is chosen against the crowd, not the teacher.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ferkit.errors import ArgumentError, ConfigError, FerkitError
from ferkit.evaluation.predict import predict_proba
from ferkit.models import NUM_CLASSES

log = logging.getLogger("ferkit.training")

TEACHER_FILE = "teacher_probs.npy"


def teacher_probabilities(teacher: torch.nn.Module, images: np.ndarray, temperature: float = 1.0,
                          batch_size: int = 512) -> np.ndarray:
    """softmax(log p_teacher / T) for uint8 faces (N, 48, 48): (N, 8) float32, i.e. p^(1/T)
    renormalised. T > 1 flattens the teacher's distribution, passing on more of its second choices."""
    probs = predict_proba(teacher, images, batch_size=batch_size).astype(np.float64)
    tempered = np.exp(np.log(np.maximum(probs, 1e-12)) / temperature)
    return (tempered / tempered.sum(axis=1, keepdims=True)).astype(np.float32)


def mix_targets(targets: np.ndarray, teacher_probs: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * targets + weight * teacher_probs; rows still sum to 1."""
    if targets.shape != teacher_probs.shape:
        raise ArgumentError(f"targets {targets.shape} and teacher probabilities {teacher_probs.shape} differ")
    return ((1.0 - weight) * targets + weight * teacher_probs).astype(np.float32)


def load_teacher(teacher: str) -> tuple[torch.nn.Module, Path]:
    """The teacher model (bundled name or model folder) and its folder; ConfigError if unusable."""
    from ferkit.inference.bundled import resolve_model
    from ferkit.models import load_model

    try:
        source = resolve_model(teacher)
        if source.backend != "torch":
            raise ConfigError(f"config value teacher={teacher!r}: an .onnx file cannot teach; "
                              "give a model folder or a bundled model name")
        return load_model(source.path), source.path
    except ConfigError:
        raise
    except FerkitError as exc:
        raise ConfigError(f"config value teacher={teacher!r}: {exc}") from None


def cached_teacher_probabilities(run_dir: Path, teacher: str, images: np.ndarray,
                                 temperature: float) -> np.ndarray:
    """Teacher probabilities for the run's training faces, computed once and kept in the run folder
    (a resumed run reuses them; the cache is plain .npy, read without pickle)."""
    cache = run_dir / TEACHER_FILE
    stamp = run_dir / (TEACHER_FILE + ".json")
    key = {"teacher": teacher, "temperature": temperature, "faces": len(images)}
    if cache.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
        probs = np.load(cache, allow_pickle=False)
        if probs.shape == (len(images), NUM_CLASSES):
            return probs
    model, folder = load_teacher(teacher)
    log.info("distillation: teacher %s predicting %d training faces (T=%g)", folder, len(images),
             temperature)
    probs = teacher_probabilities(model, images, temperature)
    np.save(cache, probs, allow_pickle=False)
    stamp.write_text(json.dumps(key))
    return probs
