"""Which trained runs to ensemble, chosen on FERPlus Valid (never on Test).

    .venv/bin/python bench/ensemble_valid.py runs/A runs/B runs/C [--min-size 1] [--threads 1]

Runs each model once on Valid (plain and mirrored faces), then scores every subset of at least
`--min-size` runs as `ferkit ensemble` combines them (mean of log-probabilities), without and with
flip TTA: accuracy, macro-F1 and disgust/contempt recall (majority protocol). Prints a Markdown
table, best Valid accuracy first; build the chosen subset with `ferkit ensemble ... --out`.
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, recall_score

from ferkit.cli import default_data_root
from ferkit.data import label_split, load_ferplus
from ferkit.emotions import EMOTIONS, emotion_index
from ferkit.models import load_model, normalize


def log_proba(run: Path, images: np.ndarray, flip: bool) -> np.ndarray:
    model = load_model(run)
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 512):
            x = normalize(images[start:start + 512])
            x = torch.flip(x, dims=[3]) if flip else x
            out.append(torch.log_softmax(model(x).float(), dim=1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--min-size", type=int, default=1)
    parser.add_argument("--data", default=str(default_data_root()))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    valid = label_split(load_ferplus(args.data, splits=("valid",))["valid"], "majority")
    y = valid.labels
    plain = {run: log_proba(run, valid.images, flip=False) for run in args.runs}
    mirrored = {run: log_proba(run, valid.images, flip=True) for run in args.runs}
    rare = [emotion_index("disgust"), emotion_index("contempt")]
    rows = []
    for size in range(args.min_size, len(args.runs) + 1):
        for subset in combinations(args.runs, size):
            for tta in ("none", "flip"):
                views = [plain[r] for r in subset] + ([mirrored[r] for r in subset] if tta == "flip" else [])
                predicted = np.mean(views, axis=0).argmax(axis=1)
                recall = recall_score(y, predicted, average=None, labels=list(range(len(EMOTIONS))),
                                      zero_division=0)
                rows.append(((predicted == y).mean(), f1_score(y, predicted, average="macro"),
                             recall[rare[0]], recall[rare[1]], " + ".join(r.name for r in subset), tta))
    print(f"FERPlus Valid, majority protocol, {len(y):,} images")
    print("| runs | TTA | Valid acc | macro F1 | disgust recall | contempt recall |")
    print("|---|---|---|---|---|---|")
    for acc, f1, disgust, contempt, names, tta in sorted(rows, reverse=True):
        print(f"| {names} | {tta} | {acc:.4f} | {f1:.3f} | {disgust:.2f} | {contempt:.2f} |")


if __name__ == "__main__":
    main()
