"""A compact .npz cache of a loaded FERPlus root, keyed by every source file's size and mtime."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ferkit.settings import cache_dir

CACHE_VERSION = 1


def _folder_fingerprint(folder: Path, digest: hashlib._Hash) -> None:
    entries = sorted(
        (e.name, e.stat().st_size, e.stat().st_mtime_ns)
        for e in os.scandir(folder) if e.is_file()
    )
    for name, size, mtime in entries:
        digest.update(f"{name}\0{size}\0{mtime}\n".encode())


def cache_key(root: Path, sources: list[Path], options: dict) -> str:
    """Hash of the root, the options and each source file/folder's (name, size, mtime)."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}\0{Path(root).resolve()}\0{json.dumps(options, sort_keys=True)}"
                  .encode())
    for source in sources:
        digest.update(f"[{source.name}]".encode())
        if source.is_dir():
            _folder_fingerprint(source, digest)
        elif source.is_file():
            st = source.stat()
            digest.update(f"{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def cache_path(key: str) -> Path:
    return cache_dir() / f"ferplus-{key}.npz"


def save(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write atomically so an interrupted write never leaves a half cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.asarray(json.dumps(meta)), **arrays)
    tmp.replace(path)


def load(path: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and metadata from a cache file, or None when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "meta"}
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError):
        return None
    return arrays, meta
