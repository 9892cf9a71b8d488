"""The `ferkit` command line. Each command is a thin shell over the package's functions."""

from __future__ import annotations

import json
import os
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ferkit.emotions import EMOTIONS
from ferkit.errors import FerkitError

app = typer.Typer(help="ferkit: facial expression recognition (8 FERPlus emotions).",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect FERPlus data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

DEFAULT_DATA = "../shared/datasets/ferplus"


def default_data_root() -> Path:
    return Path(os.environ.get("FERKIT_DATA") or DEFAULT_DATA)


def user_errors(fn):
    """Turn ferkit's own errors (and bad values) into one red line and exit code 1."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (FerkitError, ValueError, FileNotFoundError) as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


@data_app.command("summary")
@user_errors
def data_summary(
    root: Annotated[Path | None, typer.Argument(
        help="FERPlus root (Microsoft folders or Kaggle CSVs); default $FERKIT_DATA or "
             f"{DEFAULT_DATA}")] = None,
    protocol: Annotated[str, typer.Option(help="Label protocol.")] = "majority",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    skip_bad: Annotated[bool, typer.Option(help="Skip bad rows/images and list them.")] = False,
) -> None:
    """Images per class per split, and how many were dropped and why."""
    from ferkit.data import load_ferplus, summarize

    data = load_ferplus(root or default_data_root(), skip_bad=skip_bad)
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
def models_list() -> None:
    """List the registered model architectures."""
    from ferkit.models import create_model, list_models, model_description, summarize_model

    table = Table(title="ferkit models")
    for col in ("name", "parameters", "description"):
        table.add_column(col)
    for name in list_models():
        total = summarize_model(create_model(name)).total
        table.add_row(name, f"{total:,}", model_description(name))
    console.print(table)


@app.command("summary")
@user_errors
def model_summary(model: Annotated[str, typer.Argument(help="Registered model name.")]) -> None:
    """Keras-style table of a model: layers, output shapes, parameters, totals."""
    from ferkit.models import create_model, summarize_model

    print(summarize_model(create_model(model)).to_text(model), end="")


@app.command("train")
@user_errors
def train_command(
    config: Annotated[Path | None, typer.Option(help="YAML config file (configs/*.yaml).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (see `ferkit models`).")] = None,
    data: Annotated[Path | None, typer.Option(help="FERPlus root.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Label protocol.")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (folder under runs/).")] = None,
    limit_train_batches: Annotated[int | None, typer.Option(
        help="Use only this many training batches per epoch (smoke runs).")] = None,
    limit_val_batches: Annotated[int | None, typer.Option(
        help="Use only this many validation batches.")] = None,
    accelerator: Annotated[str | None, typer.Option(help="cpu, gpu or auto (Lightning).")] = None,
    devices: Annotated[str | None, typer.Option(help="Number of devices (Lightning).")] = None,
    strategy: Annotated[str | None, typer.Option(help="auto, ddp, ... (Lightning).")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a killed run from its last checkpoint.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override any config key: --set augment.mixup=0.2")] = None,
) -> None:
    """Train a model; writes runs/<name>/ (weights, config, history, curves, summary, log)."""
    from ferkit.training.config import parse_override
    from ferkit.training.run import train_from_cli

    options = {"model": model, "data": str(data) if data else None, "epochs": epochs,
               "batch_size": batch_size, "lr": lr, "protocol": protocol, "name": name,
               "limit_train_batches": limit_train_batches, "limit_val_batches": limit_val_batches,
               "accelerator": accelerator, "devices": devices, "strategy": strategy}
    overrides = [{k: v for k, v in options.items() if v is not None}]
    overrides += [parse_override(text) for text in set_ or []]
    if data is None and config is None and resume is None and os.environ.get("FERKIT_DATA"):
        overrides.insert(0, {"data": os.environ["FERKIT_DATA"]})
    run_dir = train_from_cli(config, overrides, resume)
    console.print(f"[green]run written to {run_dir}")


def main() -> None:  # pragma: no cover
    app()
