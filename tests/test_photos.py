"""Evaluating on a folder of labelled photos (ferkit.evaluation.photos, `ferkit evaluate --photos`)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_FACES, needs_face_detector
from typer.testing import CliRunner

from ferkit.cli import app
from ferkit.emotions import EMOTIONS
from ferkit.errors import DataError
from ferkit.evaluation import evaluate_photos, read_photo_labels
from ferkit.inference import Predictor

WILD = REAL_FACES.parent / "expressions-in-the-wild"
needs_photos = pytest.mark.skipif(
    not (WILD / "labels.csv").is_file() or not (REAL_FACES / "dogs.jpg").is_file(),
    reason=f"labelled photos not found at {WILD} (put ../shared beside the repo)")


def dev_rows(n: int = 10) -> list[dict]:
    """The first photos of each emotion of the in-the-wild dev set (a few per class)."""
    with (WILD / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    picked = []
    for emotion in ("neutral", "happiness", "surprise", "sadness", "anger"):
        picked += [r for r in rows if r["emotion"] == emotion][:n // 5]
    return picked


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """labels.csv + images/: ten dev photos, one with an alias ("happy"), and dogs.jpg (no face)."""
    if not (WILD / "labels.csv").is_file() or not (REAL_FACES / "dogs.jpg").is_file():
        pytest.skip(f"labelled photos not found at {WILD}")
    root = tmp_path_factory.mktemp("photos")
    (root / "images").mkdir()
    rows = [(r["image"], r["emotion"]) for r in dev_rows()]
    rows[2] = (rows[2][0], "happy" if rows[2][1] == "happiness" else rows[2][1])
    for image, _ in rows:
        shutil.copy(WILD / "images" / image, root / "images" / image)
    shutil.copy(REAL_FACES / "dogs.jpg", root / "images" / "dogs.jpg")
    rows.append(("dogs.jpg", "fear"))
    with (root / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "emotion"])
        w.writerows(rows)
    return root


@pytest.mark.realdata
@needs_photos
@needs_face_detector
def test_photo_accuracy_equals_an_independent_count_with_the_predictor(photo_folder, tmp_path):
    evaluation = evaluate_photos("default", photo_folder, out=tmp_path / "eval")
    predictor = Predictor()
    correct = 0
    truth = list(csv.reader((photo_folder / "labels.csv").open()))[1:]
    for image, emotion in truth:
        faces = predictor.predict(photo_folder / "images" / image)
        emotion = {"happy": "happiness"}.get(emotion, emotion)
        correct += bool(faces) and faces[0].emotion == emotion
    m = evaluation.metrics
    assert m["images"] == len(truth) == 11
    assert m["correct"] == correct
    assert m["accuracy"] == pytest.approx(correct / 11)
    # dogs.jpg has no face: an error, listed, and in fear's support
    assert evaluation.photos["missed"] == [{"image": "images/dogs.jpg", "emotion": "fear"}]
    assert m["per_class"]["fear"] == pytest.approx({**m["per_class"]["fear"], "recall": 0.0, "support": 1})
    assert evaluation.photos["aliases"] == {"happy": 1}
    recalls = [c["recall"] for c in m["per_class"].values() if c["recall"] is not None]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["balanced_accuracy"] == m["balanced_accuracy"]
    # photos are read under the model's own default prior (metrics.json "default_prior"), and say so
    from ferkit.models import bundled

    recorded = json.loads((bundled.weights_root() / "default" / "metrics.json").read_text())
    assert written["prior"] == predictor.prior.to_dict()
    assert written["prior"]["name"] == recorded.get("default_prior", "ferplus")
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "images/dogs.jpg (fear)" in report and "balanced accuracy" in report
    # a model that records another default prior (`deep_cnn`: neutral:0.7) is read under it
    other = evaluate_photos("deep_cnn", photo_folder, out=tmp_path / "eval-deep_cnn")
    recorded = json.loads((bundled.weights_root() / "deep_cnn" / "metrics.json").read_text())["default_prior"]
    assert other.prior.name == recorded != "ferplus"


@needs_photos
@needs_face_detector
def test_cli_evaluates_a_folder_with_one_subfolder_per_class_and_a_prior(photo_folder, tmp_path):
    by_class = tmp_path / "by-class"
    for row in dev_rows(5):
        folder = by_class / {"anger": "angry"}.get(row["emotion"], row["emotion"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(WILD / "images" / row["image"], folder / row["image"])
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["evaluate", "-m", "fast", "--photos", str(by_class), "--prior",
                                      "uniform", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "balanced accuracy" in result.output and "aliases read: angry (1)" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 5 and metrics["prior"]["name"] == "uniform"
    assert metrics["photos"]["classes_present"] == ["neutral", "happiness", "surprise", "sadness", "anger"]
    assert "Written by `ferkit" in (out / "report.md").read_text()  # the command line that made it


def write_labels(folder: Path, rows: list[tuple[str, str]]) -> Path:
    path = folder / "labels.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "emotion"])
        w.writerows(rows)
    return path


def test_bad_rows_are_errors_naming_the_row_and_skip_bad_lists_them(tmp_path):
    from PIL import Image

    Image.new("RGB", (60, 60)).save(tmp_path / "a.png")
    write_labels(tmp_path, [("a.png", "sad"), ("missing.png", "neutral"), ("a.png", "bored")])
    with pytest.raises(DataError, match=r"labels.csv row 3 \(missing.png\): image file not found"):
        read_photo_labels(tmp_path)
    photos = read_photo_labels(tmp_path, skip_bad=True)
    assert [p.name for p in photos.paths] == ["a.png"]
    assert photos.labels.tolist() == [EMOTIONS.index("sadness")]
    assert len(photos.skipped) == 2 and "row 4 (a.png): unknown emotion 'bored'" in photos.skipped[1]
    assert photos.aliases == {"sad": 1}


def test_a_labels_file_without_the_columns_or_rows_is_a_clear_error(tmp_path):
    (tmp_path / "labels.csv").write_text("file,label\na.png,happy\n")
    with pytest.raises(DataError, match="expected a header with columns image,emotion"):
        read_photo_labels(tmp_path)
    with pytest.raises(DataError, match="labels file not found"):
        read_photo_labels(tmp_path, tmp_path / "other.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no labels.csv and no class subfolders"):
        read_photo_labels(empty)
    latin1 = tmp_path / "latin1"
    latin1.mkdir()
    (latin1 / "labels.csv").write_bytes("image,emotion\ncaf\xe9.png,happy\n".encode("latin-1"))
    with pytest.raises(DataError, match="labels.csv: not a UTF-8 CSV"):
        read_photo_labels(latin1)


@needs_face_detector
def test_an_unreadable_photo_is_an_error_naming_its_row_unless_skipped(tmp_path, tiny_model):
    if not (REAL_FACES / "2008_001009.jpg").is_file():
        pytest.skip("face photos not found")
    shutil.copy(REAL_FACES / "2008_001009.jpg", tmp_path / "good.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    write_labels(tmp_path, [("good.jpg", "happiness"), ("broken.jpg", "anger")])
    with pytest.raises(DataError, match=r"row 3 \(broken.jpg\).*broken.jpg"):
        evaluate_photos(tiny_model, tmp_path)
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tiny_model), "--photos", str(tmp_path),
                                      "--skip-bad", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "skipped:" in result.output and "broken.jpg" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["images"] == 1 and len(metrics["photos"]["skipped"]) == 1


@needs_face_detector
def test_predictor_prior_gives_the_reweighted_probabilities(tiny_model):
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    plain = Predictor(tiny_model).predict_faces(faces)
    uniform = Predictor(tiny_model, prior="uniform")
    np.testing.assert_allclose(uniform.predict_faces(faces), uniform.prior.apply(plain), rtol=1e-5)
    assert uniform.model_info["prior"]["name"] == "uniform"


def test_a_photo_listed_twice_counts_once_and_conflicting_labels_are_named(tmp_path):
    from PIL import Image

    from ferkit.errors import DataError
    from ferkit.evaluation.photos import read_photo_labels

    for name in ("a.png", "b.png"):
        Image.new("RGB", (60, 60)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("image,emotion\na.png,happy\nb.png,sad\na.png,happiness\n")
    photos = read_photo_labels(tmp_path)
    assert [p.name for p in photos.paths] == ["a.png", "b.png"]
    assert any("listed again with the same label" in line for line in photos.skipped)
    (tmp_path / "labels.csv").write_text("image,emotion\na.png,happy\nb.png,sad\n./a.png,anger\n")
    with pytest.raises(DataError, match="row 4 .*labelled anger, but .* row 2 .* happiness"):
        read_photo_labels(tmp_path)
    photos = read_photo_labels(tmp_path, skip_bad=True)
    assert [p.name for p in photos.paths] == ["b.png"]
    assert any("both left out" in line for line in photos.skipped)
