"""The one classify path: uint8 faces -> normalise -> logits -> softmax, in batches, optional flip.

NumPy in, NumPy out: only the forward is a backend's (`torch_logits` wraps a PyTorch model; ONNX
Runtime takes the arrays as they are), so the ONNX path runs with no torch op, and without torch
installed.

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
from typing import TYPE_CHECKING

import numpy as np

from ferkit.emotions import EMOTIONS
from ferkit.settings import PIXEL_MEAN, PIXEL_STD

if TYPE_CHECKING:  # the torch helpers below import it when called: the ONNX path runs without it
    from torch import nn

def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 faces (N, 48, 48) or (N, 1, 48, 48) -> float32 model input (N, 1, 48, 48), in NumPy:
    what ONNX Runtime takes, with no torch op on the way (at batch 1 those cost more than the
    arithmetic)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    return (x.astype(np.float32) / np.float32(255.0) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)


Logits = Callable[[np.ndarray], np.ndarray]  # model input (n, 1, 48, 48) float32 -> (n, 8) logits


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (n, 8) logits, in their dtype. Not scipy.special's: importing it adds
    ~0.2 s to every start-up of the Predictor, which otherwise never loads SciPy."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def torch_logits(model: nn.Module) -> Logits:
    """A PyTorch model as a `Logits` function: on the model's device, no graph recorded."""
    import torch

    device = next(model.parameters()).device

    def logits(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return logits


def class_probabilities(logits: Logits, faces: np.ndarray, batch_size: int = 256, tta: str | None = None,
                        progress: str | None = None) -> np.ndarray:
    """Softmax probabilities (N, 8) float32 in EMOTIONS order for uint8 faces (N, 48, 48).

    `logits` runs the model (no gradients are recorded here; callers choose eval mode and device).
    `tta`: None or "flip". `progress`: a description to show a progress bar under."""
    out = np.zeros((len(faces), len(EMOTIONS)), dtype=np.float32)
    starts: Iterable[int] = range(0, len(faces), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=progress, transient=True)
    for start in starts:
        x = model_input(faces[start:start + batch_size])  # (n, 1, 48, 48) float32
        p = softmax(logits(x))
        if tta == "flip":
            p = (p + softmax(logits(np.ascontiguousarray(x[..., ::-1])))) / 2
        out[start:start + len(x)] = p
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
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
