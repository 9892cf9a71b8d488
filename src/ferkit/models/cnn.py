"""The seed's plain CNNs: the Phase 1 `baseline` and the Phase 2 `deep_cnn`.

Both are stacks of VGG-style blocks, one mechanism with parameters:
block(c) = [Conv 3x3 (c, same) -> ReLU -> (BatchNorm)] x convs -> MaxPool 2x2 -> Dropout,
then Flatten -> Dense -> ReLU -> (BatchNorm) -> Dropout 0.5 -> Dense 8.
The layer order (ReLU before BatchNorm) is the seed's Keras order.
"""

from __future__ import annotations

import torch
from torch import nn

from ferkit.models.base import INPUT_SIZE, NUM_CLASSES, FerModel
from ferkit.models.registry import register_model


def conv_block(in_ch: int, out_ch: int, convs: int, batch_norm: bool, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1), nn.ReLU()]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01))  # Keras defaults
    layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class PlainCNN(FerModel):
    """VGG-style blocks + one hidden dense layer."""

    def __init__(self, widths: tuple[int, ...], dense: int, batch_norm: bool = True,
                 block_dropout: float = 0.25, dense_dropout: float = 0.5, convs_per_block: int = 2):
        super().__init__()
        blocks, in_ch = [], 1
        for width in widths:
            blocks.append(conv_block(in_ch, width, convs_per_block, batch_norm, block_dropout))
            in_ch = width
        self.features = nn.Sequential(*blocks)
        side = INPUT_SIZE // 2 ** len(widths)
        head: list[nn.Module] = [nn.Flatten(), nn.Linear(in_ch * side * side, dense), nn.ReLU()]
        if batch_norm:
            head.append(nn.BatchNorm1d(dense, eps=1e-3, momentum=0.01))
        head += [nn.Dropout(dense_dropout), nn.Linear(dense, NUM_CLASSES)]
        self.head = nn.Sequential(*head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (N, widths[-1], 48 / 2^blocks, same)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)  # (N, 8)


@register_model
def deep_cnn(block_dropout: float = 0.25, dense_dropout: float = 0.5) -> PlainCNN:
    """Seed Phase 2: blocks 64/128/256 (2 convs + BN each), dense 512 + BN; 5,873,096 params."""
    # (N,1,48,48) -> (N,64,24,24) -> (N,128,12,12) -> (N,256,6,6) -> 9,216 -> 512 -> 8
    return PlainCNN((64, 128, 256), dense=512, batch_norm=True,
                    block_dropout=block_dropout, dense_dropout=dense_dropout)


@register_model
def baseline(block_dropout: float = 0.25, dense_dropout: float = 0.5) -> PlainCNN:
    """Seed Phase 1: blocks 32/64 (2 convs each, no BN), dense 128; 1.25M params."""
    # (N,1,48,48) -> (N,32,24,24) -> (N,64,12,12) -> 9,216 -> 128 -> 8
    return PlainCNN((32, 64), dense=128, batch_norm=False,
                    block_dropout=block_dropout, dense_dropout=dense_dropout)
