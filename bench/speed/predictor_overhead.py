"""What the Predictor adds around ONNX Runtime at batch 1: a bare session against `predict_faces`.

    .venv/bin/python -m bench.speed.predictor_overhead [--model fast] [--rounds 5]

The same 256 uint8 faces (FERPlus Test), 1 thread: the bundled model's ONNX session run on
already-normalised float32 inputs, one face per call, against `Predictor.predict_faces` one face per
call (uint8 in: normalisation, softmax and class prior included). Rounds alternate the two; medians,
in microseconds a face. The difference is the price of the classify path at batch 1, where the live
webcam and the photo pipeline's one-face photos run.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import SHARED, cpu_name
from ferkit.data import label_split, load_ferplus
from ferkit.inference import Predictor
from ferkit.models.classify import model_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    faces = label_split(load_ferplus(SHARED / "ferplus", splits=("test",))["test"], "majority").images[:256]
    predictor = Predictor(args.model, threads=1, prior="ferplus")
    backend = predictor.backend
    if backend.kind != "onnx":
        raise SystemExit(f"{args.model} runs on {backend.kind}, not ONNX Runtime")
    inputs = [model_input(faces[i:i + 1]) for i in range(len(faces))]

    def bare() -> None:
        for x in inputs:
            backend.logits(x)  # the session's run, nothing else

    def predictor_calls() -> None:
        for i in range(len(faces)):
            predictor.predict_faces(faces[i:i + 1])

    times: dict[str, list[float]] = {"bare session": [], "predict_faces": []}
    for _ in range(args.rounds + 1):  # the first round warms up and is dropped
        for label, run in (("bare session", bare), ("predict_faces", predictor_calls)):
            start = time.perf_counter()
            run()
            times[label].append((time.perf_counter() - start) / len(faces) * 1e6)
    medians = {label: statistics.median(t[1:]) for label, t in times.items()}
    print(f"# {cpu_name()}, 1 thread, {args.rounds} rounds, {args.model} "
          f"({predictor.model_info.get('onnx', {}).get('precision', 'fp32')}), batch 1")
    for label, us in medians.items():
        print(f"{label}: {us:.0f} us a face")
    print(f"around ONNX Runtime: {medians['predict_faces'] - medians['bare session']:.0f} us a face")


if __name__ == "__main__":
    main()
