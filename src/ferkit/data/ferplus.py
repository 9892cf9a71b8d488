"""Read FERPlus into memory from either public layout.

1. Microsoft's generated folders: ROOT/FER2013{Train,Valid,Test}/label.csv + the PNGs beside it.
2. Kaggle's ROOT/fer2013.csv (emotion,pixels,Usage) joined row by row with ROOT/fer2013new.csv.

Both give the same `FerplusSplit`: uint8 images (N, 48, 48), vote counts (N, 10), names.

Image policy: a 48x48 image that is not 8-bit grayscale (RGB, RGBA, palette, 16-bit) is
converted to 8-bit grayscale with a warning; any other size is refused (FERPlus faces are
48x48 crops, so a different size means a different dataset). Every error names the file and
row; with `skip_bad=True` the bad rows are skipped and listed in `LoadReport.skipped`.
"""

from __future__ import annotations

import csv
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.emotions import SPLITS, VOTE_COLUMNS
from ferkit.errors import DataError, ImageError
from ferkit.images import luma, open_image, rgb_from_pil
from ferkit.settings import FACE_SIDE

log = logging.getLogger(__name__)

IMAGE_SIZE = FACE_SIDE
MICROSOFT_FOLDERS = {"train": "FER2013Train", "valid": "FER2013Valid", "test": "FER2013Test"}
KAGGLE_USAGE = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
LABEL_FIELDS = 2 + len(VOTE_COLUMNS)  # image name, face box, 10 counts


@dataclass
class FerplusSplit:
    """One split held in memory."""

    name: str
    images: np.ndarray  # (N, 48, 48) uint8
    votes: np.ndarray  # (N, 10) int32, VOTE_COLUMNS order
    image_names: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Skipped:
    """A row that was not loaded, and why."""

    file: str
    row: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file} row {self.row}" if self.row is not None else self.file
        return f"{where}: {self.reason}"


@dataclass
class LoadReport:
    """What loading left out: bad rows (with `skip_bad`), unlabeled Kaggle rows, conversions."""

    skipped: list[Skipped] = field(default_factory=list)
    converted: list[Skipped] = field(default_factory=list)
    unlabeled: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "skipped": [vars(s) for s in self.skipped],
            "converted": [vars(s) for s in self.converted],
            "unlabeled": dict(self.unlabeled),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LoadReport:
        return cls(
            skipped=[Skipped(**s) for s in d.get("skipped", [])],
            converted=[Skipped(**s) for s in d.get("converted", [])],
            unlabeled=dict(d.get("unlabeled", {})),
        )


class _RowErrors:
    """Raise at the first bad row, or (skip_bad) record it and go on."""

    def __init__(self, skip_bad: bool, report: LoadReport):
        self.skip_bad = skip_bad
        self.report = report

    def bad(self, file: Path | str, row: int | None, reason: str) -> None:
        item = Skipped(str(file), row, reason)
        if not self.skip_bad:
            raise DataError(f"{item} (use --skip-bad to load the rest)")
        self.report.skipped.append(item)


def detect_layout(root: Path) -> str:
    """'microsoft' or 'kaggle'; a clear error when ROOT holds neither."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (set FERKIT_DATA or pass ROOT)")
    if any((root / folder).is_dir() for folder in MICROSOFT_FOLDERS.values()):
        return "microsoft"
    if (root / "fer2013.csv").is_file():
        return "kaggle"
    raise DataError(
        f"{root}: no FERPlus data: expected FER2013Train/ FER2013Valid/ FER2013Test/ folders "
        "with label.csv, or fer2013.csv + fer2013new.csv"
    )


def _parse_votes(
    values: list[str], file: Path, row: int, errors: _RowErrors
) -> list[int] | None:
    votes = []
    for column, text in zip(VOTE_COLUMNS, values, strict=True):
        try:
            count = int(text.strip())
        except ValueError:
            errors.bad(file, row, f"field {column!r}: {text!r} is not a whole number")
            return None
        if count < 0:
            errors.bad(file, row, f"field {column!r}: negative vote count {count}")
            return None
        votes.append(count)
    return votes


def read_face_image(path: Path) -> tuple[np.ndarray, str | None]:
    """Decode one 48x48 face (ferkit.images.open_image) -> (8-bit gray pixels, the conversion if one
    happened); DataError naming the file if it is missing, unreadable or not 48x48."""
    try:
        with open_image(path) as img:
            mode = img.mode
            if mode == "L":
                pixels, conversion = np.asarray(img, dtype=np.uint8), None
            else:
                pixels = luma(rgb_from_pil(img, str(path)))
                wide = mode.startswith("I") or mode == "F"
                conversion = f"converted {mode} to 8-bit" if wide else f"converted {mode} to grayscale"
    except ImageError as exc:
        if not path.is_file():
            raise DataError(str(exc)) from None
        raise DataError(f"{path}: cannot decode image ({str(exc).removeprefix(f'{path}: ')})") from None
    if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE):
        h, w = pixels.shape[:2]
        raise DataError(f"{path}: image is {w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return pixels, conversion


def read_microsoft_split(root: Path, split: str, skip_bad: bool = False,
                         report: LoadReport | None = None) -> FerplusSplit:
    """One split of Microsoft's layout: FER2013<Split>/label.csv + PNGs."""
    report = report if report is not None else LoadReport()
    errors = _RowErrors(skip_bad, report)
    folder = Path(root) / MICROSOFT_FOLDERS[split]
    label_file = folder / "label.csv"
    if not label_file.is_file():
        raise DataError(f"{label_file}: label file not found")
    images, votes, names = [], [], []
    with label_file.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a BOM is not part of a name
        for row_number, fields in enumerate(csv.reader(fh), start=1):
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != LABEL_FIELDS:
                errors.bad(label_file, row_number,
                           f"expected {LABEL_FIELDS} fields, got {len(fields)}")
                continue
            row_votes = _parse_votes(fields[2:], label_file, row_number, errors)
            if row_votes is None:
                continue
            image_path = folder / fields[0].strip()
            try:
                pixels, conversion = read_face_image(image_path)
            except DataError as exc:
                errors.bad(label_file, row_number, str(exc))
                continue
            if conversion:
                report.converted.append(Skipped(str(image_path), row_number, conversion))
            images.append(pixels)
            votes.append(row_votes)
            names.append(fields[0].strip())
    return _make_split(split, images, votes, names)


def _make_split(split: str, images: list, votes: list, names: list) -> FerplusSplit:
    return FerplusSplit(
        name=split,
        images=(np.stack(images) if images
                else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)),
        votes=np.asarray(votes, dtype=np.int32).reshape(-1, len(VOTE_COLUMNS)),
        image_names=np.asarray(names, dtype=str),
    )


def read_kaggle(root: Path, skip_bad: bool = False,
                report: LoadReport | None = None) -> dict[str, FerplusSplit]:
    """Kaggle's fer2013.csv joined row by row with fer2013new.csv, grouped by split."""
    report = report if report is not None else LoadReport()
    errors = _RowErrors(skip_bad, report)
    pixels_file, labels_file = Path(root) / "fer2013.csv", Path(root) / "fer2013new.csv"
    for f in (pixels_file, labels_file):
        if not f.is_file():
            raise DataError(f"{f}: file not found (the Kaggle layout needs both CSV files)")
    rows: dict[str, tuple[list, list, list]] = {s: ([], [], []) for s in SPLITS}
    unlabeled = dict.fromkeys(SPLITS, 0)
    with pixels_file.open(newline="", encoding="utf-8-sig") as pf, \
            labels_file.open(newline="", encoding="utf-8-sig") as lf:
        pixel_rows, label_rows = csv.reader(pf), csv.reader(lf)
        pixel_header, label_header = next(pixel_rows, None), next(label_rows, None)
        if pixel_header is None or [h.strip() for h in pixel_header[:3]] != [
                "emotion", "pixels", "Usage"]:
            raise DataError(f"{pixels_file} row 1: expected header emotion,pixels,Usage")
        if label_header is None or len(label_header) != LABEL_FIELDS:
            raise DataError(f"{labels_file} row 1: expected header Usage,Image name + 10 counts")
        row_number = 1
        # zip_longest, not zip: zip drops the first extra row of the longer file unseen
        for pixel_fields, label_fields in itertools.zip_longest(pixel_rows, label_rows):
            row_number += 1
            if pixel_fields is None or label_fields is None:
                longer, shorter = ((pixels_file, labels_file) if label_fields is None
                                   else (labels_file, pixels_file))
                raise DataError(f"{pixels_file} and {labels_file} have different row counts: {longer} has a "
                                f"row {row_number} and {shorter} ends before it; the two files must have one "
                                "row per FER2013 image, in the same order")
            if len(label_fields) != LABEL_FIELDS:
                errors.bad(labels_file, row_number,
                           f"expected {LABEL_FIELDS} fields, got {len(label_fields)}")
                continue
            if len(pixel_fields) != 3:
                errors.bad(pixels_file, row_number, f"expected 3 fields, got {len(pixel_fields)}")
                continue
            split = KAGGLE_USAGE.get(pixel_fields[2].strip())
            if split is None:
                errors.bad(pixels_file, row_number, f"field 'Usage': unknown {pixel_fields[2]!r}")
                continue
            name = label_fields[1].strip()
            expected = f"fer{row_number - 2:07d}.png"  # FERPlus names each image after its row
            if name and name != expected:
                raise DataError(f"{labels_file} row {row_number}: 'Image name' is {name!r} but this is "
                                f"data row {row_number - 2} (expected {expected!r}): fer2013.csv and "
                                "fer2013new.csv are out of step (a row missing or added in one of them)")
            if not name:  # no FERPlus label for this FER2013 image
                unlabeled[split] += 1
                continue
            row_votes = _parse_votes(label_fields[2:], labels_file, row_number, errors)
            if row_votes is None:
                continue
            try:
                values = np.array(pixel_fields[1].split(), dtype=np.int64)
            except ValueError:
                errors.bad(pixels_file, row_number, "field 'pixels': not space-separated integers")
                continue
            if values.size != IMAGE_SIZE * IMAGE_SIZE:
                errors.bad(pixels_file, row_number,
                           f"field 'pixels': expected {IMAGE_SIZE * IMAGE_SIZE} values, got {values.size}")
                continue
            if values.min() < 0 or values.max() > 255:
                bad = values[(values < 0) | (values > 255)][0]
                errors.bad(pixels_file, row_number, f"field 'pixels': value {bad} is outside 0..255")
                continue
            images, votes, names = rows[split]
            images.append(values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
            votes.append(row_votes)
            names.append(name)
    report.unlabeled = unlabeled
    return {s: _make_split(s, *rows[s]) for s in SPLITS}
