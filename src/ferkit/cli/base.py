"""What every `ferkit` command shares: the Typer app, the consoles, the one-line errors, and the
help texts and helpers of more than one command."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ferkit import settings
from ferkit.data.protocols import PROTOCOLS
from ferkit.emotions import EMOTIONS, SPLITS
from ferkit.errors import ArgumentError, FerkitError, MissingExtra, require_extra
from ferkit.faces.detectors import DEFAULT_DETECTOR, DETECTORS, LIVE_DETECTOR
from ferkit.tta import TTA_MODES

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def one_of(names: Any) -> Any:
    """The type of an option that takes one of `names` (from their one owner): help shows them as
    <a|b|c>, and anything else is refused with the option's name (exit 2)."""
    return Literal[tuple(names)]


DetectorName = one_of(DETECTORS)
TtaName = one_of(("none", *TTA_MODES))
ProtocolName = one_of(PROTOCOLS)
SplitName = one_of(SPLITS)
DETECTOR_HELP = (f"Face detector (default: {DEFAULT_DETECTOR}; haar needs the video extra, hog the "
                 "faces-dlib extra).")
VIDEO_DETECTOR_HELP = (f"Face detector (default: {LIVE_DETECTOR}, made for video; haar needs the video "
                       "extra, hog the faces-dlib extra).")
TTA_HELP = "Test-time augmentation: none, or flip (average with the mirrored face)."

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


def user_errors(fn):
    """Turn ferkit's own errors into one red line and exit code 1 (2 for a missing extra: the pip line
    to run), and Ctrl-C into one line and exit
    code 130 (what a command had written by then stays). Anything else is a bug and keeps its traceback."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FerkitError as exc:
            # escaped: an error's own brackets ('ferkit[serve]', '--set x=[2,2') are text, not markup
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2 if isinstance(exc, MissingExtra) else 1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]stopped (Ctrl-C)", highlight=False)
            raise typer.Exit(130) from None

    return wrapper



def data_for_run(run: Path, data: Path | None) -> Path:
    """--data, else $FERKIT_DATA, else the root the run was trained on (if it exists here),
    else the default root."""
    return settings.data_root(data, run=run)


DATA_HELP = ("FERPlus root; default $FERKIT_DATA, else the run's training data root, else "
             f"{DEFAULT_DATA}")


def run_or_bundled(run: str | Path | None) -> tuple[Path, bool]:
    """RUN's model folder (bundled.resolve_model: a bundled name, or a run folder; None: the bundled
    default) and whether it is a bundled model (whose folder is never written into)."""
    from ferkit.models.bundled import resolve_model

    source = resolve_model(None if run is None else str(run))
    if source.backend == "onnx":
        raise ArgumentError(f"{run}: an ONNX file cannot be evaluated on FERPlus here; evaluate the run "
                            "folder it was exported from, or use --photos (photo folders take .onnx models)")
    return source.path, source.is_bundled


PRIOR_HELP = ("Class prior of your material: ferplus (as trained: web photos like FER2013's, a third "
              "of them neutral), neutral:S (neutral S times as likely as FERPlus says; photos of people "
              "beyond FERPlus: neutral:0.7), uniform (every emotion equally likely: posed or acted faces), "
              "or 8 comma-separated frequencies in the order " + ",".join(EMOTIONS) + ". Default: the "
              "model's own choice for photos (metrics.json default_prior), ferplus for FERPlus splits.")



def print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A console table: the first column left-aligned (names), the others right-aligned (numbers)."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if i else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)



def shown(path: Path) -> str:
    return "standard output" if str(path) == "-" else str(path)


MODEL_HELP = ("Model: a bundled name (default: the bundled default), a run folder, or an .onnx file "
              "(run with ONNX Runtime).")
TORCH_MODEL_HELP = "Model: a bundled name (default: the bundled default) or a run folder."


def model_option(help: str = MODEL_HELP) -> Any:
    """-m/--model: the one option that names a trained model (a bundled name, a run folder or an .onnx
    file) in every command that takes one; `help` says what this command accepts and its default. A
    list-typed parameter makes it repeatable (-m A -m B)."""
    return typer.Option("-m", "--model", metavar="MODEL", help=help)


def usage_error(message: str) -> None:
    """Exit 2 with one line, as a command line used wrongly does."""
    err_console.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(2)


def make_predictor(model: str | None, detector: str | None, tta: str, prior: str | None = None):
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


def needs_extra(extra: str, command: str, *modules: str) -> None:
    """MissingExtra when one of `modules` cannot be imported: under `user_errors`, one line naming the
    extra to install, and exit code 2."""
    require_extra(extra, f"ferkit {command}", *modules)


def ferplus_root_option(purpose: str) -> Any:
    """The option naming a FERPlus root, for `purpose` (what the command reads from it)."""
    return typer.Option(help=f"FERPlus root for {purpose}; default $FERKIT_DATA, else {DEFAULT_DATA}.")


def requires(extra: str, command: str, *modules: str):
    """A command that needs an extra: before it runs, `needs_extra` (exit 2 naming the extra)."""
    modules = modules or (extra,)

    def decorate(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            needs_extra(extra, command, *modules)
            return fn(*args, **kwargs)

        return wrapper

    return decorate
