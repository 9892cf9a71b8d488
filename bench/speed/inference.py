"""Inference speed: classifier faces/s, detector ms per frame, end-to-end frames/s.

    .venv/bin/python -m bench.speed.inference [--model RUN_OR_NAME] [--threads 1] [--repeats 7]

- Classifier: `Predictor.predict_faces` (normalise + forward + softmax) at batch 1 and 64, with
  PyTorch fp32, ONNX Runtime fp32 and int8 (the model exported by `export_onnx`, int8
  calibrated on FERPlus train when ../shared/datasets/ferplus exists), plus PyTorch bf16 autocast
  (emulated on AVX2-only CPUs: measured with few repeats, reported as is).
- Detector: `ferkit.faces.detect_faces` on a 640x480 frame, each detector that is installed.
- End to end: `Predictor.predict` (detect + align + classify) on 640x480 frames holding 1 and 5
  real faces (composed from ../shared/datasets/faces-dlib-examples), PyTorch and ONNX fp32.
Every figure is the median of --repeats timed runs after a warm-up. --threads sets torch's and
ONNX Runtime's intra-op threads and OpenCV's (default 1: the machine has 2 cores and training
jobs run on the other). The model's weights do not change speed: any deep_cnn gives the same
numbers.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.common import ONE_FACE, PHOTOS, REPO, SHARED, cpu_name, fit_frame, five_face_frame, median_rate
from ferkit.inference import Predictor, load_image
from ferkit.models import create_model, list_bundled, model_config, normalize, save_model
from ferkit.release.export import export_onnx


def pick_model(arg: str | None, workdir: Path) -> str:
    if arg:
        return arg
    if "default" in list_bundled():
        return "default"
    if (REPO / "runs" / "smoke-deep" / "model.json").is_file():
        return str(REPO / "runs" / "smoke-deep")
    folder = workdir / "deep_cnn"
    torch.manual_seed(0)
    save_model(create_model("deep_cnn").eval(), folder, model_config("deep_cnn", {}))
    return str(folder)


def classifier_rows(model: str, onnx32: Path, onnx8: Path | None, threads: int, repeats: int) -> None:
    faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)
    backends = [("PyTorch fp32", Predictor(model=model, backend="torch")),
                ("ONNX Runtime fp32", Predictor(model=onnx32, threads=threads))]
    if onnx8 is not None:
        backends.append(("ONNX Runtime int8", Predictor(model=onnx8, threads=threads)))
    for name, predictor in backends:
        b1 = median_rate(lambda p=predictor: p.predict_faces(faces[:1]), 1, repeats, 20)
        b64 = median_rate(lambda p=predictor: p.predict_faces(faces), 64, repeats, 2)
        print(f"| {name} | {b1:,.0f} | {b64:,.0f} |", flush=True)
    net = backends[0][1].backend.model

    def bf16(batch: np.ndarray) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.softmax(net(normalize(batch)).float(), 1)

    # ~1 face/s: batch 1 gets 3 repeats, batch 64 one timed call (about a minute) after batch 1's warm-up.
    b1 = median_rate(lambda: bf16(faces[:1]), 1, 3, 2)
    start = time.perf_counter()
    bf16(faces)
    b64 = 64 / (time.perf_counter() - start)
    print(f"| PyTorch bf16 autocast (3 repeats / 1 run; native only on CPUs with AVX512-BF16) "
          f"| {b1:,.1f} | {b64:,.1f} |", flush=True)


def detector_rows(frame: np.ndarray, repeats: int) -> None:
    try:
        from ferkit.faces import detect_faces, list_detectors
    except ImportError:
        print("| (ferkit.faces not installed) | - | - |")
        return
    for name in list_detectors():
        try:
            found = detect_faces(frame, name)
        except Exception as exc:  # a detector whose package is not installed
            print(f"| {name} | not available ({type(exc).__name__}) | - |")
            continue
        fps = median_rate(lambda n=name: detect_faces(frame, n), 1, repeats, 1)
        print(f"| {name} | {1000 / fps:,.1f} | {len(found)} |", flush=True)


def end_to_end_rows(model: str, onnx32: Path, frames: dict[str, np.ndarray], threads: int,
                    repeats: int) -> None:
    for label, source, backend in (("PyTorch fp32", model, "torch"), ("ONNX Runtime fp32", onnx32, "onnx")):
        predictor = Predictor(model=source, threads=threads, backend=backend)
        for name, frame in frames.items():
            faces = len(predictor.predict(frame))
            fps = median_rate(lambda p=predictor, f=frame: p.predict(f), 1, repeats, 1)
            print(f"| {label} | {name} | {faces} | {fps:,.1f} | {1000 / fps:,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundled name, run folder (default: bundled default, else "
                                        "runs/smoke-deep, else a random deep_cnn)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    with tempfile.TemporaryDirectory(prefix="ferkit-bench-") as tmp:
        workdir = Path(tmp)
        model = pick_model(args.model, workdir)
        data = SHARED / "ferplus"
        onnx32 = export_onnx(model, workdir / "fp32.onnx").path
        report8 = export_onnx(model, workdir / "int8.onnx", int8=True,
                              data_root=data if data.exists() else None, measure_accuracy=False)
        print(f"# torch {torch.__version__}, {args.threads} thread(s), {cpu_name()}, model {model}")
        print(f"# int8: {report8.quantization}")
        print("\n| classifier | faces/s batch 1 | faces/s batch 64 |\n|---|---|---|")
        classifier_rows(model, onnx32, report8.path, args.threads, args.repeats)

        if not PHOTOS.is_dir():
            print(f"\n(no photos at {PHOTOS}: detector and end-to-end timings skipped)")
            return
        frames = {"1 face": fit_frame(load_image(PHOTOS / ONE_FACE)),
                  "5 faces": five_face_frame()}
        print("\n| detector (640x480) | ms per frame | faces found |\n|---|---|---|")
        detector_rows(frames["5 faces"], args.repeats)
        print("\n| end to end (640x480) | frame | faces | frames/s | ms |\n|---|---|---|---|---|")
        end_to_end_rows(model, onnx32, frames, args.threads, args.repeats)


if __name__ == "__main__":
    main()
