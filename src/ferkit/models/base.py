"""What every ferkit model is: N x 1 x 48 x 48 normalised input -> N x 8 logits.

Like timm, every model splits into `forward_features` (the last convolutional feature map,
which Grad-CAM and feature export use) and `forward_head` (features -> logits).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ferkit.emotions import EMOTIONS
from ferkit.settings import FACE_SIDE

INPUT_SIZE = FACE_SIDE
NUM_CLASSES = len(EMOTIONS)
# The one input normalisation: pixels / 255, then (x - MEAN) / STD (FERPlus pixels have
# mean ~0.51, std ~0.25, so inputs come out roughly zero-mean, unit-variance).
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 faces (N, 48, 48) or (N, 1, 48, 48) -> float32 model input (N, 1, 48, 48), in NumPy:
    what ONNX Runtime takes, with no torch op on the way (at batch 1 those cost more than the
    arithmetic)."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    return (x.astype(np.float32) / np.float32(255.0) - np.float32(PIXEL_MEAN)) / np.float32(PIXEL_STD)


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """`model_input` as a torch tensor (the same numbers)."""
    return torch.from_numpy(model_input(np.asarray(images)))


class FerModel(nn.Module):
    """Base class: subclasses define `forward_features` and `forward_head`."""

    num_classes: int = NUM_CLASSES

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (N,1,48,48) -> (N,C,h,w)
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:  # (N,C,h,w) -> (N,8)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
