"""The one classify path: uint8 faces -> normalise -> logits -> softmax, in batches, optional flip.

Every prediction in ferkit goes through `class_probabilities`: `ferkit evaluate` (predict_proba),
the Predictor's PyTorch and ONNX Runtime backends, and the benches. Only the forward differs, so the
same faces give bit-identical probabilities whichever caller asks.

Flip ("--tta flip") is the mean of the softmax of the face and of its mirror image. (An ensemble built
with `ferkit ensemble --flip` averages log-probabilities inside the model instead: that is part of the
model, not a test-time option.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ferkit.models.base import NUM_CLASSES, normalize

Logits = Callable[[torch.Tensor], torch.Tensor]  # normalised (n, 1, 48, 48) float32 -> (n, 8) logits


def class_probabilities(logits: Logits, faces: np.ndarray, batch_size: int = 256, tta: str | None = None,
                        progress: str | None = None) -> np.ndarray:
    """Softmax probabilities (N, 8) float32 in EMOTIONS order for uint8 faces (N, 48, 48).

    `logits` runs the model (no gradients are recorded here; callers choose eval mode and device).
    `tta`: None or "flip". `progress`: a description to show a progress bar under."""
    out = np.zeros((len(faces), NUM_CLASSES), dtype=np.float32)
    starts: Iterable[int] = range(0, len(faces), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=progress, transient=True)
    with torch.inference_mode():
        for start in starts:
            x = normalize(faces[start:start + batch_size])
            p = torch.softmax(logits(x).float(), dim=1)
            if tta == "flip":
                p = (p + torch.softmax(logits(torch.flip(x, dims=[3])).float(), dim=1)) / 2
            out[start:start + len(x)] = p.cpu().numpy()
    return out


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration, then the caller's mode back (a trainer may pass its model)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def cpu_threads(threads: int | None = None) -> Iterator[int]:
    """Use all cores (or `threads`) for a prediction job, then restore the previous setting,
    so a library caller's own thread choice survives an evaluation."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
