"""Classifier re-training (cRT, ferkit.training.head) swept over balance and label protocol, on FERPlus Valid.

    .venv/bin/python -m bench.experiments.classifier_retraining --model fast [--balance none sqrt full]
        [--protocols crossentropy all_votes] [--out runs/fast-crt]

For each label protocol and balance, the model's last layer (each member's, for an ensemble) is
re-learned exactly as `ferkit retrain-head -m MODEL --protocol P --balance B` does (the features are
computed once per protocol). Prints FERPlus Valid accuracy, balanced accuracy and disgust / contempt
recall (majority protocol) for every variant; with `--out`, writes each variant as the model folder
`OUT-<protocol>-<balance>` (with the Valid temperature folded in, as `ferkit retrain-head` does,
unless `--no-calibrate`), for `bench/experiments/prior_strength.py --models ...` on the dev sets. Valid only:
never Test.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from ferkit.data import label_split, load_ferplus
from ferkit.models import load
from ferkit.models.bundled import resolve_model
from ferkit.settings import data_root
from ferkit.training.head import (
    calibrated,
    heads_of,
    pooled_features,
    save_retrained,
    train_head,
    training_features,
    with_heads,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast", help="a bundled name or a model folder")
    parser.add_argument("--balance", nargs="*", default=["none", "sqrt", "full"])
    parser.add_argument("--protocols", nargs="*", default=["crossentropy", "all_votes"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default=None,
                        help="write each variant as the model folder OUT-<protocol>-<balance>")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="write the heads without the Valid temperature `ferkit retrain-head` folds in")
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = resolve_model(args.model)
    model = load(source.path)
    networks = heads_of(model)
    valid = label_split(load_ferplus(args.data, splits=("valid",))["valid"], "majority")
    valid_features = [pooled_features(n, valid.images) for n in networks]
    support = np.bincount(valid.labels, minlength=8)
    print(f"| head | protocol | balance | Valid acc | Valid bal | disgust recall ({support[5]}) "
          f"| contempt recall ({support[7]}) |")
    print("|---|---|---|---|---|---|---|")
    score([n.fc for n in networks], valid_features, valid.labels, f"{args.model} as trained", "-", "-")
    for protocol in args.protocols:
        features, targets, labels = training_features(networks, args.data, protocol)
        for balance in args.balance:
            heads = [train_head(n.fc, f, targets, labels, balance, args.epochs, args.lr, seed=i)
                     for i, (n, f) in enumerate(zip(networks, features, strict=True))]
            score(heads, valid_features, valid.labels, "re-trained", protocol, balance)
            if args.out:
                settings = {"from": args.model, "protocol": protocol, "balance": balance,
                            "epochs": args.epochs, "lr": args.lr, "views": "face + mirror"}
                if args.calibrate:  # as `ferkit retrain-head` does; no answer changes under `ferplus`
                    heads, settings["temperature"] = calibrated(heads, valid_features, valid.labels)
                save_retrained(with_heads(model, heads), source.path, f"{args.out}-{protocol}-{balance}",
                               settings, command=shlex.join(["python", *sys.argv]))


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
