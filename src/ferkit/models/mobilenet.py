"""An inverted-residual network sized for 48x48 faces (MobileNetV2, Sandler et al. 2018).

Each block widens its input by a 1x1 convolution, filters every channel alone with a 3x3 depthwise
convolution and narrows it again by a 1x1 projection, with a shortcut when the shape allows. Most of
a ResNet's compute is in dense 3x3 convolutions; here it is in the 1x1s, which is why such blocks can
run faster at the same width. The stem keeps full resolution for one cheap conv, then each stage
halves the side: 48 -> 24 -> 12 -> 6 -> 3. ReLU rather than ReLU6, which int8 export quantises as well.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.base import NUM_CLASSES, FerModel
from ferkit.models.registry import register_model


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
             relu: bool = True) -> nn.Sequential:
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_ch * expansion
        self.block = nn.Sequential(
            _conv_bn(in_ch, hidden, 1),                            # widen
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),    # depthwise 3x3
            _conv_bn(hidden, out_ch, 1, relu=False),               # project, linear bottleneck
        )
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2(FerModel):
    def __init__(self, widths: tuple[int, ...] = (24, 48, 96, 160), depths: tuple[int, ...] = (2, 3, 3, 2),
                 expansion: int = 4, stem_width: int = 16, head_width: int = 512, dropout: float = 0.2):
        super().__init__()
        self.stem = _conv_bn(1, stem_width, 3)  # (N,1,48,48) -> (N,stem,48,48)
        stages, in_ch = [], stem_width
        for width, depth in zip(widths, depths, strict=True):
            blocks = [InvertedResidual(in_ch if i == 0 else width, width, 2 if i == 0 else 1, expansion)
                      for i in range(depth)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.head_conv = _conv_bn(in_ch, head_width, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_width, NUM_CLASSES)

    @property
    def cam_layer(self) -> str | None:
        """Grad-CAM's default layer: the 12x12 stage, as for the ResNets (ferkit.models.resnet)."""
        return f"stages.{min(len(self.stages) - 2, 1)}" if len(self.stages) > 1 else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_conv(self.stages(self.stem(x)))  # (N,1,48,48) -> (N,head_width,3,3)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(features).flatten(1)))  # (N, 8)


@register_model
def mobilenetv2(widths: tuple[int, ...] = (24, 48, 96, 160), depths: tuple[int, ...] = (2, 3, 3, 2),
                expansion: int = 4, stem_width: int = 16, head_width: int = 512,
                dropout: float = 0.2) -> MobileNetV2:
    """Inverted residuals for 48x48: stem 16, stages 24/48/96/160 x 2/3/3/2, expansion 4, 1x1 head 512."""
    return MobileNetV2(tuple(widths), tuple(depths), expansion, stem_width, head_width, dropout)
