"""Real time: end-to-end frames/s of the live path, tracking, and steady labels, beside the peer `fer`.

    .venv/bin/python -m bench.speed.realtime [--model default] [--repeats 7] [--peer-python PATH]
        [--pixels numpy|opencv]

All on one thread (torch, ONNX Runtime, OpenCV), 640x480 frames made from
../shared/datasets/faces-dlib-examples, with the shipped model on its default path (ONNX Runtime):

1. Per frame, detect + align + classify (`Predictor.predict`), with the live detector (BlazeFace) and
   the photo detector (MTCNN), on a frame with 1 face and one with 5 (bench/common.py's frames), with
   the photo pipeline's pixel operations in NumPy (`ferkit.pixels`, the core install) or, with
   --pixels opencv, answered by OpenCV (the same bytes, faster).
2. Tracking: a 300-frame clip of 3 faces gliding across the frame (30 frames/s), through
   `FaceStream` (ferkit video and the live webcam) detecting every 1, 2 and 3 frames: frames/s, and
   the number of track ids used (3 = every face kept its id).
3. Steady labels: 90 frames (3 s) of one still face with per-frame pixel noise (sigma 6) and +-2 px
   jitter: top-label changes with smoothing off, at 0.3 s and at the default time constant, for each
   of the posed dev set's 20 closest calls (smallest gap between a face's two likeliest emotions).
4. A cut from a happy face (Tom Cruise) to a surprised one (the posed dev set's surprise photo the
   model is surest of): how long after the cut the smoothed label reads surprise.
5. The peer: PyPI `fer` 25.10.3 (OpenCV Haar + its TFLite classifier, `FER().detect_emotions`) on the
   same two frames, run by --peer-python (a Python with fer and tensorflow-cpu installed; see
   bench/tools/peer_fer.py for how to make one); ratios ferkit / fer.
Every frames/s is the median of --repeats timings after a warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import BENCH, FIVE_FACES, PHOTOS, SHARED, cpu_name, fit_frame, five_face_frame, median_rate
from bench.experiments.opencv_parity import with_opencv
from ferkit.inference import Predictor, load_image
from ferkit.inference.stream import FaceStream
from ferkit.inference.tracking import DEFAULT_SMOOTH_S

FPS = 30.0
POSED = SHARED / "posed-expressions"


def per_frame_rows(predictor: Predictor, frames: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    rates = {}
    for detector in ("blazeface", "mtcnn"):
        live = predictor.with_detection(detector, tight_crops=False)
        for name, frame in frames.items():
            faces = len(live.predict(frame))
            fps = median_rate(lambda p=live, f=frame: p.predict(f), 1, repeats, 10)
            rates[f"{detector} {name}"] = fps
            print(f"| {detector} | {name} | {faces} | {fps:,.0f} | {1000 / fps:.1f} |", flush=True)
    return rates


def face_patches() -> list[np.ndarray]:
    """Three real faces with some margin, 130 px tall."""
    out = []
    for name, (x, y, w, h) in FIVE_FACES[1:4]:
        rgb = load_image(PHOTOS / name)
        patch = rgb[max(0, y - h // 3):y + h + h // 3, max(0, x - w // 3):x + w + w // 3]
        scale = 130 / patch.shape[0]
        out.append(cv2.resize(patch, (int(patch.shape[1] * scale), 130), interpolation=cv2.INTER_AREA))
    return out


def moving_clip(frames: int = 300) -> list[np.ndarray]:
    """3 faces on grey, each on its own slow ellipse (up to ~3 px per frame)."""
    patches = face_patches()
    clip = []
    for k in range(frames):
        frame = np.full((480, 640, 3), 96, dtype=np.uint8)
        for i, patch in enumerate(patches):
            phase = 2 * np.pi * k / 150 + i * 2.1
            cx, cy = 110 + 200 * i + 50 * np.cos(phase), 240 + 60 * np.sin(phase)
            h, w = patch.shape[:2]
            x, y = int(cx - w / 2), int(cy - h / 2)
            frame[y:y + h, x:x + w] = patch
        clip.append(frame)
    return clip


def tracking_rows(predictor: Predictor, clip: list[np.ndarray], repeats: int) -> dict[int, float]:
    rates = {}
    for every in (1, 2, 3):
        ids: set[int] = set()

        def run(every: int = every, ids: set[int] = ids) -> None:
            stream = FaceStream(predictor.for_video(), detect_every=every)
            for k, frame in enumerate(clip):
                ids.update(f.track for f in stream.update(frame, k / FPS))

        run()
        used = len(ids)
        fps = median_rate(run, len(clip), max(1, repeats // 2), 1)
        rates[every] = fps
        print(f"| every {every} frame(s) | {len(clip)} | {used} | {fps:,.0f} |", flush=True)
    return rates


def closest_calls(predictor: Predictor, count: int) -> list[tuple[np.ndarray, str, float]]:
    """The posed dev set's `count` photos whose top two emotions are nearest (the hardest faces to
    keep steady), each on a 640x480 frame, closest first: (frame, name, gap)."""
    with open(POSED / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = []
    for row in rows:
        frame = fit_frame(load_image(POSED / "images" / row["image"]))
        faces = predictor.predict(frame)
        if faces:
            top2 = np.sort(faces[0].probabilities)[-2:]
            found.append((float(top2[1] - top2[0]), row["image"]))
    found.sort()
    return [(fit_frame(load_image(POSED / "images" / name)), name, gap) for gap, name in found[:count]]


def noisy_still(frame: np.ndarray, frames: int = 90, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        dx, dy = rng.integers(-2, 3, size=2)
        moved = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), (640, 480),
                               borderMode=cv2.BORDER_REPLICATE)
        out.append(np.clip(moved + rng.normal(0, 6, moved.shape), 0, 255).astype(np.uint8))
    return out


def labels(predictor: Predictor, clip: list[np.ndarray], smooth_s: float) -> list[str]:
    stream = FaceStream(predictor.for_video(), smooth_s=smooth_s)
    out = []
    for k, frame in enumerate(clip):
        faces = stream.update(frame, k / FPS)
        out.append(faces[0].emotion if faces else "-")
    return out


def flips(sequence: list[str]) -> int:
    return sum(a != b for a, b in zip(sequence, sequence[1:], strict=False))


def surprised_frame(predictor: Predictor) -> tuple[np.ndarray, str]:
    with open(POSED / "labels.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["emotion"] == "surprise"]
    best, name, score = None, "", -1.0
    for row in rows:
        frame = fit_frame(load_image(POSED / "images" / row["image"]))
        faces = predictor.predict(frame)
        if faces and faces[0].emotion == "surprise" and faces[0].confidence > score:
            best, name, score = frame, row["image"], faces[0].confidence
    return best, name


def peer_rates(python: str, frames: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="ferkit-peer-") as tmp:
        paths = {}
        for name, frame in frames.items():
            paths[name] = str(Path(tmp) / f"{name.replace(' ', '_')}.npy")
            np.save(paths[name], frame)
        script = BENCH / "tools" / "peer_fer.py"
        out = subprocess.run([python, str(script), "--repeats", str(repeats), json.dumps(paths)],
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--peer-python", default=None, help="a Python that can `import fer`")
    parser.add_argument("--pixels", choices=("numpy", "opencv"), default="numpy",
                        help="opencv: ferkit.pixels answered by OpenCV (the same bytes), to see what the "
                             "core install's NumPy operations cost")
    args = parser.parse_args()
    with with_opencv() if args.pixels == "opencv" else contextlib.nullcontext():
        run(args)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    predictor = Predictor(args.model, threads=1)
    onnx = predictor.model_info.get("onnx", {})
    print(f"# {cpu_name()}, 1 thread; model {predictor.source.name} on {predictor.backend.kind} "
          f"{onnx.get('precision', '')}; pixels by {args.pixels}; {' '.join(sys.argv)}")
    frames = {"1 face": fit_frame(load_image(PHOTOS / "Tom_Cruise_avp_2014_4.jpg")),
              "5 faces": five_face_frame()}

    print("\n| detector | frame (640x480) | faces | frames/s | ms |\n|---|---|---|---|---|")
    ours = per_frame_rows(predictor, frames, args.repeats)

    print("\n| tracking clip, FaceStream detecting | frames | track ids (3 faces) | frames/s |")
    print("|---|---|---|---|")
    tracking_rows(predictor, moving_clip(), args.repeats)

    hardest = closest_calls(predictor, 20)
    print(f"\nSteady labels: the posed dev set's 20 closest calls (gap between the top two emotions "
          f"{hardest[0][2]:.3f}-{hardest[-1][2]:.3f}), each still for 90 frames with noise and +-2 px "
          "jitter; label changes per clip:\n\n| smoothing | total changes | clips with any change | "
          f"closest call ({hardest[0][1]}) |\n|---|---|---|---|")
    for smooth_s in (0.0, 0.3, DEFAULT_SMOOTH_S):
        changes = [flips(labels(predictor, noisy_still(frame), smooth_s)) for frame, _, _ in hardest]
        print(f"| {smooth_s} s | {sum(changes)} | {sum(c > 0 for c in changes)} of {len(changes)} | "
              f"{changes[0]} |", flush=True)

    surprised, name = surprised_frame(predictor)
    happy = frames["1 face"]
    cut = [happy] * 30 + [surprised] * 30
    followed = labels(predictor, cut, DEFAULT_SMOOTH_S)
    after = next((k - 30 for k in range(30, 60) if followed[k] == "surprise"), None)
    delay = f"{after / FPS:.2f} s ({after} frames)" if after is not None else "never"
    raw = labels(predictor, cut, 0.0)
    raw_after = next((k - 30 for k in range(30, 60) if raw[k] == "surprise"), None)
    print(f"Cut from happiness ({followed[29]} before the cut) to surprise (posed {name}): the smoothed "
          f"label reads surprise {delay} after the cut (unsmoothed: {raw_after} frames)")

    if args.peer_python:
        peer = peer_rates(args.peer_python, frames, args.repeats)
        print("\n| frame (640x480) | fer frames/s | ferkit blazeface frames/s | ratio |\n|---|---|---|---|")
        for name in frames:
            ratio = ours[f"blazeface {name}"] / peer[name]
            print(f"| {name} | {peer[name]:,.0f} | {ours[f'blazeface {name}']:,.0f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
