"""`ferkit adapt` measured: learning curves on the dev sets, as a user's own material, every fit on
training folds only and scored on held-out folds.

    .venv/bin/python -m bench.experiments.adapt_posed --dataset posed      # grouped 5-fold by subject
    .venv/bin/python -m bench.experiments.adapt_posed --dataset wild       # random (stratified) 5-fold

The photos go through the photo pipeline once (ferkit.adaptation.data.read_faces) and the default's
member features (face + mirror, and jittered copies) are computed once; both are cached under
runs/adapt/ (git-ignored), so a re-run only re-fits. For each method and each number of photos per
class (1, 2, 5, 10, 20, all; drawn at random from each fold's training photos), the mean over draws (each
its own fold assignment and photos; --draws, default 10) of the balanced
accuracy of the pooled held-out answers: over the 7 classes of posed, over the 5 well-populated classes
(neutral, happiness, surprise, sadness, anger) of wild. Methods:

- shipped: the default as a user runs it (its Predictor), no fit.
- lr-logprobs: multinomial logistic regression (class-balanced, C=1) on the default's 8 log-probabilities.
- lr-features: the same on the frozen pooled features (4 members x face and mirror, standardised).
- heads l2=L: new heads on the view-averaged features, started from the shipped heads, L2 toward
  them, class-balanced (ferkit.adaptation.heads.fit_heads).
- heads l2=L remap=R absent=A aug=K: ferkit adapt's fit (ferkit.adaptation.heads.fit): those heads
  blended with weight R with the shipped heads recombined (fit_remap, an 8x8 recalibration of the
  logits centred on the shipped ones); classes absent from the photos kept as shipped (A=shipped) or
  never answered (A=off); K jittered copies of each training photo added.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ferkit.adaptation.core import shipped_heads
from ferkit.adaptation.data import read_faces
from ferkit.adaptation.features import augmented_crops, member_networks, pooled_features
from ferkit.adaptation.validation import (
    Folds,
    balanced_accuracy,
    make_folds,
    out_of_fold_logits,
    per_class_sample,
)
from ferkit.emotions import EMOTIONS
from ferkit.models import load
from ferkit.models.bundled import resolve_model

DEV_SETS = {"posed": "../shared/datasets/posed-expressions",
            "wild": "../shared/datasets/expressions-in-the-wild"}
FIVE = [EMOTIONS.index(e) for e in ("neutral", "happiness", "surprise", "sadness", "anger")]
CACHE = Path("runs/adapt")


def cached_faces(name: str, augment: int) -> dict:
    path = CACHE / f"{name}-bench.npz"
    if not path.is_file():
        start = time.perf_counter()
        faces = read_faces(DEV_SETS[name], skip_bad=True, threads=1)
        print(f"{name}: {len(faces)} faces ({len(faces.skipped)} left out) in "
              f"{time.perf_counter() - start:.0f}s", flush=True)
        np.savez(path, crops=faces.crops, labels=faces.labels, proba=faces.shipped_proba,
                 groups=faces.groups if faces.groups is not None else np.zeros(0))
    data = dict(np.load(path))
    members = member_networks(load(resolve_model("default").path))
    feature_path = CACHE / f"{name}-bench-features.npy"
    if not feature_path.is_file():
        np.save(feature_path, pooled_features(members, data["crops"]))
    data["features"] = np.load(feature_path)
    aug_path = CACHE / f"{name}-bench-aug{augment}.npy"
    if augment and not aug_path.is_file():
        copies = pooled_features(members, augmented_crops(data["crops"], augment, seed=0))
        np.save(aug_path, copies.reshape(augment, len(data["crops"]), *copies.shape[1:]))
    data["augmented"] = np.load(aug_path) if augment else None
    return data


def sklearn_oof(x: np.ndarray, labels: np.ndarray, folds: Folds, size: int | None, seed: int,
                standardise: bool) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    predicted = np.zeros(len(labels), dtype=int)
    for train, test in folds.splits:
        chosen = per_class_sample(train, labels, size, rng)
        lr = LogisticRegression(class_weight="balanced", max_iter=3000)
        fit = make_pipeline(StandardScaler(), lr) if standardise else lr
        predicted[test] = fit.fit(x[chosen], labels[chosen]).predict(x[test])
    return predicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DEV_SETS), default="posed")
    parser.add_argument("--sizes", default="1,2,5,10,20,all")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--l2", default="0.001,0.003,0.01,0.1")
    parser.add_argument("--augment", type=int, default=4, help="jittered copies computed (max used)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = cached_faces(args.dataset, args.augment)
    labels, features, augmented = data["labels"], data["features"], data["augmented"]
    groups = data["groups"] if len(data["groups"]) else None
    grouping = groups if args.dataset == "posed" else None
    # each draw its own fold assignment (and its own photos per class): the spread of both is in the mean
    fold_draws = [make_folds(labels, grouping, n_splits=5, seed=seed) for seed in range(args.draws)]
    folds = fold_draws[0]
    classes = None if args.dataset == "posed" else FIVE
    shipped = shipped_heads(load(resolve_model("default").path))
    sizes = [None if s == "all" else int(s) for s in args.sizes.split(",")]
    print(f"{args.dataset}: {len(labels)} faces, {folds.kind} {len(folds.splits)}-fold; balanced accuracy "
          f"over {'the classes present' if classes is None else '5 classes'}", flush=True)
    as_shipped = balanced_accuracy(labels, data["proba"].argmax(1), classes)
    with_flip = balanced_accuracy(labels, shipped.logits(features).argmax(1), classes)
    print(f"shipped (its Predictor): {as_shipped:.3f}; shipped heads with flip: {with_flip:.3f}")
    log_probs = np.log(np.clip(data["proba"], 1e-7, 1))
    flat = features.reshape(len(features), -1)
    methods = {
        "lr-logprobs": lambda size, seed: sklearn_oof(log_probs, labels, fold_draws[seed], size, seed, False),
        "lr-features": lambda size, seed: sklearn_oof(flat, labels, fold_draws[seed], size, seed, True)}
    for l2 in (float(v) for v in args.l2.split(",")):
        methods[f"heads l2={l2:g}"] = lambda size, seed, l2=l2: out_of_fold_logits(
            features, labels, shipped, fold_draws[seed], l2=l2, size=size, seed=seed, remap=0).argmax(1)
    variants = [(0.0, "off", 0), (0.5, "shipped", 0), (0.5, "off", 0)]
    variants += [(0.5, "off", k) for k in sorted({2, args.augment}) if args.augment]
    for remap, absent, k in variants:
        methods[f"heads l2=0.003 remap={remap:g} absent={absent} aug={k}"] = (
            lambda size, seed, remap=remap, absent=absent, k=k: out_of_fold_logits(
                features, labels, shipped, fold_draws[seed], l2=0.003, augmented=augmented[:k] if k else None,
                size=size, seed=seed, remap=remap, absent=absent).argmax(1))
    print("| method | " + " | ".join("all" if s is None else str(s) for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name, method in methods.items():
        start = time.perf_counter()
        cells = []
        for size in sizes:
            draws = args.draws
            cells.append(np.mean([balanced_accuracy(labels, method(size, seed), classes)
                                  for seed in range(draws)]))
        seconds = time.perf_counter() - start
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + f" |  ({seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
