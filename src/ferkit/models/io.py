"""Save and load a trained model as two files: model.safetensors + model.json. No pickle."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, ModelFileError
from ferkit.files import write_whole
from ferkit.models.base import INPUT_SIZE, PIXEL_MEAN, PIXEL_STD, FerModel
from ferkit.models.bundled import ModelSource, resolve_model
from ferkit.models.folder import CONFIG_FILE, WEIGHTS_FILE
from ferkit.models.registry import create_model

COMMANDS_FILE = "commands.txt"  # the CLI lines that made a model folder, one per line, oldest first


def model_config(architecture: str, model_args: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The model.json contents: everything needed to rebuild and use the model."""
    return {
        "architecture": architecture,
        "model_args": model_args,
        "classes": list(EMOTIONS),
        "input_size": [1, INPUT_SIZE, INPUT_SIZE],
        "normalization": {"scale": 1 / 255, "mean": PIXEL_MEAN, "std": PIXEL_STD,
                          "formula": "(pixels / 255 - mean) / std"},
        **extra,
    }


WEIGHT_STORAGE = ("float32", "float16")


def save_model(model: FerModel, folder: Path, config: dict[str, Any],
               storage: str = "float32") -> None:
    """Write folder/model.safetensors (state dict, buffers included) and folder/model.json.

    storage="float16" halves the file (for bundled ensembles under the package size budget):
    weights are stored in fp16, BatchNorm running statistics stay fp32 (a variance can be too
    small for fp16's precision). load_folder computes in fp32 either way."""
    if storage not in WEIGHT_STORAGE:
        raise ArgumentError(f"storage must be one of {', '.join(WEIGHT_STORAGE)}, not {storage!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if storage == "float16":
        state = {k: v.half() if v.is_floating_point() and "running_" not in k else v
                 for k, v in state.items()}
        config = {**config, "weight_storage": storage}
    # each file whole or not at all: a kill mid-save leaves the previous model, not a cut file
    write_whole(folder / WEIGHTS_FILE, save(state, metadata={"architecture": config["architecture"]}))
    write_whole(folder / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def append_command(folder: Path, command: str) -> None:
    """Record a CLI line (train, --resume, ensemble) in folder/commands.txt with its time."""
    with open(Path(folder) / COMMANDS_FILE, "a") as file:
        file.write(f"{datetime.now():%Y-%m-%d %H:%M}  {command}\n")


def read_commands(folder: Path) -> list[str]:
    """The CLI lines recorded by `append_command`, without their times ([] if none)."""
    path = Path(folder) / COMMANDS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.split("  ", 1)[-1] for line in lines if line.strip()]


def resolve_model_folder(path: str | Path) -> Path:
    """A run folder, a folder with model.json, or the model.json / .safetensors file itself."""
    path = Path(path).expanduser()
    folder = path.parent if path.is_file() else path
    if not folder.exists():
        raise ModelFileError(f"{path}: model not found")
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise ModelFileError(f"{folder}: missing {name} (a model folder holds "
                                 f"{CONFIG_FILE} and {WEIGHTS_FILE})")
    return folder


def read_model_config(path: str | Path) -> dict[str, Any]:
    folder = resolve_model_folder(path)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{folder / CONFIG_FILE}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "architecture" not in config:
        raise ModelFileError(f"{folder / CONFIG_FILE}: no 'architecture' field")
    return config


def weights_sha256(folder: str | Path) -> str:
    """The sha256 of folder/model.safetensors (recorded in a bundled model's model.json)."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Weights this small add nothing an fp32 output can hold (its resolution is ~1e-7 of its size), but
# they and their products with activations are subnormal floats, which Intel CPUs compute in microcode.
NEGLIGIBLE_WEIGHT = 1e-30


def zero_negligible(weights: torch.Tensor) -> torch.Tensor:
    """Float32 weights with every value under NEGLIGIBLE_WEIGHT in magnitude set to zero. Weight decay
    leaves many behind, and subnormal arithmetic made the seed's `baseline` several times slower on
    Intel CPUs (docs/benchmarks.md); no answer changes."""
    return weights.masked_fill(weights.abs() < NEGLIGIBLE_WEIGHT, 0.0)


def load_folder(path: str | Path) -> FerModel:
    """Rebuild a trained model (eval mode) from a folder's model.json + model.safetensors alone (`load`
    is the door that takes a name too). A model.json
    that records `weights_sha256` (bundled models) has its weights checked against it; weights
    that are NaN or infinite are refused."""
    folder = resolve_model_folder(path)
    config = read_model_config(folder)
    model_args = config.get("model_args", {})
    if not isinstance(model_args, dict):
        raise ModelFileError(f"{folder / CONFIG_FILE}: 'model_args' must be an object of keyword "
                             f"arguments, got {type(model_args).__name__} {model_args!r}")
    try:
        model = create_model(config["architecture"], **model_args)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{folder / CONFIG_FILE}: {exc}") from None
    expected = config.get("weights_sha256")
    if expected and weights_sha256(folder) != expected:
        raise ModelFileError(f"{folder / WEIGHTS_FILE}: the file is damaged (its sha256 differs from the "
                             f"one recorded in {CONFIG_FILE}); reinstall ferkit or re-export the model")
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{folder / WEIGHTS_FILE}: cannot read weights ({exc})") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise ModelFileError(f"{folder / WEIGHTS_FILE}: tensor {bad!r} holds NaN or infinite values")
    state = {k: zero_negligible(v.float()) if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelFileError(f"{folder / WEIGHTS_FILE}: weights do not fit "
                             f"{config['architecture']} ({first})") from None
    return model.eval()


def load(model: str | Path | ModelSource | None = None) -> FerModel:
    """The one door from a name to a PyTorch model: None (the bundled default), a bundled name, a
    run or model folder, or a ModelSource (`resolve_model`). An .onnx file has no PyTorch weights:
    a ModelFileError that says so."""
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    return load_folder(source.pytorch_folder())
