"""`ferkit evaluate`, `ferkit compare`, `ferkit explain`: how good a model is, and where it looked."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from ferkit.cli.base import (
    DATA_HELP,
    DETECTOR_HELP,
    PRIOR_HELP,
    TORCH_MODEL_HELP,
    TTA_HELP,
    DetectorName,
    ProtocolName,
    SplitName,
    TtaName,
    app,
    console,
    data_for_run,
    err_console,
    model_option,
    needs_extra,
    print_table,
    requires,
    run_or_bundled,
    usage_error,
    user_errors,
)


@app.command("evaluate")
@user_errors
def evaluate_command(
    model: Annotated[str | None, model_option(
        "Model: a bundled name (default: the bundled default), a run folder, or (with --photos) an .onnx "
        "file (run with ONNX Runtime).")] = None,
    split: Annotated[SplitName, typer.Option(help="FERPlus split.")] = "test",
    protocol: Annotated[ProtocolName, typer.Option(help="Label protocol of the true classes.")] = "majority",
    photos: Annotated[Path | None, typer.Option(
        help="Evaluate on a folder of labelled photos instead of FERPlus, through the photo pipeline "
             "(detect, align, classify the largest face): DIR/labels.csv (image,emotion) or one "
             "subfolder per emotion.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="With --photos: the labels CSV (header image,emotion; default DIR/labels.csv).")] = None,
    skip_bad: Annotated[bool, typer.Option(
        help="With --photos: leave out bad rows and unreadable images, and list them.")] = False,
    detector: Annotated[DetectorName | None, typer.Option(help="With --photos: " + DETECTOR_HELP)] = None,
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP)] = None,
    tta: Annotated[TtaName, typer.Option(help=TTA_HELP)] = "none",
    out: Annotated[Path | None, typer.Option(
        help="Output folder; default MODEL/eval-<split>/ (./eval-NAME-<split>/ for a bundled model; "
             "./eval-NAME-PHOTOS/ with --photos).")] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="Faces per forward pass.")] = 256,
) -> None:
    """Metrics, plots and a standalone report (report.md / report.html) of a model on a FERPlus split
    or on a folder of labelled photos."""
    command = shlex.join(["ferkit", *sys.argv[1:]])
    if photos is not None:
        needs_extra("eval", "evaluate --photos", "sklearn", "matplotlib")
        from ferkit.models.bundled import DEFAULT_MODEL

        run = model or DEFAULT_MODEL
        name = Path(run).name if Path(run).exists() else run
        out = out or Path(f"eval-{Path(name).stem}-{photos.resolve().name}")
        from ferkit.evaluation.photos import evaluate_photos  # ONNX Runtime: no PyTorch needed

        result = evaluate_photos(model, photos, labels, prior=prior, detector=detector, tta=tta,
                                 skip_bad=skip_bad, out=out, progress=True, command=command)
        where = f"{photos} ({result.photos['detector']} faces)"
    else:
        needs_extra("torch", "evaluate --split", "torch", "sklearn", "matplotlib")
        from ferkit.evaluation.pipeline import evaluate

        path, bundled = run_or_bundled(model)
        if bundled and out is None:  # never write reports into the installed package
            out = Path(f"eval-{path.name}-{split}")
        result = evaluate(path, split=split, protocol=protocol, data_root=data_for_run(path, data), tta=tta,
                          out=out, batch_size=batch_size, progress=True, prior=prior, command=command)
        where = f"{split} (protocol {protocol})"
    m = result.metrics
    console.print(f"[bold]{result.name}[/] on {where}, {m['images']:,} images, TTA {result.tta or 'none'}, "
                  f"prior {result.prior}", highlight=False)
    console.print(f"accuracy [bold]{m['accuracy']:.4f}[/] ({m['correct']:,}/{m['images']:,})  "
                  f"balanced accuracy [bold]{m['balanced_accuracy']:.4f}[/]  "
                  f"macro F1 [bold]{m['macro']['f1']:.4f}[/]", highlight=False)
    print_table("per-class recall", ("emotion", "recall", "support"),
                [(name, "-" if c["recall"] is None else f"{c['recall']:.4f}", f"{c['support']:,}")
                 for name, c in m["per_class"].items()])
    if result.photos:
        info = result.photos
        if info["aliases"]:
            console.print("aliases read: " + ", ".join(f"{a} ({n})" for a, n in info["aliases"].items()),
                          highlight=False)
        console.print(f"{len(info['missed']):,} photos with no face found (counted as errors; listed in "
                      "the report)", highlight=False)
        for line in info["skipped"]:
            err_console.print(f"[yellow]skipped: {line}", highlight=False, soft_wrap=True)
    console.print(f"[green]report written to {result.out_dir}/report.html", highlight=False)


@app.command("compare")
@user_errors
@requires("torch", "compare", "torch", "sklearn", "matplotlib")
def compare_command(
    models: Annotated[list[str] | None, model_option(
        "A model to compare, given twice: a bundled name or a run folder; the first is A (the "
        "reference), the second B (deltas are B - A).")] = None,
    split: Annotated[SplitName, typer.Option(help="FERPlus split.")] = "test",
    protocol: Annotated[ProtocolName, typer.Option(help="Label protocol of the true classes.")] = "majority",
    tta: Annotated[TtaName, typer.Option(help=TTA_HELP)] = "none",
    out: Annotated[Path | None, typer.Option(
        help="Output folder; default B/compare-<nameA>-vs-<nameB>/ (./compare-... for a bundled B)."
    )] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
) -> None:
    """Two models side by side on one split (-m A -m B): metrics with deltas, confusion matrices and
    their difference."""
    if len(models or []) != 2:
        usage_error(f"compare takes two models, the reference first: -m A -m B (got {len(models or [])})")
    from ferkit.evaluation import compare

    (run_a, _), (run_b, bundled_b) = run_or_bundled(models[0]), run_or_bundled(models[1])
    if bundled_b and out is None:  # never write into the installed package
        out = Path(f"compare-{run_a.name}-vs-{run_b.name}")
    result = compare(run_a, run_b, split=split, protocol=protocol, data_root=data_for_run(run_a, data),
                     tta=tta, out=out, progress=True)
    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    print_table(f"A = {run_a}   B = {run_b}   ({split}, {protocol}, {result.a.metrics['images']:,} images)",
                ("metric", "A", "B", "B - A"),
                [(metric, cell(va), cell(vb), "-" if va is None or vb is None else f"{vb - va:+.4f}")
                 for metric, va, vb in result.rows()])
    console.print(f"[green]comparison written to {result.out_dir}/compare.md", highlight=False)


@app.command("explain")
@user_errors
@requires("torch", "explain", "torch", "captum", "matplotlib")
def explain_command(
    model: Annotated[str | None, model_option(TORCH_MODEL_HELP)] = None,
    images: Annotated[list[Path] | None, typer.Argument(
        help="48x48 face crops, or photos: every face the detector finds is explained.")] = None,
    class_: Annotated[str | None, typer.Option(
        "--class", help="Explain this emotion instead of the predicted one.")] = None,
    gallery: Annotated[bool, typer.Option(
        "--gallery", help="One figure: a correct and a wrong test face per emotion.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Output folder; default MODEL/explain/ (./explain-NAME/ for a bundled model).")] = None,
    data: Annotated[Path | None, typer.Option(help=f"For --gallery: {DATA_HELP}")] = None,
    layer: Annotated[str | None, typer.Option(
        help="Layer to explain (module name, e.g. features.2.3); default the last conv stage.")] = None,
    detector: Annotated[DetectorName | None, typer.Option(help="For photos: " + DETECTOR_HELP)] = None,
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP)] = None,
) -> None:
    """Grad-CAM: where in the face the model looked (face | heatmap | overlay PNGs). A photo's
    faces are found and aligned as `ferkit predict` does; photos without a face are listed at
    the end (exit code 1)."""
    from ferkit.emotions import emotion_index
    from ferkit.errors import EvaluationError
    from ferkit.models import load

    if not images and not gallery:
        raise EvaluationError("nothing to explain: give IMAGE files and/or --gallery")
    if class_ is not None:
        emotion_index(class_)  # unknown names fail here, before the model loads
    folder, bundled = run_or_bundled(model)
    net = load(folder)
    # never write into the installed package
    out_dir = out or (Path(f"explain-{folder.name}") if bundled else folder / "explain")
    no_face = []
    if images:
        from ferkit.explain.figures import explain_files

        done, no_face = explain_files(net, images, out_dir, target=class_, layer=layer,
                                      find_faces=_face_finder(folder, detector),
                                      prior=_model_prior(folder, prior))
        for item in done:
            where = f" face {item.box}" if item.box is not None else ""
            console.print(f"{item.source}{where}: {item.class_name} p={item.probability:.2f} "
                          f"(predicted {item.predicted}) -> {item.figure}", highlight=False)
    if gallery:
        from ferkit.evaluation import load_eval_split
        from ferkit.explain.figures import gallery as plot_gallery

        split = load_eval_split(data_for_run(folder, data), "test", "majority")
        path = plot_gallery(net, split, out_dir / "gallery.png",
                            f"{folder.name}: Grad-CAM on FERPlus test (majority)", layer=layer, progress=True)
        console.print(f"[green]gallery written to {path}", highlight=False)
    if no_face:
        for path in no_face:
            console.print(f"[yellow]{path}: no face found", highlight=False)
        raise typer.Exit(1)


def _model_prior(model: Path, prior: str | None):
    """--prior, else the model's own default prior (metrics.json "default_prior"), as Predictor does."""
    from ferkit.models.folder import METRICS_FILE, read_json_file
    from ferkit.priors import resolve_prior

    chosen = prior if prior is not None else read_json_file(model / METRICS_FILE).get("default_prior")
    return resolve_prior(chosen)


def _face_finder(model: Path, detector: str | None):
    """Photos -> their faces as `ferkit predict` crops them (same detector and alignment)."""
    from ferkit.inference import Predictor

    predictor = None

    def find_faces(rgb) -> list:
        nonlocal predictor  # the detector loads only when a photo needs it
        predictor = predictor or Predictor(model=str(model), detector=detector)
        # in reading order: a photo's figures are numbered as `ferkit predict` numbers its faces
        return [(face.crop, face.box) for face in sorted(predictor.predict(rgb), key=lambda f: f.index)]

    return find_faces
