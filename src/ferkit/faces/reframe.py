"""FERPlus crops framed the way the photo pipeline frames a face.

A 48x48 FERPlus crop is set in a frame as a photo shows a face (upscaled, edge-padded), then found and
cut out by ferkit's own detector and aligner, exactly as `ferkit predict` treats a photo: the eyes come
out level and the face sits where the detector's box puts it, which FER2013's crops do not guarantee.
Training views drawn from these (`augment.reframe`, training/distill.py) show the network the framing it
meets in photos; bench/experiments/tune_margin.py scores the pipeline on the same frames.

    framed, found = reframe_faces(faces)  # uint8 (N, 48, 48) -> uint8 (N, 48, 48), bool (N,)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from ferkit.faces.align import DEFAULT_MARGIN, align_face
from ferkit.faces.detectors import DEFAULT_DETECTOR, detect_faces

PHOTO_UPSCALE = 4  # 48 px -> 192 px: a face size every detector finds well
PHOTO_PAD = 0.25  # edge pixels added all round, as a fraction of the upscaled side


def frame_in_photo(face: np.ndarray) -> np.ndarray:
    """One uint8 gray face crop (H, W) as a photo would show it: upscaled (bicubic) and padded with its
    own edge pixels by PHOTO_PAD of its side all round; RGB uint8."""
    side = face.shape[0] * PHOTO_UPSCALE
    big = cv2.resize(face, (face.shape[1] * PHOTO_UPSCALE, side), interpolation=cv2.INTER_CUBIC)
    pad = round(PHOTO_PAD * side)
    return cv2.cvtColor(cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE), cv2.COLOR_GRAY2RGB)


def reframe_face(face: np.ndarray, detector: str = DEFAULT_DETECTOR,
                 margin: float = DEFAULT_MARGIN) -> np.ndarray | None:
    """The 48x48 crop the photo pipeline makes of `face` set in a photo (its largest face), or None when
    the detector finds no face."""
    frame = frame_in_photo(face)
    found = detect_faces(frame, detector)
    return align_face(frame, found[0], margin=margin) if found else None


def reframe_faces(faces: np.ndarray, detector: str = DEFAULT_DETECTOR, margin: float = DEFAULT_MARGIN,
                  workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """uint8 faces (N, 48, 48) -> (their photo-pipeline crops (N, 48, 48), found (N,) bool). A face the
    detector misses is returned as it was. `workers` threads detect at once (ONNX Runtime releases the
    GIL)."""
    faces = np.asarray(faces, dtype=np.uint8)
    framed, found = faces.copy(), np.zeros(len(faces), dtype=bool)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, crop in enumerate(pool.map(lambda face: reframe_face(face, detector, margin), faces)):
            if crop is not None:
                framed[i], found[i] = crop, True
    return framed, found
