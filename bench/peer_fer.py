"""The peer, PyPI `fer` 25.10.3, timed on frames saved by bench/realtime.py; run by that script.

fer needs tensorflow, which ferkit does not, so it lives in its own virtualenv (tensorflow-cpu is a
wheel on this machine's registry; fer's other hard requirements, facenet-pytorch and moviepy, are
only for its MTCNN and video paths, so it is installed without them):

    python3 -m venv /tmp/fervenv
    /tmp/fervenv/bin/pip install "tensorflow-cpu==2.21.*" "opencv-python-headless<5" "setuptools<81" \\
        requests pandas matplotlib tqdm pillow
    /tmp/fervenv/bin/pip install --no-deps fer==25.10.3
    .venv/bin/python bench/realtime.py --peer-python /tmp/fervenv/bin/python

`FER()` is fer's default: OpenCV's Haar cascade, then its quantised TFLite classifier; one thread.
Prints one JSON line: frame name -> frames/s (median of --repeats).
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("frames", help="JSON: name -> .npy path of an RGB 640x480 frame")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    from fer.fer import FER  # fer 25.x exports nothing from the package itself

    detector = FER()
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
