"""Evaluate a model on a folder of labelled photos through the whole photo pipeline
(detect -> align -> classify the largest face), with the same report as a FERPlus evaluation.

    evaluation = evaluate_photos("default", "my-study/")                # labels.csv or one folder per class
    evaluation.metrics["accuracy"], evaluation.metrics["balanced_accuracy"]

Labels come either from a CSV with the header `image,emotion` (paths relative to the CSV's folder,
or to its `images/` subfolder), by default DIR/labels.csv, or from one subfolder per class
(DIR/happiness/*.jpg). Emotion names are the 8 FERPlus names or a common alias (happy, angry,
sad, surprised, ...); the aliases used are reported. A photo where no face is found counts as an
error (see `compute_metrics(missed=...)`) and is listed.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.data import LabeledSplit
from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, DataError, FerkitError
from ferkit.evaluation.metrics import compute_metrics
from ferkit.evaluation.result import Evaluation
from ferkit.files import claim_folder
from ferkit.images import IMAGE_EXTENSIONS
from ferkit.priors import ClassPrior, PriorSpec

LABELS_FILE = "labels.csv"
# Common names for the 8 FERPlus emotions (lower-case) -> the FERPlus name.
ALIASES: dict[str, str] = {
    "happy": "happiness", "joy": "happiness", "smile": "happiness",
    "surprised": "surprise",
    "sad": "sadness",
    "angry": "anger", "mad": "anger",
    "disgusted": "disgust",
    "fearful": "fear", "afraid": "fear", "scared": "fear",
    "contemptuous": "contempt",
    "calm": "neutral",
}


def emotion_of(name: str) -> tuple[int, str | None]:
    """An emotion name or alias -> (EMOTIONS index, the alias used or None); ValueError if unknown."""
    key = name.strip().lower()
    if key in EMOTIONS:
        return EMOTIONS.index(key), None
    if key in ALIASES:
        return EMOTIONS.index(ALIASES[key]), key
    raise ArgumentError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)} "
                     f"(or an alias: {', '.join(sorted(ALIASES))})")


@dataclass
class LabeledPhotos:
    """Photos with their true emotion; `where[i]` names the CSV row or folder a photo came from."""

    root: Path
    paths: list[Path]
    labels: np.ndarray  # (N,) EMOTIONS indices
    where: list[str]
    aliases: dict[str, int] = field(default_factory=dict)  # alias -> how many rows used it
    skipped: list[str] = field(default_factory=list)  # bad rows left out (skip_bad)

    def __len__(self) -> int:
        return len(self.paths)


def read_photo_labels(folder: str | Path, labels: str | Path | None = None,
                      skip_bad: bool = False) -> LabeledPhotos:
    """The labelled photos of `folder`: from `labels` (a CSV image,emotion), else
    FOLDER/labels.csv, else one subfolder per class. A bad row (unknown emotion, missing file)
    is a DataError naming it, or with `skip_bad` is listed in `skipped`."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: photo folder not found")
    csv_path = Path(labels).expanduser() if labels is not None else root / LABELS_FILE
    if labels is not None and not csv_path.is_file():
        raise DataError(f"{csv_path}: labels file not found")
    photos = LabeledPhotos(root, [], np.zeros(0, dtype=int), [])
    found: list[int] = []
    aliases: Counter[str] = Counter()
    first_row: dict[Path, int] = {}  # each photo counts once: its first row's position in photos.paths
    conflicting: set[int] = set()

    def add(path: Path, emotion: str, where: str) -> None:
        try:
            index, alias = emotion_of(emotion)
            if not path.is_file():
                raise ArgumentError(f"image file not found: {path}")
        except ValueError as exc:
            if not skip_bad:
                raise DataError(f"{where}: {exc} (use --skip-bad to evaluate the rest)") from None
            photos.skipped.append(f"{where}: {exc}")
            return
        if alias:
            aliases[alias] += 1
        key = path.resolve()
        if key in first_row:
            earlier = first_row[key]
            if found[earlier] == index:
                photos.skipped.append(f"{where}: listed again with the same label as "
                                      f"{photos.where[earlier]}; counted once")
                return
            problem = (f"{where}: labelled {EMOTIONS[index]}, but {photos.where[earlier]} labels the same "
                       f"photo {EMOTIONS[found[earlier]]}")
            if not skip_bad:
                raise DataError(f"{problem} (fix the labels, or use --skip-bad to leave both out)")
            photos.skipped.append(f"{problem}; both left out")
            conflicting.add(earlier)
            return
        first_row[key] = len(photos.paths)
        photos.paths.append(path)
        photos.where.append(where)
        found.append(index)

    if csv_path.is_file():
        for line, row in _csv_rows(csv_path):
            image = (row.get("image") or "").strip()
            base = csv_path.parent
            path = base / image
            if image and not path.is_file() and (base / "images" / image).is_file():
                path = base / "images" / image
            add(path, row.get("emotion") or "", f"{csv_path} row {line} ({image or 'no image'})")
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        if not folders:
            raise DataError(f"{root}: no {LABELS_FILE} and no class subfolders (give --labels FILE, or "
                            "put the photos of each emotion in a subfolder named after it)")
        for sub in folders:
            for path in sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
                add(path, sub.name, f"{path} (folder {sub.name})")
    if conflicting:
        keep = [i for i in range(len(found)) if i not in conflicting]
        photos.paths = [photos.paths[i] for i in keep]
        photos.where = [photos.where[i] for i in keep]
        found = [found[i] for i in keep]
    if not found:
        raise DataError(f"{csv_path if csv_path.is_file() else root}: no usable labelled photo"
                        + (f" ({len(photos.skipped)} bad rows skipped)" if photos.skipped else ""))
    photos.labels = np.asarray(found, dtype=int)
    photos.aliases = dict(aliases)
    return photos


def _csv_rows(path: Path):
    """(line number, row dict) of a CSV with a header naming `image` and `emotion`."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        try:
            header = [h.strip().lower() for h in reader.fieldnames or []]
            if "image" not in header or "emotion" not in header:
                raise DataError(f"{path}: expected a header with columns image,emotion; "
                                f"got {reader.fieldnames}")
            reader.fieldnames = header
            for row in reader:
                yield reader.line_num, row
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a UTF-8 CSV ({exc}); save it as UTF-8") from None


def evaluate_photos(model: str | Path | None, folder: str | Path, labels: str | Path | None = None, *,
                    prior: PriorSpec | ClassPrior = None, detector: str | None = None,
                    tta: str | None = None, skip_bad: bool = False, out: str | Path | None = None,
                    progress: bool = False, command: str | None = None) -> Evaluation:
    """Predict every labelled photo of `folder` (its largest face) and compute the metrics;
    writes the report folder when `out` is given. A photo that cannot be read is a DataError
    naming its row (with `skip_bad`: listed and left out); one with no face found counts as an
    error and is listed in `evaluation.photos["missed"]` (image, emotion)."""
    from ferkit.evaluation.report import FILES, write_report
    from ferkit.inference import Predictor

    photos = read_photo_labels(folder, labels, skip_bad=skip_bad)
    if out is not None:  # before any work: never over the labels, a photo, or a file of the user's
        claim_folder(out, FILES, inputs=[*photos.paths, *([Path(labels)] if labels else []),
                                         photos.root / LABELS_FILE])
    predictor = Predictor(model=model, detector=detector, tta=tta, prior=prior)
    crops, proba, labels_found, names, missed, missed_labels = [], [], [], [], [], []
    skipped = list(photos.skipped)
    results = predictor.iter_predict_many(photos.paths, progress=progress)
    for path, label, where, result in zip(photos.paths, photos.labels, photos.where, results, strict=True):
        name = str(path.relative_to(photos.root)) if path.is_relative_to(photos.root) else str(path)
        if not result.ok:
            if not skip_bad:
                raise DataError(f"{where}: {result.error} (use --skip-bad to evaluate the rest)")
            skipped.append(f"{where}: {result.error}")
        elif not result.faces:
            missed.append({"image": name, "emotion": EMOTIONS[label]})
            missed_labels.append(label)
        else:
            face = result.faces[0]  # the largest
            crops.append(face.crop)
            proba.append(face.probabilities)
            labels_found.append(label)
            names.append(name)
    if not proba:
        raise FerkitError(f"{folder}: no face found in any of its {len(photos):,} photos")
    targets = np.eye(len(EMOTIONS), dtype=np.float32)[labels_found]
    data = LabeledSplit(name="photos", protocol="labels", images=np.stack(crops), targets=targets,
                        image_names=np.asarray(names), votes=np.zeros((len(names), 10), dtype=np.int64),
                        dropped={})
    proba_array = np.asarray(proba, dtype=np.float32)
    metrics = compute_metrics(data.labels, proba_array, missed=missed_labels)
    present = sorted(set(labels_found) | set(missed_labels))  # not the photos that could not be read
    evaluation = Evaluation(
        run=predictor.source.path, architecture=predictor.backend.config.get("architecture", "?"),
        data_root=photos.root, split="photos", protocol="labels", tta=predictor.tta, data=data,
        proba=proba_array, metrics=metrics, prior=predictor.prior, command=command,
        photos={"folder": str(photos.root), "labels": str(labels) if labels else None,
                "model": predictor.source.name, "detector": predictor.detector_name,
                "classes_present": [EMOTIONS[k] for k in present], "aliases": photos.aliases,
                "missed": missed, "skipped": skipped})
    if out is not None:
        write_report(evaluation, out)
    return evaluation
