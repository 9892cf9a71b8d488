"""The peer, PyPI `fer` 25.10.3, timed on frames saved by bench/speed/realtime.py; run by that script.

fer needs tensorflow, which ferkit does not, so it runs in its own virtualenv, which bench/tools/peer_env.py
makes on first use (`.venv/bin/python -m bench.tools.peer_env` prints its interpreter):

    .venv/bin/python -m bench.speed.realtime --peer-python $(.venv/bin/python -m bench.tools.peer_env)

`FER()` is fer's default: OpenCV's Haar cascade, then its quantised TFLite classifier; one thread.
Frames mode prints one JSON line: frame name -> frames/s (median of --repeats). Classifier mode
(`--faces FACES.npy`, uint8 48x48 faces, used by bench/speed/classifier_vs_fer.py) prints fer's labels for
the faces, then answers each "BATCH CALLS" line on stdin with the seconds those calls took, so that the
caller can interleave its own timings with fer's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def classify(detector, faces: np.ndarray) -> np.ndarray:
    """fer's classifier path from 48x48 uint8 faces: resize to its 64x64, scale to [-1, 1], TFLite."""
    resized = np.stack([cv2.resize(f, (64, 64)) for f in faces]).astype("float32")
    return detector._classify_emotions((resized / 255.0 - 0.5) * 2.0)


def serve_classifier(detector, path: str) -> None:
    import sys

    faces = np.load(path)
    labels = detector._get_labels()
    print(json.dumps([labels[int(i)] for i in classify(detector, faces).argmax(axis=1)]), flush=True)
    for line in sys.stdin:
        batch, calls = map(int, line.split())
        start = time.perf_counter()
        for k in range(calls):
            first = (k * batch) % (len(faces) - batch + 1)
            classify(detector, faces[first:first + batch])
        print(time.perf_counter() - start, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("frames", nargs="?", help="JSON: name -> .npy path of an RGB 640x480 frame")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--faces", help="classifier mode: .npy of uint8 (N, 48, 48) faces")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    from fer.fer import FER  # fer 25.x exports nothing from the package itself

    detector = FER()
    if args.faces:
        serve_classifier(detector, args.faces)
        return
    rates = {}
    for name, path in json.loads(args.frames).items():
        bgr = cv2.cvtColor(np.load(path), cv2.COLOR_RGB2BGR)  # fer takes OpenCV's BGR
        detector.detect_emotions(bgr)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for _ in range(10):
                detector.detect_emotions(bgr)
            times.append((time.perf_counter() - start) / 10)
        rates[name] = 1 / statistics.median(times)
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
