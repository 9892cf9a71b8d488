"""The `ferkit` command as a user meets it with bad output paths and interruptions: nothing the user
has is written over, output paths are checked before any work, and Ctrl-C keeps what was done."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REAL_FACES, needs_face_detector, needs_real_faces
from typer.testing import CliRunner

from ferkit.cli import app

PHOTOS = ("2008_001009.jpg", "2008_001322.jpg", "2008_002079.jpg")


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def photos(tmp_path) -> Path:
    if not (REAL_FACES / PHOTOS[0]).is_file():
        pytest.skip(f"face photos not found at {REAL_FACES}")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(REAL_FACES / name, folder / name)
    return folder


def test_annotating_into_the_input_folder_is_refused_and_the_photos_are_unchanged(photos, tiny_model):
    before = digest(photos)
    result = CliRunner().invoke(app, ["predict", str(photos), "--annotate", str(photos),
                                      "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert "would write over the input" in result.output and "Traceback" not in result.output
    assert digest(photos) == before
    one = photos / PHOTOS[0]  # a single file annotated into its own folder: the same clash
    result = CliRunner().invoke(app, ["predict", str(one), "--annotate", str(photos),
                                      "--model", str(tiny_model)])
    assert result.exit_code == 1 and "would write over the input" in result.output
    assert digest(photos) == before


def test_a_csv_path_that_is_a_folder_or_an_input_is_refused_before_any_work(photos, tmp_path):
    before = digest(photos)
    (tmp_path / "a-file").write_text("kept")
    for target, message in ((tmp_path, "is a folder"), (photos / PHOTOS[1], "is an input file"),
                            (tmp_path / "a-file" / "out.csv", "cannot be written here")):
        result = CliRunner().invoke(app, ["predict", str(photos), "--csv", str(target),
                                          "--model", "no-such-model"])  # checked before the model loads
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
    assert digest(photos) == before


def test_video_outputs_over_the_input_or_into_a_folder_are_refused(tmp_path):
    import cv2
    import numpy as np

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    before = clip.read_bytes()
    for args, message in ((["--out", str(clip)], "is an input file"),
                          (["--csv", str(tmp_path)], "is a folder"),
                          (["--csv", str(clip)], "is an input file")):
        result = CliRunner().invoke(app, ["video", str(clip), *args])
        assert result.exit_code == 1 and message in result.output, result.output
    assert clip.read_bytes() == before


@needs_real_faces
@needs_face_detector
def test_ctrl_c_keeps_the_rows_and_copies_of_the_files_done(photos, tmp_path, tiny_model):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(150):  # long enough (several seconds) to be stopped part-way
        shutil.copy(photos / PHOTOS[i % len(PHOTOS)], many / f"{i:02d}.jpg")
    out_csv, annotated = tmp_path / "faces.csv", tmp_path / "annotated"
    ferkit = Path(sys.executable).with_name("ferkit")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([str(ferkit), "predict", str(many), "--csv", str(out_csv), "--annotate",
                                str(annotated), "--model", str(tiny_model)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:  # wait for the first rows
        if out_csv.is_file() and len(out_csv.read_text().splitlines()) > 1:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted:" in stderr and "of 150 files done" in stderr
    with out_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    done = sorted({Path(r["file"]).name for r in rows})
    assert 0 < len(done) < 150 and all(r["emotion"] for r in rows)  # complete rows only
    assert sorted(p.name for p in annotated.iterdir()) == done  # a copy for each file with rows


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(monkeypatch, tmp_path):
    """Commands without their own Ctrl-C handling (e.g. `evaluate --photos`) still end in one line."""
    import ferkit.data

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ferkit.data, "load_ferplus", pressed)
    result = CliRunner().invoke(app, ["data", "summary", str(tmp_path)])
    assert result.exit_code == 130 and "stopped (Ctrl-C)" in result.output
    assert "Traceback" not in result.output
