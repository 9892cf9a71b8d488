"""Honest figures for an adaptation: cross-validation on the user's own photos, person-disjoint when
the photos say who is in them, and the learning curve (how the figure grows with photos per class).

Every figure comes from faces the heads were not fitted on: each fold's heads learn from the other
folds' photos (their augmented copies included) and answer the fold's plain faces. With a group
column no person is in both; without one the folds split photos, and a person seen in training
makes the figures optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferkit.adaptation.heads import Heads, fit
from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError

CURVE_SIZES: tuple[int | None, ...] = (1, 2, 5, 10, 20, None)  # photos per class; None = all


@dataclass
class Folds:
    """Train/test indices of each fold and how they were made."""

    splits: list[tuple[np.ndarray, np.ndarray]]
    kind: str  # "grouped" (no person in both train and test) or "stratified" (photos split)
    column: str | None = None

    @property
    def person_disjoint(self) -> bool:
        return self.kind == "grouped"


def make_folds(labels: np.ndarray, groups: np.ndarray | None, *, n_splits: int = 5, seed: int = 0,
               column: str | None = None) -> Folds:
    """Grouped k-fold over `groups` (at most one fold per group), else stratified k-fold over the
    labels (at most as many folds as the rarest class has photos)."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    labels = np.asarray(labels)
    if n_splits < 2:
        raise ArgumentError(f"folds must be at least 2, got {n_splits}")
    if groups is not None and len(set(groups)) >= 2:
        k = min(n_splits, len(set(groups)))
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = list(splitter.split(labels, labels, groups))
        return Folds(splits, "grouped", column)
    k = max(2, min(n_splits, int(np.bincount(labels)[np.unique(labels)].min())))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return Folds(list(splitter.split(labels, labels)), "stratified", column)


def per_class_sample(indices: np.ndarray, labels: np.ndarray, size: int | None,
                     rng: np.random.Generator) -> np.ndarray:
    """At most `size` of `indices` per class, drawn at random (all of them for None)."""
    if size is None:
        return indices
    picked = [rng.choice(indices[labels[indices] == k], min(size, int((labels[indices] == k).sum())),
                         replace=False) for k in np.unique(labels[indices])]
    return np.sort(np.concatenate(picked))


def training_set(features: np.ndarray, labels: np.ndarray, augmented: np.ndarray | None,
                 indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The features and labels heads are fitted on: the chosen faces, then each augmented copy of
    them (`augmented`: (K, N, M, 2, C) or None)."""
    parts = [features[indices]] + ([] if augmented is None else [copy[indices] for copy in augmented])
    return np.concatenate(parts), np.tile(labels[indices], len(parts))


def out_of_fold_logits(features: np.ndarray, labels: np.ndarray, shipped: Heads, folds: Folds, *,
                       l2: float, augmented: np.ndarray | None = None, size: int | None = None,
                       seed: int = 0, remap: float = 0.5, absent: str = "shipped") -> np.ndarray:
    """(N, 8) logits, each face's from heads fitted without its fold (on at most `size` photos per
    class of the other folds)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(labels), len(EMOTIONS)), dtype=np.float32)
    for train, test in folds.splits:
        chosen = per_class_sample(train, labels, size, rng)
        x, y = training_set(features, labels, augmented, chosen)
        out[test] = fit(x, y, shipped, l2=l2, remap=remap, absent=absent).logits(features[test])
    return out


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, classes: list[int] | None = None) -> float:
    """Mean recall over `classes` (default: those present in `labels`); a prediction of any other
    class, contempt included, is an error."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    classes = sorted(set(labels.tolist())) if classes is None else classes
    return float(np.mean([(predicted[labels == k] == k).mean() for k in classes if (labels == k).any()]))


def learning_curve(features: np.ndarray, labels: np.ndarray, shipped: Heads, folds: Folds, *, l2: float,
                   augmented: np.ndarray | None = None, sizes: tuple[int | None, ...] = CURVE_SIZES,
                   repeats: int = 3, seed: int = 0, remap: float = 0.5,
                   absent: str = "shipped") -> list[dict]:
    """Balanced accuracy of the out-of-fold answers with at most `size` photos per class drawn from
    each fold's training photos, the mean over `repeats` draws (one for all photos). Sizes beyond
    the largest class's count are left out (they equal "all")."""
    largest = int(np.bincount(labels).max())
    rows = []
    for size in sizes:
        if size is not None and size >= largest:
            continue
        draws = 1 if size is None else repeats
        scores = [balanced_accuracy(labels, out_of_fold_logits(
            features, labels, shipped, folds, l2=l2, augmented=augmented, size=size, seed=seed + r,
            remap=remap, absent=absent).argmax(1))
            for r in range(draws)]
        rows.append({"per_class": "all" if size is None else size,
                     "balanced_accuracy": float(np.mean(scores)),
                     "sd": float(np.std(scores)), "draws": draws})
    return rows
