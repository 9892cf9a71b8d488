"""Which trained runs to ensemble, chosen on FERPlus Valid (never on Test).

    .venv/bin/python -m bench.experiments.ensemble_valid runs/A runs/B runs/C [--min-size 1] [--threads 1]

Runs each model once on Valid (plain and mirrored faces), then scores every subset of at least
`--min-size` runs as `ferkit ensemble` combines them (mean of log-probabilities), without and with
flip TTA: accuracy, macro-F1 and disgust/contempt recall (majority protocol). Prints a Markdown
table, best Valid accuracy first; build the chosen subset with `ferkit ensemble -m RUN -m RUN ... --out`.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score, recall_score

from bench.common import runs_on_valid_parser, valid_split
from ferkit.emotions import EMOTIONS, emotion_index
from ferkit.evaluation.predict import predict_proba
from ferkit.models import load


def log_proba_views(run: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities of the faces and of their mirrors, from one load of the model."""
    model = load(run)
    mirrored = np.ascontiguousarray(images[:, :, ::-1])
    return tuple(np.log(predict_proba(model, faces) + 1e-12) for faces in (images, mirrored))


def main() -> None:
    parser = runs_on_valid_parser(__doc__.splitlines()[0])
    parser.add_argument("--min-size", type=int, default=1)
    args = parser.parse_args()
    valid = valid_split(args)
    y = valid.labels
    views_of = {run: log_proba_views(run, valid.images) for run in args.runs}
    plain = {run: views[0] for run, views in views_of.items()}
    mirrored = {run: views[1] for run, views in views_of.items()}
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
