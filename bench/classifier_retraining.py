"""Classifier re-training (cRT): a trained network's features kept, its last linear layer re-learned
with class-balanced sampling.

    .venv/bin/python bench/classifier_retraining.py --model fast [--balance none sqrt full]
        [--protocols crossentropy all_votes] [--out runs/fast-crt]

Kang et al., ICLR 2020 ("Decoupling representation and classifier for long-tailed recognition"):
instance-balanced training learns the best features, and the rare classes are then served by
re-learning only the classifier with class-balanced sampling. Here the pooled last feature map of
every FERPlus training face and its mirror image is computed once (for an ensemble, each member's),
and the linear head (initialised from the network's own) is trained for `--epochs` with Adam on
cross-entropy to each label protocol's soft targets, each epoch drawn with replacement, face i with
probability proportional to 1 (none), 1/sqrt(count of its class) (sqrt) or 1/count (full). Prints
FERPlus Valid accuracy and balanced accuracy (majority protocol) for every variant, and with `--out`
writes each variant as a model folder (the network's weights with the new head;
`OUT-<protocol>-<balance>`) that every ferkit command reads, e.g. `bench/prior_strength.py --models
OUT-...` for the dev sets. Valid only: never Test.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from ferkit.cli import default_data_root
from ferkit.data import label_split, load_ferplus
from ferkit.inference.bundled import resolve_model
from ferkit.models import load_model, normalize
from ferkit.models.ensemble import Ensemble
from ferkit.models.io import read_model_config, save_model


@torch.no_grad()
def pooled_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """(N, 48, 48) uint8 -> (N, C): the globally pooled last feature map, as the head sees it
    (dropout sits before the head and is off in eval mode)."""
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size])
        out.append(model.pool(model.forward_features(x)).flatten(1))
    return torch.cat(out)


def train_head(fc: torch.nn.Linear, features: torch.Tensor, targets: torch.Tensor, labels: np.ndarray,
               balance: str, epochs: int, lr: float, seed: int) -> torch.nn.Linear:
    """A copy of `fc` trained on (features, soft targets), each epoch drawn by class-balanced sampling."""
    head = copy.deepcopy(fc).train()
    counts = np.bincount(labels, minlength=targets.shape[1]).astype(np.float64)
    power = {"none": 0.0, "sqrt": 0.5, "full": 1.0}[balance]
    weights = torch.from_numpy(counts[labels] ** -power)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast",
                        help="a bundled name or a model folder: one ResNet, or an ensemble of them (each "
                             "member's head is re-learned on its own features)")
    parser.add_argument("--balance", nargs="*", default=["none", "sqrt", "full"])
    parser.add_argument("--protocols", nargs="*", default=["crossentropy", "all_votes"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default=None,
                        help="write each variant as the model folder OUT-<protocol>-<balance>")
    parser.add_argument("--data", default=str(default_data_root()))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = resolve_model(args.model)
    model = load_model(source.path).eval()
    if isinstance(model, Ensemble) and model.flip:
        raise SystemExit(f"{args.model}: an ensemble with built-in flip is not supported here")
    members = list(model.members) if isinstance(model, Ensemble) else [model]
    data = load_ferplus(args.data, splits=("train", "valid"))
    valid = label_split(data["valid"], "majority")
    valid_features = [pooled_features(m, valid.images) for m in members]
    support = np.bincount(valid.labels, minlength=8)
    print(f"| head | protocol | balance | Valid acc | Valid bal | disgust recall ({support[5]}) "
          f"| contempt recall ({support[7]}) |")
    print("|---|---|---|---|---|---|---|")
    score([m.fc for m in members], valid_features, valid.labels, f"{args.model} as trained", "-", "-")
    for protocol in args.protocols:
        train = label_split(data["train"], protocol)
        images = np.concatenate([train.images, train.images[:, :, ::-1]])  # the face and its mirror
        features = [pooled_features(m, images) for m in members]
        targets = torch.from_numpy(np.concatenate([train.targets, train.targets])).float()
        labels = np.concatenate([train.labels, train.labels])
        for balance in args.balance:
            heads = [train_head(m.fc, f, targets, labels, balance, args.epochs, args.lr, seed=i)
                     for i, (m, f) in enumerate(zip(members, features, strict=True))]
            score(heads, valid_features, valid.labels, "re-trained", protocol, balance)
            if args.out:
                write_variant(model, heads, source.path, args, protocol, balance)


def write_variant(model: torch.nn.Module, heads: list[torch.nn.Linear], source: Path,
                  args: argparse.Namespace, protocol: str, balance: str) -> None:
    """The model with its (members') last layers replaced, as the folder OUT-<protocol>-<balance>."""
    retrained = copy.deepcopy(model)
    for member, head in zip(retrained.members if isinstance(retrained, Ensemble) else [retrained], heads,
                            strict=True):
        member.fc = head
    config = read_model_config(source)
    storage = config.get("weight_storage", "float32")
    config = {k: v for k, v in config.items() if k not in ("weights_sha256", "metrics", "weight_storage")}
    config["head_retrained"] = {"from": args.model, "protocol": protocol, "balance": balance,
                                "epochs": args.epochs, "lr": args.lr, "views": "face + mirror"}
    save_model(retrained, Path(f"{args.out}-{protocol}-{balance}"), config, storage)


@torch.no_grad()
def score(heads: list[torch.nn.Linear], features: list[torch.Tensor], y: np.ndarray, name: str,
          protocol: str, balance: str) -> None:
    """Valid accuracy, balanced accuracy and rare-class recall of the heads' mean log-probability."""
    log_probs = torch.stack([F.log_softmax(h(f), dim=1) for h, f in zip(heads, features, strict=True)])
    pred = log_probs.mean(0).argmax(1).numpy()
    recall = [float((pred[y == k] == k).mean()) for k in (5, 7)]
    print(f"| {name} | {protocol} | {balance} | {float((pred == y).mean()):.4f} "
          f"| {balanced_accuracy_score(y, pred):.4f} | {recall[0]:.2f} | {recall[1]:.2f} |")


if __name__ == "__main__":
    main()
