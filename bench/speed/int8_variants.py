"""Which int8 quantisation runs a network fastest on this CPU, and how closely it follows fp32.

    .venv/bin/python bench/int8_variants.py --model runs/NAME [--rounds 5] [--calibration 512 2048]

Exports the model once to fp32 ONNX (ferkit's exporter, parity-checked), then quantises it with ONNX
Runtime in several ways (QDQ or operator format; convolutions only, with their ReLUs folded in as
`ferkit export --int8` does, with the input convolution too ("qdq-stem-..."), or also the residual adds
and the rest; calibration faces; calibration method; 7-bit weights
(`reduce_range`) or uint8 weights, the two ways ONNX Runtime documents around the 16-bit saturation of
its uint8 x int8 kernels on x86 CPUs without VNNI; `--variants` picks some). Each variant is timed as
a raw ONNX Runtime session on 1 thread (batch 1: 256 calls of one face; batch 64: 4 calls), rounds
interleaved, median reported; and scored on FERPlus Valid (majority): accuracy, top-1 agreement with
the fp32 export, and how sure fp32 was of the answers int8 changes (its top-two probability gap; the
bundling rule, ferkit.release.bundle.INT8_RULE, allows only near-ties).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from bench.common import SHARED, cpu_name
from ferkit.data import label_split, load_ferplus
from ferkit.models import normalize
from ferkit.release.export import calibration_reader, export_onnx, input_convs, max_flip_margin

# name: (format, ops quantised (None: all), calibration, weight type, 7-bit weights)
VARIANTS = {
    "qdq-conv": (QuantFormat.QDQ, ["Conv"], CalibrationMethod.MinMax, QuantType.QInt8, False),
    "qdq-conv-7bit": (QuantFormat.QDQ, ["Conv"], CalibrationMethod.MinMax, QuantType.QInt8, True),
    "qdq-conv-u8u8": (QuantFormat.QDQ, ["Conv"], CalibrationMethod.MinMax, QuantType.QUInt8, False),
    "qdq-conv-add": (QuantFormat.QDQ, ["Conv", "Add"], CalibrationMethod.MinMax, QuantType.QInt8, False),
    # what `ferkit export --int8` does: ReLUs folded into the convolutions' output ranges
    "qdq-conv-relu-7bit": (QuantFormat.QDQ, ["Conv", "Relu"], CalibrationMethod.MinMax, QuantType.QInt8,
                           True),
    "qdq-conv-relu-add-7bit": (QuantFormat.QDQ, ["Conv", "Relu", "Add"], CalibrationMethod.MinMax,
                               QuantType.QInt8, True),
    "qdq-stem-conv-relu-add-7bit": (QuantFormat.QDQ, ["Conv", "Relu", "Add"], CalibrationMethod.MinMax,
                                    QuantType.QInt8, True),
    "qdq-conv-relu-add-pool-7bit": (QuantFormat.QDQ, ["Conv", "Relu", "Add", "GlobalAveragePool"],
                                    CalibrationMethod.MinMax, QuantType.QInt8, True),
    "qdq-all": (QuantFormat.QDQ, None, CalibrationMethod.MinMax, QuantType.QInt8, False),
    "qop-conv": (QuantFormat.QOperator, ["Conv"], CalibrationMethod.MinMax, QuantType.QInt8, False),
    "qop-all": (QuantFormat.QOperator, None, CalibrationMethod.MinMax, QuantType.QInt8, False),
    "qdq-conv-pct": (QuantFormat.QDQ, ["Conv"], CalibrationMethod.Percentile, QuantType.QInt8, False),
}


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


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def top_two_gap(p: np.ndarray) -> np.ndarray:
    top2 = np.sort(p, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def logits(run: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run.run(None, {"input": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run folder or bundled model name")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calibration", type=int, nargs="*", default=[512], help="calibration face counts")
    parser.add_argument("--keep", help="folder to keep the variants' .onnx files in")
    parser.add_argument("--variants", nargs="*", choices=sorted(VARIANTS), default=sorted(VARIANTS))
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
    stems = input_convs(pre)
    variants: dict[str, Path] = {"fp32": fp32}
    for count in args.calibration:
        pick = np.sort(np.random.default_rng(0).choice(len(train), count, replace=False))
        for name in args.variants:
            fmt, ops, method, weights, reduce_range = VARIANTS[name]
            out = work / f"{name}-{count}.onnx"
            kwargs = {"op_types_to_quantize": ops} if ops else {}
            quantize_static(str(pre), str(out), calibration_reader(train[pick]), quant_format=fmt,
                            per_channel=True, weight_type=weights, activation_type=QuantType.QUInt8,
                            nodes_to_exclude=[] if name.startswith("qdq-stem") else stems,
                            calibrate_method=method, reduce_range=reduce_range,
                            **kwargs)
            variants[f"{name} ({count})"] = out
    runs = {name: session(path) for name, path in variants.items()}
    p32 = softmax(logits(runs["fp32"], x_valid))
    reference = p32.argmax(1)
    x = x_valid[:256]
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            for batch, calls in ((1, 256), (64, 4)):
                times.setdefault((name, batch), []).append(seconds(run, x, batch, calls))
    print(f"{cpu_name()}, onnxruntime {ort.__version__}, 1 thread, {args.rounds} rounds (median); "
          f"Valid {len(valid):,} faces")
    print("| variant | b1 faces/s | b64 faces/s | Valid acc | agreement with fp32 | changed answers | "
          "fp32 top-two gap of the changed: median / max |")
    print("|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        p8 = softmax(logits(run, x_valid))
        changed = p8.argmax(1) != reference
        gap = "-"
        if changed.any():
            gap = f"{np.median(top_two_gap(p32[changed])):.3f} / {max_flip_margin(p32, p8):.3f}"
        b1, b64 = (256 / statistics.median(times[(name, b)]) for b in (1, 64))
        print(f"| {name} | {b1:,.0f} | {b64:,.0f} | {(p8.argmax(1) == valid.labels).mean():.4f} | "
              f"{1 - changed.mean():.4f} | {changed.sum()} | {gap} |")
    print(f"fp32 top-two gap over all {len(valid):,} Valid faces: median {np.median(top_two_gap(p32)):.3f}")


if __name__ == "__main__":
    main()
