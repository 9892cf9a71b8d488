"""The numbers and places every part of ferkit agrees on, in one room (torch-free)."""

from __future__ import annotations

import os
from pathlib import Path

# The classifier's input: FERPlus faces are 48x48 grayscale; crops, models and datasets all use it.
FACE_SIDE = 48
# The one input normalisation: pixels / 255, then (x - MEAN) / STD (FERPlus pixels have
# mean ~0.51, std ~0.25, so inputs come out roughly zero-mean, unit-variance).
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25

# The smallest face (shorter side, pixels) looked for by default: smaller crops are upsampled so far
# that their expression is guesswork.
MIN_FACE = 20

# int8 exports and quantisation-aware training round weights to 7 bits (ONNX Runtime's reduce_range):
# x86 CPUs without VNNI add pairs of uint8 x int8 products in 16 bits, which 8-bit weights overflow;
# with 7 bits every sum fits, so an export computes the same on every CPU.
INT8_WEIGHT_BITS = 7

# The largest image decoded, checked from its header before any pixel is: a phone photo (12-50 MP)
# passes, a decompression bomb does not. A server (the web app, the HTTP API) holds several images
# at once, so it takes less.
MAX_PIXELS = 64_000_000
SERVER_MAX_PIXELS = 50_000_000
# The largest upload the HTTP API accepts by default, in decimal megabytes: the unit browsers and
# Streamlit's file chip show, so the figure a user sees is the figure ferkit refuses at. The web app's
# limit is server.maxUploadSize in ferkit/app/config.toml, the same figure (tests/test_app.py checks).
MAX_UPLOAD_MB = 20
BYTES_PER_MB = 1_000_000


def megabytes(n_bytes: int) -> str:
    """How every upload limit message shows a size."""
    return f"{n_bytes / BYTES_PER_MB:.1f} MB"

# The environment variables a user can set (README, "Settings"):
DATA_ENV = "FERKIT_DATA"  # the FERPlus root, unless a ROOT/--data argument says
CACHE_ENV = "FERKIT_CACHE_DIR"  # where decoded FERPlus arrays are cached (default: the user's cache dir)
APP_MODEL_ENV = "FERKIT_MODEL"  # the web app offers this model alone (bundled name, run folder, .onnx)
APP_THREADS_ENV = "FERKIT_APP_THREADS"  # PyTorch threads in the web app (default 1)
# JSON list of RTCIceServer objects for the web app's webcam behind NAT, e.g.
# [{"urls": ["stun:stun.example.org:3478"]},
#  {"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]
ICE_SERVERS_ENV = "FERKIT_ICE_SERVERS"

DEFAULT_DATA = "../shared/datasets/ferplus"


def data_root(explicit: str | Path | None = None, run: str | Path | None = None) -> Path:
    """The one rule for the FERPlus root: `explicit` (--data) if given, else $FERKIT_DATA, else, for
    a run, the root it was trained on when that exists here, else DEFAULT_DATA."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return (run_data_root(run) if run is not None else None) or Path(DEFAULT_DATA).expanduser()


def run_data_root(run: str | Path) -> Path | None:
    """The `data:` root in RUN/config.yaml when it exists on this machine (relative paths are
    taken from the current directory, as training took them), else None."""
    import yaml

    config = Path(run) / "config.yaml"
    if not config.is_file():
        return None
    try:
        data = (yaml.safe_load(config.read_text()) or {}).get("data")
    except yaml.YAMLError:
        return None
    return Path(data).expanduser() if data and Path(data).expanduser().exists() else None


def cache_dir() -> Path:
    """$FERKIT_CACHE_DIR if set, else the user's cache directory (e.g. ~/.cache/ferkit)."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("ferkit"))
