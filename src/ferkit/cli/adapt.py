"""`ferkit adapt`: new heads from a few labelled photos of a user's own material (ferkit.adaptation)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ferkit import settings
from ferkit.adaptation.defaults import DEFAULT_ABSENT, DEFAULT_AUGMENT, DEFAULT_L2, DEFAULT_REMAP
from ferkit.cli.base import (
    DETECTOR_HELP,
    DetectorName,
    app,
    console,
    err_console,
    ferplus_root_option,
    model_option,
    requires,
    user_errors,
)


@app.command("adapt")
@user_errors
@requires("torch", "adapt", "torch", "sklearn", "matplotlib")
def adapt_command(
    photos: Annotated[Path, typer.Option(
        help="Folder of labelled photos of your material: DIR/labels.csv (image,emotion[,subject]) or one "
             "subfolder per emotion, as `ferkit evaluate --photos` reads them.")],
    out: Annotated[Path, typer.Option(help="Output model folder (must not exist, unless --force).")],
    model: Annotated[str | None, model_option(
        "Model to adapt: a bundled name (default: the bundled default) or a model folder.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="The labels CSV (header image,emotion; default DIR/labels.csv).")] = None,
    group_by: Annotated[str | None, typer.Option(
        help="CSV column naming who is in each photo (default: `subject` or `person` when present): "
             "cross-validation then keeps each person on one side.")] = None,
    curve: Annotated[bool, typer.Option(
        "--curve", help="Add a learning curve (balanced accuracy at 1, 2, 5, 10, 20 photos per class and "
                        "all) to the report, drawn as learning_curve.png.")] = False,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 5,
    l2: Annotated[float, typer.Option(
        help="Pull of the new heads toward the shipped ones (larger: closer to the shipped "
             "model).")] = DEFAULT_L2,
    augment: Annotated[int, typer.Option(
        min=0, help="Jittered copies of each photo added to the fit (crop jitter and photo-like "
                    "degradations).")] = DEFAULT_AUGMENT,
    remap: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Weight of the shipped heads recombined (an 8x8 recalibration of the "
                               "logits) in the blend with the new heads; 0: new heads only.")
    ] = DEFAULT_REMAP,
    absent_classes: Annotated[str, typer.Option(
        help="Classes without photos: shipped (answered as the shipped model would) or off (never "
             "answered: your material has none of them).")] = DEFAULT_ABSENT,
    skip_bad: Annotated[bool, typer.Option(
        help="Leave out photos without a face, unreadable images and bad rows, and list them.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output model folder.")] = False,
    detector: Annotated[DetectorName | None, typer.Option(help=DETECTOR_HELP)] = None,
    ferplus_valid: Annotated[bool, typer.Option(
        help="Also report the adapted model's FERPlus Valid accuracy (how much it forgets), when FERPlus "
             "is found.")] = True,
    data: Annotated[Path | None, ferplus_root_option("--ferplus-valid")] = None,
) -> None:
    """Learn new heads for MODEL from a few labelled photos of your own material (its networks frozen),
    cross-validate them honestly, and write the adapted model folder: predict, video, evaluate, explain,
    serve, batch and the app take it with --model / FERKIT_MODEL."""
    from ferkit.adaptation import adapt
    from ferkit.models.bundled import DEFAULT_MODEL

    model = model or DEFAULT_MODEL
    root = settings.data_root(data)
    if data is not None and ferplus_valid and not root.is_dir():
        err_console.print(f"[yellow]{root}: FERPlus not found; its Valid accuracy is not measured",
                          highlight=False)
    result = adapt(model, photos, out=out, labels=labels, group_by=group_by, skip_bad=skip_bad, force=force,
                   l2=l2, augment=augment, remap=remap, absent=absent_classes, folds=folds, curve=curve,
                   detector=detector,
                   data_root=root if ferplus_valid and root.is_dir() else None,
                   command=shlex.join(["ferkit", *sys.argv[1:]]), progress=True,
                   log=lambda message: console.print(message, highlight=False))
    for line in result.faces.skipped:
        err_console.print(f"[yellow]skipped: {line}", highlight=False, soft_wrap=True)
    if result.warning:
        err_console.print(f"[yellow]warning: {result.warning}", highlight=False, soft_wrap=True)
    else:
        console.print(f"{result.fold_count}-fold cross-validation grouped by "
                      f"{result.faces.group_column!r} (no person in both train and test)", highlight=False)
    table = Table(title=f"{result.faces.folder.name}: held-out folds")
    for column in ("", "accuracy", "balanced accuracy"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row(f"{model} as shipped", f"{result.shipped['accuracy']:.3f}",
                  f"{result.shipped['balanced_accuracy']:.3f}")
    table.add_row("[bold]adapted", f"[bold]{result.cv['accuracy']:.3f}",
                  f"[bold]{result.cv['balanced_accuracy']:.3f}")
    console.print(table)
    from ferkit.adaptation.report import recall_rows

    recalls = Table(title="per-class recall")
    for column in ("emotion", "shipped", "adapted", "photos"):
        recalls.add_column(column, justify="left" if column == "emotion" else "right")
    for name, shipped, adapted, support in recall_rows(result):
        recalls.add_row(name, shipped, adapted, f"{support:,}")
    console.print(recalls)
    if result.curve:
        console.print("learning curve (balanced accuracy): " + ", ".join(
            f"{row['per_class']}/class {row['balanced_accuracy']:.3f}" for row in result.curve),
            highlight=False)
    if result.ferplus_valid:
        v = result.ferplus_valid
        console.print(f"FERPlus Valid accuracy: {v['shipped']['accuracy']:.4f} shipped -> "
                      f"{v['adapted']['accuracy']:.4f} adapted", highlight=False)
    console.print(f"ONNX export: same top-1 as PyTorch on {result.onnx['agreement_on_photos']:.1%} of "
                  "the photos", highlight=False)
    console.print(f"[green]adapted model written to {result.out} (report: {result.out / 'report.md'}); "
                  f"use it with --model {result.out}", highlight=False)
