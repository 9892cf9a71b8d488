"""An ensemble of trained ferkit models as one model: the mean of the members' log-probabilities.

Averaging independently trained networks is the cheapest accuracy lever once single runs have
converged (docs/results/README.md). The ensemble is an ordinary FerModel, so everything that takes
a model (Predictor, evaluate, ONNX export, the app) takes it unchanged:

- forward_features: the members' last feature maps concatenated on the channel axis
  (N, sum C_i, h, w), h the least common multiple of the members' sides. A smaller map (a
  four-stage ResNet ends at 3x3, a three-stage one at 6x6, one fed 64x64 faces at 4x4) is repeated
  up to h (nearest neighbour).
- forward_head: each member's head on its own channel slice, average-pooled back to the member's
  own side first (which undoes the repetition exactly); the log-softmax outputs are averaged
  (a normalised geometric mean of the probabilities, insensitive to a member's logit scale).
- cam_layer: every member's own Grad-CAM layer; Grad-CAM sums the members' maps.

With `flip=True` the model also averages over the mirrored face (flip test-time augmentation built
into the model, so `Predictor()`, `ferkit evaluate`, ONNX and the app all get it): each member
runs once on a 2N batch (faces, then mirrored faces), and forward_features puts the mirrored view's
channels after the plain view's. Grad-CAM maps the mirrored view's heatmap back before summing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import ArgumentError
from ferkit.models.base import INPUT_SIZE, FerModel
from ferkit.models.registry import create_model, register_model


class Ensemble(FerModel):
    def __init__(self, members: list[FerModel], flip: bool = False):
        super().__init__()
        if not members:
            raise ArgumentError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.flip = flip
        # channels each member contributes to forward_features, measured once on a blank face
        with torch.no_grad():
            blank = torch.zeros(1, 1, INPUT_SIZE, INPUT_SIZE)
            shapes = [_eval_features_shape(m, blank) for m in members]
        if any(len(shape) != 3 or shape[1] != shape[2] for shape in shapes):
            raise ArgumentError(f"ensemble members' feature maps are not square: {[s[1:] for s in shapes]}")
        side = math.lcm(*(shape[1] for shape in shapes))
        self.channels = [shape[0] for shape in shapes]
        self.repeats = [side // shape[1] for shape in shapes]  # nearest-neighbour factor to the side

    @property
    def cam_layer(self) -> list[str]:
        """Each member's Grad-CAM layer (its `cam_layer`, else its last conv layer)."""
        layers = []
        for i, member in enumerate(self.members):
            own = getattr(member, "cam_layer", None)
            if own is None:
                own = [n for n, m in member.named_modules() if isinstance(m, nn.Conv2d)][-1]
            layers.append(f"members.{i}.{own}")
        return layers

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.cat([x, x.flip(-1)])  # (2N, 1, 48, 48): faces, then mirrored faces
        maps = [_repeat(m.forward_features(x), k) for m, k in zip(self.members, self.repeats, strict=True)]
        features = torch.cat(maps, dim=1)  # (B, sum C_i, h, w)
        if self.flip:
            plain, mirrored = features.chunk(2)
            features = torch.cat([plain, mirrored], dim=1)  # (N, 2 sum C_i, h, w)
        return features

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        views = features.chunk(2, dim=1) if self.flip else (features,)
        log_probs = [torch.log_softmax(m.forward_head(_unrepeat(f, k)).float(), dim=1)
                     for view in views
                     for m, f, k in zip(self.members, torch.split(view, self.channels, dim=1), self.repeats,
                                        strict=True)]
        return torch.stack(log_probs).mean(dim=0)  # (N, 8)


def _repeat(features: torch.Tensor, k: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, k*h, k*w), each value repeated in a k x k block."""
    return features if k == 1 else F.interpolate(features, scale_factor=k, mode="nearest")


def _unrepeat(features: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of _repeat: the mean of each k x k block of equal values is that value."""
    return features if k == 1 else F.avg_pool2d(features, k)


def _eval_features_shape(member: FerModel, blank: torch.Tensor) -> tuple[int, ...]:
    was_training = member.training
    member.eval()  # a blank batch must not touch BatchNorm running statistics
    shape = tuple(member.forward_features(blank).shape[1:])
    member.train(was_training)
    return shape


@register_model
def ensemble(members: list[dict[str, Any]] | None = None, flip: bool = False) -> Ensemble:
    """Ensemble of models: mean log-probability of members [{architecture, model_args}, ...]."""
    if members is None:  # what `create_model("ensemble")` shows: two default ResNets
        members = [{"architecture": "resnet"}, {"architecture": "resnet"}]
    for i, member in enumerate(members):
        if not isinstance(member, dict) or "architecture" not in member:
            raise ArgumentError(f"members[{i}]: expected {{'architecture': ..., 'model_args': ...}}")
    return Ensemble([create_model(m["architecture"], **m.get("model_args", {})) for m in members], flip)


def pooled_linear_networks(model: FerModel, purpose: str) -> list[FerModel]:
    """The networks of `model` whose last layer (`fc` after global pooling) can be re-learned: the
    model itself, or each member of an ensemble. Any other network is an ArgumentError naming
    `purpose` (what the caller wants to do with the heads)."""
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    for member in members:
        if not isinstance(getattr(member, "fc", None), nn.Linear) or not hasattr(member, "pool"):
            raise ArgumentError(f"{type(member).__name__}: only networks that end in global pooling + one "
                                f"linear layer (the resnet family, and ensembles of them) can {purpose}")
    return members
