"""The model card of a bundled model, written from its metrics.json and model.json alone, so no
accuracy figure in the docs is typed by hand: `ferkit card > docs/model_card.md`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ferkit.emotions import EMOTIONS
from ferkit.evaluation.recorded import balanced_accuracy_of
from ferkit.models.folder import ModelFolder


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _recipe(training: dict) -> str:
    config = training.get("config", {})
    return (f"{config.get('optimizer')} lr {config.get('lr')}, schedule {config.get('schedule')}, "
            f"batch {config.get('batch_size')}, precision {config.get('precision', '32-true')}, "
            f"class balance {config.get('class_balance', 'none')}, "
            f"seed {config.get('seed')}, {training.get('epochs_trained')} epochs "
            f"({training.get('train_seconds', 0) / 60:.0f} min of training on a 2-core CPU), "
            f"{_kept(training)}{_schedule(training)}{_learned_from(training)}")


def _kept(training: dict) -> str:
    """Which epoch the model is: the best by validation loss, or the last (`keep_epoch: last`)."""
    best, kept = training.get("best_epoch"), training.get("kept_epoch")
    if training.get("config", {}).get("keep_epoch", "best") == "best" or kept is None:
        return f"best epoch {best} by validation loss"
    return f"the last epoch ({kept}) kept, where the schedule ends (lowest validation loss at {best})"


def _schedule(training: dict) -> str:
    """Where the plateau schedule cut the learning rate and why the run stopped, from its history."""
    history = training.get("history") or []
    if not history:
        return ""
    config = training.get("config", {})
    pairs = zip(history, history[1:], strict=False)
    # only a plateau schedule cuts; a one-cycle rate falls a little every epoch by design
    cuts = [f"{h['epoch'] - 1} ({p['lr']:g} -> {h['lr']:g})" for p, h in pairs
            if h.get("lr") is not None and p.get("lr") is not None and h["lr"] < p["lr"]
            and config.get("schedule", "plateau") == "plateau"]
    text = "; learning rate cut after epoch " + ", ".join(cuts) if cuts else ""
    patience = config.get("early_stopping_patience") or 0
    best = training.get("best_epoch") or 0
    if patience and len(history) < (config.get("epochs") or 0) and len(history) - best >= patience:
        text += (f"; stopped early at epoch {len(history)} ({patience} epochs without a better "
                 "validation loss)")
    return text


def _learned_from(training: dict) -> str:
    config = training.get("config", {})
    text = ""
    if config.get("init"):
        start = training.get("warm_start", {})
        # the run's name too: a bundled name may later be given to this very model
        text += (f"; warm-started from `{config['init']}` (run {start.get('run', '?')}, its "
                 f"{start.get('train_seconds', 0) / 60:.0f} min of training not counted above)")
    if config.get("teacher"):
        teacher_minutes = training.get("teacher", {}).get("train_seconds", 0) / 60
        text += (f"; distilled from `{config['teacher']}` (its {teacher_minutes:.0f} min of training not "
                 f"counted above), weight {config.get('distill_weight')}, temperature "
                 f"{config.get('distill_temperature')}")
    return text


def _default_prior_lines(metrics: dict) -> list[str]:
    """What the model answers photos under when not told (metrics.json "default_prior")."""
    prior = metrics.get("default_prior")
    if not prior:
        return []
    return [f"Default class prior for photos: `{prior}` (`ferkit.priors`): the probabilities of "
            "`predict`, `video`, the app and the HTTP API are re-weighted to it unless `--prior` says "
            "otherwise, chosen on FERPlus Valid and both development sets by the rule in "
            "docs/results/README.md (\"Class priors\"). The FERPlus figures above are under FERPlus's own "
            "prior, the prior of its faces (`ferkit evaluate` on a FERPlus split).", ""]


def _architecture_lines(model: dict, training: dict) -> list[str]:
    """Architecture and recipe; an ensemble gets one line per member run."""
    members = training.get("members")
    args = "" if members else f" {json.dumps(model.get('model_args', {}))}"
    lines = [f"- Architecture: `{model['architecture']}`{args}, {model.get('params', 0):,} parameters",
             f"- Training labels: `{model.get('protocol')}` protocol; input normalisation "
             f"`{model.get('normalization', {}).get('formula')}`"]
    if not members:
        return [*lines, f"- Recipe: {_recipe(training)}"]
    lines.append(f"- An ensemble of {len(members)} independently trained runs (mean of their "
                 f"log-probabilities), {training.get('train_seconds', 0) / 60:.0f} min of training in all "
                 f"(the longest run {training.get('longest_member_seconds', 0) / 60:.0f} min; runs side by "
                 "side on the two cores take the longest run's wall time):")
    for spec, info in zip(model.get("model_args", {}).get("members", []), members, strict=False):
        lines.append(f"  - run `{info.get('run')}`: `{spec.get('architecture')}` "
                     f"{json.dumps(spec.get('model_args', {}))}; {_recipe(info)}")
    return lines


def _runtime_lines(onnx: dict | None) -> list[str]:
    """What `Predictor` runs by default (the bundled ONNX export) and what it scores on Test."""
    if not onnx:
        return ["- Runs on PyTorch (no ONNX export bundled)"]
    test, valid = onnx.get("test") or {}, onnx.get("valid") or {}
    line = f"- Runs by default on ONNX Runtime, {onnx.get('precision')} (`{onnx.get('runs')}`)"
    if onnx.get("built"):
        line += f", exported {onnx['built']}"
    half = onnx.get("half_storage")
    if half:
        line += (f"; weights shipped in float16 (top-1 agreement with float32 on Valid "
                 f"{half.get('valid_agreement', 0):.4f})")
    if test:
        line += (f": Test accuracy {_pct(test.get('accuracy'))}, balanced "
                 f"{_pct(test.get('balanced_accuracy'))} on that path")
    if valid:
        line += (f"; int8 vs fp32 on Valid: {_pct(valid.get('fp32'))} -> {_pct(valid.get('int8'))}, "
                 f"top-1 agreement {valid.get('agreement', 0):.4f}")
        if "max_flip_margin" in valid:
            line += f", surest answer changed {valid['max_flip_margin']:.3f} (fp32 top-two gap)"
        if onnx.get("precision") != "int8" and onnx.get("int8_rule"):
            line += f"; int8 not shipped, the rule being: {onnx['int8_rule']}"
    return [line + ". The figures above are PyTorch's (`ferkit evaluate`, or "
                   "`Predictor(backend=\"torch\", prior=\"ferplus\")`)."]


# The commands that took their model(s) as leading arguments before -m/--model named a model in every
# command; training records written before then keep that form.
_MODEL_WAS_POSITIONAL = {"adapt", "bundle", "card", "compare", "ensemble", "evaluate", "export",
                         "retrain-head"}


def as_typed_today(command: str) -> str:
    """A recorded `ferkit` command as it is typed today: leading model arguments become `-m MODEL`
    (`ferkit ensemble runs/a runs/b --out x` -> `ferkit ensemble -m runs/a -m runs/b --out x`)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) < 3 or words[0] != "ferkit" or words[1] not in _MODEL_WAS_POSITIONAL:
        return command
    end = next((i for i, word in enumerate(words[2:], 2) if word.startswith("-")), len(words))
    if end == 2:
        return command  # already -m/--model (or no model)
    return shlex.join([*words[:2], *(part for model in words[2:end] for part in ("-m", model)), *words[end:]])


def model_card(folder: Path, name: str) -> str:
    model, metrics = ModelFolder(folder).read_config(), ModelFolder(folder).read_metrics()
    training = metrics.get("training", {})
    config = training.get("config", {})
    per_class = metrics.get("per_class", {})
    confused = metrics.get("most_confused", [])[:5]
    lines = [
        f"# Model card: ferkit `{name}`",
        "",
        "_Generated by `ferkit card > docs/model_card.md` from the bundled `metrics.json` and "
        "`model.json`; do not edit by hand._",
        "",
        "## What it is for",
        "Classifying the expression of a **48x48 grayscale, roughly frontal face crop** into the 8 FERPlus "
        "emotions (" + ", ".join(EMOTIONS) + "). ferkit's face detector and aligner make such crops from "
        "photos and video frames.",
        "",
        "Not for: identity, age, gender or any inference about a person's inner state, mental health, "
        "honesty or suitability for anything. An expression label is what crowd annotators saw in a picture, "
        "not what someone feels.",
        "",
        "## Training data and protocol",
        "FERPlus (Barsoum et al. 2016): the FER2013 faces (web images found by keyword search; skewed in "
        "age, "
        "ethnicity, pose and lighting, with many posed and watermarked pictures) relabelled by 10 crowd "
        "workers each. Trained on `FER2013Train`, selected on `FER2013Valid`, tested once on `FER2013Test`.",
        "",
        *_architecture_lines(model, training),
        f"- Provisional: {'yes' if metrics.get('provisional') else 'no'}",
        "",
        "## Metrics (FERPlus Test)",
        # the command in today's grammar (metrics.json's evaluate_command is the one run at bundling)
        f"Command: `ferkit evaluate -m {name} --split {metrics.get('split', 'test')} "
        f"--protocol {metrics.get('protocol', 'majority')}`",
        "",
        f"- Protocol `{metrics.get('protocol')}`, {metrics.get('images', 0):,} images, TTA "
        f"{metrics.get('tta', 'none')}",
        f"- **Accuracy {_pct(metrics.get('accuracy'))}**, balanced accuracy (mean recall over the 8 "
        f"emotions) **{_pct(balanced_accuracy_of(metrics))}**, macro F1 "
        f"{_pct(metrics.get('macro', {}).get('f1'))}, macro AUC {metrics.get('macro_auc', 0):.3f}, "
        f"ECE {metrics.get('ece', 0):.3f}",
        *_runtime_lines(metrics.get("onnx")),
        "",
        "| emotion | precision | recall | F1 | test images |",
        "|---|---|---|---|---|",
    ]
    for emotion in EMOTIONS:
        c = per_class.get(emotion, {})
        lines.append(f"| {emotion} | {_pct(c.get('precision'))} | {_pct(c.get('recall'))} | "
                     f"{_pct(c.get('f1'))} | {c.get('support', 0)} |")
    lines += ["", "## Known failure modes",
              "Most confused pairs on Test (true -> predicted, count):", ""]
    for pair in confused:
        if isinstance(pair, dict):
            lines.append(f"- {pair.get('true')} -> {pair.get('predicted')}: {pair.get('count')}")
        else:
            lines.append(f"- {pair}")
    lines += ["",
              "The rare classes (disgust, contempt: about 1% of the data) have few test images, so their "
              "recall is uncertain by many points. Faces far from frontal, partly covered, very small, or in "
              "lighting unlike FER2013's do worse. Accuracy may differ across demographic groups; FERPlus "
              "carries no demographic labels to measure it.",
              "",
              "Posed and acted expressions: the model learned FERPlus's crowd labels and class prior "
              "(a third of its faces neutral). On a posed set (14 people acting 7 emotions, "
              "`../shared/datasets/posed-expressions`), posed anger, fear and disgust are subtle and "
              "mostly read as neutral. `--prior uniform` (every emotion equally likely) recovers part of "
              "it at a cost on FERPlus and on photos in the wild; per-class figures on both development "
              "sets are in docs/results/README.md (\"Class priors and photos beyond FERPlus\").",
              "", *_default_prior_lines(metrics),
              "## Reproduce"]
    run = training.get("run", "NAME")
    protocol = metrics.get("protocol", "majority")
    commands = [as_typed_today(command) for command in training.get("commands") or []] or [
        f"ferkit train --config configs/{config.get('model')}.yaml"]
    lines += ["The commands that made this model (run `" + run + "`; a `--resume` line continued a run after "
              "a stop; `ferkit ensemble` combined runs), then its evaluation and bundling:", "", "```"]
    lines += [*commands, f"ferkit evaluate -m runs/{run} --split test --protocol {protocol}",
              f"ferkit bundle -m runs/{run} --name {name}"
              + (" --provisional" if metrics.get("provisional") else "")
              + (f" --default-prior {metrics['default_prior']}" if metrics.get("default_prior") else ""),
              "```", ""]
    return "\n".join(lines)
