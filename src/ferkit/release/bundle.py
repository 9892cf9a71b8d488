"""Ship a trained run as a bundled model: `ferkit bundle` and `ferkit export -m NAME --bundled`.

A bundled model is a folder under ferkit/weights/ (ferkit.models.bundled finds it): the weights
(safetensors, sha256 in model.json), metrics.json (its Test evaluation, how it was trained, its ONNX
record) and ONE ONNX export, the file a Predictor runs by default.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ferkit.errors import ArgumentError, ModelFileError
from ferkit.models import bundled
from ferkit.models.bundled import resolve_model
from ferkit.models.folder import (
    CONFIG_FILE,
    METRICS_FILE,
    ONNX_FP32,
    ONNX_INT8,
    WEIGHTS_FILE,
    ModelFolder,
    read_json_file,
)

# A model folder ships its int8 export only if, on FERPlus Valid, int8 loses at most INT8_MAX_DROP of
# accuracy, gives fp32's top label on at least INT8_MIN_AGREEMENT of the faces, and changes fp32's
# answer only where fp32 itself was torn (top two probabilities within INT8_MAX_FLIP_MARGIN): int8 may
# settle a coin toss the other way, never overturn a confident answer (the parity the tests hold).
# A single network's int8 changes 0.5-1.5% of Valid answers, mostly near-ties (docs/experiments.md,
# "int8 fidelity"); averaging makes an ensemble's rarer.
INT8_MAX_DROP = 0.003
INT8_MIN_AGREEMENT = 0.99
INT8_MAX_FLIP_MARGIN = 0.1
INT8_RULE = (f"int8 if on FERPlus Valid accuracy drops at most {INT8_MAX_DROP * 100:.1f} points, top-1 "
             f"agreement with fp32 is at least {INT8_MIN_AGREEMENT} and every changed answer was a near-tie "
             f"in fp32 (top two probabilities within {INT8_MAX_FLIP_MARGIN})")


def int8_keeps_answers(agreement: float, max_flip_margin: float) -> bool:
    """The fidelity half of the int8 rule: few changed answers, and only near-ties."""
    return agreement >= INT8_MIN_AGREEMENT and max_flip_margin <= INT8_MAX_FLIP_MARGIN


def _model_folder(model: str, run: Path, field: str) -> Path:
    """The folder of a model another one was made from (a run folder, or a bundled model's name,
    whose folder carries its own training record), named by `run`'s `field`."""
    for folder in (Path(model), bundled.weights_root() / model):
        if ModelFolder(folder).is_model():
            return folder
    raise ModelFileError(f"{run}: {field} names {model!r}, which is neither a model folder nor a bundled "
                         "model; its training record is part of this model's (paths are relative to "
                         "where the command ran)")


def training_info(run: Path) -> dict[str, Any]:
    """How a run folder was trained, for metrics.json: epochs, seconds, Valid metrics, config and the
    CLI lines that made it. An ensemble folder (model.json `member_runs`) reports each member and the
    totals; its members train independently, so their wall time is the longest member's when they
    run side by side and the sum when they run one after another. A distilled run (config `teacher`)
    reports its teacher too, and the commands that made the teacher come first (a warm-started run,
    config `init`, likewise the model it started from); a model whose head was
    re-learned (model.json `head_retrained`) reports its source's record, then the re-learning. A
    folder without history.json whose metrics.json has a `training` record (a bundled model) reports
    that record."""
    import yaml

    from ferkit.models.folder import read_commands

    recorded = read_json_file(run / METRICS_FILE).get("training")
    if recorded and not (run / "history.json").is_file():
        # a bundled model, or a member written out of a bundled ensemble, carries its own record
        return recorded
    model_json = ModelFolder(run).read_config()
    retrained = model_json.get("head_retrained")
    if retrained:
        # `ferkit retrain-head`: the source model's training, then its re-learned last layer(s)
        base = training_info(_model_folder(retrained["from"], run, "head_retrained.from"))
        return {**base, "run": run.name, "head_retrained": retrained,
                "commands": base.get("commands", []) + read_commands(run)}
    members = model_json.get("member_runs")
    if members:
        missing = [m for m in members if not ModelFolder(Path(m)).is_model()]
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
        "kept_epoch": model_json.get("metrics", {}).get("kept_epoch"),
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
        teacher_info = training_info(_model_folder(teacher, run, "config.yaml teacher"))
        info["teacher"] = teacher_info
        info["train_seconds_with_teacher"] = round(info["train_seconds"]
                                                   + teacher_info.get("train_seconds", 0), 1)
        info["commands"] = teacher_info.get("commands", []) + info["commands"]
    start = (config or {}).get("init")
    if start:
        # a warm-started model's record begins with the training of the weights it started from
        start_info = training_info(_model_folder(start, run, "config.yaml init"))
        info["warm_start"] = start_info
        info["commands"] = start_info.get("commands", []) + info["commands"]
    return info


def bundle_run(run: str | Path, name: str, evaluation: str | Path | None = None,
               provisional: bool = False, default_prior: str | None = None) -> Path:
    """Copy a trained run into the package as `ferkit/weights/<name>/`: model.safetensors,
    model.json, metrics.json (the run's Test evaluation + how it was trained) and the confusion
    matrix image. Everything that shows accuracy (README, app, model card) reads metrics.json.
    `default_prior` (ferkit.priors) is the class prior a Predictor of this model answers photos
    under when not told (metrics.json "default_prior"); the Test evaluation stays under FERPlus's."""
    from ferkit.models.folder import weights_sha256
    from ferkit.priors import resolve_prior

    prior = resolve_prior(default_prior)  # a bad prior fails before anything is written

    run = Path(run)
    evaluation = Path(evaluation) if evaluation else run / "eval-test"
    for needed in (run / CONFIG_FILE, run / WEIGHTS_FILE, evaluation / METRICS_FILE):
        if not needed.is_file():
            hint = f" (run `ferkit evaluate -m {run}` first)" if needed.name == METRICS_FILE else ""
            raise ModelFileError(f"{needed}: not found{hint}")
    # Everything is read and checked before anything is written: the training record may read the
    # bundled model this run replaces (retrain-head), and a bad file must not leave a half-replaced one.
    target = bundled.weights_root() / name  # looked up at call time: tests bundle into a tmp folder
    if target.resolve() == run.resolve():
        raise ArgumentError(f"{run}: is the bundled model {name!r} itself; bundle the run folder it "
                            "came from")
    training = training_info(run)
    config = ModelFolder(run).read_config()
    metrics = read_json_file(evaluation / METRICS_FILE)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / WEIGHTS_FILE, target / WEIGHTS_FILE)
    config["weights_sha256"] = weights_sha256(target)  # load_model checks it: a damaged install says so
    ModelFolder(target).write_config(config)
    if (evaluation / "confusion_matrix.png").is_file():
        shutil.copyfile(evaluation / "confusion_matrix.png", target / "confusion_matrix.png")
    for bulky in ("calibration", "run", "data"):
        metrics.pop(bulky, None)
    metrics["provisional"] = provisional
    metrics["evaluate_command"] = (f"ferkit evaluate -m {name} --split {metrics.get('split', 'test')} "
                                   f"--protocol {metrics.get('protocol', 'majority')}")
    metrics["training"] = training
    if prior.name != "ferplus":
        metrics["default_prior"] = str(prior)
    ModelFolder(target).write_metrics(metrics)
    return target


def onnx_test_accuracy(path: Path, folder: Path, data_root: str | Path) -> dict[str, Any]:
    """FERPlus Test (majority) accuracy of the export a Predictor runs by default: the figure a user
    of the default path gets, beside metrics.json's PyTorch one."""
    from sklearn.metrics import balanced_accuracy_score

    from ferkit.data import label_split, load_ferplus
    from ferkit.inference.backends import OnnxBackend

    test = label_split(load_ferplus(data_root, splits=("test",))["test"], "majority")
    predicted = OnnxBackend(path, folder=folder).probabilities(test.images, None, 256).argmax(1)
    return {"split": "test", "protocol": "majority", "faces": len(test),
            "correct": int((predicted == test.labels).sum()),
            "accuracy": float((predicted == test.labels).mean()),
            "balanced_accuracy": float(balanced_accuracy_score(test.labels, predicted))}


def export_folder(model: str | Path, data_root: str | Path) -> dict[str, Any]:
    """Write a model folder's own ONNX export next to its weights, for the Predictor's default path:
    model.int8.onnx when int8 passes INT8_RULE on FERPlus Valid (accuracy, agreement, only near-ties
    changed), else model.onnx
    (fp32, parity-checked); the other file is removed. Only one is shipped: with both, the bundled
    models would exceed PyPI's 100 MB per wheel, and the fp32 reference is the PyTorch weights
    (`ferkit export -m NAME --onnx FILE` writes the fp32 export in seconds). The outcome is recorded in
    the folder's metrics.json under "onnx" and returned. Needs FERPlus (calibration, accuracy check).
    """
    from ferkit.release.export import export_onnx

    folder = resolve_model(model).pytorch_folder()
    if not ModelFolder(folder).read_config().get("weights_sha256"):
        raise ModelFileError(f"{folder / CONFIG_FILE}: no weights_sha256 (bundle the run with "
                             "`ferkit bundle` first: the export is tied to those weights)")
    with tempfile.TemporaryDirectory(prefix="ferkit-export-") as tmp:
        int8 = export_onnx(folder, Path(tmp) / ONNX_INT8, int8=True, data_root=data_root,
                           fp32_copy=Path(tmp) / ONNX_FP32)
        accuracy = int8.accuracy
        if not accuracy:  # no FERPlus: nothing to calibrate on or to check the rule against
            raise ArgumentError(f"ONNX exports of a model folder need FERPlus: {'; '.join(int8.notes)}")
        keep = (accuracy["change"] >= -INT8_MAX_DROP
                and int8_keeps_answers(accuracy["agreement"], accuracy["max_flip_margin"]))
        shipped, dropped = (ONNX_INT8, ONNX_FP32) if keep else (ONNX_FP32, ONNX_INT8)
        shutil.copyfile(Path(tmp) / shipped, folder / shipped)
        (folder / dropped).unlink(missing_ok=True)
    record = {"runs": shipped, "precision": "int8" if keep else "fp32",
              "test": onnx_test_accuracy(folder / shipped, folder, data_root),
              "max_abs_diff_fp32": int8.max_abs_diff,
              "int8_rule": INT8_RULE,
              "valid": accuracy, "quantization": int8.quantization}
    metrics = ModelFolder(folder).read_metrics()
    metrics["onnx"] = record
    ModelFolder(folder).write_metrics(metrics)
    return record
