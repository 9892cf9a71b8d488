"""`predict_proba`: a model's softmax probabilities for uint8 faces (ferkit.models.classify), checked."""

from __future__ import annotations

import numpy as np
from torch import nn

from ferkit.errors import EvaluationError
from ferkit.models import INPUT_SIZE
from ferkit.models.classify import class_probabilities, eval_mode, torch_logits
from ferkit.tta import check_tta


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise EvaluationError(f"images: expected uint8 faces (N, {INPUT_SIZE}, {INPUT_SIZE}), "
                              f"got shape {images.shape}")
    if images.dtype != np.uint8:
        raise EvaluationError(f"images: expected dtype uint8 (raw pixels), got {images.dtype}")
    return images


def predict_proba(model: nn.Module, images_uint8: np.ndarray, batch_size: int = 256,
                  tta: str | None = None, progress: bool = False) -> np.ndarray:
    """Softmax probabilities (N, 8) float32 in EMOTIONS order for uint8 faces (N, 48, 48).

    `tta="flip"` averages the softmax of each face and its horizontal mirror (faces are
    roughly symmetric, so the mirror is a free second opinion). `progress` shows a bar.
    Thread count is left to the caller (see `cpu_threads`)."""
    tta = check_tta(tta)
    images = _check_images(images_uint8)
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    with eval_mode(model):
        return class_probabilities(torch_logits(model), images, batch_size, tta,
                                   progress=f"predicting {len(images):,} faces" if progress else None)
