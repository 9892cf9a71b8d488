"""Turn predictions into what the CLI writes: CSV rows, JSON, annotated copies.

CSV layout (`ferkit predict --csv`): one row per face, columns PREDICT_COLUMNS. Every input file
appears: a file with no face gets ONE row with the face fields empty, a file that failed gets
one row with only `file` and `error` filled. So `file` alone answers "was it processed?".
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ferkit.errors import ArgumentError, FerkitError
from ferkit.files import claim_folder, same_file
from ferkit.inference.face import PREDICT_COLUMNS, VIDEO_COLUMNS, ImageResult

__all__ = ["PREDICT_COLUMNS", "VIDEO_COLUMNS", "CsvWriter", "check_output_file", "predict_rows"]
# Formats PIL writes; anything else is annotated as PNG.
WRITABLE = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def predict_rows(results: Iterable[ImageResult]) -> Iterator[dict[str, Any]]:
    """CSV rows for `predict_many` results (see the module docstring)."""
    for result in results:
        if result.error is not None:
            yield {"file": result.source, "error": result.error}
        elif not result.faces:
            yield {"file": result.source}
        for face in sorted(result.faces, key=lambda f: f.index or 0):  # in reading order
            yield face.to_row(file=result.source)


STDOUT = Path("-")  # as an output file: standard output


def check_output_file(path: Path, inputs: Iterable[Path], option: str) -> Path:
    """An output file path that is safe to write: not a folder, and never one of the inputs (ferkit
    never writes over what the user gave it), or "-" for standard output. Checked before any work
    starts."""
    path = Path(path).expanduser()
    if path == STDOUT:
        return path
    if path.is_dir():
        raise ArgumentError(f"{option} {path}: is a folder; give a file name (e.g. {path / 'out.csv'})")
    resolved = path.resolve()
    for item in inputs:
        # by identity: a hard link or symlink to an input is that input
        if same_file(path, item) or Path(item).expanduser().resolve() == resolved:
            raise ArgumentError(f"{option} {path}: is an input file; ferkit never writes over its inputs")
    # the nearest folder that exists must take a new file, or the work would be lost at the first row
    folder = next(p for p in (resolved.parent, *resolved.parent.parents) if p.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK) or (
            path.exists() and not os.access(path, os.W_OK)):
        raise ArgumentError(f"{option} {path}: cannot be written here ({folder} is not a writable folder)")
    return path


def annotated_targets(files: Sequence[Path], inputs: Sequence[Path], out_dir: Path) -> list[Path]:
    """The annotated copy's path of each file (see `annotated_path`); an ArgumentError if any of
    them is an input file, e.g. when --annotate names the input folder itself."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise ArgumentError(f"--annotate {out_dir}: is a file; give a folder")
    taken: set[Path] = set()
    targets = [annotated_path(file, inputs, out_dir, taken) for file in files]
    originals = {Path(f).resolve() for f in files}
    clash = next((t for t in targets if t.resolve() in originals), None)
    if clash is not None:
        raise ArgumentError(f"--annotate {out_dir}: would write over the input {clash}; choose a folder "
                            "outside the inputs")
    # by file identity too (hard links), and never over a file of the user's already in the folder
    claim_folder(out_dir, [t.relative_to(out_dir).as_posix() for t in targets], inputs=files,
                 option="--annotate")
    return targets


class CsvWriter:
    """A CSV file written row by row (for streams such as video rows), or standard output for "-". A
    failed write (a full disk) is a FerkitError naming the file, with the rows written so far kept."""

    def __init__(self, path: Path, columns: Sequence[str]):
        path = Path(path).expanduser()
        self.path = path
        self.rows = 0
        with self._named_errors():
            if path == STDOUT:
                self._fh = sys.stdout
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = path.open("w", newline="")
            self._writer = csv.DictWriter(self._fh, fieldnames=list(columns), extrasaction="ignore")
            self._writer.writeheader()

    @contextmanager
    def _named_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise FerkitError(f"{self.path}: cannot write ({exc.strerror or exc}) after {self.rows:,} "
                              "rows") from None

    def write(self, row: dict[str, Any]) -> None:
        with self._named_errors():
            self._writer.writerow(row)
        self.rows += 1

    def close(self) -> None:
        if self._fh is sys.stdout:
            self._fh.flush()
            return
        if self._fh.closed:
            return
        with self._named_errors():
            try:
                self._fh.close()
            except OSError:
                self._fh.close()  # a second close after a failed flush only marks it closed
                raise

    def __enter__(self) -> CsvWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def annotated_path(file: Path, inputs: Sequence[Path], out_dir: Path, taken: set[Path]) -> Path:
    """Where the annotated copy of `file` goes: its path relative to the input folder it was
    found in (or its name, for a file named directly), under `out_dir`; unique within `taken`."""
    relative = Path(file.name)
    for root in inputs:
        if root.is_dir():
            try:
                relative = file.resolve().relative_to(root.resolve())
                break
            except ValueError:
                continue
    if relative.suffix.lower() not in WRITABLE:
        relative = relative.with_suffix(".png")
    target = out_dir / relative
    stem, n = target.with_suffix(""), 1
    while target in taken:
        target = stem.with_name(f"{stem.name}-{n}").with_suffix(relative.suffix)
        n += 1
    taken.add(target)
    return target


def write_annotated(file: Path, result: ImageResult, target: Path) -> None:
    """Re-read `file`, draw its faces, save to `target` (the format its suffix names)."""
    from PIL import Image

    from ferkit.images import load_image
    from ferkit.inference.annotate import draw

    image = draw(load_image(file), result.faces)
    target.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 92} if target.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    Image.fromarray(image).save(target, **options)
