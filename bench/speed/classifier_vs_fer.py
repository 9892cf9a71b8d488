"""Classifier speed against the peer: ferkit's bundled models and `fer`'s TFLite model, interleaved.

    .venv/bin/python -m bench.speed.classifier_vs_fer [--rounds 5] [--models default runs/NAME x.onnx]

The same 256 FERPlus Test faces (uint8 48x48, the first 256 of the majority protocol) go to every
model, 1 thread each: batch 1 (256 calls of one face) and batch 64 (4 calls of 64), faces/s. Rounds
alternate ferkit and fer (each bundled model on its default path, ONNX Runtime, and on PyTorch), and
each figure is the median over the rounds, so both see the same machine state. fer runs in its own
virtualenv, made on first use by bench/tools/peer_env.py (or --peer-python), and is given the faces as its
pipeline would: resized to its 64x64 input and scaled to [-1, 1], then its quantised TFLite model one
face per invoke (fer's own loop). Accuracy: FERPlus majority labels on these 256 faces; fer has no
contempt class (its 7 labels are mapped to FERPlus's names) and was trained on FER2013's original labels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import BENCH, SHARED, cpu_name
from bench.tools.peer_env import peer_python as make_peer_python
from ferkit.data import label_split, load_ferplus
from ferkit.emotions import EMOTIONS
from ferkit.inference import Predictor
from ferkit.models import list_bundled

FER_NAMES = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
             "sad": "sadness", "surprise": "surprise", "neutral": "neutral"}
BATCHES = {1: 256, 64: 4}  # batch size -> calls per timing (256 faces each)


class Peer:
    """fer in its own interpreter, timing on request."""

    def __init__(self, python: str, faces: np.ndarray, workdir: Path):
        np.save(workdir / "faces.npy", faces)
        script = BENCH / "tools" / "peer_fer.py"
        self.process = subprocess.Popen([python, str(script), "--faces", str(workdir / "faces.npy")],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        stderr=subprocess.DEVNULL)
        self.labels = [FER_NAMES[name] for name in json.loads(self.process.stdout.readline())]

    def seconds(self, batch: int, calls: int) -> float:
        self.process.stdin.write(f"{batch} {calls}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def ours_seconds(predictor: Predictor, faces: np.ndarray, batch: int, calls: int) -> float:
    start = time.perf_counter()
    for k in range(calls):
        first = (k * batch) % (len(faces) - batch + 1)
        predictor.predict_faces(faces[first:first + batch])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python",
                        help="a Python that can `import fer` (default: bench/tools/peer_env.py's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=list_bundled())
    args = parser.parse_args()
    peer_python = args.peer_python or make_peer_python()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    test = label_split(load_ferplus(SHARED / "ferplus", splits=("test",))["test"], "majority")
    faces, truth = test.images[:256], test.labels[:256]
    candidates = {}
    for name in args.models:
        for backend in ("auto",) if name.endswith(".onnx") else ("auto", "torch"):
            predictor = Predictor(name, threads=1, backend=backend, prior="ferplus")  # FERPlus faces
            precision = predictor.model_info.get("onnx", {}).get("precision", "fp32")
            label = f"{name} ({predictor.backend.kind} {precision})"
            if label not in candidates:
                candidates[label] = predictor
    with tempfile.TemporaryDirectory(prefix="ferkit-peer-") as tmp:
        peer = Peer(peer_python, faces, Path(tmp))
        times: dict[str, dict[int, list[float]]] = {k: {b: [] for b in BATCHES} for k in [*candidates, "fer"]}
        for predictor in candidates.values():  # warm-up
            predictor.predict_faces(faces[:64])
        peer.seconds(64, 1)
        for _ in range(args.rounds):
            for batch, calls in BATCHES.items():
                times["fer"][batch].append(peer.seconds(batch, calls))
                for label, predictor in candidates.items():
                    times[label][batch].append(ours_seconds(predictor, faces, batch, calls))
        fer_labels = peer.labels
        peer.close()
    rate = {k: {b: 256 / statistics.median(v) for b, v in per.items()} for k, per in times.items()}
    fer_predicted = np.array([EMOTIONS.index(label) for label in fer_labels])
    fer_accuracy = float((fer_predicted == truth).mean())
    print(f"# {cpu_name()}, 1 thread, {args.rounds} interleaved rounds, 256 FERPlus Test faces; "
          f"torch {torch.__version__}")
    print("\n| model | faces/s batch 1 | faces/s batch 64 | x fer, batch 1 | x fer, batch 64 | "
          "accuracy on these 256 | FERPlus Test accuracy (metrics.json) |\n|---|---|---|---|---|---|---|")
    print(f"| fer 25.10.3 (TFLite int8) | {rate['fer'][1]:,.0f} | {rate['fer'][64]:,.0f} | 1 | 1 | "
          f"{fer_accuracy:.3f} | - |")
    for label, predictor in candidates.items():
        accuracy = float((predictor.predict_faces(faces).argmax(1) == truth).mean())
        test_acc = predictor.backend.metrics.get("accuracy")
        test_acc = "-" if test_acc is None else f"{test_acc:.3f}"
        print(f"| {label} | {rate[label][1]:,.0f} | {rate[label][64]:,.0f} | "
              f"{rate[label][1] / rate['fer'][1]:.2f} | {rate[label][64] / rate['fer'][64]:.2f} | "
              f"{accuracy:.3f} | {test_acc} |")


if __name__ == "__main__":
    main()
