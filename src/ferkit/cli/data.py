"""`ferkit data summary`, `ferkit models`, `ferkit summary`: the data and the architectures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ferkit import settings
from ferkit.cli.base import (
    DEFAULT_DATA,
    ProtocolName,
    app,
    console,
    data_app,
    requires,
    user_errors,
)
from ferkit.emotions import EMOTIONS


@data_app.command("summary")
@user_errors
def data_summary(
    root: Annotated[Path | None, typer.Argument(
        help="FERPlus root (Microsoft folders or Kaggle CSVs); default $FERKIT_DATA or "
             f"{DEFAULT_DATA}")] = None,
    protocol: Annotated[ProtocolName, typer.Option(help="Label protocol.")] = "majority",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    skip_bad: Annotated[bool, typer.Option(help="Skip bad rows/images and list them.")] = False,
) -> None:
    """Images per class per split, and how many were dropped and why."""
    from ferkit.data import load_ferplus, summarize

    data = load_ferplus(root or settings.data_root(), skip_bad=skip_bad)
    summary = summarize(data, protocol)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    splits = summary["splits"]
    table = Table(title=f"FERPlus {summary['layout']} layout at {summary['root']} "
                        f"(protocol: {protocol})")
    table.add_column("class")
    for name in splits:
        table.add_column(name, justify="right")
    for emotion in EMOTIONS:
        table.add_row(emotion, *(f"{s['per_class'][emotion]:,}" for s in splits.values()))
    table.add_section()
    table.add_row("[bold]labeled", *(f"[bold]{s['labeled']:,}" for s in splits.values()))
    for reason in next(iter(splits.values()))["dropped"]:
        table.add_row(f"dropped: {reason}", *(f"{s['dropped'][reason]:,}" for s in splits.values()))
    if any(s["unlabeled_rows"] for s in splits.values()):
        table.add_row("no FERPlus label", *(f"{s['unlabeled_rows']:,}" for s in splits.values()))
    table.add_row("images read", *(f"{s['images']:,}" for s in splits.values()))
    console.print(table)
    if summary["skipped"]:
        console.print(f"[yellow]skipped {len(summary['skipped'])} bad rows:")
        for line in summary["skipped"]:
            console.print(f"  {line}", highlight=False)
    if summary["converted"]:
        console.print(f"[yellow]{summary['converted']} images converted to 8-bit grayscale")


@app.command("models")
@user_errors
def models_list() -> None:
    """The bundled models, ready to run (-m/--model NAME): what they are and how they scored."""
    from ferkit.evaluation.recorded import recorded_metrics
    from ferkit.models import list_bundled, resolve_model
    from ferkit.models.folder import ModelFolder

    table = Table(title="bundled models (ferkit archs lists the architectures to train)")
    for col in ("name", "architecture", "runs", "FERPlus Test", "balanced", "default prior"):
        table.add_column(col)
    for name in list_bundled():
        source = resolve_model(name)
        folder = ModelFolder(source.path)
        config, metrics = folder.read_config(), folder.read_metrics()
        measured = recorded_metrics(metrics)
        members = (config.get("model_args") or {}).get("members")
        architecture = (f"ensemble of {len(members)} {members[0].get('architecture')}" if members
                        else str(config.get("architecture")))
        export = source.onnx_export
        runs = ("ONNX int8" if export and "int8" in export.name else "ONNX fp32" if export
                else "ONNX fp32 (built on first use)" if source.exports_on_first_use else "PyTorch")
        table.add_row(name, architecture, runs,
                      "-" if measured.accuracy is None else f"{measured.accuracy:.1%}",
                      "-" if measured.balanced_accuracy is None else f"{measured.balanced_accuracy:.1%}",
                      str(metrics.get("default_prior") or "ferplus"))
    console.print(table)


@app.command("archs")
@user_errors
@requires("torch", "archs")
def architectures_list() -> None:
    """The registered architectures (train --arch ARCH; ferkit summary ARCH)."""
    from ferkit.models import create_model, list_models, model_description, summarize_model

    table = Table(title="ferkit architectures")
    for col in ("name", "parameters", "description"):
        table.add_column(col)
    for name in list_models():
        total = summarize_model(create_model(name)).total
        table.add_row(name, f"{total:,}", model_description(name))
    console.print(table)


@app.command("summary")
@user_errors
@requires("torch", "summary")
def model_summary(model: Annotated[str, typer.Argument(
        help="Architecture name (see `ferkit archs`).", metavar="ARCH")]) -> None:
    """Keras-style table of an architecture: layers, output shapes, parameters, totals."""
    from ferkit.models import create_model, summarize_model

    print(summarize_model(create_model(model)).to_text(model), end="")
