"""BlazeFace (Bazarevsky et al. 2019), MediaPipe's full-range face detector, on ONNX Runtime.

Two small forward passes, full range (192x192) and short range (128x128): about 5 ms on one core for
a 640x480 frame, against MTCNN's 40-60 ms, which is what lets a live webcam run at frame rate. The
networks (`blazeface_onnx/`, see the README there: MediaPipe's Apache-2.0 models, converted once from
their .tflite) regress, for each anchor, a box and 6 keypoints; this module decodes them and merges
overlapping boxes by MediaPipe's weighted non-maximum suppression. Images are RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit import pixels

WEIGHTS_DIR = Path(__file__).with_name("blazeface_onnx")
# MediaPipe's keypoint order; "right"/"left" are the person's, so the right eye is on the image's left.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class BlazeFaceModel:
    """One of MediaPipe's two face detectors and its SSD anchors: `layers` lists (grid side, anchors
    per cell). `scale`, `shift`: this model's box -> the full-range model's (side ratio, and centre
    lower by that many full-range sides), measured on the same faces (bench/speed/detectors.py
    --calibrate)."""

    file: str
    input_side: int
    layers: tuple[tuple[int, int], ...]
    score_threshold: float
    scale: float = 1.0
    shift: float = 0.0

    def anchors(self) -> np.ndarray:
        """(A, 2) anchor centres in [0, 1], layer by layer, row by row, anchors of a cell together."""
        out = []
        for grid, per_cell in self.layers:
            cells = (np.arange(grid, dtype=np.float32) + 0.5) / grid
            xs, ys = np.meshgrid(cells, cells)
            out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0))
        return np.concatenate(out)


# Full range (faces down to ~1/20 of the image) misses faces that fill the frame, which short range
# (faces within ~2 m of a camera) finds; both run, and their boxes are merged.
FULL_RANGE = BlazeFaceModel("face_detection_full_range.onnx", 192, ((48, 1),), 0.6)
# Short range's threshold is above MediaPipe's 0.5: at 0.5 it sees two faces in dogs.jpg (scores 0.58).
SHORT_RANGE = BlazeFaceModel("face_detection_short_range.onnx", 128, ((16, 2), (8, 6)), 0.65,
                             scale=1 / 0.962, shift=-0.029)


@dataclass(frozen=True)
class BlazeFaceConfig:
    """The models to run and the IoU that merges their boxes (MediaPipe's)."""

    models: tuple[BlazeFaceModel, ...] = (FULL_RANGE, SHORT_RANGE)
    merge_iou: float = 0.3
    intra_op_threads: int = 1


@dataclass
class BlazeFaceResult:
    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2 in image pixels, full-range convention
    scores: np.ndarray  # (N,)
    keypoints: np.ndarray  # (N, 6, 2) in KEYPOINTS order, image pixels


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, points: np.ndarray, iou: float) -> BlazeFaceResult:
    """MediaPipe's "weighted" suppression: each kept box is the score-weighted mean of the boxes (and
    keypoints) it overlaps by more than `iou`; steadier than plain NMS from frame to frame."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    free = np.ones(len(scores), dtype=bool)
    kept_boxes, kept_scores, kept_points = [], [], []
    for i in np.argsort(-scores):
        if not free[i]:
            continue
        w = np.clip(np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1]), 0, None)
        overlap = w * h / (areas[i] + areas - w * h)
        group = free & (overlap > iou)
        free &= ~group
        weights = scores[group] / scores[group].sum()
        kept_boxes.append(weights @ boxes[group])
        kept_points.append(np.einsum("n,nkd->kd", weights, points[group]))
        kept_scores.append(scores[i])
    if not kept_scores:
        return BlazeFaceResult(np.zeros((0, 4)), np.zeros(0), np.zeros((0, len(KEYPOINTS), 2)))
    return BlazeFaceResult(np.array(kept_boxes), np.array(kept_scores), np.array(kept_points))


class BlazeFace:
    """The ONNX sessions and the decoding around them. Safe to call from several threads."""

    def __init__(self, config: BlazeFaceConfig | None = None, weights_dir: Path = WEIGHTS_DIR) -> None:
        from ferkit.faces.runtime import cpu_session

        self.config = config or BlazeFaceConfig()
        self.sessions = [cpu_session(weights_dir / m.file, self.config.intra_op_threads)
                         for m in self.config.models]
        self.anchors = [m.anchors() for m in self.config.models]

    def __call__(self, image: np.ndarray) -> BlazeFaceResult:
        """Faces in an RGB uint8 image, padded to a square (bottom/right) for the networks."""
        height, width = image.shape[:2]
        side = max(height, width)
        square = pixels.pad(image, 0, side - height, 0, side - width, border="constant")
        parts = zip(self.config.models, self.sessions, self.anchors, strict=True)
        found = [self.run(model, session, anchors, square) for model, session, anchors in parts]
        boxes, scores, points = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return weighted_nms(boxes, scores, points, self.config.merge_iou)

    @staticmethod
    def run(model: BlazeFaceModel, session, anchors: np.ndarray, square: np.ndarray):
        side, size = square.shape[0], model.input_side
        small = pixels.resize(square, (size, size), resample="area")
        x = (small.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]  # (1, 3, size, size)
        regressors, logits = session.run(None, {session.get_inputs()[0].name: x})
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[0, :, 0], -80.0, 80.0)))
        keep = scores >= model.score_threshold
        raw, scores, anchors = regressors[0, keep], scores[keep], anchors[keep]
        # (dx, dy, w, h, 6 x (kx, ky)) in input pixels, relative to the anchor centre
        centres = raw[:, 0:2] / size + anchors
        sizes = raw[:, 2:4] / size
        long_side = sizes.max(axis=1, keepdims=True)
        # into the full-range model's box convention, so that merged boxes mean one thing
        centres = centres + np.array([0.0, model.shift]) * long_side * model.scale
        sizes = sizes * model.scale
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1) * side
        points = (raw[:, 4:].reshape(-1, len(KEYPOINTS), 2) / size + anchors[:, None]) * side
        return boxes, scores, points
