"""`ferkit predict` and `ferkit video`: the emotions of the faces in photos and videos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ferkit.cli.base import (
    DETECTOR_HELP,
    PRIOR_HELP,
    TTA_HELP,
    VIDEO_DETECTOR_HELP,
    DetectorName,
    TtaName,
    app,
    console,
    err_console,
    interrupt_between_steps,
    make_predictor,
    model_option,
    requires,
    shown,
    user_errors,
)
from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, FerkitError
from ferkit.inference.tracking import DEFAULT_SMOOTH_S


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
    detector: Annotated[DetectorName | None, typer.Option(help=DETECTOR_HELP)] = None,
    model: Annotated[str | None, model_option()] = None,
    tta: Annotated[TtaName, typer.Option(help=TTA_HELP)] = "none",
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
    predictor = make_predictor(model, detector, tta, prior)
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
        err_console.print(f"wrote {writer.rows:,} rows to {shown(csv_file)}", highlight=False)
    elif results:
        # Plain aligned lines, not a rich Table: rows stay one line each (greppable) at any width.
        width = max(len(r.source) for r in results)
        print(f"{'file':<{width}}  face  {'box x,y,w,h':<19} {'emotion':<10} conf  "
              + " ".join(f"{e[:4]:>4}" for e in EMOTIONS))
        for result in results:
            if result.ok and not result.faces:
                print(f"{result.source:<{width}}  no face found")
            for face in sorted(result.faces, key=lambda f: f.index or 0):  # in reading order
                box = ",".join(map(str, face.box))
                probs = " ".join(f"{p:.2f}" for p in face.probabilities)
                print(f"{result.source:<{width}}  {face.index:>4}  {box:<19} {face.emotion:<10} "
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
            err_console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)
    if interrupted:
        err_console.print(f"[bold yellow]interrupted: {len(results):,} of {len(files):,} files done; their "
                          "rows and copies are written", highlight=False)
        raise typer.Exit(130)
    if failures:
        raise typer.Exit(1)


@app.command("video")
@user_errors
@requires("video", "video", "cv2")
def video_command(
    video: Annotated[Path, typer.Argument(help="Video file (anything OpenCV/FFmpeg reads: mp4, avi, ...).")],
    annotate: Annotated[Path | None, typer.Option(
        help="Write an annotated copy to this file (.mp4, .avi, .mov, .m4v).")] = None,
    csv_file: Annotated[Path | None, typer.Option(
        "--csv", help="Write one row per face per analysed frame (- for standard output).")] = None,
    analyse_every: Annotated[int, typer.Option(min=1, help="Analyse every N-th frame.")] = 1,
    detector: Annotated[DetectorName | None, typer.Option(help=VIDEO_DETECTOR_HELP)] = None,
    model: Annotated[str | None, model_option()] = None,
    tta: Annotated[TtaName, typer.Option(help=TTA_HELP)] = "none",
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
    for path, option in ((annotate, "--annotate"), (csv_file, "--csv")):
        if path is not None:
            check_output_file(path, [video], option)
    predictor = make_predictor(model, detector, tta, prior)
    report = VideoReport()
    rows = predictor.predict_video(video, every_n=analyse_every, out=annotate, progress=True, report=report,
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
    say.print(f"{video}: {total:,} faces in {len(frames):,} frames (every {analyse_every} frame"
              f"{'s' if analyse_every > 1 else ''} analysed)", highlight=False)
    if total:
        shares = ", ".join(f"{e} {n / total:.0%}" for e, n in counts.most_common())
        say.print(f"top emotion share: {shares}", highlight=False)
    if writer is not None:
        err_console.print(f"wrote {writer.rows:,} rows to {shown(csv_file)}", highlight=False)
    if annotate is not None:
        say.print(f"[green]annotated video written to {annotate}", highlight=False)
    if report.unreadable or report.missing:
        err_console.print(f"[yellow]{video}: {report.frames_read:,} frames read, {report.unreadable:,} "
                          f"unreadable (skipped), {report.missing:,} missing against the "
                          f"{report.header_frames:,} frames its header declares",
                          highlight=False, soft_wrap=True)
