"""The two ways a Predictor runs its classifier: PyTorch (a model folder) or ONNX Runtime (.onnx).

A model folder may also hold its own ONNX export (model.int8.onnx where int8 keeps FERPlus Valid
accuracy, else model.onnx; see `ferkit.release.bundle.export_folder`); a bundled model that ships
its weights only gets its export built into the user cache on first use
(`ferkit.models.onnx_export.cached_export`). Those run with ONNX Runtime by default, about 10x
faster than PyTorch at batch 1; the folder's PyTorch weights are loaded only when something needs
gradients (Grad-CAM).

Both turn uint8 faces (N, 48, 48) into softmax probabilities (N, 8) in EMOTIONS order through
`ferkit.models.classify.class_probabilities`, the path `ferkit evaluate` takes too, so the PyTorch
backend gives bit-identical probabilities to `ferkit evaluate`.

Thread safety: neither backend takes a lock. The torch model is put in eval mode once at load
and never mutated afterwards; each call runs under its own `torch.inference_mode()` (a
thread-local switch), and eval-mode BatchNorm/Dropout keep no per-call state. An ONNX Runtime
`InferenceSession.run` is documented as safe to call from several threads.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ferkit import hardware
from ferkit.emotions import EMOTIONS
from ferkit.errors import MissingExtra, ModelFileError
from ferkit.models.folder import CONFIG_FILE, METRICS_FILE, read_json_file
from ferkit.models.onnx_export import (
    META_INT8_WEIGHT_BITS,
    META_METRICS_JSON,
    META_MODEL_JSON,
    META_OPSET,
    META_PRECISION,
    META_VERSION,
)
from ferkit.settings import FACE_SIDE


class Backend(Protocol):
    kind: str
    config: dict[str, Any]
    metrics: dict[str, Any]

    def probabilities(self, faces: np.ndarray, tta: str | None, batch_size: int) -> np.ndarray: ...


def _check_classes(config: dict[str, Any], where: str) -> None:
    classes = config.get("classes")
    if classes is not None and list(classes) != list(EMOTIONS):
        raise ModelFileError(f"{where}: model classes {classes} are not ferkit's EMOTIONS {list(EMOTIONS)}")


class TorchBackend:
    """A model folder (model.json + model.safetensors) run with PyTorch on the CPU."""

    kind = "torch"

    def __init__(self, folder: Path):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise MissingExtra("torch", f"{folder}: running a model folder's PyTorch weights needs "
                                        "PyTorch") from None
        from ferkit.models import load, read_model_config

        self.config = read_model_config(folder)
        _check_classes(self.config, str(Path(folder) / CONFIG_FILE))
        self.metrics = read_json_file(Path(folder) / METRICS_FILE)
        # Parameters keep requires_grad: Grad-CAM (the app's) runs backward through this model;
        # predictions themselves run under inference_mode, which records no graph.
        self.model = load(Path(folder)).eval()

    def probabilities(self, faces: np.ndarray, tta: str | None, batch_size: int) -> np.ndarray:
        from ferkit.models.classify import class_probabilities, torch_logits

        return class_probabilities(torch_logits(self.model), faces, batch_size, tta)


class OnnxBackend:
    """A standalone .onnx file (model.json in its metadata) run with ONNX Runtime on the CPU."""

    kind = "onnx"

    def __init__(self, path: Path, threads: int | None = None, folder: Path | None = None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a declared dependency
            raise ModelFileError(f"{path}: running .onnx models needs onnxruntime "
                                 "(pip install onnxruntime)") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: no optimiser chatter on stderr
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelFileError(f"{path}: not a valid ONNX model ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = self._json_meta(meta, META_MODEL_JSON, path, required=True)
        _check_classes(self.config, str(path))
        self.metrics = self._json_meta(meta, META_METRICS_JSON, path, required=False)
        self.folder = folder
        self._torch: TorchBackend | None = None
        self._torch_lock = threading.Lock()  # sessions asking for Grad-CAM at once load it once
        if folder is not None:  # an export inside a model folder: the folder's files are the truth
            self._check_made_from(folder, path)
            self.metrics = read_json_file(Path(folder) / METRICS_FILE)
        self.onnx_meta = {"opset": meta.get(META_OPSET), "precision": meta.get(META_PRECISION, "fp32"),
                          "exported_by": meta.get(META_VERSION)}
        if self.onnx_meta["precision"] == "int8":
            self.onnx_meta["weight_bits"] = int(meta.get(META_INT8_WEIGHT_BITS, 8))
        self._check_shapes(path)
        self.input_name = self.session.get_inputs()[0].name
        from ferkit.settings import PIXEL_MEAN, PIXEL_STD

        norm = self.config.get("normalization", {})
        if (norm.get("mean", PIXEL_MEAN), norm.get("std", PIXEL_STD)) != (PIXEL_MEAN, PIXEL_STD):
            raise ModelFileError(f"{path}: input normalisation {norm} is not ferkit's (mean {PIXEL_MEAN}, "
                                 f"std {PIXEL_STD})")

    def _check_made_from(self, folder: Path, path: Path) -> None:
        """The export must come from the folder's current weights (model.json's weights_sha256),
        or it would silently run an older model than the one Grad-CAM and the card describe."""
        from ferkit.models import read_model_config

        folder_config = read_model_config(folder)
        expected, got = folder_config.get("weights_sha256"), self.config.get("weights_sha256")
        if not expected or got != expected:
            raise ModelFileError(f"{path}: not exported from {Path(folder) / 'model.safetensors'} "
                                 f"(weights_sha256 {str(got)[:12]} vs {str(expected)[:12]}); re-export "
                                 f"it with `ferkit export -m {folder} --bundled`")
        self.config = folder_config

    @property
    def model(self):
        """The folder's PyTorch model (for Grad-CAM), loaded on first use; None for a bare .onnx."""
        if self.folder is None:
            return None
        with self._torch_lock:
            if self._torch is None:
                self._torch = TorchBackend(self.folder)
        return self._torch.model

    @property
    def int8_saturates_here(self) -> bool:
        """An int8 export with full 8-bit weights on an x86 CPU without VNNI: ONNX Runtime's uint8 x int8
        kernels add pairs of products in 16 bits there, which overflow and change answers. 7-bit weights
        (what `ferkit export --int8` writes) keep every sum in range: the same answers on every CPU."""
        return self.onnx_meta.get("weight_bits", 7) > 7 and not hardware.int8_is_exact()

    def _check_shapes(self, path: Path) -> None:
        """One input (N, 1, 48, 48) and one output (N, 8), checked at load so that a wrong file fails
        here with its name instead of on the first face (symbolic dimensions pass)."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelFileError(f"{path}: expected 1 input and 1 output, got {len(inputs)} and "
                                 f"{len(outputs)}")

        def fits(shape: list, expected: list) -> bool:
            return len(shape) == len(expected) and all(
                not isinstance(got, int) or want is None or got == want
                for got, want in zip(shape, expected, strict=True))

        if not fits(list(inputs[0].shape), [None, 1, FACE_SIDE, FACE_SIDE]):
            raise ModelFileError(f"{path}: input shape {inputs[0].shape} is not "
                                 f"(N, 1, {FACE_SIDE}, {FACE_SIDE})")
        if not fits(list(outputs[0].shape), [None, len(EMOTIONS)]):
            raise ModelFileError(f"{path}: output shape {outputs[0].shape} is not (N, {len(EMOTIONS)})")

    @staticmethod
    def _json_meta(meta: dict[str, str], key: str, path: Path, required: bool) -> dict[str, Any]:
        if key not in meta:
            if required:
                raise ModelFileError(f"{path}: no ferkit metadata ({key}); export it with "
                                     "`ferkit export -m RUN --onnx OUT.onnx`")
            return {}
        try:
            return json.loads(meta[key])
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path}: metadata {key} is not valid JSON ({exc})") from None

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def probabilities(self, faces: np.ndarray, tta: str | None, batch_size: int) -> np.ndarray:
        from ferkit.models.classify import class_probabilities

        return class_probabilities(self.logits, faces, batch_size, tta)
