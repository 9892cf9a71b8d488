"""Fine-tuning the last stage as well as the heads, for `ferkit adapt` (docs/adapt.md): measured, not shipped.

    .venv/bin/python -m bench.experiments.adapt_finetune --l2sp 0.01 --lr 3e-4 --epochs 8 --per-class all

The posed dev set through the photo pipeline (cached by bench/experiments/adapt_posed.py under
runs/adapt/), grouped
5-fold by subject (GroupKFold, unshuffled). Each member's input to its last stage is computed once for
every face and its mirror; then, per fold, every member's last stage and head are trained jointly on the
members' mean logits over both views (Adam, batch 32, BatchNorm statistics frozen), class-balanced,
with an L2 pull toward the shipped weights (L2-SP, Li et al. 2018). Prints the held-out balanced
accuracy of each fold and of all the held-out answers.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import GroupKFold

from ferkit.adaptation.features import member_networks
from ferkit.adaptation.heads import balanced_weights
from ferkit.adaptation.validation import balanced_accuracy, per_class_sample
from ferkit.models import load, normalize
from ferkit.models.bundled import resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--l2sp", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--per-class", default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = np.load("runs/adapt/posed-bench.npz")
    labels, groups = data["labels"], data["groups"]
    networks = member_networks(load(resolve_model("default").path))
    with torch.no_grad():
        x = normalize(data["crops"])
        x = torch.cat([x, x.flip(-1)])  # faces, then mirrors
        maps = []
        for net in networks:
            side = net.input_side
            xi = x if side == x.shape[-1] else F.interpolate(x, size=(side, side), mode="bilinear",
                                                            align_corners=False)
            maps.append(net.stages[:-1](net.stem(xi)))
    n = len(labels)
    size = None if args.per_class == "all" else int(args.per_class)

    def logits(parts, idx: torch.Tensor) -> torch.Tensor:
        out = 0
        for (stage, fc), m in zip(parts, maps, strict=True):
            z = fc(stage(torch.cat([m[idx], m[idx + n]])).mean((2, 3)))
            out = out + z[:len(idx)] + z[len(idx):]
        return out / (2 * len(parts))

    predicted = np.zeros(n, dtype=int)
    rng = np.random.default_rng(0)
    for k, (train, test) in enumerate(GroupKFold(5).split(labels, labels, groups)):
        train = per_class_sample(train, labels, size, rng)
        parts = [(copy.deepcopy(net.stages[-1]).eval(), copy.deepcopy(net.fc)) for net in networks]
        params = [p for stage, fc in parts for p in [*stage.parameters(), *fc.parameters()]]
        start = [p.detach().clone() for p in params]
        optimizer = torch.optim.Adam(params, lr=args.lr)
        weights = torch.from_numpy(balanced_weights(labels[train]))
        targets = torch.from_numpy(labels[train])
        present = torch.full((8,), float("-inf"))
        present[np.unique(labels[train])] = 0
        began = time.perf_counter()
        for _ in range(args.epochs):
            for batch in torch.randperm(len(train)).split(32):
                z = logits(parts, torch.from_numpy(train)[batch]) + present
                loss = (F.cross_entropy(z, targets[batch], reduction="none") * weights[batch]).mean()
                pull = sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True))
                optimizer.zero_grad()
                (loss + 0.5 * args.l2sp * pull).backward()
                optimizer.step()
        with torch.no_grad():
            predicted[test] = logits(parts, torch.from_numpy(test)).argmax(1).numpy()
        print(f"fold {k}: {balanced_accuracy(labels[test], predicted[test]):.3f} "
              f"({time.perf_counter() - began:.0f}s)", flush=True)
    print(f"fine-tuned last stage {vars(args)}: balanced accuracy {balanced_accuracy(labels, predicted):.3f}")


if __name__ == "__main__":
    main()
