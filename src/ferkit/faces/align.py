"""Detection -> 48x48 gray crop framed like a FERPlus face. The one crop used by CLI, API and app.

The crop is a square around the detection box (every detector's box is calibrated to the same "face
square", see ferkit.faces.detectors), enlarged by `margin` of the face side on each side, rotated so the
eyes are level when the detector gives eyes, then area-averaged down to 48x48. Parts of the square
outside the image repeat the edge pixels (no black bars for the model to read).

Framing measured on FERPlus (bench/speed/detectors.py --margin; docs/benchmarks.md): MTCNN run on 597 FERPlus
Valid crops (upscaled, padded) finds the face square at a median 43 of 48 px, eyes 17.9 px apart and
18.5 px from the top; our crops match that with DEFAULT_MARGIN = 0.05 (the face square alone gives
eyes 18.9 px apart, 0.05 gives 17.2) and the crop centre raised by CENTER_RAISE = 0.1 face sides
(FERPlus faces sit low in their crops: more forehead and hair than chin margin).
Checked on accuracy with the bundled model (bench/experiments/tune_margin.py, docs/benchmarks.md):
0.05 gives the best
FERPlus Valid accuracy of the whole detect -> align -> classify pipeline among 0 / 0.05 / 0.1 / 0.2 / 0.3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ferkit import pixels
from ferkit.errors import FaceDetectorError
from ferkit.faces.detectors import Detection
from ferkit.faces.image import to_rgb
from ferkit.settings import FACE_SIDE

OUTPUT_SIZE = FACE_SIDE
DEFAULT_MARGIN = 0.05  # fraction of the face side added on each side
CENTER_RAISE = 0.10  # crop centre above the face-square centre (along the face's own up), in face sides


@dataclass(frozen=True)
class CropFrame:
    """Where the output square sits in the input: centre and side in input pixels, rotation in degrees."""

    center: tuple[float, float]
    side: float
    angle: float  # counter-clockwise rotation applied to the image, = the eye line's tilt


def eye_angle(detection: Detection) -> float | None:
    """Tilt of the line from the left to the right eye (as seen), in degrees; None without eyes.

    Positive when the right eye is lower, i.e. the face is turned clockwise on screen.
    """
    marks = getattr(detection, "landmarks", None) or {}  # a custom detector may give boxes only
    if "left_eye" not in marks or "right_eye" not in marks:
        return None
    (lx, ly), (rx, ry) = marks["left_eye"], marks["right_eye"]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def crop_frame(detection: Detection, margin: float) -> CropFrame:
    """The square to cut: the box's long side grown by `margin` of it on each side, raised a little."""
    if not margin > -0.5:
        raise FaceDetectorError(f"margin must be > -0.5 (a fraction of the face side), got {margin}")
    x, y, w, h = getattr(detection, "face_square", None) or detection.box  # unclipped when known
    if w <= 0 or h <= 0:
        raise FaceDetectorError(f"detection box has no area: {detection.box}")
    face = max(w, h)
    angle = eye_angle(detection) or 0.0
    up = (math.sin(math.radians(angle)), -math.cos(math.radians(angle)))  # the face's up, tilted
    center = (x + w / 2 + CENTER_RAISE * face * up[0], y + h / 2 + CENTER_RAISE * face * up[1])
    return CropFrame(center, face * (1 + 2 * margin), angle)


def crop_matrix(frame: CropFrame, size: int) -> np.ndarray:
    """2x3 affine map from input pixels to a size x size crop: rotate and scale about the centre."""
    matrix = pixels.rotation_matrix(frame.center, frame.angle, size / frame.side)
    matrix[:, 2] += (size / 2 - frame.center[0], size / 2 - frame.center[1])
    return matrix


def align_face(image: np.ndarray, detection: Detection, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """The face of `detection` as a 48x48 uint8 gray crop, eyes level when known.

    `image` is the one the detection came from (RGB, RGBA or gray uint8). `margin` is the fraction of
    the face side added on each side of the face square (0 = the face square itself).
    """
    array = np.asarray(image)
    plain_gray = array.ndim == 2 and array.dtype == np.uint8 and array.size > 0
    source = array if plain_gray else to_rgb(array)
    x, y, w, h = detection.box
    height, width = source.shape[:2]
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:  # a custom detector's stray box
        raise FaceDetectorError(f"face box {tuple(detection.box)} lies outside the {width}x{height} image")
    frame = crop_frame(detection, margin)
    # Warp at about the face's own resolution, then area-average: warping straight to 48 px would
    # sample a large face sparsely (aliasing); never below 48 so small faces are interpolated once.
    native = max(OUTPUT_SIZE, round(frame.side))
    # to gray as the warp reads: only the pixels under the face are converted, not the whole photo
    crop = pixels.warp_affine(source, crop_matrix(frame, native), (native, native), to_gray=not plain_gray)
    if native == OUTPUT_SIZE:
        return crop
    return pixels.resize(crop, (OUTPUT_SIZE, OUTPUT_SIZE), resample="area")


def aligned_points(detection: Detection, margin: float = DEFAULT_MARGIN) -> dict[str, tuple[float, float]]:
    """The detection's landmarks in the coordinates of its 48x48 aligned crop (for checks and overlays)."""
    matrix = crop_matrix(crop_frame(detection, margin), OUTPUT_SIZE)
    return {
        name: (float(matrix[0] @ (x, y, 1.0)), float(matrix[1] @ (x, y, 1.0)))
        for name, (x, y) in (detection.landmarks or {}).items()
    }
