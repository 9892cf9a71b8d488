"""Tune the alignment margin on FERPlus Valid accuracy of the whole photo pipeline.

    .venv/bin/python -m bench.experiments.tune_margin [--model default] [--n 600] \
        [--margins 0 0.05 0.1 0.2 0.3]
        [--detectors mtcnn blazeface]

Each Valid face (48x48) is upscaled 4x and edge-padded (ferkit.faces.reframe.frame_in_photo: so the
detector sees a face in a frame, as in a photo), detected with each detector (default: the default
one), aligned with each margin and classified.
Reports the detection rate and the majority-protocol accuracy on the detected faces, beside the
model's accuracy on the original crops of the same faces. Detection runs once per face and is
shared across margins.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from ferkit.data import label_split, load_ferplus
from ferkit.faces import DEFAULT_DETECTOR, align_face, detect_faces
from ferkit.faces.reframe import frame_in_photo
from ferkit.inference import Predictor
from ferkit.settings import data_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--margins", type=float, nargs="*", default=[0.0, 0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--detectors", nargs="*", default=[DEFAULT_DETECTOR])
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    valid = label_split(load_ferplus(args.data, splits=("valid",))["valid"], "majority")
    pick = np.random.default_rng(0).permutation(len(valid))[: args.n]
    predictor = Predictor(model=args.model, prior="ferplus")  # FERPlus faces: their own prior
    for detector in args.detectors:
        pipeline(predictor, valid, pick, detector, args.margins)


def pipeline(predictor: Predictor, valid, pick: np.ndarray, detector: str, margins: list[float]) -> None:
    frames, detections, keep = [], [], []
    for i in pick:
        frame = frame_in_photo(valid.images[i])
        found = detect_faces(frame, detector)
        if found:
            frames.append(frame)
            detections.append(found[0])
            keep.append(i)
    keep = np.array(keep)
    labels = valid.labels[keep]
    original = predictor.predict_faces(valid.images[keep]).argmax(axis=1)
    print(f"\ndetected {len(keep)}/{len(pick)} Valid faces with {detector}; accuracy on their "
          f"original crops: {(original == labels).mean():.4f}")
    print(f"| margin | Valid accuracy (pipeline, {detector}) |")
    print("|---|---|")
    for margin in margins:
        crops = np.stack([align_face(f, d, margin=margin) for f, d in zip(frames, detections, strict=True)])
        predicted = predictor.predict_faces(crops).argmax(axis=1)
        print(f"| {margin:.2f} | {(predicted == labels).mean():.4f} |", flush=True)

if __name__ == "__main__":
    main()
