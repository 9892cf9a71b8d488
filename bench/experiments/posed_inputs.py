"""Does the posed dev set fail on its inputs or on the network? Crop treatments, crop margins, and peers.

    .venv/bin/python -m bench.experiments.posed_inputs [--model default] [--fer] [--faceapi] [--threads 2]

Every posed photo goes through the photo pipeline once (detect, align, 48x48 crop); the crops are then
changed the ways a domain gap would call for (blur, down-and-up sampling, histogram equalisation,
CLAHE, sharpening, the mirror image) and re-classified, and the whole pipeline is re-run at other
alignment margins (ferkit.faces.align_face's `margin`; the default is 0.05). Each row: accuracy,
balanced accuracy over the 7 classes and the per-class recall.

--fer also runs fer 25.10.3's classifier (its own virtualenv, bench/tools/peer_env.py) on the same crops,
on both dev sets and FERPlus Valid, and blends it into the model: log p = log p_model + a * log p_fer
(fer has no contempt: its neutral stands in). fer was trained on FER2013's original labels, one
annotator per face; FERPlus relabelled the same faces by crowd, so the blend asks whether the original
labels carry the posed-expression signal the crowd labels lack. --faceapi does the same with
face-api.js's expression net (bench/tools/peer_faceapi.py), trained on faces beyond FER2013: does a network
that has seen other faces read posed expressions better? Dev sets: no face found = an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import BENCH
from bench.tools.peer_env import peer_python
from bench.tools.peer_faceapi import LABELS as FACEAPI_ORDER
from bench.tools.peer_faceapi import faceapi_probabilities
from ferkit.emotions import EMOTIONS
from ferkit.evaluation import compute_metrics, evaluate_photos, load_eval_split
from ferkit.faces import align_face
from ferkit.inference import Predictor
from ferkit.settings import data_root

DEV_SETS = {"wild": "../shared/datasets/expressions-in-the-wild",
            "posed": "../shared/datasets/posed-expressions"}
POSED_ORDER = ["neutral", "anger", "disgust", "fear", "sadness", "surprise", "happiness"]
FER_ORDER = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]  # its outputs
FIVE = [EMOTIONS.index(e) for e in ("neutral", "happiness", "surprise", "sadness", "anger")]
CLAHE = cv2.createCLAHE(2.0, (4, 4))


def down_up(crop: np.ndarray, side: int) -> np.ndarray:
    return cv2.resize(cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA), crop.shape[::-1])


TREATMENTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur sigma 0.6": lambda c: cv2.GaussianBlur(c, (0, 0), 0.6),
    "blur sigma 1.0": lambda c: cv2.GaussianBlur(c, (0, 0), 1.0),
    "down to 32 and up": lambda c: down_up(c, 32),
    "down to 24 and up": lambda c: down_up(c, 24),
    "histogram equalised": cv2.equalizeHist,
    "CLAHE 2.0, 4x4 tiles": CLAHE.apply,
    "unsharp mask 0.5": lambda c: cv2.addWeighted(c, 1.5, cv2.GaussianBlur(c, (0, 0), 1.0), -0.5, 0),
}


def row(name: str, labels: np.ndarray, proba: np.ndarray, missed: list[int]) -> str:
    metrics = compute_metrics(labels, proba, missed=missed)
    recall = {e: c["recall"] for e, c in metrics["per_class"].items()}
    return (f"| {name} | {metrics['accuracy']:.3f} | {metrics['balanced_accuracy']:.3f} | "
            + " | ".join(f"{recall[e]:.2f}" for e in POSED_ORDER) + " |")


def to_emotions(proba: np.ndarray, order: list[str]) -> np.ndarray:
    """A 7-class peer's softmax in EMOTIONS order, its neutral standing in for contempt, renormalised."""
    out = np.zeros((len(proba), len(EMOTIONS)), dtype=np.float64)
    for j, emotion in enumerate(order):
        out[:, EMOTIONS.index(emotion)] = proba[:, j]
    out[:, EMOTIONS.index("contempt")] = proba[:, order.index("neutral")]
    return out / out.sum(axis=1, keepdims=True)


def faceapi_peer(crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: to_emotions(faceapi_probabilities(faces), FACEAPI_ORDER) for name, faces in crops.items()}


def fer_probabilities(crops: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fer's softmax for each set of 48x48 crops, in EMOTIONS order."""
    script = ("import sys, numpy as np\nsys.path.insert(0, sys.argv[1])\nfrom peer_fer import classify\n"
              "from fer.fer import FER\nd = FER()\nfor path in sys.argv[2:]:\n"
              "    f = np.load(path)\n"
              "    np.save(path + '.fer.npy', np.concatenate([classify(d, f[i:i + 256]) "
              "for i in range(0, len(f), 256)]))\n")
    out = {}
    with tempfile.TemporaryDirectory(prefix="ferkit-fer-") as tmp:
        paths = []
        for name, faces in crops.items():
            paths.append(str(Path(tmp) / f"{name}.npy"))
            np.save(paths[-1], faces)
        subprocess.run([peer_python(), "-c", script, str(BENCH / "tools"), *paths], check=True,
                       capture_output=True,
                       env={**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
        for name, path in zip(crops, paths, strict=True):
            out[name] = to_emotions(np.load(path + ".fer.npy"), FER_ORDER)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--fer", action="store_true", help="also fer's classifier and its blend")
    parser.add_argument("--faceapi", action="store_true", help="also face-api.js's net and its blend")
    parser.add_argument("--blend", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5, 1.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # the model as trained (prior ferplus), as the figures in docs/experiments.md were measured
    predictor = Predictor(args.model, prior="ferplus")
    posed = evaluate_photos(args.model, DEV_SETS["posed"], prior="ferplus")
    labels, crops = posed.data.labels, posed.data.images
    missed = [EMOTIONS.index(m["emotion"]) for m in posed.photos["missed"]]
    print(f"# {args.model} on the posed dev set ({len(labels) + len(missed)} photos, "
          f"{len(missed)} without a face)")
    print("\n| input | acc | bal (7) | " + " | ".join(POSED_ORDER) + " |")
    print("|---" * 10 + "|")
    print(row("as the pipeline crops it (margin 0.05)", labels, posed.proba, missed))
    flipped = predictor.predict_faces(crops, tta="flip")
    print(row("mirror image averaged in (--tta flip)", labels, flipped, missed))
    for name, treat in TREATMENTS.items():
        print(row(name, labels, predictor.predict_faces(np.stack([treat(c) for c in crops])), missed))
    for margin in (-0.05, 0.0, 0.1, 0.15, 0.25):
        framed = Predictor(args.model, align=partial(align_face, margin=margin), prior="ferplus")
        paths = [posed.data_root / name for name in posed.data.image_names]
        results = list(framed.predict_many(paths, progress=False))
        proba = np.stack([r.faces[0].probabilities if r.faces else np.eye(len(EMOTIONS))[0] for r in results])
        print(row(f"alignment margin {margin}", labels, proba, missed))
    peers = {name: compute for name, compute, wanted in
             [("fer", fer_probabilities, args.fer), ("face-api", faceapi_peer, args.faceapi)] if wanted}
    if not peers:
        return
    valid = load_eval_split(data_root(), "valid", "majority")
    sets = {"valid": (valid.labels, predictor.predict_faces(valid.images), [], valid.images)}
    wild = evaluate_photos(args.model, DEV_SETS["wild"], prior="ferplus")
    wild_missed = [EMOTIONS.index(m["emotion"]) for m in wild.photos["missed"]]
    sets["wild"] = (wild.data.labels, wild.proba, wild_missed, wild.data.images)
    sets["posed"] = (labels, posed.proba, missed, crops)
    for peer, compute in peers.items():
        peer_proba = compute({name: s[3] for name, s in sets.items()})
        print(f"\n| {peer} blend a | Valid acc | Valid bal | wild acc | wild bal (5) | posed acc | "
              "posed bal (7) | posed anger / disgust / fear |")
        print("|---" * 8 + "|")
        for a in [f"{peer} alone", 0.0, *args.blend]:
            cells = []
            for name, (y, proba, lost, _) in sets.items():
                if isinstance(a, str):
                    mixed = peer_proba[name]
                else:
                    mixed = np.exp(np.log(proba + 1e-8) + a * np.log(peer_proba[name] + 1e-8))
                    mixed /= mixed.sum(axis=1, keepdims=True)
                m = compute_metrics(y, mixed, missed=lost)
                recall = {e: c["recall"] for e, c in m["per_class"].items()}
                if name == "valid":
                    cells += [f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}"]
                elif name == "wild":
                    cells += [f"{m['accuracy']:.3f}", f"{np.mean([recall[EMOTIONS[k]] for k in FIVE]):.3f}"]
                else:
                    cells += [f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}",
                              f"{recall['anger']:.2f} / {recall['disgust']:.2f} / {recall['fear']:.2f}"]
            print(f"| {a} | " + " | ".join(cells) + " |")
    print("\npeers' labels:", json.dumps({"fer": FER_ORDER, "face-api": FACEAPI_ORDER}))


if __name__ == "__main__":
    main()
