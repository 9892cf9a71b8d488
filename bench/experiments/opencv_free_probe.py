"""Would the photo pipeline keep its answers without OpenCV? A probe for a lighter core install.

OpenCV is 162 of the core virtualenv's 469 MB (docs/benchmarks.md, "Install and first prediction").
The photo pipeline uses it for resizing (INTER_AREA), the alignment's warpAffine, borders and the
gray conversion. This script runs both dev sets through the whole photo pipeline twice, with the
bundled model: once as shipped, once with those calls answered by Pillow and NumPy (a stand-in
`cv2` in ferkit.images and ferkit.faces; drawing, video and the Haar detector are out of scope).
It prints, per dev set, the faces found, the top-1 agreement of the two runs on the photos both
found a face in, and accuracy and balanced accuracy of each.

    .venv/bin/python -m bench.experiments.opencv_free_probe [--model default]
"""

from __future__ import annotations

import argparse
import contextlib
import types
from collections.abc import Iterator

import cv2
import numpy as np
from PIL import Image

from bench.experiments.prior_strength import DEV_SETS
from ferkit.evaluation import evaluate_photos

PATCHED = ("ferkit.images", "ferkit.faces.align", "ferkit.faces.mtcnn", "ferkit.faces.detectors",
           "ferkit.faces.blazeface")


def _image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(array))


def resize(src: np.ndarray, dsize: tuple[int, int], interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    width, height = dsize
    shrinking = width < src.shape[1] or height < src.shape[0]
    resample = {cv2.INTER_AREA: Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR,
                cv2.INTER_LINEAR: Image.Resampling.BILINEAR, cv2.INTER_CUBIC: Image.Resampling.BICUBIC,
                cv2.INTER_NEAREST: Image.Resampling.NEAREST}[interpolation]
    return np.asarray(_image(src).resize((width, height), resample))


def copy_make_border(src: np.ndarray, top: int, bottom: int, left: int, right: int, border_type: int,
                     value: object = 0) -> np.ndarray:
    pad = ((top, bottom), (left, right)) + (((0, 0),) if src.ndim == 3 else ())
    if border_type == cv2.BORDER_REPLICATE:
        return np.pad(src, pad, mode="edge")
    return np.pad(src, pad, mode="constant", constant_values=0)


def warp_affine(src: np.ndarray, matrix: np.ndarray, dsize: tuple[int, int], flags: int = cv2.INTER_LINEAR,
                borderMode: int = cv2.BORDER_CONSTANT) -> np.ndarray:  # noqa: N803 - cv2's keyword
    """cv2.warpAffine (forward matrix, pixel centres at integers) by Pillow's AFFINE transform (inverse
    matrix, centres at +0.5), with the source padded for BORDER_REPLICATE."""
    pad = max(src.shape[:2])
    source = copy_make_border(src, pad, pad, pad, pad, borderMode)
    forward = np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    inverse = np.linalg.inv(forward)[:2]
    linear, offset = inverse[:, :2], inverse[:, 2] + pad
    shifted = offset + 0.5 - linear @ np.array([0.5, 0.5])
    coefficients = (*linear[0], shifted[0], *linear[1], shifted[1])
    return np.asarray(_image(source).transform(tuple(dsize), Image.Transform.AFFINE, coefficients,
                                               resample=Image.Resampling.BILINEAR))


def cvt_color(src: np.ndarray, code: int) -> np.ndarray:
    if code == cv2.COLOR_RGB2GRAY:
        return np.asarray(_image(src).convert("L"))
    if code == cv2.COLOR_GRAY2RGB:
        return np.repeat(src[..., None], 3, axis=2)
    return cv2.cvtColor(src, code)


@contextlib.contextmanager
def without_opencv() -> Iterator[None]:
    """The pipeline's image operations answered by Pillow and NumPy, everything else by cv2."""
    import importlib

    stand_in = types.SimpleNamespace(**{name: getattr(cv2, name) for name in dir(cv2) if name.isupper()})
    stand_in.resize, stand_in.copyMakeBorder = resize, copy_make_border
    stand_in.warpAffine, stand_in.cvtColor = warp_affine, cvt_color
    stand_in.getRotationMatrix2D = cv2.getRotationMatrix2D  # arithmetic only
    stand_in.data = cv2.data
    stand_in.CascadeClassifier, stand_in.equalizeHist = cv2.CascadeClassifier, cv2.equalizeHist
    modules = [importlib.import_module(name) for name in PATCHED]
    saved = [module.cv2 for module in modules]
    for module in modules:
        module.cv2 = stand_in
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.cv2 = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    print("| dev set | pipeline | faces found | accuracy | balanced | top-1 agreement |")
    print("|---|---|---|---|---|---|")
    for key, folder in DEV_SETS.items():
        shipped = evaluate_photos(args.model, folder)
        with without_opencv():
            probe = evaluate_photos(args.model, folder)
        both = {name: k for k, name in enumerate(probe.data.image_names)}
        pairs = [(i, both[name]) for i, name in enumerate(shipped.data.image_names) if name in both]
        agree = np.mean([shipped.proba[i].argmax() == probe.proba[j].argmax() for i, j in pairs])
        for label, run in (("OpenCV", shipped), ("Pillow + NumPy", probe)):
            m = run.metrics
            print(f"| {key} | {label} | {len(run.proba)} | {m['accuracy']:.4f} | "
                  f"{m['balanced_accuracy']:.4f} | {agree:.4f} ({len(pairs)} photos) |", flush=True)


if __name__ == "__main__":
    main()
