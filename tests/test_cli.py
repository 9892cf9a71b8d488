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
from ferkit.files import LEDGER

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
    for args, message in ((["--annotate", str(clip)], "is an input file"),
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
    copies = sorted(p.name for p in annotated.iterdir() if p.name != LEDGER)
    assert copies == done  # a copy for each file with rows


def test_ctrl_c_in_any_command_is_one_line_and_exit_130(monkeypatch, tmp_path):
    """Commands without their own Ctrl-C handling (e.g. `evaluate --photos`) still end in one line."""
    import ferkit.data

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ferkit.data, "load_ferplus", pressed)
    result = CliRunner().invoke(app, ["data", "summary", str(tmp_path)])
    assert result.exit_code == 130 and "stopped (Ctrl-C)" in result.output
    assert "Traceback" not in result.output


def test_evaluate_photos_never_writes_over_the_labels_or_a_users_own_files(photos, tmp_path):
    labels = photos / "predictions.csv"  # the user's labels, named like a file the report writes
    labels.write_text("image,emotion\n" + "".join(f"{name},happiness\n" for name in PHOTOS))
    before = digest(photos)
    result = CliRunner().invoke(app, ["evaluate", "-m", "default", "--photos", str(photos), "--labels",
                                      str(labels), "--out", str(photos)])
    assert result.exit_code == 1 and "predictions.csv" in result.output and "Traceback" not in result.output
    assert digest(photos) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes")
    result = CliRunner().invoke(app, ["evaluate", "-m", "default", "--photos", str(photos), "--labels",
                                      str(labels), "--out", str(mine)])
    assert result.exit_code == 1 and "already holds report.md, which ferkit did not write" in result.output
    assert (mine / "report.md").read_text() == "my own notes"


def test_a_hard_link_to_an_input_is_that_input(photos, tmp_path):
    jpeg = photos / PHOTOS[0]
    before = jpeg.read_bytes()
    link = tmp_path / "out.csv"
    os.link(jpeg, link)
    result = CliRunner().invoke(app, ["predict", str(jpeg), "--csv", str(link), "--model", "fast"])
    assert result.exit_code == 1 and "is an input file" in result.output
    assert jpeg.read_bytes() == before
    annotated = tmp_path / "annotated"
    annotated.mkdir()
    os.link(jpeg, annotated / PHOTOS[0])  # the copy's name in --annotate is a link to the photo itself
    result = CliRunner().invoke(app, ["predict", str(jpeg), "--annotate", str(annotated), "--model", "fast"])
    assert result.exit_code == 1 and "over the input" in result.output
    assert jpeg.read_bytes() == before


@needs_real_faces
@needs_face_detector
def test_a_full_disk_is_one_line_naming_the_file(photos):
    result = CliRunner().invoke(app, ["predict", str(photos), "--csv", "/dev/full", "--model", "fast"])
    assert result.exit_code == 1, result.output
    assert "/dev/full: cannot write (No space left on device)" in result.output
    assert "Traceback" not in result.output


def test_numeric_options_must_be_finite_and_in_range(tmp_path):
    import cv2
    import numpy as np

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(3):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    smooth = "--smooth must be between 0 and 60"
    cases = [(["video", str(clip), "--smooth", "nan", "--model", "fast"], smooth),
             (["video", str(clip), "--smooth", "inf", "--model", "fast"], smooth),
             (["serve", "--max-upload-mb", "nan"], "--max-upload-mb must be a number from"),
             (["serve", "--max-upload-mb", "-5"], "--max-upload-mb must be a number from"),
             (["serve", "--port", "99999"], "--port must be from 1 to 65535"),
             (["serve", "--body-timeout", "inf"], "--body-timeout must be a number from"),
             (["batch", str(tmp_path), "--out", str(tmp_path / "o.csv"), "--max-remote-mb", "nan"],
              "--max-remote-mb must be a number"),
             (["train", "--set", "name=../../escaped"], "a run name is a single folder name"),
             (["train", "--set", "model_args.depths=[2,2"],
              "'model_args.depths=[2,2': the value is not valid YAML")]
    for args, message in cases:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    assert not (tmp_path.parent / "escaped").exists()


def test_version_help_and_csv_to_standard_output(photos):
    import ferkit

    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.strip() == f"ferkit {ferkit.__version__}"
    for args in (["-h"], ["predict", "-h"]):
        shown = runner.invoke(app, args)
        assert shown.exit_code == 0 and "Usage:" in shown.output
    # help shows the choices, from their owners, and the real defaults
    from ferkit.data.protocols import PROTOCOLS
    from ferkit.faces.detectors import DEFAULT_DETECTOR, DETECTORS, LIVE_DETECTOR

    def unwrapped(*args: str) -> str:
        return "".join(runner.invoke(app, [*args, "-h"], env={"COLUMNS": "300"}).output.split())

    assert f"<{'|'.join(DETECTORS)}>" in unwrapped("predict")
    assert f"(default:{DEFAULT_DETECTOR};" in unwrapped("predict")
    assert f"(default:{LIVE_DETECTOR}," in unwrapped("video")
    assert "<none|flip>" in unwrapped("predict") and "<train|valid|test>" in unwrapped("evaluate")
    assert f"<{'|'.join(PROTOCOLS)}>" in unwrapped("evaluate")
    jpeg = photos / PHOTOS[0]
    ferkit_command = str(Path(sys.executable).with_name("ferkit"))
    result = subprocess.run([ferkit_command, "predict", str(jpeg), "--csv", "-", "--model", "fast"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert rows and all(r["file"] == str(jpeg) and r["emotion"] for r in rows)  # nothing but the CSV
    assert "wrote" in result.stderr and not (Path.cwd() / "-").exists()


def test_a_face_prints_as_a_person_reads_it():
    import numpy as np

    from ferkit.inference.face import Face

    p = np.array([0.1, 0.6, 0.2, 0.05, 0.02, 0.01, 0.01, 0.01], np.float32)
    face = Face(box=(10, 20, 64, 64), probabilities=p, crop=np.zeros((48, 48), np.uint8))
    assert repr(face) == ("Face(happiness 60% at x=10 y=20 64x64; top 3: happiness 60%, surprise 20%, "
                          "neutral 10%)")


def test_models_lists_the_bundled_models_and_archs_the_architectures():
    from ferkit.models import list_bundled

    listed = CliRunner().invoke(app, ["models"], terminal_width=200)
    assert listed.exit_code == 0 and all(name in listed.output for name in list_bundled())
    assert "%" in listed.output and "ONNX int8" in listed.output
    archs = CliRunner().invoke(app, ["archs"], terminal_width=200)
    assert archs.exit_code == 0 and "resnet" in archs.output and "deep_cnn" in archs.output


@pytest.mark.parametrize("args,extra", [(["train"], "train"), (["serve"], "serve"),
                                        (["batch", ".", "--out", "x.csv"], "scale")])
def test_a_command_whose_extra_is_missing_names_it_and_exits_2(args, extra):
    """Each command that needs an extra says which, in one line, with the pip line that installs it."""
    blocked = {"train": "lightning", "serve": "fastapi", "scale": "ray"}[extra]
    script = f"""
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == {blocked!r}:
            raise ImportError("No module named " + {blocked!r})
sys.meta_path.insert(0, Missing())
from ferkit.cli import app
sys.argv = ["ferkit", *{args!r}]
app()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"pip install 'ferkit[{extra}]'" in result.stderr and "Traceback" not in result.stderr


MODEL_COMMANDS = ("predict", "video", "serve", "batch", "app", "evaluate", "export", "compare", "explain",
                  "adapt", "retrain-head", "bundle", "card", "ensemble")


def test_every_command_names_a_trained_model_with_m_model_and_train_an_architecture_with_arch():
    """One grammar: -m/--model MODEL wherever a command takes a trained model; --arch for `train`."""
    import re

    def option_row(command: str) -> str:
        shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
        assert shown.exit_code == 0, (command, shown.output)
        rows = [line for line in shown.output.splitlines() if re.search(r"--model\s+-m\s+MODEL\b", line)]
        assert len(rows) == 1, (command, shown.output)
        return rows[0]

    required = {"bundle", "retrain-head", "ensemble"}  # the bundled default is no model to ship or re-make
    for command in MODEL_COMMANDS:
        assert ("[required]" in option_row(command)) == (command in required), command
    train = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "250"}).output
    assert "--arch" in train and "--model" not in train


def test_compare_takes_exactly_two_models_and_says_so_in_one_line():
    for args in ([], ["-m", "default"], ["-m", "default", "-m", "fast", "-m", "baseline"]):
        result = CliRunner().invoke(app, ["compare", *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().splitlines() == [
            f"error: compare takes two models, the reference first: -m A -m B (got {len(args) // 2})"]


def test_the_app_refuses_an_unknown_model_before_it_starts():
    pytest.importorskip("streamlit")
    pytest.importorskip("streamlit_webrtc")
    result = CliRunner().invoke(app, ["app", "-m", "no-such-model"])
    assert result.exit_code == 1 and "unknown model 'no-such-model'" in result.output
    assert "Traceback" not in result.output
