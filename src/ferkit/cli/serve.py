"""`ferkit serve`, `ferkit batch` and `ferkit app`: the HTTP API, the photo pipeline on Ray, the web app."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ferkit import settings
from ferkit.cli.base import (
    DETECTOR_HELP,
    PRIOR_HELP,
    DetectorName,
    app,
    console,
    err_console,
    model_option,
    needs_extra,
    user_errors,
)
from ferkit.errors import ArgumentError


@app.command("serve")
@user_errors
def serve_command(
    model: Annotated[str | None, model_option()] = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes; each loads the model once.")] = 1,
    detector: Annotated[DetectorName | None, typer.Option(help=DETECTOR_HELP)] = None,
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
    needs_extra("serve", "serve", "fastapi", "uvicorn", "multipart")
    from ferkit.models.onnx_export import prepare
    from ferkit.server import ServeSettings, serve

    if not 1 <= port <= 65535:
        raise ArgumentError(f"--port must be from 1 to 65535, got {port}")
    if not 1 <= workers <= 64:
        raise ArgumentError(f"--workers must be from 1 to 64, got {workers}")
    limits = ServeSettings(model=model, detector=detector, max_upload_mb=max_upload_mb,
                           max_pixels=max_pixels, max_concurrent=max_concurrent, max_files=max_files,
                           max_connections=max_connections, header_timeout_s=header_timeout,
                           body_timeout_s=body_timeout)
    prepare(model)
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
    model: Annotated[str | None, model_option()] = None,
    detector: Annotated[DetectorName | None, typer.Option(help=DETECTOR_HELP)] = None,
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
    needs_extra("scale", "batch", "ray", "ray.data")
    from ferkit.batch import BatchStopped, run_batch

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


@app.command("app")
@user_errors
def app_command(
    address: Annotated[str, typer.Option(
        help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8501,
    model: Annotated[str | None, model_option(
        "Offer this model alone: a bundled name, a run folder, or an .onnx file (default: every bundled "
        f"model; sets {settings.APP_MODEL_ENV}).")] = None,
) -> None:
    """The web app (photos, the live webcam, Grad-CAM, the model's facts) on http://ADDRESS:PORT; needs
    `pip install 'ferkit[app]'`. --model (or FERKIT_MODEL) picks the one model it offers."""
    needs_extra("app", "app", "streamlit", "streamlit_webrtc")
    if not 1 <= port <= 65535:
        raise ArgumentError(f"--port must be from 1 to 65535, got {port}")
    from ferkit.app.launch import streamlit_command

    if model is not None:  # checked here, in one line, rather than on the app's page
        from ferkit.models.bundled import resolve_model

        source = resolve_model(model)
        os.environ[settings.APP_MODEL_ENV] = model if source.is_bundled else str(source.path.resolve())

    command = streamlit_command(address, port)
    console.print(f"ferkit app on http://{address}:{port} (Ctrl-C stops it)", highlight=False)
    sys.stdout.flush()
    os.execv(command[0], command)  # the app takes this process over: its PID, its signals
