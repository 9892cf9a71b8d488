"""Emotions through a video, frame by frame, streamed (one frame in memory at a time).

OpenCV's VideoCapture reads (FFmpeg inside opencv-python-headless: mp4/avi/mkv/mov/webm...),
VideoWriter writes the optional annotated copy (.mp4/.mov/.m4v as mp4v, .avi as MJPG). OpenCV is the
`video` extra, kept out of the core install (it is 160 MB): without it, reading a video raises
MissingExtra naming the extra.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ferkit.errors import ArgumentError, ImageError, require_extra
from ferkit.inference.face import Face
from ferkit.inference.stream import FaceStream, StreamPredictor
from ferkit.inference.tracking import DEFAULT_SMOOTH_S

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
# A damaged stretch of a video can fail hundreds of frames in a row; past this many consecutive
# unreadable frames the rest is counted as missing instead of seeking frame by frame.
MAX_CONSECUTIVE_UNREADABLE = 1000


@dataclass
class VideoReport:
    """What reading a video found, filled in as its rows stream out."""

    header_frames: int | None = None  # the frame count the container declares (may be missing)
    frames_read: int = 0
    unreadable: int = 0  # frames skipped because they could not be decoded

    @property
    def missing(self) -> int:
        """Frames the header declares beyond those read or skipped (a cut-short file)."""
        if not self.header_frames:
            return 0
        return max(0, self.header_frames - self.frames_read - self.unreadable)


def open_video(path: str | Path):
    """cv2.VideoCapture on `path`; ImageError naming the file if it is missing or unreadable."""
    require_extra("video", "reading a video", "cv2")
    import cv2

    path = Path(path).expanduser()
    # FFmpeg would print a line per damaged macroblock; ferkit reports unreadable frames itself
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if not path.is_file():
        raise ImageError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: video file is empty (0 bytes)")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ImageError(f"{path}: cannot open video (not a video, or a codec OpenCV cannot read)")
    return capture


def open_writer(out: str | Path, fps: float, size: tuple[int, int]):
    import cv2

    out = Path(out).expanduser()
    fourcc = FOURCC.get(out.suffix.lower())
    if fourcc is None:
        raise ArgumentError(f"{out}: annotated video must end in {', '.join(sorted(FOURCC))}")
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        writer.release()
        raise ImageError(f"{out}: cannot write video ({fourcc} encoder unavailable or folder not writable)")
    return writer


def iter_video(predictor: StreamPredictor, path: str | Path, every_n: int = 1, out: str | Path | None = None,
               progress: bool = True, report: VideoReport | None = None,
               smooth_s: float = DEFAULT_SMOOTH_S, detect_every: int = 1) -> Iterator[Face]:
    """The faces of every `every_n`-th frame, each with its frame, time_s, index and track.

    With `out`, every frame is written to the annotated copy; frames between analysed ones
    carry the most recent boxes, so the copy plays at the original frame rate. The video is
    opened at once (a bad path fails here, not at the first row); frames are read lazily.
    A frame that cannot be decoded is skipped and reading goes on to the end the header declares;
    `report` (a VideoReport) counts the frames read, unreadable and missing. Faces are tracked
    from frame to frame (`track` in the rows) and each track's probabilities are smoothed with a
    time constant of `smooth_s` seconds (0: each frame on its own; see ferkit.inference.tracking);
    `detect_every` > 1 runs the detector on every so many analysed frames only (ferkit.inference.stream).
    `predictor` finds and classifies the faces (`Predictor.for_video()` for a Predictor)."""
    if every_n < 1:
        raise ArgumentError(f"every_n must be >= 1, got {every_n}")
    if out is not None and Path(out).suffix.lower() not in FOURCC:
        raise ArgumentError(f"{out}: annotated video must end in {', '.join(sorted(FOURCC))}")
    stream = FaceStream(predictor, smooth_s, detect_every)
    return _rows(open_video(path), path, every_n, out, progress,
                 report if report is not None else VideoReport(), stream)


def _rows(capture, path: str | Path, every_n: int, out: str | Path | None,
          progress: bool, report: VideoReport, stream: FaceStream) -> Iterator[Face]:
    import cv2

    from ferkit.inference.annotate import draw_faces

    writer = None
    bar = None
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and math.isfinite(fps) and fps > 0 else None
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        report.header_frames = total
        if progress:
            bar = _Bar(total, f"{Path(path).name}")
        faces: list[Face] = []
        index = 0
        consecutive_failures = 0
        while True:
            analyse = index % every_n == 0
            if not analyse and out is None:
                ok, bgr = capture.grab(), None  # skip without converting the frame
            else:
                ok, bgr = capture.read()
            if not ok:
                # Damaged data in the middle: if the header declares more frames, skip this one and
                # seek past it (FFmpeg resynchronises at the next keyframe it can read).
                if total and index < total and consecutive_failures < MAX_CONSECUTIVE_UNREADABLE:
                    report.unreadable += 1
                    consecutive_failures += 1
                    index += 1
                    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                    if bar:
                        bar.advance()
                    continue
                break
            consecutive_failures = 0
            report.frames_read += 1
            if bgr is None:
                index += 1
                if bar:
                    bar.advance()
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if analyse:
                time_s = index / fps if fps else None
                faces = stream.update(rgb, time_s if time_s is not None else index / 25.0)  # drawn smoothed
                for face in sorted(faces, key=lambda f: f.index or 0):  # in reading order
                    yield replace(face, frame=index, time_s=time_s)
            if out is not None:
                if writer is None:
                    writer = open_writer(out, fps or 25.0, (rgb.shape[1], rgb.shape[0]))
                writer.write(cv2.cvtColor(draw_faces(rgb, faces), cv2.COLOR_RGB2BGR))
            index += 1
            if bar:
                bar.advance()
        if report.frames_read == 0:
            raise ImageError(f"{path}: video has no readable frames")
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        if bar:
            bar.close()


class _Bar:
    """A rich progress bar on stderr that a generator can open and close."""

    def __init__(self, total: int | None, description: str):
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=True)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total)

    def advance(self) -> None:
        self.progress.advance(self.task)

    def close(self) -> None:
        self.progress.stop()
