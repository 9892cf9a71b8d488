"""A model folder and its files: the one owner of their names and of how they are written (whole or
not at all, so a kill mid-write never leaves a cut file)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ferkit.errors import ModelFileError
from ferkit.files import write_whole
from ferkit.settings import cache_dir

CONFIG_FILE = "model.json"  # how to rebuild the network, and its training record
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"  # its measured accuracy: what the README, the app and the card show
# Its own ONNX export (written by `ferkit bundle`): int8 where it keeps FERPlus Valid accuracy
# (ferkit.release.bundle.INT8_MAX_DROP), else fp32.
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
ONNX_OPSET = 17  # of every ONNX export ferkit writes (ferkit.models.onnx_export)
COMMANDS_FILE = "commands.txt"  # the CLI lines that made a model folder, one per line, oldest first


# Part of the cached file's name: a change to what an export holds (graph, opset, metadata) gets new
# files instead of meeting old ones.
EXPORT_FORMAT = f"fp32-opset{ONNX_OPSET}-v1"


def cached_export_path(folder: Path) -> Path | None:
    """Where the first-use export of model folder `folder` lives: named by its weights' sha256 and
    EXPORT_FORMAT, so new weights or a new export format never meet an old file. None if model.json
    records no sha256 to tie it to."""
    sha = ModelFolder(folder).read_config().get("weights_sha256")
    return cache_dir() / "onnx" / f"{Path(folder).name}-{sha[:16]}-{EXPORT_FORMAT}.onnx" if sha else None


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or {} if the file is absent; ModelFileError if malformed."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data


@dataclass(frozen=True)
class ModelFolder:
    """A folder holding a model: model.json + model.safetensors, and metrics.json and an ONNX export
    where it has them."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_file(self) -> Path:
        return self.path / WEIGHTS_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    def is_model(self) -> bool:
        return self.config_file.is_file()

    @property
    def onnx_export(self) -> Path | None:
        """Its own ONNX export, int8 first; None if it has none."""
        return next((self.path / f for f in (ONNX_INT8, ONNX_FP32) if (self.path / f).is_file()), None)

    def read_config(self) -> dict[str, Any]:
        return read_json_file(self.config_file)

    def read_metrics(self) -> dict[str, Any]:
        return read_json_file(self.metrics_file)

    def write_config(self, config: dict[str, Any]) -> None:
        write_whole(self.config_file, json.dumps(config, indent=2) + "\n")

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_whole(self.metrics_file, json.dumps(metrics, indent=2) + "\n")


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
    """model.json of a model folder (see `resolve_model_folder`), which must name its architecture."""
    folder = resolve_model_folder(path)
    config = read_json_file(folder / CONFIG_FILE)
    if "architecture" not in config:
        raise ModelFileError(f"{folder / CONFIG_FILE}: no 'architecture' field")
    return config


def weights_sha256(folder: str | Path) -> str:
    """The sha256 of folder/model.safetensors (recorded in a bundled model's model.json)."""
    digest = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def append_command(folder: Path, command: str) -> None:
    """Record a CLI line (train, --resume, ensemble) in folder/commands.txt with its time."""
    with open(Path(folder) / COMMANDS_FILE, "a") as file:
        file.write(f"{datetime.now():%Y-%m-%d %H:%M}  {command}\n")


def read_commands(folder: Path) -> list[str]:
    """The CLI lines recorded by `append_command`, without their times ([] if none)."""
    path = Path(folder) / COMMANDS_FILE
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.split("  ", 1)[-1] for line in lines if line.strip()]
