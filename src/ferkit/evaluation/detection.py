"""Scoring face detectors against boxed photos (dlib's imglab XML): recall, precision, IoU matching."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ferkit.errors import DataError

Box = tuple[int, int, int, int]  # x, y, width, height


def read_imglab_boxes(xml_path: Path) -> dict[str, list[Box]]:
    """{image file name: face boxes} from an imglab dataset XML (`<box top left width height/>`)."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DataError(f"{xml_path}: cannot read imglab XML ({exc})") from exc
    boxes: dict[str, list[Box]] = {}
    for image in root.iter("image"):
        boxes[image.get("file", "")] = [
            (int(b.get("left")), int(b.get("top")), int(b.get("width")), int(b.get("height")))
            for b in image.iter("box")
            if b.get("ignore", "0") == "0"
        ]
    return boxes


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0


@dataclass
class MatchResult:
    """Greedy one-to-one matching of detections (best score first) to truth boxes."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    pairs: list[tuple[Box, Box]] = field(default_factory=list)  # (truth, detection)

    def add(self, other: MatchResult) -> None:
        self.true_positives += other.true_positives
        self.false_positives += other.false_positives
        self.false_negatives += other.false_negatives
        self.pairs += other.pairs

    @property
    def recall(self) -> float:
        found = self.true_positives + self.false_negatives
        return self.true_positives / found if found else 1.0

    @property
    def precision(self) -> float:
        said = self.true_positives + self.false_positives
        return self.true_positives / said if said else 1.0


def match(truth: list[Box], detected: list[tuple[Box, float]], threshold: float = 0.3) -> MatchResult:
    """Match (box, score) detections to truth boxes at IoU >= threshold, best score first."""
    result = MatchResult()
    free = list(truth)
    for box, _ in sorted(detected, key=lambda d: -d[1]):
        scored = [(iou(t, box), t) for t in free]
        best = max(scored, default=(0.0, None))
        if best[1] is not None and best[0] >= threshold:
            free.remove(best[1])
            result.true_positives += 1
            result.pairs.append((best[1], box))
        else:
            result.false_positives += 1
    result.false_negatives = len(free)
    return result
