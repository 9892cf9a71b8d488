"""What adaptation learns from: each member network's globally pooled last feature map, for the face
and for its mirror image, computed once with the networks frozen (eval mode).

A model is adapted member by member: the bundled `default` is an ensemble of four ResNets, each of
which ends in global average pooling and one linear layer (`fc`). Their pooled features are what the
shipped heads read, so new heads fitted on them drop into the same networks and the result is an
ordinary ferkit model folder.
"""

from __future__ import annotations

import numpy as np
import torch

from ferkit.errors import ArgumentError
from ferkit.models import FerModel, normalize
from ferkit.models.ensemble import pooled_linear_networks


def member_networks(model: FerModel) -> list[FerModel]:
    """The networks whose last layer is adapted: each member of an ensemble, or the model itself.
    Each must end in global pooling + one linear layer (the resnet family)."""
    return pooled_linear_networks(model, "be adapted")


@torch.no_grad()
def pooled_features(networks: list[FerModel], crops: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """uint8 faces (N, 48, 48) -> float32 (N, M, 2, C): for each of the M networks, the pooled
    features of the face (view 0) and of its mirror image (view 1). Every network must pool to the
    same C (the members of one ensemble do, or their heads could not be averaged channel by channel
    here)."""
    crops = np.asarray(crops)
    out: list[np.ndarray] = []
    for start in range(0, len(crops), batch_size):
        x = normalize(crops[start:start + batch_size])
        x = torch.cat([x, x.flip(-1)])  # faces, then their mirrors: one pass per network
        per_network = []
        for network in networks:
            network.eval()
            pooled = network.pool(network.forward_features(x)).flatten(1)  # (2n, C)
            per_network.append(torch.stack(pooled.chunk(2), dim=1))  # (n, 2, C)
        out.append(torch.stack(per_network, dim=1).float().numpy())  # (n, M, 2, C)
    if not out:
        channels = networks[0].fc.in_features
        return np.zeros((0, len(networks), 2, channels), dtype=np.float32)
    return np.concatenate(out)


def augmented_crops(crops: np.ndarray, copies: int, *, seed: int = 0) -> np.ndarray:
    """`copies` jittered versions of each face (copies * N, 48, 48), copy-major: the crop jitter a
    detector and aligner make (shift, rotation, scale) and the photo-like degradations training has
    (blur, a small face's down-and-up sampling, JPEG, gamma, noise), with brightness and contrast.
    No mirror: the mirror is always a view of its own."""
    from ferkit.training.augment import BatchAugment
    from ferkit.training.config import AugmentConfig

    if copies < 0:
        raise ArgumentError(f"copies must be >= 0, got {copies}")
    config = AugmentConfig(flip=False, shift=0.05, rotation=8.0, scale=0.08, brightness=0.15, contrast=0.2,
                           erasing=0.0, blur=0.3, downscale=0.3, jpeg=0.3, gamma=0.3, noise=0.3)
    augment = BatchAugment(config)
    torch.manual_seed(seed)  # BatchAugment draws from torch's global generator
    faces = torch.from_numpy(np.asarray(crops, dtype=np.float32)[:, None] / 255.0)
    out = [augment(faces) for _ in range(copies)]
    if not out:
        return np.zeros((0, *np.asarray(crops).shape[1:]), dtype=np.uint8)
    return (torch.cat(out)[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
