"""The user's labelled photos, read as `ferkit evaluate --photos` reads them, with who is in each one,
and their faces through the photo pipeline (detect, align, the largest face).

Adaptation refuses material it cannot learn from or validate honestly, with one line each: a class
with fewer than 2 photos (a class seen once cannot be both learned and checked), a single class, a
group column that is not there. A photo without a face is an error naming it, or with `skip_bad`
is listed and left out.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, DataError
from ferkit.evaluation.photos import LABELS_FILE, read_photo_labels

# Columns that name who is in a photo, looked for in this order when no --group-by is given.
GROUP_COLUMNS = ("subject", "person")
MIN_PER_CLASS = 2


@dataclass
class Faces:
    """The faces adaptation learns from: one aligned 48x48 crop per usable photo."""

    folder: Path
    names: list[str]  # each photo's path relative to `folder`
    crops: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) EMOTIONS indices
    groups: np.ndarray | None  # (N,) who is in each photo (str), or None without a group column
    group_column: str | None
    shipped_proba: np.ndarray  # (N, 8): the source model's answers (its Predictor, as shipped)
    skipped: list[str] = field(default_factory=list)  # photos left out (skip_bad) and why

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Photos per class present, in EMOTIONS order."""
        found = Counter(int(k) for k in self.labels)
        return {EMOTIONS[k]: found[k] for k in range(len(EMOTIONS)) if found[k]}


def _groups_of(csv_path: Path, paths: list[Path], column: str | None) -> tuple[list[str] | None, str | None]:
    """The group of each photo in `paths` from the CSV's `column` (or the first of GROUP_COLUMNS it
    has); (None, None) when no column was asked for and none is there."""
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = {h.strip().lower(): h for h in reader.fieldnames or []}
        if column is not None:
            if column.strip().lower() not in header:
                raise ArgumentError(f"{csv_path}: no group column {column!r} (its columns: "
                                    f"{', '.join(reader.fieldnames or [])})")
            key = header[column.strip().lower()]
        else:
            key = next((header[c] for c in GROUP_COLUMNS if c in header), None)
            if key is None:
                return None, None
        base = csv_path.parent
        by_path: dict[Path, str] = {}
        for row in reader:
            image = (row.get(header.get("image", "image")) or "").strip()
            path = base / image
            if image and not path.is_file() and (base / "images" / image).is_file():
                path = base / "images" / image
            by_path[path] = (row.get(key) or "").strip()
    groups = [by_path.get(p, "") for p in paths]
    empty = [str(p) for p, g in zip(paths, groups, strict=True) if not g]
    if empty:
        raise DataError(f"{csv_path}: {len(empty)} photo(s) with an empty {key!r} (first: {empty[0]}); "
                        "every photo needs its group")
    return groups, key


def check_counts(labels: np.ndarray, where: str) -> None:
    """Refuse material adaptation cannot learn from: a class with fewer than MIN_PER_CLASS photos,
    or fewer than two classes."""
    counts = Counter(int(k) for k in labels)
    few = {EMOTIONS[k]: n for k, n in sorted(counts.items()) if n < MIN_PER_CLASS}
    if few:
        found = ", ".join(f"{name}: {n}" for name, n in few.items())
        raise DataError(f"{where}: every class needs at least {MIN_PER_CLASS} photos with a face; found "
                        f"{found} (add photos, or remove the class)")
    if len(counts) < 2:
        only = EMOTIONS[next(iter(counts))] if counts else "none"
        raise DataError(f"{where}: only one class ({only}); adaptation needs photos of at least two")


def read_faces(folder: str | Path, *, labels: str | Path | None = None, group_by: str | None = None,
               skip_bad: bool = False, model: str | Path | None = None, detector: str | None = None,
               threads: int | None = None, progress: bool = False) -> Faces:
    """The labelled photos of `folder` (labels.csv, `labels`, or one subfolder per class) through the
    photo pipeline: each photo's largest face, its label, its group (column `group_by`, else
    `subject` or `person` when the CSV has one) and `model`'s answer as shipped (for comparison).
    A photo that cannot be read or shows no face is a DataError naming it, or with `skip_bad` is
    listed in `skipped` and left out."""
    from ferkit.inference import Predictor

    photos = read_photo_labels(folder, labels, skip_bad=skip_bad)
    csv_path = Path(labels).expanduser() if labels is not None else photos.root / LABELS_FILE
    if csv_path.is_file():
        groups, column = _groups_of(csv_path, photos.paths, group_by)
    elif group_by is not None:
        raise ArgumentError(f"{photos.root}: --group-by {group_by!r} needs a labels CSV with that column "
                            "(the photos are in class folders)")
    else:
        groups, column = None, None
    predictor = Predictor(model=model, detector=detector, threads=threads)  # answers as shipped
    crops, proba, kept, skipped = [], [], [], list(photos.skipped)
    for i, result in enumerate(predictor.iter_predict_many(photos.paths, progress=progress)):
        problem = result.error if not result.ok else (None if result.faces else "no face found")
        if problem:
            if not skip_bad:
                raise DataError(f"{photos.where[i]}: {problem} (use --skip-bad to leave it out)")
            skipped.append(f"{photos.where[i]}: {problem}")
            continue
        crops.append(result.faces[0].crop)  # the largest face
        proba.append(result.faces[0].probabilities)
        kept.append(i)
    names = [str(p.relative_to(photos.root)) if p.is_relative_to(photos.root) else str(p)
             for p in (photos.paths[i] for i in kept)]
    faces = Faces(photos.root, names,
                  np.stack(crops) if crops else np.zeros((0, 48, 48), np.uint8),
                  photos.labels[kept],
                  None if groups is None else np.asarray([groups[i] for i in kept]),
                  column,
                  np.asarray(proba, dtype=np.float32).reshape(-1, len(EMOTIONS)), skipped)
    check_counts(faces.labels, str(photos.root))
    return faces
