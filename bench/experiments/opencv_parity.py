"""Does the photo pipeline give OpenCV's answers without OpenCV? The check behind `ferkit.pixels`.

ferkit's photo pipeline resizes, pads, warps and converts to gray with `ferkit.pixels` (NumPy), written
to give the bytes OpenCV 4 gives, so that the core install needs no OpenCV. This script runs both dev
sets through the whole photo pipeline twice, with the bundled model: once as shipped, once with
`ferkit.pixels` answered by OpenCV itself. It prints, per dev set, the faces found, accuracy and
balanced accuracy of each run, the top-1 agreement and the largest probability difference between them.

    .venv/bin/python -m bench.experiments.opencv_parity [--model default]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import cv2
import numpy as np

from bench.experiments.prior_strength import DEV_SETS
from ferkit import pixels
from ferkit.evaluation import evaluate_photos

INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def resize(image: np.ndarray, size: tuple[int, int], *, resample: str) -> np.ndarray:
    return cv2.resize(image, size, interpolation=INTERPOLATION[resample])


def resize_many(images: list[np.ndarray], size: tuple[int, int], *, resample: str) -> np.ndarray:
    return np.stack([resize(image, size, resample=resample) for image in images])


def pad(image: np.ndarray, top: int, bottom: int, left: int, right: int, *, border: str = "edge"
        ) -> np.ndarray:
    mode = cv2.BORDER_REPLICATE if border == "edge" else cv2.BORDER_CONSTANT
    return cv2.copyMakeBorder(image, top, bottom, left, right, mode)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], *, to_gray: bool = False
                ) -> np.ndarray:
    source = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if to_gray else image
    return cv2.warpAffine(source, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def rotation_matrix(center: tuple[float, float], angle: float, scale: float) -> np.ndarray:
    return cv2.getRotationMatrix2D(center, angle, scale)


@contextlib.contextmanager
def with_opencv() -> Iterator[None]:
    """Every `ferkit.pixels` operation answered by OpenCV (modules call them as `pixels.<name>`)."""
    replacements = {"resize": resize, "resize_many": resize_many, "pad": pad, "warp_affine": warp_affine,
                    "gray": gray, "rotation_matrix": rotation_matrix}
    saved = {name: getattr(pixels, name) for name in replacements}
    for name, function in replacements.items():
        setattr(pixels, name, function)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(pixels, name, function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    print("| dev set | pipeline | faces found | accuracy | balanced | top-1 agreement | largest difference |")
    print("|---|---|---|---|---|---|---|")
    for key, folder in DEV_SETS.items():
        shipped = evaluate_photos(args.model, folder)
        with with_opencv():
            reference = evaluate_photos(args.model, folder)
        both = {name: k for k, name in enumerate(reference.data.image_names)}
        pairs = [(i, both[name]) for i, name in enumerate(shipped.data.image_names) if name in both]
        agree = np.mean([shipped.proba[i].argmax() == reference.proba[j].argmax() for i, j in pairs])
        gap = max(float(np.abs(shipped.proba[i] - reference.proba[j]).max()) for i, j in pairs)
        for label, run in (("ferkit.pixels", shipped), ("OpenCV", reference)):
            m = run.metrics
            print(f"| {key} | {label} | {len(run.proba)} | {m['accuracy']:.4f} | "
                  f"{m['balanced_accuracy']:.4f} | {agree:.4f} ({len(pairs)} photos) | {gap:.2g} |",
                  flush=True)


if __name__ == "__main__":
    main()
