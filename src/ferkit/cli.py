"""The `ferkit` command line. Each command is a thin shell over the package's functions."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ferkit import settings
from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, FerkitError
from ferkit.inference.tracking import DEFAULT_SMOOTH_S

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(help="ferkit: facial expression recognition (8 FERPlus emotions).",
                  no_args_is_help=True, pretty_exceptions_enable=False, context_settings=HELP_OPTIONS)
data_app = typer.Typer(help="Inspect FERPlus data.", no_args_is_help=True, context_settings=HELP_OPTIONS)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        import ferkit

        print(f"ferkit {ferkit.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print ferkit's version and exit.")
        ] = False) -> None:
    """ferkit: facial expression recognition (8 FERPlus emotions)."""

DEFAULT_DATA = settings.DEFAULT_DATA


def default_data_root() -> Path:
    return settings.data_root()


def user_errors(fn):
    """Turn ferkit's own errors into one red line and exit code 1, and Ctrl-C into one line and exit
    code 130 (what a command had written by then stays). Anything else is a bug and keeps its traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FerkitError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]stopped (Ctrl-C)", highlight=False)
            raise typer.Exit(130) from None

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
    skip_bad: Annotated[bool | None, typer.Option(
        "--skip-bad", help="Skip bad label rows and unreadable images (listed in train.log) instead of "
                           "stopping at the first.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override any config key: --set augment.mixup=0.2")] = None,
) -> None:
    """Train a model; writes runs/<name>/ (weights, config, history, curves, summary, log)."""
    from ferkit.training.config import parse_override
    from ferkit.training.run import train_from_cli

    options = {"model": model, "data": str(data) if data else None, "epochs": epochs,
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


def _data_for_run(run: Path, data: Path | None) -> Path:
    """--data, else $FERKIT_DATA, else the root the run was trained on (if it exists here),
    else the default root."""
    from ferkit.evaluation import run_data_root

    if data is not None:
        return data
    if os.environ.get(settings.DATA_ENV):
        return settings.data_root()
    return run_data_root(run) or settings.data_root()


DATA_HELP = ("FERPlus root; default $FERKIT_DATA, else the run's training data root, else "
             f"{DEFAULT_DATA}")


def _run_or_bundled(run: Path) -> tuple[Path, bool]:
    """RUN's model folder (bundled.resolve_model: a bundled name, or a run folder) and whether it is a
    bundled model (whose folder is never written into)."""
    from ferkit.models.bundled import resolve_model

    source = resolve_model(str(run))
    if source.backend == "onnx":
        raise ArgumentError(f"{run}: an ONNX file cannot be evaluated on FERPlus here; evaluate the run "
                            "folder it was exported from, or use --photos (photo folders take .onnx models)")
    return source.path, source.is_bundled


PRIOR_HELP = ("Class prior of your material: ferplus (as trained: web photos like FER2013's, a third "
              "of them neutral), neutral:S (neutral S times as likely as FERPlus says; photos of people "
              "beyond FERPlus: neutral:0.7), uniform (every emotion equally likely: posed or acted faces), "
              "or 8 comma-separated frequencies in the order " + ",".join(EMOTIONS) + ". Default: the "
              "model's own choice for photos (metrics.json default_prior), ferplus for FERPlus splits.")


@app.command("evaluate")
@user_errors
def evaluate_command(
    run: Annotated[str, typer.Argument(help="Run folder (model.json + model.safetensors) or bundled "
                                            "model name (e.g. default); with --photos also an .onnx file.")],
    split: Annotated[str, typer.Option(help="FERPlus split: train, valid or test.")] = "test",
    protocol: Annotated[str, typer.Option(help="Label protocol of the true classes.")] = "majority",
    photos: Annotated[Path | None, typer.Option(
        help="Evaluate on a folder of labelled photos instead of FERPlus, through the photo pipeline "
             "(detect, align, classify the largest face): DIR/labels.csv (image,emotion) or one "
             "subfolder per emotion.")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="With --photos: the labels CSV (header image,emotion; default DIR/labels.csv).")] = None,
    skip_bad: Annotated[bool, typer.Option(
        help="With --photos: leave out bad rows and unreadable images, and list them.")] = False,
    detector: Annotated[str | None, typer.Option(help="With --photos: the face detector.")] = None,
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP)] = None,
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none, or flip (average with "
                                          "the mirrored face).")] = "none",
    out: Annotated[Path | None, typer.Option(help="Output folder; default RUN/eval-<split>/.")] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
    batch_size: Annotated[int, typer.Option(help="Faces per forward pass.")] = 256,
) -> None:
    """Metrics, plots and a standalone report (report.md / report.html) of a model on a FERPlus split
    or on a folder of labelled photos."""
    from ferkit.evaluation import evaluate, evaluate_photos

    command = shlex.join(["ferkit", *sys.argv[1:]])
    if photos is not None:
        name = Path(run).name if Path(run).exists() else run
        out = out or Path(f"eval-{Path(name).stem}-{photos.resolve().name}")
        result = evaluate_photos(run, photos, labels, prior=prior, detector=detector, tta=tta,
                                 skip_bad=skip_bad, out=out, progress=True, command=command)
        where = f"{photos} ({result.photos['detector']} faces)"
    else:
        path, bundled = _run_or_bundled(Path(run))
        if bundled and out is None:  # never write reports into the installed package
            out = Path(f"eval-{path.name}-{split}")
        result = evaluate(path, split=split, protocol=protocol, data_root=_data_for_run(path, data), tta=tta,
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


def print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A console table: the first column left-aligned (names), the others right-aligned (numbers)."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command("compare")
@user_errors
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="Run folder or bundled model name A (the reference).")],
    run_b: Annotated[Path, typer.Argument(help="Run folder or bundled model name B (deltas are B - A).")],
    split: Annotated[str, typer.Option(help="FERPlus split: train, valid or test.")] = "test",
    protocol: Annotated[str, typer.Option(help="Label protocol of the true classes.")] = "majority",
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or flip.")] = "none",
    out: Annotated[Path | None, typer.Option(
        help="Output folder; default RUN_B/compare-<nameA>-vs-<nameB>/ (./compare-... for a bundled B)."
    )] = None,
    data: Annotated[Path | None, typer.Option(help=DATA_HELP)] = None,
) -> None:
    """Two runs side by side on one split: metrics with deltas, confusion matrices and their difference."""
    from ferkit.evaluation import compare

    (run_a, _), (run_b, bundled_b) = _run_or_bundled(run_a), _run_or_bundled(run_b)
    if bundled_b and out is None:  # never write into the installed package
        out = Path(f"compare-{run_a.name}-vs-{run_b.name}")
    result = compare(run_a, run_b, split=split, protocol=protocol, data_root=_data_for_run(run_a, data),
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
def explain_command(
    model: Annotated[Path, typer.Option(help="Run folder or bundled model name (e.g. default).")],
    images: Annotated[list[Path] | None, typer.Argument(
        help="48x48 face crops, or photos: every face the detector finds is explained.")] = None,
    class_: Annotated[str | None, typer.Option(
        "--class", help="Explain this emotion instead of the predicted one.")] = None,
    gallery: Annotated[bool, typer.Option(
        "--gallery", help="One figure: a correct and a wrong test face per emotion.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder; default RUN/explain/.")] = None,
    data: Annotated[Path | None, typer.Option(help=f"For --gallery: {DATA_HELP}")] = None,
    layer: Annotated[str | None, typer.Option(
        help="Layer to explain (module name, e.g. features.2.3); default the last conv stage.")] = None,
    detector: Annotated[str | None, typer.Option(
        help="Face detector for photos (default: ferkit.faces' default).")] = None,
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
    model, bundled = _run_or_bundled(model)
    net = load(model)
    # never write into the installed package
    out_dir = out or (Path(f"explain-{model.name}") if bundled else model / "explain")
    no_face = []
    if images:
        from ferkit.explain.figures import explain_files

        done, no_face = explain_files(net, images, out_dir, target=class_, layer=layer,
                                      find_faces=_face_finder(model, detector),
                                      prior=_model_prior(model, prior))
        for item in done:
            where = f" face {item.box}" if item.box is not None else ""
            console.print(f"{item.source}{where}: {item.class_name} p={item.probability:.2f} "
                          f"(predicted {item.predicted}) -> {item.figure}", highlight=False)
    if gallery:
        from ferkit.evaluation import load_eval_split
        from ferkit.explain.figures import gallery as plot_gallery

        split = load_eval_split(_data_for_run(model, data), "test", "majority")
        path = plot_gallery(net, split, out_dir / "gallery.png",
                            f"{model.name}: Grad-CAM on FERPlus test (majority)", layer=layer, progress=True)
        console.print(f"[green]gallery written to {path}", highlight=False)
    if no_face:
        for path in no_face:
            console.print(f"[yellow]{path}: no face found", highlight=False)
        raise typer.Exit(1)


def _model_prior(model: Path, prior: str | None):
    """--prior, else the model's own default prior (metrics.json "default_prior"), as Predictor does."""
    from ferkit.models.bundled import METRICS_FILE, read_json_file
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
        return [(face.crop, face.box) for face in predictor.predict(rgb)]

    return find_faces


def _shown(path: Path) -> str:
    return "standard output" if str(path) == "-" else str(path)


MODEL_HELP = ("Model: a bundled name (default: the bundled default), a run folder, or an .onnx file "
              "(run with ONNX Runtime).")


def _predictor(model: str | None, detector: str | None, tta: str, prior: str | None = None):
    from ferkit.inference import Predictor

    return Predictor(model=model, detector=detector, tta=None if tta == "none" else tta, prior=prior)


class _StopRequest:
    requested = False


@contextmanager
def interrupt_between_steps() -> Iterator[_StopRequest]:
    """Ctrl-C (SIGINT) inside the block only sets `.requested`; the loop checks it between files and
    stops there. A second Ctrl-C stops at once. Outside the main thread, Ctrl-C is left alone."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum, frame) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True
        err_console.print("[yellow]stopping after the file in hand (Ctrl-C again to stop at once)…",
                          highlight=False)

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@app.command("predict")
@user_errors
def predict_command(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per file).")] = False,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="Write a CSV (- for standard output): one row per face; a file with no face gets "
                      "one row with empty face fields, a failed file one row with its error.")] = None,
    annotate: Annotated[Path | None, typer.Option(
        help="Write copies with boxes, labels and probabilities drawn into this folder.")] = None,
    detector: Annotated[str | None, typer.Option(
        help="Face detector (default: ferkit.faces' default).")] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or flip.")] = "none",
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP)] = None,
) -> None:
    """Emotions of every face in images: one row per face (file, face, box, emotion, confidence, 8
    probabilities). Bad files are listed at the end (exit code 1); the others still run."""
    from ferkit.inference import find_images
    from ferkit.inference.rows import (
        PREDICT_COLUMNS,
        CsvWriter,
        annotated_targets,
        check_output_file,
        predict_rows,
        write_annotated,
    )

    if as_json and csv_file is not None:
        raise ArgumentError("choose one of --json and --csv")
    files, failures = find_images(paths)
    if not files:
        raise FerkitError("no image to predict on: " + "; ".join(failures))
    # Every output path is checked before any work, and nothing is ever written over an input.
    if csv_file is not None:
        check_output_file(csv_file, files, "--csv")
    targets = annotated_targets(files, paths, annotate) if annotate is not None else None
    predictor = _predictor(model, detector, tta, prior)
    results = []
    writer = CsvWriter(csv_file, PREDICT_COLUMNS) if csv_file is not None else None
    # Rows and copies are written as each file finishes. Ctrl-C is held until the file in hand is
    # written (its row and its copy, never half of them), then the run stops and keeps what was done.
    with interrupt_between_steps() as stop:
        try:
            for i, result in enumerate(predictor.iter_predict_many(files, progress=True)):
                results.append(result)
                if writer is not None:
                    for row in predict_rows([result]):
                        writer.write(row)
                if targets is not None and result.ok:
                    try:
                        write_annotated(files[i], result, targets[i])
                    except (FerkitError, OSError, ValueError) as exc:
                        failures.append(f"{files[i]}: cannot write annotated copy ({exc})")
                if stop.requested:
                    break
        finally:
            if writer is not None:
                writer.close()
    interrupted = stop.requested
    failures += [r.error for r in results if r.error is not None]
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    elif writer is not None:
        err_console.print(f"wrote {writer.rows:,} rows to {_shown(csv_file)}", highlight=False)
    elif results:
        # Plain aligned lines, not a rich Table: rows stay one line each (greppable) at any width.
        width = max(len(r.source) for r in results)
        print(f"{'file':<{width}}  face  {'box x,y,w,h':<19} {'emotion':<10} conf  "
              + " ".join(f"{e[:4]:>4}" for e in EMOTIONS))
        for result in results:
            if result.ok and not result.faces:
                print(f"{result.source:<{width}}  no face found")
            for i, face in enumerate(result.faces):
                box = ",".join(map(str, face.box))
                probs = " ".join(f"{p:.2f}" for p in face.probabilities)
                print(f"{result.source:<{width}}  {i:>4}  {box:<19} {face.emotion:<10} "
                      f"{face.confidence:.2f}  {probs}")
    faces = sum(len(r.faces) for r in results)
    no_face = sum(1 for r in results if r.ok and not r.faces)
    err_console.print(f"{len(results):,} files, {faces:,} faces, {no_face:,} files with no face found",
                      highlight=False)
    if annotate is not None:
        err_console.print(f"annotated copies in {annotate}", highlight=False)
    if failures:
        err_console.print(f"[bold red]{len(failures)} failed:", highlight=False)
        for line in failures:
            err_console.print(f"  {line}", highlight=False, soft_wrap=True)
    if interrupted:
        err_console.print(f"[bold yellow]interrupted: {len(results):,} of {len(files):,} files done; their "
                          "rows and copies are written", highlight=False)
        raise typer.Exit(130)
    if failures:
        raise typer.Exit(1)


@app.command("video")
@user_errors
def video_command(
    video: Annotated[Path, typer.Argument(help="Video file (anything OpenCV/FFmpeg reads: mp4, avi, ...).")],
    out: Annotated[Path | None, typer.Option(
        help="Write an annotated copy (.mp4, .avi, .mov, .m4v).")] = None,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="Write one row per face per analysed frame (- for standard output).")] = None,
    every_n: Annotated[int, typer.Option(help="Analyse every N-th frame.")] = 1,
    detector: Annotated[str | None, typer.Option(
        help="Face detector (default: the live detector, blazeface).")] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    tta: Annotated[str, typer.Option(help="Test-time augmentation: none or flip.")] = "none",
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP)] = None,
    smooth: Annotated[float, typer.Option(
        help="Smooth each tracked face's probabilities over this many seconds (0: off).")] = DEFAULT_SMOOTH_S,
    detect_every: Annotated[int, typer.Option(
        help="Run the face detector on every N-th analysed frame; in between, tracked faces are "
             "followed (faster; 1: detect on every frame).")] = 1,
) -> None:
    """Emotions through a video, streamed frame by frame: CSV rows and/or an annotated copy."""
    from collections import Counter

    from ferkit.inference.rows import VIDEO_COLUMNS, CsvWriter, check_output_file
    from ferkit.inference.video import VideoReport, open_video

    open_video(video).release()  # a bad video fails before the model loads
    for path, option in ((out, "--out"), (csv_file, "--csv")):
        if path is not None:
            check_output_file(path, [video], option)
    predictor = _predictor(model, detector, tta, prior)
    report = VideoReport()
    rows = predictor.predict_video(video, every_n=every_n, out=out, progress=True, report=report,
                                   smooth_s=smooth, detect_every=detect_every)
    writer = CsvWriter(csv_file, VIDEO_COLUMNS) if csv_file is not None else None
    counts: Counter[str] = Counter()
    frames: set[int] = set()
    try:
        for row in rows:
            counts[row.emotion] += 1
            frames.add(row.frame)
            if writer is not None:
                writer.write(row.to_row())
    finally:
        if writer is not None:
            writer.close()
    total = sum(counts.values())
    say = err_console if str(csv_file) == "-" else console  # standard output carries the CSV
    say.print(f"{video}: {total:,} faces in {len(frames):,} frames (every {every_n} frame"
              f"{'s' if every_n > 1 else ''} analysed)", highlight=False)
    if total:
        shares = ", ".join(f"{e} {n / total:.0%}" for e, n in counts.most_common())
        say.print(f"top emotion share: {shares}", highlight=False)
    if writer is not None:
        err_console.print(f"wrote {writer.rows:,} rows to {_shown(csv_file)}", highlight=False)
    if out is not None:
        say.print(f"[green]annotated video written to {out}", highlight=False)
    if report.unreadable or report.missing:
        err_console.print(f"[yellow]{video}: {report.frames_read:,} frames read, {report.unreadable:,} "
                          f"unreadable (skipped), {report.missing:,} missing against the "
                          f"{report.header_frames:,} frames its header declares",
                          highlight=False, soft_wrap=True)


@app.command("serve")
@user_errors
def serve_command(
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes; each loads the model once.")] = 1,
    detector: Annotated[str | None, typer.Option(help="Face detector (default: mtcnn).")] = None,
    max_upload_mb: Annotated[float, typer.Option(
        help="Largest request body accepted, in MB (413 above).")] = float(settings.MAX_UPLOAD_MB),
    max_pixels: Annotated[int, typer.Option(
        help="Most decoded pixels per request, all its images together (413 above).")
    ] = settings.SERVER_MAX_PIXELS,
    max_concurrent: Annotated[int, typer.Option(
        help="Requests one worker admits at once, upload and work; more get 429 at once (no queue).")] = 4,
    max_files: Annotated[int, typer.Option(help="Most face crops per /v1/predict-faces request.")] = 32,
    max_connections: Annotated[int, typer.Option(
        help="Most open connections per worker; over it the oldest idle one is closed.")] = 256,
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a client has to send a request's headers; then the connection is closed.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a client has to send a request's whole body (408 after).")] = 60.0,
) -> None:
    """An HTTP API over the Predictor (FastAPI on uvicorn; needs `pip install 'ferkit[serve]'`):
    POST /v1/predict, POST /v1/predict-faces, GET /v1/model, GET /healthz; docs at /docs."""
    try:
        import fastapi  # noqa: F401

        from ferkit.server import ServeSettings, serve
    except ImportError as exc:
        raise FerkitError(f"ferkit serve needs the serve extra ({exc}): "
                          "pip install 'ferkit[serve]'") from None
    if not 1 <= port <= 65535:
        raise ArgumentError(f"--port must be from 1 to 65535, got {port}")
    if not 1 <= workers <= 64:
        raise ArgumentError(f"--workers must be from 1 to 64, got {workers}")
    limits = ServeSettings(model=model, detector=detector, max_upload_mb=max_upload_mb,
                           max_pixels=max_pixels, max_concurrent=max_concurrent, max_files=max_files,
                           max_connections=max_connections, header_timeout_s=header_timeout,
                           body_timeout_s=body_timeout)
    serve(limits, host=host, port=port, workers=workers)


@app.command("batch")
@user_errors
def batch_command(
    source: Annotated[str, typer.Argument(
        help="A folder, a glob, or a .csv/.parquet list of image paths or URIs (column `path`).")],
    out: Annotated[Path, typer.Option(
        help="Output: a .csv file (one, in input order), or a folder of Parquet files.")],
    address: Annotated[str | None, typer.Option(
        help="Ray cluster (ray://host:10001 or auto); default: a local Ray on this machine.")] = None,
    model: Annotated[str | None, typer.Option(help=MODEL_HELP)] = None,
    detector: Annotated[str | None, typer.Option(help="Face detector (default: mtcnn).")] = None,
    prior: Annotated[str | None, typer.Option(help=PRIOR_HELP)] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch handed to an actor.")] = 16,
    actors: Annotated[int | None, typer.Option(
        min=1, help="Predictor actors (default: one per CPU).")] = None,
    allow_remote: Annotated[bool, typer.Option(
        "--allow-remote", help="Fetch the list's remote URIs (http://, s3://, ...); without it they are "
                               "rows with an error.")] = False,
    max_remote_mb: Annotated[float, typer.Option(
        help="Largest remote file fetched, in MB (a row with an error above).")
    ] = float(settings.MAX_UPLOAD_MB),
) -> None:
    """Every face in a large set of images, on Ray Data (`pip install 'ferkit[scale]'`): one row per
    face, as `ferkit predict --csv` writes them; a bad file becomes a row with its error (exit code 1)."""
    try:
        import ray  # noqa: F401

        from ferkit.batch import BatchStopped, run_batch
    except ImportError as exc:
        raise FerkitError(f"ferkit batch needs the scale extra ({exc}): "
                          "pip install 'ferkit[scale]'") from None
    if out.suffix.lower() == ".csv":
        from ferkit.inference.rows import check_output_file

        check_output_file(out, [Path(source)], "--out")  # never the list of inputs itself
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArgumentError(f"--out {out}: exists and is not an empty folder; choose a new one "
                            "(or a .csv file name)")
    if not 0 < max_remote_mb <= 1000:  # NaN fails too
        raise ArgumentError(f"--max-remote-mb must be a number above 0 and at most 1000, got {max_remote_mb}")
    try:
        report = run_batch(source, out, address=address, model=model, detector=detector, prior=prior,
                           batch_size=batch_size, actors=actors, allow_remote=allow_remote,
                           max_remote_mb=max_remote_mb)
    except BatchStopped as stopped:
        err_console.print(f"[yellow]{stopped}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"{report.files:,} files -> {report.rows:,} rows in {report.out}", highlight=False)
    if report.failed:
        err_console.print(f"[yellow]{len(report.failed)} files failed (rows with their error):",
                          highlight=False)
        for line in report.failed[:20]:
            err_console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command("export")
@user_errors
def export_command(
    run: Annotated[str, typer.Argument(help="Run folder (model.json + model.safetensors) or bundled name.")],
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
    from ferkit.inference.export import export_onnx
    from ferkit.release.bundle import export_folder

    root = data if data is not None else default_data_root()
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


@app.command("ensemble")
@user_errors
def ensemble_command(
    runs: Annotated[list[Path], typer.Argument(
        help="Two or more trained run folders, or one with --flip.")],
    out: Annotated[Path, typer.Option(help="Output model folder, e.g. runs/ensemble-3.")],
    flip: Annotated[bool, typer.Option(
        "--flip", help="Build flip test-time augmentation into the model (average with the mirrored "
                       "face; twice the compute).")] = False,
    half: Annotated[bool, typer.Option(
        "--half", help="Store the weights in float16 (half the file; computed in float32). "
                       "Evaluate the written folder: that is the model you ship.")] = False,
) -> None:
    """Combine trained runs into one model (mean of their log-probabilities), written like a run
    folder: evaluate, export, bundle and --model take it as they take a run. One run with --flip
    is that network with flip test-time augmentation built in."""
    from ferkit.models.ensemble import save_ensemble

    folder = save_ensemble(runs, out, flip, command=shlex.join(["ferkit", *sys.argv[1:]]),
                           storage="float16" if half else "float32")
    what = f"ensemble of {len(runs)} runs" if len(runs) > 1 else "network with flip built in"
    console.print(f"[green]{what} written to {folder}", highlight=False)


@app.command("retrain-head")
@user_errors
def retrain_head_command(
    model: Annotated[str, typer.Argument(help="Bundled model name or model folder (a resnet, or an "
                                              "ensemble of them).")],
    out: Annotated[Path, typer.Option(help="Output model folder, e.g. runs/default-crt (must not exist).")],
    balance: Annotated[str, typer.Option(
        help="Class-balanced sampling: full (faces drawn ~ 1/class count), sqrt (~ 1/sqrt) "
             "or none.")] = "full",
    protocol: Annotated[str, typer.Option(help="Label protocol of the targets.")] = "all_votes",
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
    from ferkit.training.head import retrain_head

    folder = retrain_head(model, out, data if data is not None else default_data_root(), protocol, balance,
                          epochs, lr, calibrate, command=shlex.join(["ferkit", *sys.argv[1:]]),
                          log=lambda message: console.print(message, highlight=False))
    console.print(f"[green]{model} with re-learned head(s) written to {folder}", highlight=False)


@app.command("bundle")
@user_errors
def bundle_command(
    run: Annotated[Path, typer.Argument(help="Trained run folder (evaluated on Test).")],
    name: Annotated[str, typer.Option(help="Bundled model name; `default` is what Predictor() loads.")],
    evaluation: Annotated[Path | None, typer.Option(
        help="Evaluation folder with metrics.json (default RUN/eval-test).")] = None,
    provisional: Annotated[bool, typer.Option(help="Mark the model as provisional in metrics.json.")] = False,
    default_prior: Annotated[str | None, typer.Option(
        help="The class prior the model answers photos under when not told (see --prior of predict; "
             "chosen by the rule in docs/results/README.md, \"Class priors\"). Default: ferplus.")] = None,
    data: Annotated[Path | None, typer.Option(
        help="FERPlus root for the ONNX exports' calibration and accuracy check; default $FERKIT_DATA "
             f"or {DEFAULT_DATA}.")] = None,
) -> None:
    """Ship a trained run as package data (src/ferkit/weights/NAME/) with its ONNX exports, for
    maintainers."""
    from ferkit.release.bundle import bundle_run, export_folder

    target = bundle_run(run, name, evaluation, provisional, default_prior)
    console.print(f"[green]bundled {run} as {name!r} in {target}")
    _print_onnx_record(export_folder(target, data if data is not None else default_data_root()))


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
def card_command(names: Annotated[list[str] | None, typer.Argument(
        help="Bundled model names (default: all, `default` first).")] = None) -> None:
    """Print the model cards (Markdown) of bundled models, built from their metrics.json."""
    from ferkit.models.bundled import list_bundled, weights_root
    from ferkit.release.model_card import model_card

    bundled = list_bundled()
    for name in names or []:
        if name not in bundled:
            raise FerkitError(f"no bundled model {name!r}; bundled: {', '.join(bundled) or 'none'}")
    print("\n---\n\n".join(model_card(weights_root() / name, name) for name in names or bundled))


def main() -> None:  # pragma: no cover
    app()


from ferkit.cli_adapt import adapt_command  # noqa: E402  (its own module: see ferkit.cli_adapt)

app.command("adapt")(user_errors(adapt_command))
