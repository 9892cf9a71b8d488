"""`ferkit export`, `ferkit bundle`, `ferkit card`: ONNX exports and shipping models (maintainers)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferkit import settings
from ferkit.cli.base import (
    DEFAULT_DATA,
    TORCH_MODEL_HELP,
    app,
    console,
    ferplus_root_option,
    model_option,
    requires,
    user_errors,
)
from ferkit.errors import ArgumentError, FerkitError


@app.command("export")
@user_errors
@requires("torch", "export", "torch", "onnx")
def export_command(
    model: Annotated[str | None, model_option(TORCH_MODEL_HELP)] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Output .onnx file.")] = None,
    bundled: Annotated[bool, typer.Option(
        "--bundled", help="Instead of --onnx: write the folder's own export (model.int8.onnx if it keeps "
                          "FERPlus Valid accuracy within 0.3 points, else model.onnx), which Predictor "
                          "runs by default. For bundled models (`ferkit bundle` does it).")] = False,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Quantise to int8 (static, calibrated on FERPlus train; 7-bit weights, so that CPUs "
                       "without VNNI give the same answers; reports the accuracy change on FERPlus "
                       "Valid).")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    data: Annotated[Path | None, typer.Option(
        help="FERPlus root for calibration and accuracy; default $FERKIT_DATA or "
             f"{DEFAULT_DATA} if present.")] = None,
) -> None:
    """Export to a standalone ONNX file (dynamic batch, model.json in its metadata), checked against
    PyTorch (max |difference| <= 1e-4)."""
    from ferkit.models.bundled import DEFAULT_MODEL
    from ferkit.release.bundle import export_folder
    from ferkit.release.export import export_onnx

    run = model or DEFAULT_MODEL
    root = data if data is not None else settings.data_root()
    if data is None and not root.exists():
        root = None
    if bundled == (onnx is not None):
        raise ArgumentError("give either --onnx FILE or --bundled")
    if bundled:
        _print_onnx_record(export_folder(run, root))
        return
    report = export_onnx(run, onnx, opset=opset, int8=int8, data_root=root)
    for line in report.lines():
        console.print(line, highlight=False, soft_wrap=True)


@app.command("bundle")
@user_errors
@requires("torch", "bundle", "torch", "onnx", "sklearn")  # maintainers: bundling re-exports with PyTorch
def bundle_command(
    run: Annotated[Path, model_option("Trained run folder to ship (evaluated on Test).")],
    name: Annotated[str, typer.Option(help="Bundled model name; `default` is what Predictor() loads.")],
    evaluation: Annotated[Path | None, typer.Option(
        help="Evaluation folder with metrics.json (default MODEL/eval-test).")] = None,
    provisional: Annotated[bool, typer.Option(help="Mark the model as provisional in metrics.json.")] = False,
    default_prior: Annotated[str | None, typer.Option(
        help="The class prior the model answers photos under when not told (see --prior of predict; "
             "chosen by the rule in docs/results/README.md, \"Class priors\"). Default: ferplus.")] = None,
    data: Annotated[Path | None, ferplus_root_option("the ONNX exports' calibration and accuracy check")
                    ] = None,
) -> None:
    """Ship a trained run as package data (src/ferkit/weights/NAME/) with its ONNX exports, for
    maintainers."""
    from ferkit.release.bundle import bundle_run, export_folder

    target = bundle_run(run, name, evaluation, provisional, default_prior)
    console.print(f"[green]bundled {run} as {name!r} in {target}")
    _print_onnx_record(export_folder(target, data if data is not None else settings.data_root()))


def _print_onnx_record(record: dict) -> None:
    valid = record.get("valid") or {}
    console.print(f"ONNX export: {record['runs']} ({record['precision']}), what Predictor runs",
                  highlight=False)
    if valid:
        console.print(f"FERPlus Valid: fp32 {valid['fp32']:.4f}, int8 {valid['int8']:.4f} "
                      f"({valid['change'] * 100:+.2f} points; {record['int8_rule']}), top-1 agreement "
                      f"{valid['agreement']:.4f}", highlight=False)


@app.command("card")
@user_errors
def card_command(names: Annotated[list[str] | None, model_option(
        "A bundled model name; repeat for several (default: all, `default` first).")] = None) -> None:
    """Print the model cards (Markdown) of bundled models (-m NAME ...; default all), built from their
    metrics.json."""
    from ferkit.models.bundled import list_bundled, weights_root
    from ferkit.release.model_card import model_card

    bundled = list_bundled()
    for name in names or []:
        if name not in bundled:
            raise FerkitError(f"no bundled model {name!r}; bundled: {', '.join(bundled) or 'none'}")
    print("\n---\n\n".join(model_card(weights_root() / name, name) for name in names or bundled))
