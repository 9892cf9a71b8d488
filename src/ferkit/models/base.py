"""What every ferkit model is: N x 1 x 48 x 48 normalised input -> N x 8 logits.

Like timm, every model splits into `forward_features` (the last convolutional feature map,
which Grad-CAM and feature export use) and `forward_head` (features -> logits).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ferkit.emotions import EMOTIONS
from ferkit.models.classify import model_input
from ferkit.settings import FACE_SIDE

INPUT_SIZE = FACE_SIDE
NUM_CLASSES = len(EMOTIONS)


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
