"""Post-hoc logit adjustment for the rare classes, measured on FERPlus Valid.

    .venv/bin/python -m bench.experiments.logit_adjustment [--model default] [--taus 0 0.25 0.5 0.75 1]

Logit adjustment (Menon et al., 2021) subtracts tau * log(prior) from each class's log-probability,
the prior being the training set's label distribution: tau=0 is the model as trained, tau=1 the
balanced-error-optimal rule. Prints accuracy, macro-F1 and per-class recall (majority protocol) for
each tau, so the trade between overall accuracy and disgust/contempt recall is visible. Valid only:
pick tau here, never on Test.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import f1_score, recall_score

from ferkit.data import label_split, load_ferplus
from ferkit.emotions import EMOTIONS
from ferkit.inference import Predictor
from ferkit.settings import data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--taus", type=float, nargs="*", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_ferplus(args.data, splits=("train", "valid"))
    prior = label_split(data["train"], "crossentropy").targets.mean(axis=0)
    valid = label_split(data["valid"], "majority")
    log_proba = np.log(Predictor(model=args.model, prior="ferplus").predict_faces(valid.images) + 1e-12)
    y = valid.labels
    print(f"prior (train, soft labels): {[round(float(p), 4) for p in prior]}")
    print(f"valid support: {np.bincount(y, minlength=len(EMOTIONS)).tolist()}")
    print("| tau | Valid acc | macro F1 | " + " | ".join(f"{e} recall" for e in EMOTIONS) + " |")
    print("|---" * (3 + len(EMOTIONS)) + "|")
    for tau in args.taus:
        predicted = (log_proba - tau * np.log(prior)).argmax(axis=1)
        recall = recall_score(y, predicted, average=None, labels=range(len(EMOTIONS)), zero_division=0)
        print(f"| {tau:g} | {(predicted == y).mean():.3f} | {f1_score(y, predicted, average='macro'):.3f} | "
              + " | ".join(f"{r:.2f}" for r in recall) + " |")


if __name__ == "__main__":
    main()
