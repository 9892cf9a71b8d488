"""Whole-batch augmentation with plain tensor ops (one affine grid_sample per batch, no
per-image Python loops but JPEG's). Input and output: float (N, 1, H, W) in [0, 1].

Besides the geometric and photometric jitter, optional photo-like degradations reproduce what the
photo pipeline feeds the model and FERPlus's clean crops lack: blur, a small face's down-and-up
sampling, JPEG artefacts, gamma and sensor noise (each applied to a random share of the faces)."""

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
        x = self._photo_like(x)
        if c.erasing > 0:
            x = self._erase(x)
        return x

    def _photo_like(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        n, dev = x.shape[0], x.device
        if c.gamma:
            gamma = torch.where(torch.rand(n, device=dev) < c.gamma,
                                torch.exp(_uniform(n, -math.log(1.5), math.log(1.5), dev)), 1.0)
            x = x.clamp(min=1e-6) ** gamma.view(n, 1, 1, 1)
        if c.blur:
            x = self._blur(x, torch.rand(n, device=dev) < c.blur)
        if c.downscale:
            x = self._downscale(x, torch.rand(n, device=dev) < c.downscale)
        if c.noise:
            sigma = torch.where(torch.rand(n, device=dev) < c.noise, _uniform(n, 0.0, 0.04, dev), 0.0)
            x = (x + torch.randn_like(x) * sigma.view(n, 1, 1, 1)).clamp(0, 1)
        if c.jpeg:
            x = _jpeg(x, torch.rand(n) < c.jpeg)
        return x

    @staticmethod
    def _blur(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """A separable 5-tap Gaussian with its own sigma per face (one grouped convolution)."""
        n, _, h, w = x.shape
        sigma = _uniform(n, 0.3, 1.2, x.device).view(n, 1)
        taps = torch.arange(-2, 3, device=x.device, dtype=x.dtype).view(1, 5)
        kernel = torch.exp(-(taps ** 2) / (2 * sigma ** 2))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (N, 5)
        rows = F.conv2d(F.pad(x.view(1, n, h, w), (2, 2, 0, 0), mode="replicate"), kernel.view(n, 1, 1, 5),
                        groups=n)
        both = F.conv2d(F.pad(rows, (0, 0, 2, 2), mode="replicate"), kernel.view(n, 1, 5, 1), groups=n)
        return torch.where(chosen.view(n, 1, 1, 1), both.view(n, 1, h, w), x)

    @staticmethod
    def _downscale(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Down to one random 35-80% of the side for the batch's chosen faces, and back up."""
        if not chosen.any():
            return x
        n, _, h, w = x.shape
        side = max(8, round(h * float(torch.empty(1).uniform_(0.35, 0.8))))
        small = F.interpolate(x[chosen], size=(side, side * w // h), mode="area")
        out = x.clone()
        out[chosen] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
        return out

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


def _jpeg(x: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Re-encode the chosen faces as JPEG at a random quality in 20-70 (OpenCV, one face at a time:
    about 30 us each, a small part of a training step)."""
    import cv2
    import numpy as np

    if not chosen.any():
        return x
    out = x.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        face = (x[i, 0].detach().float().cpu().numpy() * 255).round().astype(np.uint8)
        quality = int(torch.randint(20, 71, (1,)))
        _, data = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
        out[i, 0] = torch.from_numpy(decoded).to(x.dtype) / 255.0
    return out
