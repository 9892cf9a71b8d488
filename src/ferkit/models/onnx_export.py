"""A model folder's PyTorch network written as a standalone ONNX file, and checked against PyTorch.

The one owner of the ONNX file format ferkit writes and reads:
- the graph has a dynamic batch axis (input "input" (N, 1, 48, 48) -> "logits" (N, 8));
- model.json (and metrics.json when present) go into the metadata_props, with the opset, precision
  and ferkit version, so the .onnx file is all a Predictor needs.

`ferkit.release.export` builds on it (int8, accuracy reports, `ferkit export`). `cached_export` is
the export of a bundled model that ships its weights only (the wheel's size budget): built on first
use into the user cache, where every later Predictor finds it, with or without PyTorch.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ferkit import __version__
from ferkit.errors import MissingExtra, ModelFileError
from ferkit.models.folder import (
    METRICS_FILE,
    ONNX_OPSET,
    cached_export_path,
    read_json_file,
    read_model_config,
)
from ferkit.settings import CACHE_ENV, INT8_WEIGHT_BITS

META_MODEL_JSON = "ferkit.model_json"
META_METRICS_JSON = "ferkit.metrics_json"
META_OPSET = "ferkit.opset"
META_PRECISION = "ferkit.precision"
META_VERSION = "ferkit.version"
META_INT8_WEIGHT_BITS = "ferkit.int8_weight_bits"  # 7: exact on every CPU; absent: 8 (older exports)

PARITY_ATOL = 1e-4
FIRST_USE = "on first use, into the user cache"  # where a weights-only bundled model's export comes from
log = logging.getLogger(__name__)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' deprecation/warning chatter (root-logger warnings from
    onnxruntime.quantization included) for the duration, then restore."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def onnx_metadata(config: dict, metrics: dict, opset: int, precision: str) -> dict[str, str]:
    meta = {META_MODEL_JSON: json.dumps(config), META_OPSET: str(opset), META_PRECISION: precision,
            META_VERSION: __version__}
    if metrics:
        meta[META_METRICS_JSON] = json.dumps(metrics)
    if precision == "int8":
        meta[META_INT8_WEIGHT_BITS] = str(INT8_WEIGHT_BITS)
    return meta


def write_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "ferkit"
    model.producer_version = __version__
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def torch_export(model: Any, path: Path, opset: int = ONNX_OPSET) -> None:
    """The TorchScript-based exporter (`dynamo=False`): it needs only `onnx`, where the dynamo exporter
    would add onnxscript."""
    import torch

    dummy = torch.zeros(2, 1, 48, 48)
    with quiet():
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def parity(model: Any, onnx_path: Path, faces: np.ndarray) -> float:
    """Max |ONNX Runtime - PyTorch| over the logits of `faces`, run at batch 1 and at full batch
    (which also proves the batch axis is dynamic)."""
    import onnxruntime as ort
    import torch

    from ferkit.models.base import normalize

    x = normalize(faces)
    with torch.inference_mode():
        expected = model(x).float().numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    full = session.run(None, {name: x.numpy()})[0]
    single = np.concatenate([session.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(min(len(x), 8))])
    return float(max(np.abs(full - expected).max(), np.abs(single - expected[:len(single)]).max()))


def export_checked(model: Any, folder: Path, out: Path, faces: np.ndarray, *, opset: int = ONNX_OPSET,
                   atol: float = PARITY_ATOL) -> float:
    """Write the fp32 export of `model` (the network of model folder `folder`) to `out`, with the
    folder's model.json and metrics.json as metadata, refused unless it matches PyTorch within `atol`
    on `faces`. Returns the largest logit difference."""
    torch_export(model, out, opset)
    write_metadata(out, onnx_metadata(read_model_config(folder), read_json_file(folder / METRICS_FILE),
                                      opset, "fp32"))
    diff = parity(model, out, faces)
    if not diff <= atol:
        raise ModelFileError(f"{out}: ONNX Runtime output differs from PyTorch by {diff:.2e} "
                             f"(limit {atol:.0e}); export refused")
    return diff


def cached_export(folder: Path) -> Path | None:
    """The fp32 ONNX export of bundled model `folder` from the user cache, built there on first use
    (a few seconds; needs PyTorch and onnx, the torch extra); None for a folder whose model.json
    records no weights_sha256. Written whole or not at all, so processes that start together each
    find a complete file."""
    path = cached_export_path(folder)
    if path is None or path.is_file():
        return path
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingExtra("torch", f"{Path(folder).name}: ships its PyTorch weights only; its ONNX export "
                                    f"is built on first use, which needs PyTorch and onnx ({exc})") from None
    from ferkit.models.io import load_folder

    log.info("%s: building its ONNX export into %s (once)", Path(folder).name, path)
    faces = np.random.default_rng(0).integers(0, 256, (16, 48, 48), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="ferkit-export-", dir=path.parent) as tmp:
            built = Path(tmp) / path.name
            export_checked(load_folder(folder), Path(folder), built, faces)
            os.replace(built, path)
    except OSError as exc:
        raise ModelFileError(f"{path.parent}: cannot write the ONNX export there ({exc.strerror or exc}); "
                             f"set {CACHE_ENV} to a writable folder") from None
    return path


def prepare(model: str | Path | None) -> None:
    """Resolve `model` and build its first-use export now, if it has one to build: what a parent
    process does before it starts workers (`ferkit serve --workers`, `ferkit batch`), so that an
    unknown model or a missing extra stops it with one line, and the workers find the export built
    instead of each building it at once."""
    from ferkit.models.bundled import resolve_model

    source = resolve_model(model)
    if source.exports_on_first_use:
        cached_export(source.path)
