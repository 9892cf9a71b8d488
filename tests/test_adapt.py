"""`ferkit adapt`: the fit (heads toward the shipped ones, absent classes kept), the refusals, and an
adapted model built end to end from real posed photos, then used by predict, evaluate --photos and
the Predictor."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ferkit.adaptation.core import adapted_model, shipped_heads
from ferkit.adaptation.data import check_counts
from ferkit.adaptation.features import member_networks, pooled_features
from ferkit.adaptation.heads import OFF_BIAS, Heads, balanced_weights, fit, fit_heads
from ferkit.adaptation.validation import balanced_accuracy, make_folds
from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, DataError
from ferkit.models import load
from ferkit.models.bundled import resolve_model

POSED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "posed-expressions"
needs_posed = pytest.mark.skipif(not (POSED / "labels.csv").is_file(),
                                 reason=f"posed dev set not found at {POSED}")
runner = CliRunner()


@pytest.fixture(scope="module")
def fast():
    return load(resolve_model("fast").path)


def test_adapted_model_answers_as_its_heads(fast):
    """The written network (flip built in) computes softmax of the heads' logits on the view-averaged
    features: what the fit and the cross-validation score is what the model does."""
    faces = np.random.default_rng(0).integers(0, 256, (6, 48, 48), dtype=np.uint8)
    heads = shipped_heads(fast)
    noise = np.random.default_rng(1).normal(0, 0.05, heads.weight.shape).astype(np.float32)
    heads = Heads(heads.weight + noise, heads.bias)
    model = adapted_model(fast, heads)
    from ferkit.models import normalize

    with torch.no_grad():
        got = torch.softmax(model(normalize(faces)), 1).numpy()
    expected = torch.softmax(torch.from_numpy(heads.logits(pooled_features(member_networks(fast), faces))), 1)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_fit_moves_toward_the_labels_and_keeps_absent_classes(fast):
    rng = np.random.default_rng(0)
    labels = np.array([EMOTIONS.index("anger"), EMOTIONS.index("fear")] * 20)
    # two kinds of face the network tells apart: dark ones (anger) and bright ones (fear)
    faces = np.where((labels == EMOTIONS.index("anger"))[:, None, None], rng.integers(0, 90, (40, 48, 48)),
                     rng.integers(160, 256, (40, 48, 48))).astype(np.uint8)
    features = pooled_features(member_networks(fast), faces)
    shipped = shipped_heads(fast)
    loose = fit_heads(features, labels, shipped, l2=1e-4)
    tight = fit_heads(features, labels, shipped, l2=100.0)
    present = np.unique(labels)
    # among the classes it was shown, the loose fit learns the labels (absent ones may still win)
    assert balanced_accuracy(labels, present[loose.logits(features)[:, present].argmax(1)]) == 1.0
    absent = [k for k in range(len(EMOTIONS)) if k not in labels]
    np.testing.assert_array_equal(loose.weight[:, absent], shipped.weight[:, absent])
    np.testing.assert_array_equal(loose.bias[:, absent], shipped.bias[:, absent])
    # a stronger pull stays closer to the shipped heads
    assert np.abs(tight.weight - shipped.weight).sum() < np.abs(loose.weight - shipped.weight).sum()
    with pytest.raises(ArgumentError, match="l2"):
        fit_heads(features, labels, shipped, l2=0)
    # the blend with the recombined shipped heads, absent classes switched off: only the two are answered,
    # and a temperature leaves them off at a bias float16 storage holds
    off = fit(features, labels, shipped, l2=1e-3, remap=0.5, absent="off").scaled(0.1)
    assert set(off.logits(features).argmax(1)) <= set(present.tolist())
    assert (off.bias[:, absent] == OFF_BIAS).all() and np.isfinite(off.bias.astype(np.float16)).all()
    kept = fit(features, labels, shipped, l2=1e-3, remap=0.5, absent="shipped")
    np.testing.assert_array_equal(kept.weight[:, absent], shipped.weight[:, absent])
    with pytest.raises(ArgumentError, match="absent"):
        fit(features, labels, shipped, l2=1e-3, absent="drop")


def test_balanced_weights_and_folds():
    labels = np.array([0] * 6 + [1] * 2)
    weights = balanced_weights(labels)
    assert weights[:6].sum() == pytest.approx(weights[6:].sum())
    groups = np.array(list("aabbccdd"))
    folds = make_folds(labels, groups, n_splits=5)
    assert folds.kind == "grouped" and len(folds.splits) == 4
    for train, test in folds.splits:
        assert not set(groups[train]) & set(groups[test])  # no person on both sides
    assert make_folds(labels, None, n_splits=5).kind == "stratified"


def test_refusals_of_counts():
    with pytest.raises(DataError, match="at least 2 photos.*fear: 1"):
        check_counts(np.array([0, 0, 6]), "photos")
    with pytest.raises(DataError, match="only one class"):
        check_counts(np.array([1, 1, 1]), "photos")


def _posed_subset(folder: Path, per_class: int, subjects: int = 3) -> Path:
    """`per_class` posed photos of each class from `subjects` people, with a labels.csv
    (image,emotion,subject): a small user's folder."""
    rows = list(csv.DictReader((POSED / "labels.csv").open()))
    people = sorted({r["subject"] for r in rows})[:subjects]
    (folder / "images").mkdir(parents=True)
    chosen = []
    for emotion in sorted({r["emotion"] for r in rows}):
        for person in people:
            mine = [r for r in rows if r["emotion"] == emotion and r["subject"] == person]
            chosen += mine[:max(1, per_class // subjects)]
    for row in chosen:
        shutil.copyfile(POSED / "images" / row["image"], folder / "images" / row["image"])
    with (folder / "labels.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["image", "emotion", "subject"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("image", "emotion", "subject")} for r in chosen)
    return folder


def _adapt(*args: str):
    from ferkit.cli import app

    return runner.invoke(app, ["adapt", *args])


@needs_posed
def test_refusals_on_the_command_line(tmp_path):
    photos = _posed_subset(tmp_path / "mine", per_class=2, subjects=2)
    result = _adapt("-m", "fast", "--photos", str(photos), "--out", str(photos / "model"))
    assert result.exit_code == 1 and "inside the photo folder" in result.output
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    result = _adapt("-m", "fast", "--photos", str(photos), "--out", str(tmp_path / "taken"))
    assert result.exit_code == 1 and "already exists" in result.output
    result = _adapt("-m", "fast", "--photos", str(photos), "--out", str(tmp_path / "taken"), "--force")
    assert result.exit_code == 1 and "not a model folder" in result.output
    result = _adapt("-m", "fast", "--photos", str(photos), "--out", str(tmp_path / "m"),
                    "--group-by", "actor")
    assert result.exit_code == 1 and "no group column 'actor'" in result.output
    bad = tmp_path / "bad"
    shutil.copytree(photos, bad)
    (bad / "labels.csv").write_text((bad / "labels.csv").read_text().replace(",anger,", ",furious,", 1))
    result = _adapt("-m", "fast", "--photos", str(bad), "--out", str(tmp_path / "m"))
    assert result.exit_code == 1 and "unknown emotion 'furious'" in result.output
    lines = (photos / "labels.csv").read_text().splitlines()
    one_fear = [lines[0]] + [line for line in lines[1:] if ",fear," not in line] + \
        [next(line for line in lines if ",fear," in line)]
    (photos / "labels.csv").write_text("\n".join(one_fear) + "\n")
    result = _adapt("-m", "fast", "--photos", str(photos), "--out", str(tmp_path / "m"))
    assert result.exit_code == 1 and "fear: 1" in result.output
    assert not (tmp_path / "m").exists()


@needs_posed
@pytest.mark.realdata
def test_adapt_end_to_end_then_predict_evaluate_serve_and_the_app(tmp_path, monkeypatch):
    photos = _posed_subset(tmp_path / "study", per_class=3)
    blank = photos / "images" / "blank.png"
    from PIL import Image

    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)  # no face in it
    with (photos / "labels.csv").open("a") as fh:
        fh.write("blank.png,happiness,99\n")
    out = tmp_path / "adapted"
    result = _adapt("-m", "default", "--photos", str(photos), "--out", str(out), "--folds", "3",
                    "--augment", "1", "--no-ferplus-valid")
    assert result.exit_code == 1 and "no face found" in result.output and "--skip-bad" in result.output
    args = ["-m", "default", "--photos", str(photos), "--out", str(out), "--folds", "3", "--augment", "1",
            "--no-ferplus-valid", "--skip-bad", "--curve", "--absent-classes", "off"]
    monkeypatch.setattr("sys.argv", ["ferkit", "adapt", *args])  # what the model card records
    result = _adapt(*args)
    assert result.exit_code == 0, result.output
    assert "blank.png" in result.output and "grouped by 'subject'" in result.output
    for name in ("model.safetensors", "model.json", "metrics.json", "model.onnx", "report.md", "report.json",
                 "learning_curve.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "model.json").read_text())
    assert config["model_args"]["flip"] is True and config["weights_sha256"]
    assert config["adapted"]["photos"] == "study" and config["adapted"]["per_class"]["anger"] == 3
    assert config["adapted"]["command"].startswith("ferkit adapt -m default")
    assert config["adapted"]["absent_classes"] == "off"  # no contempt among these photos: never answered
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["person_disjoint"] and metrics["onnx"]["agreement_on_photos"] >= 0.99
    assert "shipped model, same photos" in (out / "report.md").read_text()
    # the shipped weights are untouched: the bundled default still loads (its sha256 is checked)
    load(resolve_model("default").path)

    from ferkit.cli import app
    from ferkit.inference import Predictor

    predictor = Predictor(model=out)
    assert predictor.backend.kind == "onnx"  # the folder's own export, tied to its weights
    faces = predictor.predict(photos / "images" / next(p.name for p in (photos / "images").glob("*.jpg")))
    assert len(faces) == 1 and faces[0].probabilities.sum() == pytest.approx(1, abs=1e-4)
    assert faces[0].probabilities[EMOTIONS.index("contempt")] == 0
    predicted = runner.invoke(app, ["predict", str(photos / "images"), "--model", str(out)])
    assert predicted.exit_code == 0, predicted.output
    evaluated = runner.invoke(app, ["evaluate", "-m", str(out), "--photos", str(photos), "--skip-bad",
                                    "--out", str(tmp_path / "eval")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "balanced accuracy" in evaluated.output
    # the HTTP API on the adapted folder, called by a real client, answers what the Predictor says
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from bench.common import running_server

    with running_server(["--model", str(out)]) as (url, _):
        photo = next((photos / "images").glob("*.jpg"))
        upload = {"file": (photo.name, photo.read_bytes())}
        answer = httpx.post(f"{url}/v1/predict", files=upload, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == str(out)
        expected = predictor.predict(photo)
        assert [f["emotion"] for f in answer.json()["faces"]] == [f.emotion for f in expected]
    # and the web app (FERKIT_MODEL), run by Streamlit's AppTest: the adapted model is the one offered
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERKIT_MODEL", str(out))
    threads = torch.get_num_threads()  # the app sets PyTorch's process-wide thread count
    page_file = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "app" / "main.py"
    try:
        page = AppTest.from_file(str(page_file), default_timeout=120).run()
    finally:
        torch.set_num_threads(threads)
    assert not page.exception
    assert str(out) in " ".join(m.value for m in page.sidebar.markdown)  # the model the app offers
