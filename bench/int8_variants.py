"""Which int8 quantisation runs a network fastest on this CPU, and how closely it follows fp32.

    .venv/bin/python bench/int8_variants.py --model runs/NAME [--rounds 5] [--calibration 512 2048]

Exports the model once to fp32 ONNX (ferkit's exporter, parity-checked), then quantises it with ONNX
Runtime in several ways (QDQ or operator format; convolutions only, as `ferkit export --int8` does, or
also the residual adds and the rest; calibration faces; calibration method). Each variant is timed as
a raw ONNX Runtime session on 1 thread (batch 1: 256 calls of one face; batch 64: 4 calls), rounds
interleaved, median reported; and scored on FERPlus Valid (majority): accuracy and top-1 agreement
with the fp32 export (ferkit's bundling rule asks int8 to agree on >= 0.995 of Valid).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from inference import SHARED, cpu_name
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ferkit.data import label_split, load_ferplus
from ferkit.inference.export import export_onnx
from ferkit.models import normalize


class Faces(CalibrationDataReader):
    def __init__(self, faces: np.ndarray, batch: int = 32):
        self.batches = iter([{"input": normalize(faces[i:i + batch]).numpy()}
                             for i in range(0, len(faces), batch)])

    def get_next(self):
        return next(self.batches, None)


def stem_convs(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path)).graph
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def seconds(run: ort.InferenceSession, x: np.ndarray, batch: int, calls: int) -> float:
    start = time.perf_counter()
    for k in range(calls):
        first = (k * batch) % (len(x) - batch + 1)
        run.run(None, {"input": x[first:first + batch]})
    return time.perf_counter() - start


def logits(run: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run.run(None, {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder or bundled model name")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calibration", type=int, nargs="*", default=[512], help="calibration face counts")
    parser.add_argument("--keep", help="folder to keep the variants' .onnx files in")
    args = parser.parse_args()
    data = load_ferplus(SHARED / "ferplus", splits=("train", "valid"))
    train = label_split(data["train"], "majority").images
    valid = label_split(data["valid"], "majority")
    x_valid = normalize(valid.images).numpy()
    work = Path(args.keep or tempfile.mkdtemp(prefix="ferkit-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "fp32.onnx"
    export_onnx(args.model, fp32, data_root=SHARED / "ferplus", measure_accuracy=False)
    pre = work / "pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    stems = stem_convs(pre)
    variants: dict[str, Path] = {"fp32": fp32}
    for count in args.calibration:
        pick = np.sort(np.random.default_rng(0).choice(len(train), count, replace=False))
        for name, fmt, ops, method in [
            ("qdq-conv", QuantFormat.QDQ, ["Conv"], CalibrationMethod.MinMax),
            ("qdq-conv-add", QuantFormat.QDQ, ["Conv", "Add"], CalibrationMethod.MinMax),
            ("qdq-all", QuantFormat.QDQ, None, CalibrationMethod.MinMax),
            ("qop-conv", QuantFormat.QOperator, ["Conv"], CalibrationMethod.MinMax),
            ("qop-all", QuantFormat.QOperator, None, CalibrationMethod.MinMax),
            ("qdq-conv-pct", QuantFormat.QDQ, ["Conv"], CalibrationMethod.Percentile),
        ]:
            out = work / f"{name}-{count}.onnx"
            kwargs = {"op_types_to_quantize": ops} if ops else {}
            quantize_static(str(pre), str(out), Faces(train[pick]), quant_format=fmt, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            nodes_to_exclude=stems, calibrate_method=method, **kwargs)
            variants[f"{name} ({count})"] = out
    runs = {name: session(path) for name, path in variants.items()}
    reference = logits(runs["fp32"], x_valid).argmax(1)
    x = x_valid[:256]
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for batch, calls in ((1, 256), (64, 4)):
                times.setdefault((name, batch), []).append(seconds(run, x, batch, calls))
    print(f"{cpu_name()}, onnxruntime {ort.__version__}, 1 thread, {args.rounds} rounds (median); "
          f"Valid {len(valid):,} faces")
    print("| variant | b1 faces/s | b64 faces/s | Valid acc | agreement with fp32 |")
    print("|---|---|---|---|---|")
    for name, run in runs.items():
        predicted = logits(run, x_valid).argmax(1)
        b1, b64 = (256 / statistics.median(times[(name, b)]) for b in (1, 64))
        print(f"| {name} | {b1:,.0f} | {b64:,.0f} | {(predicted == valid.labels).mean():.4f} | "
              f"{(predicted == reference).mean():.4f} |")


if __name__ == "__main__":
    main()
