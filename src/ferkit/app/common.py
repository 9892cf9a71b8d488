"""What every page of the app shares: its limits, the model and thread settings, the class-prior
choices, and what it needs of a Predictor and its faces. Nothing in ferkit.app but main.py imports
Streamlit, so the logic is tested without a browser."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ferkit import settings

AUTO_DETECTOR = "auto"  # the sidebar's default: ferkit.faces.DEFAULT_DETECTOR for photos, LIVE_DETECTOR live

log = logging.getLogger(__name__)

# What the uploader accepts (the browser's file picker filters on these; the content is still checked).
ACCEPTED_TYPES: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
# The upload limit in MB is Streamlit's server.maxUploadSize, set in config.toml alone: Streamlit
# enforces it and the page reads it (main.upload_limit_mb). The pixel limit is the HTTP API's too.
MAX_PIXELS = settings.SERVER_MAX_PIXELS
# Analysed photos are kept (cached) for display only, shrunk to this long side: a 7000x7000 upload
# would otherwise hold 147 MB of decoded pixels per cache entry for as long as the server runs.
DISPLAY_SIDE = 1600
# Faces smaller than this (shorter side, input pixels) are ignored unless the user lowers it.
DEFAULT_MIN_FACE = settings.MIN_FACE

# PyTorch intra-op threads in the app process. The app already works in parallel (browser sessions, the
# webcam worker thread), and torch's own threads then fight them and the rest of the machine: on 2 busy
# cores one webcam frame took 246 ms with 2 threads and 72 ms with 1 (classifying one face: 160 vs 3 ms).
DEFAULT_THREADS = 1

BOX_COLOR = (0, 255, 0)  # RGB; pure green so the browser test can find the boxes in the video


class FaceLike(Protocol):
    """What the app needs from ferkit's `Face` (see ferkit.inference)."""

    box: tuple[int, int, int, int]
    probabilities: np.ndarray
    emotion: str
    confidence: float
    crop: np.ndarray


class PredictorLike(Protocol):
    def predict(self, image: Any) -> Sequence[FaceLike]: ...


def app_threads(environ: Mapping[str, str] = os.environ) -> int:
    """Torch threads for the app: $FERKIT_APP_THREADS if it is a positive integer, else 1."""
    text = environ.get(settings.APP_THREADS_ENV, "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_THREADS


def model_choices(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The models the sidebar offers: $FERKIT_MODEL alone when set (a bundled name, run folder or
    .onnx file), else every bundled model, `default` first."""
    from ferkit.models.bundled import DEFAULT_MODEL, list_bundled

    chosen = environ.get(settings.APP_MODEL_ENV, "").strip()
    if chosen:
        return [chosen]
    return list_bundled() or [DEFAULT_MODEL]


# The class-prior setting (ferkit.priors): MODEL_PRIOR keeps the model's own default (a string, not None:
# a selectbox whose value is None shows no choice at all).
MODEL_PRIOR = "model"
PRIOR_CHOICES: dict[str, str] = {
    MODEL_PRIOR: "the model's default",
    "ferplus": "FERPlus (as trained)",
    "neutral:0.7": "fewer neutral faces (photos of people)",
    "uniform": "uniform (posed or acted faces)",
}
PRIOR_HELP = ("How often each emotion is expected in your material. FERPlus: as the model was trained "
              "(a third of its faces neutral, as the crowd that labelled FERPlus saw them). Fewer neutral "
              "faces: neutral 0.7 times as likely, for photos of people beyond FERPlus (the model's own "
              "default is in its metrics.json). Uniform: every emotion equally likely, right for posed or "
              "acted expressions, where the FERPlus prior calls subtle anger, fear and disgust 'neutral'.")
