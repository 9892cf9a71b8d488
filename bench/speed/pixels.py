"""What the core install's NumPy pixel operations cost: `Predictor.predict` on photos, with `ferkit.pixels`
as shipped (NumPy) and answered by OpenCV (the same bytes), in the same run.

    .venv/bin/python -m bench.speed.pixels [--repeats 5] [--threads 1]

Photos: Tom_Cruise_avp_2014_4.jpg as it is (565x800, one face), the 6-face 2008_002470.jpg letterboxed
to 640x480, and the Tom Cruise photo enlarged to 4032x3024 (a 12-megapixel phone photo, the face
2,100 px wide). The shipped `default` on ONNX Runtime, MTCNN (the photo detector); median of --repeats
calls after a warm-up, wall time. The answers are checked to be the same in both runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from PIL import Image

from bench.common import ONE_FACE, PHOTOS, cpu_name, fit_frame
from bench.experiments.opencv_parity import with_opencv
from ferkit import Predictor
from ferkit.images import load_image


def photos() -> dict[str, np.ndarray]:
    one = load_image(PHOTOS / ONE_FACE)
    return {
        f"{ONE_FACE} ({one.shape[1]}x{one.shape[0]})": one,
        "2008_002470.jpg in 640x480 (6 faces)": fit_frame(load_image(PHOTOS / "2008_002470.jpg")),
        f"{ONE_FACE} enlarged to 4032x3024": np.asarray(Image.fromarray(one).resize((4032, 3024))),
    }


def median_ms(predictor: Predictor, image: np.ndarray, repeats: int) -> tuple[float, list]:
    faces = predictor.predict(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), [f.probabilities for f in faces]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)  # OpenCV's own threads would make the comparison unlike for like
    predictor = Predictor(threads=args.threads)
    print(f"# {cpu_name()}, {args.threads} thread(s); model {predictor.source.name}, detector MTCNN\n")
    print("| photo | NumPy pixels (as shipped) | OpenCV pixels | NumPy / OpenCV | same answers |")
    print("|---|---|---|---|---|")
    for name, image in photos().items():
        ours, ours_p = median_ms(predictor, image, args.repeats)
        with with_opencv():
            theirs, theirs_p = median_ms(predictor, image, args.repeats)
        same = len(ours_p) == len(theirs_p) and all(
            np.array_equal(a, b) for a, b in zip(ours_p, theirs_p, strict=True))
        print(f"| {name} | {ours:,.0f} ms | {theirs:,.0f} ms | {ours / theirs:.2f}x | "
              f"{'yes' if same else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
