"""Writing files so that a kill mid-write never leaves a cut one."""

from __future__ import annotations

import os
from pathlib import Path


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
