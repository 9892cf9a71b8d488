"""Save and load a trained model as two files: model.safetensors + model.json. No pickle. Importing
it registers every architecture, so `create_model` and `load` know them all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, ModelFileError
from ferkit.files import write_whole
from ferkit.models import cnn, mobilenet, resnet  # noqa: F401  (registers the architectures)
from ferkit.models.base import INPUT_SIZE, FerModel
from ferkit.models.bundled import ModelSource, resolve_model
from ferkit.models.ensemble import Ensemble
from ferkit.models.folder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    append_command,
    read_model_config,
    resolve_model_folder,
    weights_sha256,
)
from ferkit.models.registry import create_model
from ferkit.settings import PIXEL_MEAN, PIXEL_STD


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


def load_ensemble(folders: list[str | Path], flip: bool = False) -> tuple[Ensemble, dict[str, Any]]:
    """Trained models (run or model folders) -> (their ensemble, its model_args for model.json)."""
    configs = [read_model_config(folder) for folder in folders]
    members = [{"architecture": c["architecture"], "model_args": c.get("model_args", {})} for c in configs]
    model = Ensemble([load_folder(folder) for folder in folders], flip)
    return model.eval(), {"members": members, "flip": flip}


def save_ensemble(folders: list[str | Path], out: str | Path, flip: bool = False,
                  command: str | None = None, storage: str = "float32") -> Path:
    """Write the ensemble of trained runs as a model folder `out` (model.json + model.safetensors),
    usable wherever a run folder is (evaluate, bundle, export, Predictor). model.json lists the
    member runs (`member_runs`), so `ferkit bundle` can report how each was trained.
    storage="float16" stores the weights in half precision (see `save_model`).
    One run with flip=True is that network with flip test-time augmentation built in."""
    if len(folders) < (1 if flip else 2):
        raise ArgumentError("an ensemble needs at least two runs, or one with flip")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ArgumentError(f"{out}: already exists and is not empty")
    model, model_args = load_ensemble(folders, flip)
    first = read_model_config(folders[0])
    config = model_config("ensemble", model_args, params=sum(p.numel() for p in model.parameters()),
                          protocol=first.get("protocol"),
                          member_runs=[str(Path(folder)) for folder in folders])
    save_model(model, out, config, storage)
    if command:
        append_command(out, command)
    return out
