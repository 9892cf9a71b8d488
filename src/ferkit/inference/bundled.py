"""Find the model a Predictor should load: a bundled model by name, a run folder or an .onnx file.

Bundled models are package data: `ferkit/weights/<name>/` holding model.json +
model.safetensors (+ metrics.json), located with importlib.resources so they are found in an
installed wheel as well as in a source checkout. `default` is the one `Predictor()` loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ferkit.errors import ModelFileError

DEFAULT_MODEL = "default"
METRICS_FILE = "metrics.json"
# A model folder's own ONNX export (written by `ferkit bundle`): int8 where it keeps
# FERPlus Valid accuracy (ferkit.inference.export.INT8_MAX_DROP), else fp32.
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"


def weights_root() -> Path:
    """The folder holding the bundled models (may not exist before any model is bundled)."""
    return Path(str(resources.files("ferkit").joinpath("weights")))


def list_bundled() -> list[str]:
    """Names of the bundled models (folders under ferkit/weights with a model.json), `default`
    first, then by name: the order the app and `ferkit card` show them in."""
    root = weights_root()
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if (p / "model.json").is_file()]
    return sorted(names, key=lambda name: (name != DEFAULT_MODEL, name))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and how to run it."""

    path: Path  # a model folder (torch) or an .onnx file
    backend: Literal["torch", "onnx"]
    name: str  # the bundled name, or the path as given

    @property
    def onnx_export(self) -> Path | None:
        """A model folder's own ONNX export, int8 first; None if it has none (or is an .onnx file)."""
        if self.backend != "torch":
            return None
        return next((self.path / f for f in (ONNX_INT8, ONNX_FP32) if (self.path / f).is_file()), None)


def _looks_like_name(text: str) -> bool:
    return "/" not in text and "\\" not in text and not Path(text).suffix


def resolve_model(model: str | Path | None = None) -> ModelSource:
    """None -> the bundled default; a bundled name; else a run/model folder or an .onnx file.

    A plain word (no slash, no suffix) that names a bundled model is the bundled model even if a
    folder of that name happens to exist in the working directory; anything else is a path."""
    bundled = list_bundled()
    choices = ", ".join(bundled) if bundled else "none installed"
    text = DEFAULT_MODEL if model is None else str(model)
    if (model is None or isinstance(model, str)) and _looks_like_name(text) and text in bundled:
        return ModelSource(weights_root() / text, "torch", text)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        return ModelSource(path, "onnx", text)
    if path.is_dir() or (path.is_file() and path.name in ("model.json", "model.safetensors")):
        return ModelSource(path if path.is_dir() else path.parent, "torch", text)
    if model is None:
        raise ModelFileError(f"the bundled default model is not installed (ferkit/weights/{DEFAULT_MODEL} "
                             f"is missing; bundled models: {choices}); give a run folder or an .onnx file "
                             "(model=PATH, or --model PATH on the command line)")
    if path.is_file():
        raise ModelFileError(f"{text}: not a model (expected a run folder with model.json + "
                             "model.safetensors, or an .onnx file)")
    raise ModelFileError(f"unknown model {text!r}: not a bundled model name (bundled: {choices}) "
                         "nor an existing run folder or .onnx file")


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


def training_info(run: Path) -> dict[str, Any]:
    """How a run folder was trained, for metrics.json: epochs, seconds, Valid metrics, config and the
    CLI lines that made it. An ensemble folder (model.json `member_runs`) reports each member and the
    totals; its members train independently, so their wall time is the longest member's when they
    run side by side and the sum when they run one after another. A distilled run (config `teacher`)
    reports its teacher too, and the commands that made the teacher come first. A folder without
    history.json whose metrics.json has a `training` record (a bundled model) reports that record."""
    import yaml

    from ferkit.models.io import read_commands

    recorded = read_json_file(run / METRICS_FILE).get("training")
    if recorded and not (run / "history.json").is_file():
        # a bundled model, or a member written out of a bundled ensemble, carries its own record
        return recorded
    model_json = read_json_file(run / "model.json")
    members = model_json.get("member_runs")
    if members:
        missing = [m for m in members if not (Path(m) / "model.json").is_file()]
        if missing:
            raise ModelFileError(f"{run}: ensemble member runs not found: {', '.join(missing)} "
                                 "(paths are relative to where `ferkit ensemble` ran)")
        infos = [training_info(Path(member)) for member in members]
        return {
            "run": run.name,
            "members": infos,
            "epochs_trained": sum(info["epochs_trained"] for info in infos),
            "train_seconds": round(sum(info["train_seconds"] for info in infos), 1),
            "longest_member_seconds": max(info["train_seconds"] for info in infos),
            "config": infos[0]["config"],
            "commands": [c for info in infos for c in info["commands"]] + read_commands(run),
        }
    history = json.loads((run / "history.json").read_text()) if (run / "history.json").is_file() else []
    config = yaml.safe_load((run / "config.yaml").read_text()) if (run / "config.yaml").is_file() else {}
    info = {
        "run": run.name,
        "epochs_trained": len(history),
        "train_seconds": round(sum(h.get("seconds", 0) for h in history), 1),
        "best_epoch": model_json.get("metrics", {}).get("best_epoch"),
        "valid": {k: model_json.get("metrics", {}).get(k) for k in ("val_acc", "val_loss", "val_protocol")},
        "config": config,
        # the exact CLI lines that made the run (train, then any --resume), from commands.txt
        "commands": read_commands(run),
        # per epoch: losses, accuracies, learning rate (shows the plateau schedule and early stop)
        "history": history,
    }
    teacher = (config or {}).get("teacher")
    if teacher:
        # a distilled model's cost includes its teacher's training
        folder = Path(teacher)
        teacher_info = training_info(folder) if (folder / "model.json").is_file() else {"run": teacher}
        info["teacher"] = teacher_info
        info["train_seconds_with_teacher"] = round(info["train_seconds"]
                                                   + teacher_info.get("train_seconds", 0), 1)
        info["commands"] = teacher_info.get("commands", []) + info["commands"]
    return info


def bundle_run(run: str | Path, name: str, evaluation: str | Path | None = None,
               provisional: bool = False) -> Path:
    """Copy a trained run into the package as `ferkit/weights/<name>/`: model.safetensors,
    model.json, metrics.json (the run's Test evaluation + how it was trained) and the confusion
    matrix image. Everything that shows accuracy (README, app, model card) reads metrics.json."""
    import shutil

    from ferkit.models.io import weights_sha256

    run = Path(run)
    evaluation = Path(evaluation) if evaluation else run / "eval-test"
    for needed in (run / "model.json", run / "model.safetensors", evaluation / "metrics.json"):
        if not needed.is_file():
            hint = f" (run `ferkit evaluate {run}` first)" if needed.name == "metrics.json" else ""
            raise ModelFileError(f"{needed}: not found{hint}")
    target = weights_root() / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "model.safetensors", target / "model.safetensors")
    config = json.loads((run / "model.json").read_text())
    config["weights_sha256"] = weights_sha256(target)  # load_model checks it: a damaged install says so
    (target / "model.json").write_text(json.dumps(config, indent=2) + "\n")
    if (evaluation / "confusion_matrix.png").is_file():
        shutil.copyfile(evaluation / "confusion_matrix.png", target / "confusion_matrix.png")
    metrics = json.loads((evaluation / "metrics.json").read_text())
    for bulky in ("calibration", "run", "data"):
        metrics.pop(bulky, None)
    metrics["provisional"] = provisional
    metrics["evaluate_command"] = (f"ferkit evaluate {name} --split {metrics.get('split', 'test')} "
                                   f"--protocol {metrics.get('protocol', 'majority')}")
    metrics["training"] = training_info(run)
    (target / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return target
