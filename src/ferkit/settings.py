"""The numbers and places every part of ferkit agrees on, in one room (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

# The classifier's input: FERPlus faces are 48x48 grayscale; crops, models and datasets all use it.
FACE_SIDE = 48

# The largest image decoded, checked from its header before any pixel is: a phone photo (12-50 MP)
# passes, a decompression bomb does not. A server (the web app, the HTTP API) holds several images
# at once, so it takes less.
MAX_PIXELS = 64_000_000
SERVER_MAX_PIXELS = 50_000_000
# The largest upload the web app and the HTTP API accept.
MAX_UPLOAD_MB = 20

# FERPlus: where ferkit looks for it unless told (FERKIT_DATA, or a ROOT argument).
DATA_ENV = "FERKIT_DATA"
DEFAULT_DATA = "../shared/datasets/ferplus"


def data_root(explicit: str | Path | None = None) -> Path:
    """The FERPlus root: `explicit` if given, else $FERKIT_DATA, else DEFAULT_DATA."""
    if explicit is not None:
        return Path(explicit).expanduser()
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DATA).expanduser()
