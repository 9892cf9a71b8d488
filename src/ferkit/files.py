"""Writing files: whole or not at all, and never over a file ferkit did not write."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ferkit.errors import ArgumentError


def write_whole(path: Path, data: str | bytes) -> None:
    """`data` into `path` whole or not at all: written beside it, then renamed over it, so a kill
    mid-write leaves the old file (or none), never a cut one."""
    path = Path(path)
    part = path.with_name(path.name + ".part")
    if isinstance(data, bytes):
        part.write_bytes(data)
    else:
        part.write_text(data)
    os.replace(part, path)


LEDGER = ".ferkit-written"  # in every folder ferkit writes into: the files it wrote there


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths are one file on disk, by identity (device and inode): a hard link, a symlink
    or another spelling of an input is caught, which comparing names would miss."""
    try:
        return os.path.samefile(Path(a).expanduser(), Path(b).expanduser())
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def claim_folder(folder: str | Path, names: Iterable[str], *, inputs: Iterable[str | Path] = (),
                 option: str = "--out") -> Path:
    """Make `folder` ready for ferkit to write `names` (paths relative to it) into, before any work
    starts. ferkit never writes over a file it did not write there itself, nor over any of `inputs`
    (compared by file identity); either is an ArgumentError naming `option`. The folder's ledger
    records what ferkit writes, so running the same command again replaces its own output."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ArgumentError(f"{option} {folder}: is a file; give a folder")
    names = [str(name) for name in names]
    ledger = folder / LEDGER
    try:
        written = set(ledger.read_text().splitlines()) if ledger.is_file() else set()
    except (OSError, UnicodeDecodeError):
        written = set()
    inputs = [Path(p) for p in inputs]
    for name in names:
        target = folder / name
        # only a file that exists can be an input (a folder may list thousands of photos)
        clash = next((p for p in inputs if same_file(target, p)), None) if target.exists() else None
        if clash is not None:
            raise ArgumentError(f"{option} {folder}: would write {name} over the input {clash}; choose "
                                "another folder")
        if (target.exists() or target.is_symlink()) and name not in written:
            raise ArgumentError(f"{option} {folder}: already holds {name}, which ferkit did not write; "
                                "choose a new folder (ferkit never writes over your files)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_whole(ledger, "".join(f"{name}\n" for name in sorted(written | set(names))))
    except OSError as exc:
        raise ArgumentError(f"{option} {folder}: cannot be written ({exc.strerror or exc})") from None
    return folder
