"""Export a trained model to a standalone ONNX file, checked against PyTorch; optionally int8.

- The file itself (graph, metadata) is `ferkit.models.onnx_export`'s.
- Parity: ONNX Runtime logits must match PyTorch's within `atol` (1e-4) on 64 faces, run at
  batch 1 and batch 64 (which also proves the batch axis is dynamic); export fails otherwise.
- int8: static QDQ quantisation of the convolutions but the first, their ReLUs folded in
  (per-channel 7-bit weights, so that CPUs without VNNI compute the same answers as those with it;
  uint8 activations calibrated on FERPlus training faces). Quantising only those ops keeps the graph
  fast on CPU, where dynamic quantisation (ConvInteger) and full static quantisation were both slower
  than fp32 (docs/experiments.md, "What the int8 export quantises"). Without FERPlus data there is
  nothing to calibrate on, so dynamic quantisation is used instead (and the report says so). With
  FERPlus Valid available the accuracy change is reported.

The exporter is torch's TorchScript-based one (`dynamo=False`): it needs only `onnx`, where the
dynamo exporter would add onnxscript; it is deprecated but present in the pinned torch 2.13.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ArgumentError, FerkitError
from ferkit.inference.backends import OnnxBackend
from ferkit.models.bundled import resolve_model
from ferkit.models.folder import METRICS_FILE, ONNX_OPSET, read_json_file
from ferkit.models.onnx_export import (
    PARITY_ATOL,
    export_checked,
    onnx_metadata,
    quiet,
    write_metadata,
)
from ferkit.settings import INT8_WEIGHT_BITS

CALIBRATION_FACES = 512
# Convolutions only, except those that read the input pixels: on the bundled default that keeps
# top-1 agreement with fp32 at 0.996 of FERPlus Valid (all Conv/MatMul/Gemm quantised: 0.993), at
# a negligible cost in speed (a 1-channel stem and the classifier layer are a tiny share of the work).
# Relu is listed so that the quantiser folds each ReLU after a quantised convolution into that
# convolution's output range; otherwise ONNX Runtime dequantises every such output only to quantise
# it again at the ReLU's scale (bench/int8_variants.py: `fast` 6% faster at batch 1).
QUANTIZED_OPS = ["Conv", "Relu"]


@dataclass
class ExportReport:
    """What `export_onnx` did and measured."""

    path: Path
    opset: int
    precision: str  # "fp32" or "int8"
    max_abs_diff: float  # fp32 ONNX Runtime vs PyTorch logits
    quantization: str | None = None
    accuracy: dict[str, Any] | None = None  # FERPlus Valid (majority): fp32 vs int8
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"wrote {self.path} ({self.precision}, opset {self.opset}, dynamic batch axis)",
               f"parity: ONNX Runtime fp32 vs PyTorch logits, max |difference| = {self.max_abs_diff:.2e} "
               f"(limit {PARITY_ATOL:.0e})"]
        if self.quantization:
            out.append(f"int8: {self.quantization}")
        if self.accuracy:
            a = self.accuracy
            out.append(f"accuracy on FERPlus {a['split']} ({a['protocol']}, {a['faces']:,} faces): "
                       f"fp32 {a['fp32']:.4f} -> int8 {a['int8']:.4f} ({a['change'] * 100:+.2f} points); "
                       f"top-1 agreement {a['agreement']:.4f}, "
                       f"max |prob difference| {a['max_prob_diff']:.3f}")
        return out + self.notes


def _load_data(data_root: str | Path | None):
    """FERPlus train + valid (majority) or None, with why not."""
    if data_root is None:
        return None, "no FERPlus root given"
    from ferkit.data import label_split, load_ferplus

    try:
        data = load_ferplus(data_root, splits=("train", "valid"))
        return {s: label_split(data[s], "majority") for s in ("train", "valid")}, None
    except (FerkitError, OSError, ValueError) as exc:
        return None, f"FERPlus not usable at {data_root} ({exc})"


def calibration_reader(faces: np.ndarray, batch: int = 32):
    from onnxruntime.quantization import CalibrationDataReader

    from ferkit.models.classify import model_input

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": model_input(faces[i:i + batch])}
                                 for i in range(0, len(faces), batch)])

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def _quantize(fp32: Path, out: Path, calibration: np.ndarray | None, workdir: Path) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = workdir / "preprocessed.onnx"
    with quiet():
        quant_pre_process(str(fp32), str(pre))
        if calibration is None:
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, reduce_range=True)
            return (f"dynamic quantisation ({INT8_WEIGHT_BITS}-bit int8 weights; no FERPlus data to "
                    "calibrate on, and ConvInteger is slow on CPU: pass --data to get static quantisation)")
        quantize_static(str(pre), str(out), calibration_reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=input_convs(pre),
                        reduce_range=True)
    return (f"static QDQ quantisation of {'/'.join(QUANTIZED_OPS)} but the input's own (per-channel "
            f"{INT8_WEIGHT_BITS}-bit int8 weights, uint8 activations calibrated on {len(calibration):,} "
            "FERPlus train faces)")


def input_convs(path: Path) -> list[str]:
    """Names of the Conv nodes that read the graph input (each ensemble member's stem)."""
    import onnx

    graph = onnx.load(str(path)).graph
    inputs = {i.name for i in graph.input}
    return [n.name for n in graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def _accuracy(fp32: Path, int8: Path, valid) -> dict[str, Any]:
    p32 = OnnxBackend(fp32).probabilities(valid.images, None, 256)
    p8 = OnnxBackend(int8).probabilities(valid.images, None, 256)
    acc32 = float((p32.argmax(1) == valid.labels).mean())
    acc8 = float((p8.argmax(1) == valid.labels).mean())
    return {"split": "valid", "protocol": "majority", "faces": len(valid), "fp32": acc32, "int8": acc8,
            "change": acc8 - acc32, "agreement": float((p32.argmax(1) == p8.argmax(1)).mean()),
            "max_flip_margin": max_flip_margin(p32, p8), "max_prob_diff": float(np.abs(p32 - p8).max())}


def max_flip_margin(reference: np.ndarray, other: np.ndarray) -> float:
    """How sure `reference` was of the surest answer `other` changes: the largest gap between the top
    two reference probabilities among faces whose top label differs (0 when none does). Small means
    every change is a near-tie, a coin toss either way."""
    changed = reference.argmax(1) != other.argmax(1)
    if not changed.any():
        return 0.0
    top2 = np.sort(reference[changed], axis=1)[:, -2:]
    return float((top2[:, 1] - top2[:, 0]).max())


def export_onnx(model: str | Path, out: str | Path, opset: int = ONNX_OPSET, int8: bool = False,
                data_root: str | Path | None = None, atol: float = PARITY_ATOL,
                measure_accuracy: bool = True, fp32_copy: str | Path | None = None) -> ExportReport:
    """Export a run folder / bundled model to `out` (.onnx) and verify it; see the module doc.

    `data_root` (a FERPlus root) supplies parity faces, int8 calibration faces and the
    accuracy comparison (skipped with `measure_accuracy=False`); without it random faces are
    used for parity. `fp32_copy`: with int8, also keep the checked fp32 export there."""
    from ferkit.models import load, read_model_config

    source = resolve_model(model)
    folder = source.pytorch_folder()
    out = Path(out).expanduser()
    if out.suffix.lower() != ".onnx":
        raise ArgumentError(f"{out}: the output file must end in .onnx")
    if out.is_dir():
        raise ArgumentError(f"{out}: is a folder; give a file name ending in .onnx")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArgumentError(f"{out}: cannot make its folder ({exc.strerror})") from None
    torch_model = load(source)
    config = read_model_config(folder)
    metrics = read_json_file(folder / METRICS_FILE)
    data, why_not = _load_data(data_root) if (int8 or data_root) else (None, None)
    if data is not None:
        parity_faces = data["valid"].images[:64]
    else:
        parity_faces = np.random.default_rng(0).integers(0, 256, (64, 48, 48), dtype=np.uint8)

    # Built and checked in a temporary folder, moved to `out` last: a refused or stopped export leaves
    # whatever was at `out` as it was.
    with tempfile.TemporaryDirectory(prefix="ferkit-export-") as tmp:
        workdir = Path(tmp)
        built = workdir / "model.onnx"
        fp32 = workdir / "fp32.onnx" if int8 else built
        diff = export_checked(torch_model, folder, fp32, parity_faces, opset=opset, atol=atol)
        report = ExportReport(out, opset, "int8" if int8 else "fp32", diff)
        if not int8:
            shutil.move(built, out)
            return report
        if fp32_copy is not None:
            shutil.copyfile(fp32, fp32_copy)
        calibration = None
        if data is not None:
            train = data["train"].images
            count = min(CALIBRATION_FACES, len(train))
            pick = np.random.default_rng(0).choice(len(train), count, replace=False)
            calibration = train[np.sort(pick)]
        report.quantization = _quantize(fp32, built, calibration, workdir)
        write_metadata(built, onnx_metadata(config, metrics, opset, "int8"))
        if data is not None and len(data["valid"]) and measure_accuracy:
            report.accuracy = _accuracy(fp32, built, data["valid"])
        elif measure_accuracy:
            report.notes.append(f"accuracy change not measured: {why_not or 'no FERPlus Valid faces'}")
        shutil.move(built, out)
    return report
