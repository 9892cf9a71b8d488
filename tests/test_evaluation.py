"""Evaluation: metrics against hand-computed values, predict_proba, and `ferkit evaluate` /
`ferkit compare` end to end on tiny trained runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_RESNET, write_microsoft_root
from typer.testing import CliRunner

from ferkit.cli import app
from ferkit.emotions import EMOTIONS
from ferkit.errors import ArgumentError, EvaluationError
from ferkit.evaluation import compute_metrics, evaluate_run, load_eval_split, predict_proba
from ferkit.evaluation.comparison import FILES as COMPARE_FILES
from ferkit.evaluation.report import FILES as REPORT_FILES
from ferkit.models import create_model, normalize

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def padded(rows: list[list[float]]) -> np.ndarray:
    """Probability rows over the first classes, zero for the rest of the 8."""
    out = np.zeros((len(rows), len(EMOTIONS)))
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


# 6 made-up predictions over neutral(0), happiness(1), surprise(2); argmax = 0, 0, 1, 1, 2, 2.
Y_TRUE = [0, 0, 0, 1, 1, 2]
PROBA = padded([[0.9, 0.1, 0.0],
                [0.6, 0.3, 0.1],
                [0.3, 0.7, 0.0],  # neutral taken for happiness
                [0.2, 0.8, 0.0],
                [0.0, 0.4, 0.6],  # happiness taken for surprise
                [0.1, 0.1, 0.8]])


def test_metrics_match_hand_computed_values():
    m = compute_metrics(Y_TRUE, PROBA)
    assert m["images"] == 6 and m["correct"] == 4
    assert m["accuracy"] == pytest.approx(4 / 6)
    # neutral: TP 2, FN 1, FP 0; happiness: TP 1, FN 1, FP 1; surprise: TP 1, FN 0, FP 1
    neutral, happiness, surprise = (m["per_class"][e] for e in EMOTIONS[:3])
    assert (neutral["precision"], neutral["recall"], neutral["f1"]) == pytest.approx((1, 2 / 3, 0.8))
    assert happiness["recall"] == pytest.approx(0.5)
    assert surprise["recall"] == pytest.approx(1.0) and surprise["f1"] == pytest.approx(2 / 3)
    assert [neutral["support"], happiness["support"], surprise["support"]] == [3, 2, 1]
    # macro averages run over the 3 classes that have test images
    assert m["macro"]["f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted"]["recall"] == pytest.approx(4 / 6)  # support-weighted recall = accuracy
    p_true = [0.9, 0.6, 0.3, 0.8, 0.4, 0.8]
    assert m["nll"] == pytest.approx(-sum(math.log(p) for p in p_true) / 6)
    assert m["confusion_matrix"][0][:3] == [2, 1, 0] and m["confusion_matrix"][1][:3] == [0, 1, 1]
    assert m["most_confused"][0]["count"] == 1
    assert {(c["true"], c["predicted"]) for c in m["most_confused"]} == {
        ("neutral", "happiness"), ("happiness", "surprise")}


def test_text_report_agrees_with_metrics_json_also_when_faces_were_missed():
    """classification_report.txt (scikit-learn's) shows metrics.json's numbers: photos with no face
    found count as misses of their class; a class with no image (contempt here) is left out."""
    from ferkit.evaluation.report import classification_report_text

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 300)
    proba = rng.dirichlet(np.ones(8), 300)
    proba[np.arange(300)[:200], y_true[:200]] += 1  # right on two thirds
    missed = np.array([3, 3, 5, 6])
    metrics = compute_metrics(y_true, proba / proba.sum(1, keepdims=True), missed=missed)
    text = classification_report_text(y_true, proba.argmax(1), metrics["missed_per_class"])
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert "contempt" not in rows
    for emotion in EMOTIONS[:7]:
        c = metrics["per_class"][emotion]
        expected = [f"{c[k]:.3f}" for k in ("precision", "recall", "f1")] + [str(c["support"])]
        assert rows[emotion] == expected
    assert rows["macro"][2] == f"{metrics['balanced_accuracy']:.3f}"  # "macro avg": mean recall
    # "share of true class" is of the whole class, its photos with no face included
    for pair in metrics["most_confused"]:
        assert pair["rate"] == pytest.approx(pair["count"] / metrics["per_class"][pair["true"]]["support"])


def test_auc_of_classes_without_support_is_null_not_a_crash():
    m = compute_metrics(Y_TRUE, PROBA)
    auc = {e: m["per_class"][e]["auc"] for e in EMOTIONS}
    # happiness scores: positives 0.8, 0.4; negatives 0.1, 0.3, 0.7, 0.1 -> 7 of 8 pairs ordered
    assert (auc["neutral"], auc["happiness"], auc["surprise"]) == pytest.approx((1.0, 7 / 8, 1.0))
    assert all(auc[e] is None for e in EMOTIONS[3:])
    assert all(m["per_class"][e]["recall"] is None for e in EMOTIONS[3:])
    assert m["macro_auc"] == pytest.approx((1 + 7 / 8 + 1) / 3)
    json.dumps(m, allow_nan=False)  # metrics.json must be strict JSON


def test_expected_calibration_error_of_a_hand_made_case():
    # 4 faces at confidence 0.9, 3 right (gap 0.15); 2 at 0.5, none right (gap 0.5)
    proba = padded([[0.9, 0.1]] * 4 + [[0.5, 0.5]] * 2)
    y_true = [0, 0, 0, 1, 1, 1]
    m = compute_metrics(y_true, proba)
    assert m["ece"] == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.5)
    filled = [b for b in m["calibration"]["table"] if b["count"]]
    assert len(m["calibration"]["table"]) == 15 and [b["count"] for b in filled] == [2, 4]
    perfect = compute_metrics([0, 1], padded([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect["ece"] == pytest.approx(0.0) and perfect["accuracy"] == 1.0


def test_kl_divergence_only_with_soft_targets():
    targets = padded([[0.5, 0.5]])
    m = compute_metrics([0], padded([[0.25, 0.75]]), targets=targets)
    assert m["kl_divergence"] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert "kl_divergence" not in compute_metrics([0], padded([[0.25, 0.75]]))


@pytest.mark.parametrize("y_true,proba,message", [
    ([], np.zeros((0, 8)), "no images"),
    ([0, 1], np.full((3, 8), 1 / 8), "2 labels but proba has 3 rows"),
    ([0], np.full((1, 7), 1 / 7), "expected shape"),
    ([9], np.full((1, 8), 1 / 8), "class indices"),
])
def test_metric_inputs_are_checked(y_true, proba, message):
    with pytest.raises(EvaluationError, match=message):
        compute_metrics(y_true, proba)


def test_predict_proba_batches_flip_tta_and_restores_train_mode():
    torch.manual_seed(0)
    model = create_model("resnet", **TINY_RESNET)  # training mode, as a trainer would hold it
    faces = np.random.default_rng(0).integers(0, 256, (10, 48, 48), dtype=np.uint8)
    proba = predict_proba(model, faces, batch_size=3)
    assert proba.shape == (10, 8) and proba.dtype == np.float32
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(proba, predict_proba(model, faces, batch_size=256), atol=1e-6)
    assert model.training
    model.eval()
    with torch.no_grad():
        x = normalize(faces)
        expected = (torch.softmax(model(x), 1) + torch.softmax(model(x.flip(-1)), 1)) / 2
    assert np.allclose(predict_proba(model, faces, tta="flip"), expected.numpy(), atol=1e-6)
    with pytest.raises(ArgumentError, match="--tta 'rotate'"):
        predict_proba(model, faces, tta="rotate")
    with pytest.raises(EvaluationError, match="expected uint8 faces"):
        predict_proba(model, faces[:, :40])


def test_soft_protocol_evaluation_reports_kl_to_the_votes(tiny_runs, learnable_root):
    data = load_eval_split(learnable_root, "test", "crossentropy")
    evaluation = evaluate_run(tiny_runs[0], data, learnable_root, threads=1)
    assert evaluation.metrics["kl_divergence"] > 0
    assert evaluation.metrics_json()["protocol"] == "crossentropy"
    assert evaluation.metrics["accuracy"] > 0.6  # chance is 0.25: the run learned the task


def test_cli_evaluate_writes_every_file_and_prints_the_same_accuracy(tiny_runs, learnable_root, tmp_path):
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "-m", str(tiny_runs[0]), "--data", str(learnable_root),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["protocol"], metrics["split"], metrics["tta"], metrics["images"]) == (
        "majority", "test", "none", 64)
    assert set(metrics) >= {"accuracy", "macro", "weighted", "per_class", "macro_auc", "ece", "nll"}
    assert set(metrics["per_class"]["neutral"]) == {"precision", "recall", "f1", "support", "auc"}
    assert "kl_divergence" not in metrics  # majority is a hard protocol
    printed = " ".join(result.output.split())
    assert f"accuracy {metrics['accuracy']:.4f}" in printed
    assert f"macro F1 {metrics['macro']['f1']:.4f}" in printed
    assert f"happiness │ {metrics['per_class']['happiness']['recall']:.4f}" in printed  # recall table
    report = (out / "report.md").read_text()
    assert "Most confused pairs" in report and "worst_misclassified.png" in report
    assert f"{metrics['accuracy']:.3f}" in report
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and ".png\"" not in page  # standalone
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 65 and predictions[0].startswith("image,true,predicted,neutral")


def test_cli_compare_writes_table_and_matrices(tiny_runs, learnable_root):
    run_a, run_b = tiny_runs
    result = runner.invoke(app, ["compare", "-m", str(run_a), "--model", str(run_b),
                                 "--data", str(learnable_root)])
    assert result.exit_code == 0, result.output
    out = run_b / "compare-tiny-a-vs-tiny-b"
    for name in COMPARE_FILES:
        assert (out / name).is_file(), name
    numbers = json.loads((out / "compare.json").read_text())
    a, b = numbers["a"], numbers["b"]
    assert numbers["deltas"]["accuracy"] == pytest.approx(b["accuracy"] - a["accuracy"])
    assert numbers["deltas"]["happiness recall"] == pytest.approx(
        b["per_class"]["happiness"]["recall"] - a["per_class"]["happiness"]["recall"])
    assert numbers["deltas"]["contempt f1"] is None  # no contempt faces in the synthetic test split
    table = (out / "compare.md").read_text()
    delta = b["accuracy"] - a["accuracy"]
    assert f"| accuracy | {a['accuracy']:.3f} | {b['accuracy']:.3f} | {delta:+.3f} |" in table
    assert "confusion_matrices.png" in table
    agreement = numbers["agreement"]
    assert sum(agreement[k] for k in ("only_a_right", "only_b_right", "both_right", "both_wrong")) == 64


def test_cli_compare_takes_a_bundled_name_and_never_writes_into_the_package(tiny_runs, learnable_root,
                                                                            tmp_path, monkeypatch):
    from ferkit.models.bundled import weights_root

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["compare", "-m", str(tiny_runs[0]), "-m", "baseline", "--data",
                                 str(learnable_root)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "compare-tiny-a-vs-baseline" / "compare.json").is_file()
    assert not list(weights_root().glob("*/compare-*"))


def test_cli_errors_are_one_readable_line(tiny_runs, tmp_path):
    result = runner.invoke(app, ["evaluate", "-m", str(tmp_path / "nope"), "--data", str(tmp_path)])
    assert result.exit_code == 1 and "nope': not a bundled model name (bundled: default" in result.output
    result = runner.invoke(app, ["compare", "-m", str(tiny_runs[0]), "-m", str(tmp_path / "gone")])
    assert result.exit_code == 1 and "gone': not a bundled model name" in result.output
    # a split where every image is "not a face": nothing is left to evaluate
    empty = write_microsoft_root(tmp_path / "empty", votes=[[0] * 9 + [10]])
    result = runner.invoke(app, ["evaluate", "-m", str(tiny_runs[0]), "--data", str(empty)])
    assert result.exit_code == 1 and "test split has no images under protocol 'majority'" in result.output
    result = runner.invoke(app, ["evaluate", "-m", str(tiny_runs[0]), "--data", str(empty), "--tta", "twice"])
    # a choice outside an option's list: refused before any work, naming the option and the choices
    said = " ".join(result.output.replace("│", " ").split())  # typer's error box, unwrapped
    assert result.exit_code == 2 and "Invalid value for '--tta'" in said
    assert "'twice' is not one of 'none', 'flip'" in said
    result = runner.invoke(app, ["evaluate", "-m", str(tiny_runs[0]), "--data", str(empty),
                                 "--protocol", "soft"])
    assert result.exit_code == 2 and "Invalid value for '--protocol'" in result.output


def test_model_card_says_where_the_plateau_schedule_cut_and_why_the_run_stopped():
    from ferkit.release.model_card import _recipe

    history = [{"epoch": e, "lr": 0.001 if e <= 6 else 0.0002, "val_loss": 1.0 / e if e <= 5 else 0.3}
               for e in range(1, 14)]
    training = {"config": {"optimizer": "adam", "lr": 0.001, "schedule": "plateau", "epochs": 60,
                           "early_stopping_patience": 8},
                "epochs_trained": 13, "best_epoch": 5, "history": history}
    text = _recipe(training)
    assert "learning rate cut after epoch 6 (0.001 -> 0.0002)" in text
    assert "stopped early at epoch 13 (8 epochs without a better validation loss)" in text
    assert "stopped early" not in _recipe({**training, "epochs_trained": 13, "best_epoch": 12})
