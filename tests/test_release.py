"""Release tooling: `ferkit bundle` ships a run as a bundled model, `ferkit card` describes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_train_config, write_random_model

from ferkit.errors import ModelFileError
from ferkit.models import bundled, load
from ferkit.release import bundle


def test_bundle_run_copies_weights_and_metrics(learnable_root, tmp_path, monkeypatch):
    from ferkit.release.model_card import model_card
    from ferkit.training.run import train

    command = "ferkit train --config configs/tiny.yaml --set threads=1"
    run = train(tiny_train_config(learnable_root, tmp_path / "runs", "tiny", epochs=1), command=command)
    with pytest.raises(ModelFileError, match="ferkit evaluate"):
        bundle.bundle_run(run, "tiny")
    (run / "eval-test").mkdir()
    (run / "eval-test" / "metrics.json").write_text(json.dumps(
        {"split": "test", "protocol": "majority", "accuracy": 0.5, "calibration": {}}))
    monkeypatch.setattr(bundled, "weights_root", lambda: tmp_path / "weights")
    target = bundle.bundle_run(run, "tiny", provisional=True)
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["accuracy"] == 0.5 and metrics["provisional"] is True
    assert metrics["training"]["epochs_trained"] == 1 and "calibration" not in metrics
    assert metrics["evaluate_command"] == "ferkit evaluate -m tiny --split test --protocol majority"
    assert metrics["training"]["commands"] == [command]
    card = model_card(target, "tiny")
    assert f"```\n{command}\nferkit evaluate -m runs/tiny --split test" in card
    assert "ferkit bundle -m runs/tiny --name tiny --provisional\n" in card  # reproduces the flag too
    a, b = load(run), load(target)
    x = np.zeros((1, 1, 48, 48), np.float32)
    import torch

    torch.testing.assert_close(a(torch.from_numpy(x)), b(torch.from_numpy(x)))
    assert "default_prior" not in metrics  # FERPlus's: the probabilities as trained

    # a default class prior for photos: recorded, used by a Predictor not told otherwise, reproduced
    from ferkit import Predictor
    from ferkit.errors import ArgumentError

    with pytest.raises(ArgumentError, match="--prior"):
        bundle.bundle_run(run, "tiny-bad", default_prior="neutral:0")
    assert not (tmp_path / "weights" / "tiny-bad").exists()  # nothing written for a bad prior
    target = bundle.bundle_run(run, "tiny-photos", default_prior="neutral:0.7")
    assert json.loads((target / "metrics.json").read_text())["default_prior"] == "neutral:0.7"
    assert str(Predictor(target).prior) == "neutral:0.7"
    assert str(Predictor(target, prior="ferplus").prior) == "ferplus"
    card = model_card(target, "tiny-photos")
    assert "ferkit bundle -m runs/tiny --name tiny-photos --default-prior neutral:0.7\n" in card
    assert "`neutral:0.7`" in card.split("## Reproduce")[0]  # said in words, not only in the command

    # a malformed evaluation, or the bundled folder given as the run: refused, the install untouched
    installed = {p.name: p.read_bytes() for p in target.iterdir()}
    (run / "eval-test" / "metrics.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="metrics.json: not valid JSON"):
        bundle.bundle_run(run, "tiny-photos")
    with pytest.raises(ArgumentError, match="is the bundled model 'tiny-photos' itself"):
        bundle.bundle_run(target, "tiny-photos", evaluation=run / "eval-test")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == installed


def test_card_prints_every_bundled_model_default_first(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ferkit.cli import app

    for name, accuracy in (("deep_cnn", 0.81), ("default", 0.86)):
        write_random_model(tmp_path / name, metrics={"split": "test", "protocol": "majority",
                                                     "accuracy": accuracy, "images": 3137})
    monkeypatch.setattr(bundled, "weights_root", lambda: tmp_path)
    result = CliRunner().invoke(app, ["card"])
    assert result.exit_code == 0, result.output
    first, second = result.output.split("\n---\n")
    assert first.startswith("# Model card: ferkit `default`") and "**Accuracy 86.0%**" in first
    assert "# Model card: ferkit `deep_cnn`" in second and "**Accuracy 81.0%**" in second
    result = CliRunner().invoke(app, ["card", "-m", "deep_cnn"])
    assert result.exit_code == 0 and result.output.startswith("# Model card: ferkit `deep_cnn`")
    assert "\n---\n" not in result.output
    result = CliRunner().invoke(app, ["card", "-m", "nope"])
    assert result.exit_code == 1 and "no bundled model 'nope'; bundled: default, deep_cnn" in result.output


def test_bundled_ensemble_reports_each_member_run_and_the_totals(tmp_path, monkeypatch):
    from ferkit.models.folder import append_command
    from ferkit.models.io import save_ensemble
    from ferkit.release.model_card import model_card

    monkeypatch.chdir(tmp_path)  # member runs are recorded as given, relative to here
    for seed, seconds in ((0, [60, 60]), (1, [30, 30, 30])):
        run = write_random_model(Path(f"runs/m{seed}"), seed=seed)
        (run / "history.json").write_text(json.dumps([{"epoch": i + 1, "seconds": s}
                                                      for i, s in enumerate(seconds)]))
        (run / "config.yaml").write_text(f"optimizer: sgd\nseed: {seed}\n")
        append_command(run, f"ferkit train --config configs/resnet.yaml --set seed={seed}")
    ensemble = save_ensemble([Path("runs/m0"), Path("runs/m1")], Path("runs/ens"),
                             command="ferkit ensemble runs/m0 runs/m1 --out runs/ens")
    (ensemble / "eval-test").mkdir()
    (ensemble / "eval-test" / "metrics.json").write_text(json.dumps(
        {"split": "test", "protocol": "majority", "accuracy": 0.9}))
    monkeypatch.setattr(bundled, "weights_root", lambda: tmp_path / "weights")
    training = json.loads((bundle.bundle_run(ensemble, "default") / "metrics.json").read_text())["training"]
    assert [m["run"] for m in training["members"]] == ["m0", "m1"]
    assert training["epochs_trained"] == 5 and training["train_seconds"] == 210
    assert training["longest_member_seconds"] == 120
    assert training["commands"] == ["ferkit train --config configs/resnet.yaml --set seed=0",
                                    "ferkit train --config configs/resnet.yaml --set seed=1",
                                    "ferkit ensemble runs/m0 runs/m1 --out runs/ens"]
    card = model_card(tmp_path / "weights" / "default", "default")
    assert "An ensemble of 2 independently trained runs" in card and "run `m1`: `baseline`" in card
    # recorded before -m/--model named every model: shown as it is typed today
    assert "\nferkit ensemble -m runs/m0 -m runs/m1 --out runs/ens\n" in card
    import shutil

    shutil.rmtree("runs/m1")
    with pytest.raises(ModelFileError, match="ensemble member runs not found: runs/m1"):
        bundle.bundle_run(ensemble, "default")


def test_a_bundled_models_training_record_is_reported_when_it_is_reused(tmp_path):
    """Members written out of a bundled ensemble have no history, only the record the bundle kept."""
    record = {"run": "old-m0", "epochs_trained": 38, "train_seconds": 6840.0, "commands": ["ferkit train"]}
    member = write_random_model(tmp_path / "old-m0")
    (member / "metrics.json").write_text(json.dumps({"training": record}))
    assert bundle.training_info(member) == record
    (member / "history.json").write_text(json.dumps([{"epoch": 1, "seconds": 5}]))  # a run of its own
    assert bundle.training_info(member)["epochs_trained"] == 1


def test_a_bundled_model_with_a_retrained_head_reports_its_source_training_then_the_head(tmp_path,
                                                                                          monkeypatch):
    """`ferkit retrain-head default` then `ferkit bundle ... --name default`: the record names the
    original training and the re-training command, read before the bundle replaces its own source."""
    from ferkit.models.folder import append_command

    monkeypatch.setattr(bundled, "weights_root", lambda: tmp_path / "weights")
    source = write_random_model(tmp_path / "weights" / "default")
    record = {"run": "ens", "epochs_trained": 80, "train_seconds": 100.0, "commands": ["ferkit ensemble"]}
    (source / "metrics.json").write_text(json.dumps({"training": record}))
    crt = write_random_model(tmp_path / "runs" / "crt", seed=1)
    config = json.loads((crt / "model.json").read_text())
    config["head_retrained"] = {"from": "default", "protocol": "all_votes", "balance": "full"}
    (crt / "model.json").write_text(json.dumps(config))
    append_command(crt, "ferkit retrain-head default --out runs/crt")
    (crt / "eval-test").mkdir()
    (crt / "eval-test" / "metrics.json").write_text(json.dumps({"split": "test", "accuracy": 0.9}))
    training = json.loads((bundle.bundle_run(crt, "default") / "metrics.json").read_text())["training"]
    assert training["epochs_trained"] == 80 and training["head_retrained"]["balance"] == "full"
    assert training["commands"] == ["ferkit ensemble", "ferkit retrain-head default --out runs/crt"]


def test_the_card_says_which_export_runs_and_why_int8_was_not_shipped():
    from ferkit.models.bundled import weights_root
    from ferkit.release.model_card import model_card

    for name in ("default", "fast", "deep_cnn", "baseline"):
        card = model_card(weights_root() / name, name)
        onnx = json.loads((weights_root() / name / "metrics.json").read_text())["onnx"]
        assert f"Runs by default on ONNX Runtime, {onnx['precision']} (`{onnx['runs']}`)" in card
        assert ("int8 not shipped, the rule being" in card) == (onnx["precision"] == "fp32")
