"""`ferkit train`, `ferkit ensemble`, `ferkit retrain-head`: making models."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from ferkit import settings
from ferkit.cli.base import (
    DEFAULT_DATA,
    ProtocolName,
    app,
    console,
    model_option,
    needs_extra,
    requires,
    user_errors,
)


@app.command("train")
@user_errors
def train_command(
    config: Annotated[Path | None, typer.Option(help="YAML config file (configs/*.yaml).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (folder under runs/).")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a killed run from its last checkpoint.")] = None,
    arch: Annotated[str | None, typer.Option(
        "--arch", help="The architecture to train (see `ferkit archs`).")] = None,
    data: Annotated[Path | None, typer.Option(help="FERPlus root.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    protocol: Annotated[ProtocolName | None, typer.Option(
        help="Label protocol (default: the config's).")] = None,
    limit_train_batches: Annotated[int | None, typer.Option(
        help="Use only this many training batches per epoch (smoke runs).")] = None,
    limit_val_batches: Annotated[int | None, typer.Option(
        help="Use only this many validation batches.")] = None,
    # where it runs, passed to Lightning's Trainer as they are
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu or auto.")] = None,
    devices: Annotated[str | None, typer.Option(help="How many devices (processes on a CPU).")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp, ...")] = None,
    skip_bad: Annotated[bool | None, typer.Option(
        "--skip-bad", help="Skip bad label rows and unreadable images (listed in train.log) instead of "
                           "stopping at the first.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override any config key: --set augment.mixup=0.2")] = None,
) -> None:
    """Train a model; writes runs/<name>/ (weights, config, history, curves, summary, log)."""
    needs_extra("train", "train", "lightning", "matplotlib")
    from ferkit.training.config import parse_override
    from ferkit.training.run import train_from_cli

    options = {"model": arch, "data": str(data) if data else None, "epochs": epochs,
               "batch_size": batch_size, "lr": lr, "protocol": protocol, "name": name,
               "limit_train_batches": limit_train_batches, "limit_val_batches": limit_val_batches,
               "accelerator": accelerator, "devices": devices, "strategy": strategy, "skip_bad": skip_bad}
    overrides = [{k: v for k, v in options.items() if v is not None}]
    overrides += [parse_override(text) for text in set_ or []]
    if data is None and resume is None and os.environ.get(settings.DATA_ENV) and not _sets_data(config):
        # $FERKIT_DATA replaces the default root, not a `data:` the config file names itself
        overrides.insert(0, {"data": str(settings.data_root())})
    run_dir = train_from_cli(config, overrides, resume, command=shlex.join(["ferkit", *sys.argv[1:]]))
    console.print(f"[green]run written to {run_dir}")


def _sets_data(config: Path | None) -> bool:
    import yaml

    if config is None or not config.is_file():
        return False
    try:
        return "data" in (yaml.safe_load(config.read_text()) or {})
    except yaml.YAMLError:
        return False  # load_config reports the broken file


@app.command("ensemble")
@user_errors
@requires("torch", "ensemble")
def ensemble_command(
    runs: Annotated[list[Path], model_option(
        "A trained run folder; repeat for each member (two or more, or one with --flip).")],
    out: Annotated[Path, typer.Option(help="Output model folder, e.g. runs/ensemble-3.")],
    flip: Annotated[bool, typer.Option(
        "--flip", help="Build flip test-time augmentation into the model (average with the mirrored "
                       "face; twice the compute).")] = False,
    half: Annotated[bool, typer.Option(
        "--half", help="Store the weights in float16 (half the file; computed in float32). "
                       "Evaluate the written folder: that is the model you ship.")] = False,
) -> None:
    """Combine trained runs (-m RUN -m RUN ...) into one model (mean of their log-probabilities),
    written like a run folder: evaluate, export, bundle and --model take it as they take a run. One
    run with --flip is that network with flip test-time augmentation built in."""
    from ferkit.models.io import save_ensemble

    folder = save_ensemble(runs, out, flip, command=shlex.join(["ferkit", *sys.argv[1:]]),
                           storage="float16" if half else "float32")
    what = f"ensemble of {len(runs)} runs" if len(runs) > 1 else "network with flip built in"
    console.print(f"[green]{what} written to {folder}", highlight=False)


@app.command("retrain-head")
@user_errors
def retrain_head_command(
    model: Annotated[str, model_option("Model: a bundled name or a model folder (a resnet, or an "
                                       "ensemble of them).")],
    out: Annotated[Path, typer.Option(help="Output model folder, e.g. runs/default-crt (must not exist).")],
    balance: Annotated[str, typer.Option(
        help="Class-balanced sampling: full (faces drawn ~ 1/class count), sqrt (~ 1/sqrt) "
             "or none.")] = "full",
    protocol: Annotated[ProtocolName, typer.Option(help="Label protocol of the targets.")] = "all_votes",
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the stored features.")] = 10,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    calibrate: Annotated[bool, typer.Option(
        help="Fold one temperature, fitted on FERPlus Valid, into the heads: calibrated probabilities, "
             "the same answers.")] = True,
    data: Annotated[Path | None, typer.Option(
        help=f"FERPlus root (its training faces); default $FERKIT_DATA, else {DEFAULT_DATA}")] = None,
) -> None:
    """Re-learn a trained model's last layer under class-balanced sampling (cRT, Kang et al. 2020),
    its features kept: rare-class recall for little accuracy, in minutes. Written like a run folder:
    evaluate, export, bundle and --model take it."""
    needs_extra("train", "retrain-head", "lightning")
    from ferkit.training.head import retrain_head

    folder = retrain_head(model, out, data if data is not None else settings.data_root(), protocol, balance,
                          epochs, lr, calibrate, command=shlex.join(["ferkit", *sys.argv[1:]]),
                          log=lambda message: console.print(message, highlight=False))
    console.print(f"[green]{model} with re-learned head(s) written to {folder}", highlight=False)
