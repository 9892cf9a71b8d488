"""Whole-batch augmentation with plain tensor ops (one affine grid_sample per batch, no
per-image Python loops). Input and output: float (N, 1, H, W) in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.training.config import AugmentConfig


def _uniform(n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(low, high)


class BatchAugment(nn.Module):
    def __init__(self, config: AugmentConfig):
        super().__init__()
        self.config = config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not c.enabled:
            return x
        n, dev = x.shape[0], x.device
        x = self._affine(x)
        if c.brightness or c.contrast:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            gain = _uniform(n, 1 - c.contrast, 1 + c.contrast, dev).view(n, 1, 1, 1)
            shift = _uniform(n, -c.brightness, c.brightness, dev).view(n, 1, 1, 1)
            x = ((x - mean) * gain + mean + shift).clamp(0, 1)
        if c.erasing > 0:
            x = self._erase(x)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        n, dev = x.shape[0], x.device
        angle = _uniform(n, -c.rotation, c.rotation, dev) * (math.pi / 180)
        zoom = _uniform(n, 1 - c.scale, 1 + c.scale, dev)
        flip = (torch.where(torch.rand(n, device=dev) < 0.5, -1.0, 1.0) if c.flip
                else torch.ones(n, device=dev))
        # theta maps output coords to input coords (normalised to [-1, 1]): zoom > 1 magnifies.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
        theta[:, :, 2] = torch.empty(n, 2, device=dev).uniform_(-2 * c.shift, 2 * c.shift)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        """Random erasing (Zhong et al. 2020): one rectangle of 2-20% of the area, noise-filled."""
        n, _, h, w = x.shape
        dev = x.device
        area = _uniform(n, 0.02, 0.2, dev) * h * w
        ratio = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), dev))
        eh = (area * ratio).sqrt().clamp(1, h)
        ew = (area / ratio).sqrt().clamp(1, w)
        y0 = torch.rand(n, device=dev) * (h - eh)
        x0 = torch.rand(n, device=dev) * (w - ew)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        inside = ((ys >= y0.view(n, 1, 1)) & (ys < (y0 + eh).view(n, 1, 1))
                  & (xs >= x0.view(n, 1, 1)) & (xs < (x0 + ew).view(n, 1, 1)))
        chosen = (torch.rand(n, device=dev) < self.config.erasing).view(n, 1, 1)
        mask = (inside & chosen).unsqueeze(1)
        return torch.where(mask, torch.rand_like(x), x)
