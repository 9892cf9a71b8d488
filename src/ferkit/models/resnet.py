"""A ResNet sized for 48x48 faces and CPU throughput (He et al. 2016, basic blocks).

The stem keeps full resolution for one cheap conv, then each stage halves the side:
48 -> 24 -> 12 -> 6. Global average pooling makes the head independent of the input side.
`input_side` other than 48 resizes the face (bilinear) inside the model first, while the model still
takes the 48x48 faces of every other part of ferkit: above 48 as the FERPlus paper fed its VGG13 64x64
faces (more spatial resolution in every stage), below it for speed; either way (side/48)^2 the compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import ArgumentError
from ferkit.models.base import INPUT_SIZE, NUM_CLASSES, FerModel
from ferkit.models.registry import register_model

MIN_INPUT_SIDE = 32  # the face resized no smaller: three stages end at 4x4


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(FerModel):
    def __init__(self, widths: tuple[int, ...] = (64, 128, 256), depths: tuple[int, ...] = (2, 2, 2),
                 stem_width: int = 32, dropout: float = 0.2, input_side: int = INPUT_SIZE):
        super().__init__()
        if input_side < MIN_INPUT_SIDE:
            raise ArgumentError(f"input_side must be at least {MIN_INPUT_SIDE}, not {input_side}")
        self.input_side = input_side
        self.stem = nn.Sequential(nn.Conv2d(1, stem_width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True))
        stages, in_ch = [], stem_width
        for width, depth in zip(widths, depths, strict=True):
            blocks = [BasicBlock(in_ch if i == 0 else width, width, 2 if i == 0 else 1)
                      for i in range(depth)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, NUM_CLASSES)

    @property
    def cam_layer(self) -> str | None:
        """Grad-CAM's default layer: the 12x12 stage (stage i ends at 48 / 2^(i+1)), or the stage
        before the last in nets of fewer than three stages. After global average pooling the 6x6
        (and 3x3) stages' Grad-CAM is a centred blob; the 12x12 stage localises brows, eyes and
        mouth (docs/results/*/gradcam_gallery.png)."""
        return f"stages.{min(len(self.stages) - 2, 1)}" if len(self.stages) > 1 else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_side != x.shape[-1]:
            x = F.interpolate(x, size=(self.input_side, self.input_side), mode="bilinear",
                              align_corners=False)  # (N,1,48,48) -> (N,1,side,side)
        return self.stages(self.stem(x))  # (N,1,48,48) -> (N,widths[-1],6,6); 3x3 with four stages

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(features).flatten(1)))  # (N, 8)


@register_model
def resnet(widths: tuple[int, ...] = (64, 128, 256), depths: tuple[int, ...] = (2, 2, 2),
           stem_width: int = 32, dropout: float = 0.2, input_side: int = INPUT_SIZE) -> ResNet:
    """ResNet for 48x48: stem 32, stages 64/128/256 x 2 basic blocks, GAP; ~2.8M params."""
    return ResNet(tuple(widths), tuple(depths), stem_width, dropout, input_side)


# The shipped variants by name, as timm registers resnet18/resnet34 (configs/*.yaml train them).
@register_model
def resnet_small(dropout: float = 0.2, input_side: int = INPUT_SIZE) -> ResNet:
    """ResNet 16 / 32-64-128 x 2 blocks (configs/resnet.yaml; the bundled `fast`): 0.69M params."""
    return resnet((32, 64, 128), (2, 2, 2), 16, dropout, input_side)


@register_model
def resnet18h(dropout: float = 0.2, input_side: int = INPUT_SIZE) -> ResNet:
    """Half-width ResNet-18, 32-64-128-256 x 2 blocks (configs/resnet18h.yaml; `default`'s members): 2.8M."""
    return resnet((32, 64, 128, 256), (2, 2, 2, 2), 32, dropout, input_side)
