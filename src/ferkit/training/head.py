"""Classifier re-training (cRT): a trained network's features kept, its last layer re-learned under
class-balanced sampling.

Kang et al., ICLR 2020 ("Decoupling representation and classifier for long-tailed recognition"):
plain (instance-balanced) training learns the best features, and the rare classes are then served by
re-learning only the linear classifier with class-balanced sampling. The pooled last feature map of
every FERPlus training face and of its mirror image is computed once (for an ensemble, each member's,
and each member gets its own head); the head, initialised from the network's own, is trained with
Adam on cross-entropy to the label protocol's soft targets, each epoch drawn with replacement, face i
with probability proportional to 1 (`none`), 1/sqrt(count of its class) (`sqrt`) or 1/count (`full`).
Minutes on a CPU, against hours for a run: `ferkit retrain-head -m MODEL --out runs/NAME`.

Soft targets that keep every dissenting vote, drawn class-balanced, leave the head under-confident
(Valid confidence ~0.57 where ~0.82 of the answers are right; ECE 0.15 against the ensemble's 0.04), so
by default one temperature T is fitted on FERPlus Valid (Guo et al., ICML 2017: the NLL of the
majority labels) and folded into the heads (weights and bias / T). It changes no answer: the model's
output is softmax(mean of the members' logits / T), whose argmax does not depend on T.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.data import PROTOCOLS, label_split, load_ferplus
from ferkit.errors import ArgumentError
from ferkit.models import FerModel, load, normalize
from ferkit.models.ensemble import Ensemble, pooled_linear_networks
from ferkit.models.folder import append_command, read_model_config
from ferkit.models.io import save_model
from ferkit.training.data import class_balanced_weights

BALANCE_POWERS = {"none": 0.0, "sqrt": 0.5, "full": 1.0}


def heads_of(model: FerModel) -> list[FerModel]:
    """The networks whose last layer (`fc` after global pooling) is re-learned: the model itself, or
    each member of an ensemble."""
    if isinstance(model, Ensemble) and model.flip:
        raise ArgumentError("an ensemble with built-in flip cannot have its heads re-learned (its head "
                            "averages two views); build it without --flip")
    return pooled_linear_networks(model, "have their head re-learned")


@torch.no_grad()
def pooled_features(network: FerModel, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """(N, 48, 48) uint8 -> (N, C): the globally pooled last feature map, what the head sees in eval
    mode (its dropout is off)."""
    network.eval()
    out = [network.pool(network.forward_features(normalize(images[start:start + batch_size]))).flatten(1)
           for start in range(0, len(images), batch_size)]
    return torch.cat(out)


def train_head(fc: nn.Linear, features: torch.Tensor, targets: torch.Tensor, labels: np.ndarray,
               balance: str = "full", epochs: int = 10, lr: float = 1e-3, seed: int = 0) -> nn.Linear:
    """A copy of `fc` trained on (features (N, C), soft targets (N, 8)), each epoch N draws with
    replacement by class-balanced sampling over the hard `labels` (N,)."""
    if balance not in BALANCE_POWERS:
        raise ArgumentError(f"balance must be one of {', '.join(BALANCE_POWERS)}, not {balance!r}")
    head = copy.deepcopy(fc).float().train()
    weights = class_balanced_weights(labels, BALANCE_POWERS[balance])
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.multinomial(weights, len(labels), replacement=True, generator=generator)
        for batch in order.split(512):
            loss = -(targets[batch] * F.log_softmax(head(features[batch]), dim=1)).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


def training_features(networks: list[FerModel], data_root: str | Path, protocol: str
                      ) -> tuple[list[torch.Tensor], torch.Tensor, np.ndarray]:
    """Each network's pooled features of the FERPlus training faces and their mirrors, with the
    protocol's soft targets and hard labels (the same for both views)."""
    train = label_split(load_ferplus(data_root, splits=("train",))["train"], protocol)
    images = np.concatenate([train.images, train.images[:, :, ::-1]])  # the face, then its mirror
    targets = torch.from_numpy(np.concatenate([train.targets, train.targets])).float()
    return ([pooled_features(n, images) for n in networks], targets,
            np.concatenate([train.labels, train.labels]))


def fit_temperature(logits: torch.Tensor, labels: np.ndarray) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) against hard labels (1-D, convex in log T)."""
    y = torch.as_tensor(labels)
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(log_t.detach().exp())


def calibrated(heads: list[nn.Linear], features: list[torch.Tensor], labels: np.ndarray
               ) -> tuple[list[nn.Linear], float]:
    """`heads` with one temperature, fitted on (features, labels), folded in; and that temperature."""
    with torch.no_grad():
        logits = torch.stack([h(f) for h, f in zip(heads, features, strict=True)]).mean(0)  # (N, 8)
    temperature = fit_temperature(logits, labels)
    scaled = []
    for head in heads:
        head = copy.deepcopy(head)
        with torch.no_grad():
            head.weight /= temperature
            head.bias /= temperature
        scaled.append(head)
    return scaled, temperature


def with_heads(model: FerModel, heads: list[nn.Linear]) -> FerModel:
    """A copy of `model` whose (members') last layers are `heads`."""
    retrained = copy.deepcopy(model)
    for network, head in zip(heads_of(retrained), heads, strict=True):
        network.fc = head
    return retrained.eval()


def save_retrained(model: FerModel, source: Path, out: str | Path, settings: dict[str, Any],
                   command: str | None = None) -> Path:
    """Write `model` as a model folder: the source's model.json (weight storage kept) plus
    `head_retrained` (what `ferkit bundle` reports as the last training step)."""
    out = Path(out)
    config = read_model_config(source)
    storage = config.get("weight_storage", "float32")
    config = {k: v for k, v in config.items() if k not in ("weights_sha256", "metrics", "weight_storage")}
    config["head_retrained"] = settings
    save_model(model, out, config, storage)
    if command:
        append_command(out, command)
    return out


def retrain_head(model: str, out: str | Path, data_root: str | Path, protocol: str = "all_votes",
                 balance: str = "full", epochs: int = 10, lr: float = 1e-3, calibrate: bool = True,
                 command: str | None = None, log: Callable[[str], None] = lambda message: None) -> Path:
    """`ferkit retrain-head`: `model` (bundled name or model folder) with its last layer(s) re-learned
    under class-balanced sampling, written to the new folder `out`. Member i's head uses seed i. With
    `calibrate`, one temperature fitted on FERPlus Valid is folded into the heads (no answer changes)."""
    from ferkit.models.bundled import resolve_model

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArgumentError(f"{out}: already exists and is not an empty folder (nothing is written over)")
    if balance not in BALANCE_POWERS:
        raise ArgumentError(f"--balance must be one of {', '.join(BALANCE_POWERS)}, not {balance!r}")
    if protocol not in PROTOCOLS:
        raise ArgumentError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    source = resolve_model(model)
    network = load(source)
    networks = heads_of(network)
    log(f"features of {len(networks)} network(s) on the FERPlus training faces and their mirrors")
    features, targets, labels = training_features(networks, data_root, protocol)
    heads = [train_head(n.fc, f, targets, labels, balance, epochs, lr, seed=i)
             for i, (n, f) in enumerate(zip(networks, features, strict=True))]
    settings = {"from": str(model), "protocol": protocol, "balance": balance, "epochs": epochs, "lr": lr,
                "views": "face + mirror"}
    if calibrate:
        valid = label_split(load_ferplus(data_root, splits=("valid",))["valid"], "majority")
        valid_features = [pooled_features(n, valid.images) for n in networks]
        heads, settings["temperature"] = calibrated(heads, valid_features, valid.labels)
        log(f"temperature fitted on FERPlus Valid: {settings['temperature']:.3f}")
    return save_retrained(with_heads(network, heads), source.path, out, settings, command)
