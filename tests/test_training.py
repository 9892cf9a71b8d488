"""The training pipeline end to end on a tiny learnable synthetic task (seconds, not hours)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_RESNET, tiny_train_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from ferkit.cli import app
from ferkit.errors import ArgumentError, ConfigError
from ferkit.models import load
from ferkit.training.augment import BatchAugment
from ferkit.training.config import AugmentConfig, TrainConfig, load_config, parse_override, save_config
from ferkit.training.distill import TEACHER_FILE, cached_teacher_probabilities, mix_targets
from ferkit.training.module import FerClassifier
from ferkit.training.run import resume_config, train


class SimulatedCrash(RuntimeError):
    """Raised by StopAfterEpochs."""


class StopAfterEpochs(L.Callback):
    """Crash at the start of epoch N+1, after epoch N's checkpoint is written: a run killed
    mid-way, for the resume tests."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epochs:
            raise SimulatedCrash(f"simulated crash after epoch {self.epochs}")


def test_training_learns_and_writes_a_complete_run_folder(learnable_root, tmp_path):
    run = train(tiny_train_config(learnable_root, tmp_path, "full", epochs=4))
    for name in ("model.safetensors", "model.json", "model_summary.txt", "history.json",
                 "curves.png", "config.yaml", "train.log", "logs/metrics.csv",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert set(history[0]) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert max(h["val_acc"] for h in history) > 0.6  # chance is 0.25
    meta = json.loads((run / "model.json").read_text())
    assert meta["architecture"] == "resnet" and meta["protocol"] == "crossentropy"
    assert meta["metrics"]["best_epoch"] == min(history, key=lambda h: h["val_loss"])["epoch"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["seed"] == 0 and saved["model_args"] == TINY_RESNET
    assert "ferkit 0.1.0" in (run / "config.yaml").read_text().splitlines()[0]
    assert "Total params" in (run / "model_summary.txt").read_text()
    assert "epoch 4:" in (run / "train.log").read_text()
    model = load(run)
    assert model(torch.zeros(2, 1, 48, 48)).shape == (2, 8)


def test_resume_after_a_crash_matches_an_uninterrupted_run(learnable_root, tmp_path):
    straight = train(tiny_train_config(learnable_root, tmp_path, "straight"))
    crashed = tiny_train_config(learnable_root, tmp_path, "crashed")
    with pytest.raises(SimulatedCrash):
        train(crashed, extra_callbacks=[StopAfterEpochs(1)])
    run = tmp_path / "crashed"
    assert len(json.loads((run / "history.json").read_text())) == 1
    assert not (run / "model.safetensors").exists()
    # a kill between epoch 2's validation and its last.ckpt leaves its row logged, not checkpointed
    metrics = run / "logs" / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    with metrics.open("a") as fh:
        fh.write(",".join({"epoch": "1", "step": "999", "val_loss": "9.9"}.get(k, "") for k in header) + "\n")

    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    a, b = load_file(straight / "model.safetensors"), load_file(run / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    reference = json.loads((straight / "history.json").read_text())
    assert [round(h["val_loss"], 5) for h in history] == [round(h["val_loss"], 5) for h in reference]
    # the CSV log keeps the epoch logged before the crash (rows are appended, not started afresh),
    # once each: the row of the epoch the checkpoint did not keep is gone
    import csv

    with metrics.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_loss")]
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2] and "9.9" not in {r["val_loss"] for r in rows}


class PressCtrlC(L.Callback):
    """Ctrl-C at the start of epoch N+1: what a user stopping a long run does."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epochs:
            raise KeyboardInterrupt


def test_ctrl_c_leaves_the_best_epoch_so_far_as_the_model_and_resume_goes_on(learnable_root, tmp_path):
    import signal

    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            train(tiny_train_config(learnable_root, tmp_path, "stopped"), extra_callbacks=[PressCtrlC(2)])
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores SIGINT after a Ctrl-C
    run = tmp_path / "stopped"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    meta = json.loads((run / "model.json").read_text())
    assert meta["metrics"]["best_epoch"] == min(history, key=lambda h: h["val_loss"])["epoch"]
    assert load(run)(torch.zeros(1, 1, 48, 48)).shape == (1, 8)
    assert "--resume" in (run / "train.log").read_text()
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1, 2, 3]


def crashed_run(root: Path, runs: Path, name: str) -> Path:
    with pytest.raises(SimulatedCrash):
        train(tiny_train_config(root, runs, name), extra_callbacks=[StopAfterEpochs(1)])
    return runs / name


def test_resume_refuses_to_change_what_the_checkpoint_brings_back(learnable_root, tmp_path):
    """`--resume --set lr=...` would be written to config.yaml and never used (the optimizer state wins);
    `epochs` under one-cycle would crash the restored schedule. Where and how it computes may change."""
    run = crashed_run(learnable_root, tmp_path, "crashed")
    saved = (run / "config.yaml").read_text()
    for change in (["--set", "lr=0.5"], ["--set", "augment.mixup=0.3"]):
        result = CliRunner().invoke(app, ["train", "--resume", str(run), *change])
        assert result.exit_code == 1 and "cannot change on --resume" in result.output, result.output
    one_cycle = tiny_train_config(learnable_root, tmp_path, "x", schedule="onecycle")
    save_config(one_cycle, run / "config.yaml")
    with pytest.raises(ConfigError, match="epochs cannot change on --resume"):
        resume_config(run, [{"epochs": 9}])
    (run / "config.yaml").write_text(saved)
    assert resume_config(run, [{"epochs": 9, "threads": 2}]).epochs == 9  # plateau: more epochs is fine


def test_a_moved_run_folder_keeps_its_best_checkpoint_score(learnable_root, tmp_path):
    """A run copied elsewhere (another machine, a new name) resumes with the best val_loss it had, so
    the next epoch replaces best.ckpt only if it is better (Lightning alone forgets the score)."""
    import shutil

    from lightning.pytorch.callbacks import ModelCheckpoint

    from ferkit.training.callbacks import RunCheckpoint

    run = crashed_run(learnable_root, tmp_path, "crashed")
    moved = tmp_path / "elsewhere" / "crashed"
    shutil.move(str(run), str(moved))
    state = torch.load(moved / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    kwargs = {"monitor": "val_loss", "mode": "min", "save_top_k": 1, "filename": "best"}
    callback = RunCheckpoint(dirpath=moved / "checkpoints", **kwargs)
    assert callback.state_key == ModelCheckpoint(dirpath=moved / "checkpoints", **kwargs).state_key
    saved = state["callbacks"][callback.state_key]
    assert str(tmp_path / "crashed") in saved["dirpath"]
    callback.load_state_dict(saved)
    assert callback.best_model_score == saved["best_model_score"] is not None
    assert Path(callback.best_model_path) == (moved / "checkpoints/best.ckpt").resolve()
    result = CliRunner().invoke(app, ["train", "--resume", str(moved)])
    assert result.exit_code == 0, result.output


class RunsCode:
    """Unpickling this executes code: what a tampered checkpoint would carry."""

    def __reduce__(self):
        import os

        return (os.system, ("touch ferkit-tampered-checkpoint-ran",))


def test_resume_on_the_checkpoint_of_another_network_is_one_line(learnable_root, tmp_path):
    run = crashed_run(learnable_root, tmp_path, "crashed")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model_args"]["widths"] = [8, 16, 32]  # the config now describes a wider network
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1, result.output
    assert "holds the weights of another network" in result.output and "Traceback" not in result.output


def test_resume_refuses_a_tampered_or_truncated_checkpoint_whatever_the_environment(
        learnable_root, tmp_path, monkeypatch):
    run = crashed_run(learnable_root, tmp_path, "crashed")
    last = run / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    last.write_bytes(good[:len(good) // 2])  # truncated (disk full, killed while copying)
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1 and "damaged or not a ferkit checkpoint" in result.output
    assert "Traceback" not in result.output

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's own default is off then
    torch.save({"state_dict": {}, "payload": RunsCode()}, last)
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 1 and "damaged or not a ferkit checkpoint" in result.output
    assert not (tmp_path / "ferkit-tampered-checkpoint-ran").exists()


def test_a_run_that_fails_before_its_first_epoch_leaves_no_folder_and_skip_bad_trains(tmp_path):
    from conftest import write_learnable_root

    root = write_learnable_root(tmp_path / "data", {"train": 64, "valid": 16, "test": 8})
    (root / "FER2013Train" / "train00003.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path, root)), "--name", "r"])
    assert result.exit_code == 1 and "train00003.png" in result.output and "--skip-bad" in result.output
    assert not (tmp_path / "runs" / "r").exists()  # the same command can simply be run again
    result = CliRunner().invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path, root)), "--name", "r",
                                      "--skip-bad", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "skipped (--skip-bad)" in (tmp_path / "runs" / "r" / "train.log").read_text()


def test_an_empty_split_is_named_before_training(tmp_path):
    from conftest import write_learnable_root

    root = write_learnable_root(tmp_path / "data", {"train": 32, "valid": 0, "test": 8})
    result = CliRunner().invoke(app, ["train", "--config", str(_tiny_yaml(tmp_path, root)), "--name", "e"])
    assert result.exit_code == 1, result.output
    assert "the valid split has no images" in result.output and "Traceback" not in result.output


def _tiny_yaml(folder: Path, root: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": "resnet", "model_args": TINY_RESNET, "data": str(root),
                                    "runs_dir": str(folder / "runs"), "epochs": 1, "batch_size": 16,
                                    "threads": 1, "progress_bar": False, "early_stopping_patience": 0,
                                    "augment": {"enabled": False}}))
    return path


class ValLossWorsensAfterFirstEpoch(L.Callback):
    """Makes epoch 1 the best for good: later epochs report a higher val_loss to the checkpoints."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.callback_metrics["val_loss"] = torch.tensor(1.0 + trainer.current_epoch)


def test_last_checkpoint_is_the_last_epoch_even_without_a_new_best(learnable_root, tmp_path):
    # a killed run resumes from last.ckpt: it must hold the last finished epoch, not the best one
    run = train(tiny_train_config(learnable_root, tmp_path, "no-new-best", epochs=3),
                extra_callbacks=[ValLossWorsensAfterFirstEpoch()])
    # our own checkpoints, written by the run above: Lightning's format needs the full unpickler
    last = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    best = torch.load(run / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)
    assert (best["epoch"], last["epoch"]) == (0, 2)


def test_keep_epoch_last_writes_the_last_epoch_and_a_resume_can_switch_to_it(learnable_root, tmp_path):
    from ferkit.release.bundle import training_info
    from ferkit.release.model_card import _recipe

    run = train(tiny_train_config(learnable_root, tmp_path, "keep", epochs=3),
                extra_callbacks=[ValLossWorsensAfterFirstEpoch()])

    def checkpoint(name: str) -> dict[str, torch.Tensor]:
        state = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]
        return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}

    def written_is(weights: dict[str, torch.Tensor]) -> bool:
        model = load_file(run / "model.safetensors")
        return set(model) == set(weights) and all(torch.equal(model[k], weights[k]) for k in weights)

    best, last = checkpoint("best.ckpt"), checkpoint("last.ckpt")
    assert not written_is(last) and written_is(best)  # keep_epoch: best, the default
    train(resume_config(run, [{"keep_epoch": "last"}]), resume=run)  # nothing left to train: rewrites
    assert written_is(last)
    assert json.loads((run / "model.json").read_text())["metrics"]["kept_epoch"] == 3
    assert "the last epoch (3) kept" in _recipe(training_info(run))


def test_time_budget_stops_the_run_and_still_exports_the_model(learnable_root, tmp_path):
    # A budget of ~1 ms: Lightning's Timer stops after the first step, and the run folder is complete.
    run = train(tiny_train_config(learnable_root, tmp_path, "budget", epochs=50, max_hours=3e-7))
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1
    assert (run / "model.safetensors").is_file() and (run / "checkpoints/best.ckpt").is_file()


@pytest.mark.parametrize(("protocol", "balance"),
                         [("probability", "weights"), ("multi_target", "weights"), ("majority", "sampling")])
def test_every_protocol_trains(learnable_root, tmp_path, protocol, balance):
    run = train(tiny_train_config(learnable_root, tmp_path, protocol, protocol=protocol, epochs=1,
                            limit_train_batches=2, class_balance=balance, ema_decay=0.9,
                            label_smoothing=0.1, augment={"enabled": True, "flip": False, "mixup": 0.2}))
    assert json.loads((run / "model.json").read_text())["protocol"] == protocol


def test_class_balance_sampling_reaches_the_training_batches(learnable_root, tmp_path):
    """The config key, not only the sampler: `class_balance=sampling` makes the training loader draw
    by square-root weights, and validation stays a plain pass over every face."""
    from ferkit.training.run import _datamodule

    for balance, sampled in (("sampling", True), ("none", False)):
        config = tiny_train_config(learnable_root, tmp_path, balance, class_balance=balance)
        datamodule = _datamodule(config, tmp_path / balance)
        assert (datamodule.train_dataloader().sampler.weights is not None) == sampled
        assert datamodule.val_dataloader().sampler.weights is None


def test_distillation_trains_on_the_teachers_predictions(learnable_root, tiny_runs, tmp_path):
    import numpy as np

    from ferkit.data import label_split, load_ferplus
    from ferkit.evaluation.predict import predict_proba
    from ferkit.release.bundle import training_info
    from ferkit.release.model_card import _recipe

    teacher = tiny_runs[0]
    run = train(tiny_train_config(learnable_root, tmp_path, "student", teacher=str(teacher),
                                  distill_weight=0.7, epochs=2))
    train_faces = label_split(load_ferplus(learnable_root, splits=("train",))["train"], "crossentropy")
    probs = np.load(run / TEACHER_FILE, allow_pickle=False)
    # T=1: the teacher's own softmax on every training face, in the split's order
    np.testing.assert_allclose(probs, predict_proba(load(teacher), train_faces.images), atol=1e-5)
    assert "distillation: weight 0.7" in (run / "train.log").read_text()
    info = training_info(run)
    assert info["teacher"]["run"] == teacher.name
    assert info["train_seconds_with_teacher"] > info["train_seconds"]
    assert f"distilled from `{teacher}`" in _recipe(info)  # the model card names the teacher
    assert load(run)(torch.zeros(1, 1, 48, 48)).shape == (1, 8)


def test_function_matching_trains_on_stored_views_with_the_teachers_answer_for_each(
        learnable_root, tiny_runs, tmp_path):
    import numpy as np

    from ferkit.data import label_split, load_ferplus
    from ferkit.inference import Predictor
    from ferkit.training.data import ViewBatches
    from ferkit.training.distill import VIEW_PROBS_FILE, VIEWS_FILE

    teacher = tiny_runs[0]
    run = train(tiny_train_config(learnable_root, tmp_path, "matched", teacher=str(teacher),
                                  teacher_views=3, distill_weight=0.8, epochs=1,
                                  augment={"enabled": True, "flip": False}))
    faces = label_split(load_ferplus(learnable_root, splits=("train",))["train"], "crossentropy").images
    views = np.load(run / VIEWS_FILE, mmap_mode="r")
    probs = np.load(run / VIEW_PROBS_FILE).astype(np.float32)
    assert views.shape == (3, *faces.shape) and probs.shape == (3, len(faces), 8)
    assert not np.array_equal(views[0], views[1]) and not np.array_equal(views[0], faces)  # augmented
    # the teacher's answer for each stored view (its default path; float16 storage)
    np.testing.assert_allclose(probs[2], Predictor(teacher, prior="ferplus").predict_faces(
        np.ascontiguousarray(views[2])), atol=2e-3)
    assert "3 views a face, weight 0.8" in (run / "train.log").read_text()
    # a batch: each face's view and the target for that very view
    votes = np.eye(8, dtype=np.float32)[np.arange(len(faces)) % 8]
    batch = ViewBatches(views, votes, probs, weight=0.8)
    torch.manual_seed(0)
    images, targets = batch[[0, 1, 2]]
    torch.manual_seed(0)
    k = torch.randint(3, (3,))
    for row, (face, view) in enumerate(zip([0, 1, 2], k.tolist(), strict=True)):
        np.testing.assert_array_equal(images[row, 0].numpy(), views[view, face])
        expected = 0.2 * votes[face] + 0.8 * probs[view, face]
        np.testing.assert_allclose(targets[row].numpy(), expected, atol=1e-6)


def test_a_run_interrupted_before_its_first_epoch_keeps_its_teacher_pass(learnable_root, tiny_runs, tmp_path):
    import hashlib

    from ferkit.training.distill import VIEW_PROBS_FILE, VIEW_STAMP_FILE, VIEWS_FILE

    config = tiny_train_config(learnable_root, tmp_path, "cut", teacher=str(tiny_runs[0]), teacher_views=2,
                               epochs=1, augment={"enabled": True, "flip": False})
    with pytest.raises(SimulatedCrash):
        train(config, extra_callbacks=[StopAfterEpochs(0)])  # interrupted after the teacher pass
    run = tmp_path / "cut"
    kept = {p.name for p in run.iterdir()}
    assert kept == {VIEWS_FILE, VIEW_PROBS_FILE, VIEW_STAMP_FILE}  # a finished pass, nothing partial
    stored = hashlib.sha256((run / VIEWS_FILE).read_bytes()).hexdigest()
    (run / "train.log").write_text("a run killed outright leaves its log and config behind\n")
    (run / "config.yaml").write_text("model: resnet\n")
    train(config)  # the same command again: starts over, reusing the stored views and answers
    log = (run / "train.log").read_text()
    assert "drawing" not in log and "epoch 1:" in log and "killed outright" not in log
    assert hashlib.sha256((run / VIEWS_FILE).read_bytes()).hexdigest() == stored
    with pytest.raises(ConfigError, match="run folder exists"):
        train(config)  # a run with a finished epoch is resumed, never started over


def test_a_teacher_pass_cut_short_goes_on_from_the_last_view_answered(tiny_runs, tmp_path, monkeypatch):
    import numpy as np
    from conftest import learnable_image

    from ferkit.inference.predictor import Predictor
    from ferkit.training.distill import PARTIAL_PROBS_FILE, PARTIAL_STAMP_FILE, cached_teacher_views

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(8)])
    augment, teacher = AugmentConfig(flip=False), str(tiny_runs[0])
    (tmp_path / "whole").mkdir()
    (tmp_path / "cut").mkdir()
    whole_views, whole_probs = cached_teacher_views(tmp_path / "whole", teacher, faces, augment, 3, 1.0, 0)
    answer, asked = Predictor.predict_faces, []

    def counted(self, *args, **kwargs):
        asked.append(1)
        return answer(self, *args, **kwargs)

    def killed_at_the_second_view(self, *args, **kwargs):
        if asked:
            raise KeyboardInterrupt
        return counted(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, "predict_faces", killed_at_the_second_view)
    with pytest.raises(KeyboardInterrupt):
        cached_teacher_views(tmp_path / "cut", teacher, faces, augment, 3, 1.0, 0)
    assert (tmp_path / "cut" / PARTIAL_STAMP_FILE).is_file()
    asked.clear()
    monkeypatch.setattr(Predictor, "predict_faces", counted)
    views, probs = cached_teacher_views(tmp_path / "cut", teacher, faces, augment, 3, 1.0, 0)
    assert len(asked) == 2  # views 2 and 3 only: view 1's answers were kept
    np.testing.assert_array_equal(views, whole_views)
    np.testing.assert_array_equal(probs, whole_probs)
    assert not (tmp_path / "cut" / PARTIAL_PROBS_FILE).exists()
    assert not (tmp_path / "cut" / PARTIAL_STAMP_FILE).exists()


def test_stored_views_serve_any_mixup_but_not_other_view_settings(tiny_runs, tmp_path):
    import dataclasses

    import numpy as np
    from conftest import learnable_image

    from ferkit.training.distill import VIEWS_FILE, cached_teacher_views

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(8)])
    augment = AugmentConfig(flip=False)
    views, probs = cached_teacher_views(tmp_path, str(tiny_runs[0]), faces, augment, 2, 1.0, 0)
    drawn = (tmp_path / VIEWS_FILE).stat().st_mtime_ns
    # mixup mixes batches during training, after the views: the stored pass still answers
    again, again_probs = cached_teacher_views(tmp_path, str(tiny_runs[0]), faces,
                                              dataclasses.replace(augment, mixup=0.4), 2, 1.0, 0)
    assert (tmp_path / VIEWS_FILE).stat().st_mtime_ns == drawn
    np.testing.assert_array_equal(again, views)
    np.testing.assert_array_equal(again_probs, probs)
    cached_teacher_views(tmp_path, str(tiny_runs[0]), faces, dataclasses.replace(augment, rotation=0.0), 2,
                         1.0, 0)
    assert (tmp_path / VIEWS_FILE).stat().st_mtime_ns != drawn  # other views: drawn again


def test_mixed_views_are_answered_by_the_teacher_as_mixed_and_their_votes_mixed_alike(
        learnable_root, tiny_runs, tmp_path):
    import dataclasses

    import numpy as np
    from conftest import learnable_image

    from ferkit.inference import Predictor
    from ferkit.training.data import ViewBatches
    from ferkit.training.distill import VIEW_PARTNERS_FILE, cached_teacher_views, load_view_mix

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(64)])
    plain = AugmentConfig(flip=False)
    (tmp_path / "plain").mkdir()
    (tmp_path / "mixed").mkdir()
    clean, _ = cached_teacher_views(tmp_path / "plain", str(tiny_runs[0]), faces, plain, 2, 1.0, 0)
    mixed, probs = cached_teacher_views(tmp_path / "mixed", str(tiny_runs[0]), faces,
                                        dataclasses.replace(plain, view_mixup=0.5), 2, 1.0, 0)
    partners, lambdas = load_view_mix(tmp_path / "mixed", 2, len(faces))
    chosen = lambdas < 1
    assert 0.25 < chosen.mean() < 0.75
    assert (partners[~chosen] == np.broadcast_to(np.arange(len(faces)), partners.shape)[~chosen]).all()
    # the same views as without mixing, blended with the partner's view by the stored lambda
    lam = lambdas[..., None, None]
    expected = np.round(lam * clean + (1 - lam) * np.take_along_axis(clean, partners[..., None, None], 1))
    assert np.abs(mixed.astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(mixed[~chosen], clean[~chosen])
    # the teacher answered the mixed face itself
    np.testing.assert_allclose(probs[1], Predictor(tiny_runs[0], prior="ferplus").predict_faces(
        np.ascontiguousarray(mixed[1])), atol=2e-3)
    # a batch: the vote part of a mixed view's target mixed by the same lambda
    votes = np.eye(8, dtype=np.float32)[np.arange(len(faces)) % 8]
    batches = ViewBatches(mixed, votes, probs, 0.8, partners, lambdas)
    torch.manual_seed(0)
    _, targets = batches[list(range(len(faces)))]
    torch.manual_seed(0)
    k = torch.randint(2, (len(faces),)).numpy()
    i = np.arange(len(faces))
    mixed_votes = lambdas[k, i, None] * votes + (1 - lambdas[k, i, None]) * votes[partners[k, i]]
    np.testing.assert_allclose(targets.numpy(), 0.2 * mixed_votes + 0.8 * probs[k, i], atol=1e-6)
    with pytest.raises(ConfigError, match="augment.view_mixup"):
        TrainConfig(augment=AugmentConfig(view_mixup=0.5)).validate()  # no stored views to mix
    run = train(tiny_train_config(learnable_root, tmp_path, "run", teacher=str(tiny_runs[0]), teacher_views=2,
                                  epochs=1, augment={"enabled": True, "flip": False, "view_mixup": 0.5}))
    assert (run / VIEW_PARTNERS_FILE).is_file() and "epoch 1:" in (run / "train.log").read_text()


def test_a_run_takes_another_runs_teacher_pass_and_never_writes_through_it(tiny_runs, tmp_path):
    import hashlib

    import numpy as np
    from conftest import learnable_image

    from ferkit.training.distill import VIEW_PROBS_FILE, VIEWS_FILE, cached_teacher_views

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(8)])
    augment = AugmentConfig(flip=False)
    source, run, other = tmp_path / "source", tmp_path / "run", tmp_path / "other"
    for folder in (source, run, other):
        folder.mkdir()
    views, probs = cached_teacher_views(source, str(tiny_runs[0]), faces, augment, 2, 1.0, 0)
    before = {name: hashlib.sha256((source / name).read_bytes()).hexdigest()
              for name in (VIEWS_FILE, VIEW_PROBS_FILE)}
    with pytest.raises(ConfigError, match=r"teacher_pass_from=.*other settings: teacher"):
        cached_teacher_views(run, "no-such-teacher", faces, augment, 2, 1.0, 0, reuse_from=source)
    taken, taken_probs = cached_teacher_views(run, str(tiny_runs[0]), faces, augment, 2, 1.0, 0,
                                              reuse_from=source)
    np.testing.assert_array_equal(taken, views)  # no teacher ran: the same views and answers
    np.testing.assert_array_equal(taken_probs, probs)
    with pytest.raises(ConfigError, match="no finished teacher pass"):
        cached_teacher_views(other, str(tiny_runs[0]), faces, augment, 2, 1.0, 0, reuse_from=tmp_path)
    # the same run folder redrawn with other settings gets files of its own; the source is untouched
    cached_teacher_views(run, str(tiny_runs[0]), faces, augment, 3, 1.0, 0)
    assert np.load(run / VIEWS_FILE).shape[0] == 3
    assert before == {name: hashlib.sha256((source / name).read_bytes()).hexdigest()
                      for name in (VIEWS_FILE, VIEW_PROBS_FILE)}
    with pytest.raises(ConfigError, match="teacher_pass_from"):
        TrainConfig(teacher="default", teacher_pass_from=str(source)).validate()  # no stored views


def test_reframed_views_start_from_the_pipelines_crop_of_that_share_of_the_faces(tmp_path):
    from conftest import learnable_image

    from ferkit.training.distill import draw_views

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(64)])
    reframed = 255 - faces  # any other crop of each face tells the two apart
    still = dict(flip=False, shift=0.0, rotation=0.0, scale=0.0, brightness=0.0, contrast=0.0, erasing=0.0)
    def views(augment: AugmentConfig, out: str, **kwargs) -> np.ndarray:
        return draw_views(faces, augment, 2, 0, tmp_path / out, **kwargs)

    assert (views(AugmentConfig(**still, reframe=1.0), "a.npy", reframed=reframed) == reframed[None]).all()
    half = views(AugmentConfig(**still, reframe=0.5), "b.npy", reframed=reframed)
    from_reframed = (half == reframed[None]).all(axis=(2, 3))
    assert ((half == faces[None]).all(axis=(2, 3)) | from_reframed).all()  # each view one or the other
    assert 0.3 < from_reframed.mean() < 0.7 and (from_reframed[0] != from_reframed[1]).any()  # per view
    # without reframe the views are drawn as they always were, re-framed faces or not
    np.testing.assert_array_equal(views(AugmentConfig(), "c.npy", reframed=reframed),
                                  views(AugmentConfig(), "d.npy"))
    with pytest.raises(ConfigError, match=r"augment.reframe=0.5 is invalid: expected 0 unless teacher_views"):
        TrainConfig(augment=AugmentConfig(reframe=0.5)).validate()


def test_reframing_cut_short_goes_on_from_the_last_faces_stored(tmp_path, monkeypatch):
    from conftest import learnable_image

    import ferkit.faces.reframe
    from ferkit.training import distill

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(10)])
    done, killed = [], []

    def pipeline(chunk, workers=1):  # the detector's crop stood in for by a mirror, 1 face in 3 "missed"
        if len(done) == 1 and not killed:
            killed.append(True)
            raise KeyboardInterrupt  # killed during the second chunk
        done.append(len(chunk))
        found = np.arange(len(chunk)) % 3 != 2
        return np.where(found[:, None, None], chunk[:, :, ::-1], chunk), found

    monkeypatch.setattr(ferkit.faces.reframe, "reframe_faces", pipeline)
    monkeypatch.setattr(distill, "REFRAME_CHUNK", 4)
    with pytest.raises(KeyboardInterrupt):
        distill.cached_reframes(tmp_path, faces)
    assert json.loads((tmp_path / distill.REFRAMED_STAMP_FILE).read_text())["done"] == 4
    framed = distill.cached_reframes(tmp_path, faces)
    assert done == [4, 4, 2]  # faces 5-10 only: the first four were kept
    (tmp_path / "whole").mkdir()
    np.testing.assert_array_equal(framed, distill.cached_reframes(tmp_path / "whole", faces))
    np.testing.assert_array_equal(framed[0], faces[0, :, ::-1])
    np.testing.assert_array_equal(framed[2], faces[2])
    assert done == [4, 4, 2, 4, 4, 2]
    distill.cached_reframes(tmp_path, faces)  # finished: nothing re-framed again
    assert len(done) == 6
    distill.cached_reframes(tmp_path, faces[::-1].copy())  # other faces: made afresh
    assert len(done) == 9


def test_teacher_temperature_mixing_and_cache(tiny_runs, tmp_path):
    import numpy as np
    from conftest import learnable_image

    rng = np.random.default_rng(0)
    faces = np.stack([learnable_image(i % 4, rng) for i in range(8)])
    sharp = cached_teacher_probabilities(tmp_path, str(tiny_runs[0]), faces, temperature=1.0)
    flat = cached_teacher_probabilities(tmp_path, str(tiny_runs[0]), faces, temperature=4.0)
    entropy = lambda p: -(p * np.log(p + 1e-12)).sum(1)  # noqa: E731
    assert (entropy(flat) > entropy(sharp)).all()  # a higher temperature passes on more of the rest
    np.testing.assert_allclose(flat.sum(1), 1, atol=1e-5)
    # the cache answers for the same (teacher, T, faces) without loading the teacher again
    missing = tmp_path / "gone"
    (tmp_path / (TEACHER_FILE + ".json")).write_text(json.dumps(
        {"teacher": str(missing), "temperature": 4.0, "faces": len(faces)}))
    np.testing.assert_array_equal(cached_teacher_probabilities(tmp_path, str(missing), faces, 4.0), flat)
    # a stamp cut short by a kill is no stamp: the answers are computed again, not trusted or a traceback
    (tmp_path / (TEACHER_FILE + ".json")).write_text('{"teacher": "')
    again = cached_teacher_probabilities(tmp_path, str(tiny_runs[0]), faces, temperature=1.0)
    np.testing.assert_allclose(again, sharp, atol=1e-6)
    assert json.loads((tmp_path / (TEACHER_FILE + ".json")).read_text())["temperature"] == 1.0
    votes = np.eye(8, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    np.testing.assert_array_equal(mix_targets(votes, flat, 0.0), votes)
    np.testing.assert_allclose(mix_targets(votes, flat, 0.25).sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(mix_targets(votes, flat, 1.0), flat)


def test_a_warm_started_run_begins_from_the_given_models_weights(learnable_root, tiny_runs, tmp_path):
    from ferkit.release.bundle import training_info
    from ferkit.release.model_card import _recipe

    trained, untrained = tiny_runs
    accuracy = {}
    for name, start in (("warm", trained), ("cold", untrained)):
        # lr 1e-6: one epoch barely moves the weights, so its validation shows where it started
        run = train(tiny_train_config(learnable_root, tmp_path, name, init=str(start), epochs=1, lr=1e-6))
        accuracy[name] = json.loads((run / "history.json").read_text())[0]["val_acc"]
        assert f"warm start: the weights of {start}" in (run / "train.log").read_text()
    assert accuracy["warm"] > 0.6 > accuracy["cold"]  # the trained start is kept; chance is 0.25
    warm = tmp_path / "warm"
    # the learned weights (BatchNorm's running statistics follow the new batches whatever the lr)
    before, after = dict(load(trained).named_parameters()), dict(load(warm).named_parameters())
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 1e-3
    info = training_info(warm)
    assert info["warm_start"]["run"] == trained.name
    assert info["commands"][:len(info["warm_start"]["commands"])] == info["warm_start"]["commands"]
    assert f"warm-started from `{trained}` (run {trained.name}," in _recipe(info)


def test_a_warm_start_that_does_not_fit_is_a_clear_error_before_any_work(learnable_root, tiny_runs, tmp_path):
    other = {**TINY_RESNET, "widths": [8, 16, 32]}
    with pytest.raises(ConfigError, match=r"init='.*tiny-a'.*not this run's \(resnet .*32"):
        train(tiny_train_config(learnable_root, tmp_path, "wide", init=str(tiny_runs[0]),
                                model_args=other))
    with pytest.raises(ConfigError, match="init='runs/nope'.*unknown model"):
        train(tiny_train_config(learnable_root, tmp_path, "orphan", init="runs/nope"))
    onnx = tmp_path / "tiny.onnx"
    onnx.write_bytes(b"")  # named as an ONNX model: refused for what it is before it is read
    with pytest.raises(ConfigError, match="init=.*an ONNX file, which holds no trainable weights"):
        train(tiny_train_config(learnable_root, tmp_path, "from-onnx", init=str(onnx)))
    assert not any((tmp_path / name).exists() for name in ("wide", "orphan", "from-onnx"))


def test_bad_teacher_is_a_clear_error(learnable_root, tmp_path):
    with pytest.raises(ConfigError, match="teacher=.*nope.*unknown model"):
        train(tiny_train_config(learnable_root, tmp_path, "orphan", teacher="runs/nope"))
    with pytest.raises(ConfigError, match="teacher='default' is invalid: expected no teacher with "
                                          "protocol multi_target"):
        load_config(None, [{"teacher": "default", "protocol": "multi_target"}])


@pytest.mark.parametrize("override,message", [
    ({"epochs": 0}, "epochs=0 is invalid"),
    ({"protocol": "soft"}, "protocol='soft' is invalid"),
    ({"model": "vgg99"}, "model='vgg99' is invalid"),
    ({"max_hours": -1}, "max_hours=-1.0 is invalid"),
    ({"lr": "fast"}, "config key lr: expected float"),
    ({"colour": True}, "unknown config key 'colour'"),
    ({"augment": {"erasing": 2}}, "augment.erasing=2"),
    ({"augment": 3}, "config key augment: expected a mapping"),
    ({"distill_weight": 1.5}, "distill_weight=1.5 is invalid"),
    ({"distill_temperature": 0}, "distill_temperature=0.0 is invalid"),
    ({"quant_aware": True, "ema_decay": 0.99}, "quant_aware=True is invalid"),
    ({"keep_epoch": "first"}, "keep_epoch='first' is invalid"),
])
def test_bad_config_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: deep_cnn\nepochs: 5\naugment:\n  mixup: 0.1\n")
    config = load_config(path, [parse_override("epochs=7"), parse_override("augment.flip=false")])
    assert (config.model, config.epochs, config.augment.mixup, config.augment.flip) == (
        "deep_cnn", 7, 0.1, False)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("epochs")


def test_cli_train_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path)])
    assert result.exit_code == 1 and "not a run folder" in result.output
    result = CliRunner().invoke(app, ["train", "--arch", "nope", "--data", str(tmp_path)])
    assert result.exit_code == 1 and "model='nope' is invalid" in result.output


def test_existing_run_folder_is_not_overwritten(learnable_root, tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model.json").write_text("{}")
    with pytest.raises(ConfigError, match="run folder exists"):
        train(tiny_train_config(learnable_root, tmp_path, "taken"))


def test_batch_augmentation_keeps_shape_range_and_changes_pixels():
    torch.manual_seed(0)
    x = torch.rand(16, 1, 48, 48)
    out = BatchAugment(AugmentConfig())(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, x)
    assert torch.equal(BatchAugment(AugmentConfig(enabled=False))(x), x)


@pytest.mark.parametrize("degradation", ["blur", "downscale", "jpeg", "gamma", "noise"])
def test_photo_like_degradations_change_faces_only_when_asked(degradation):
    torch.manual_seed(0)
    x = torch.rand(8, 1, 48, 48)
    only = AugmentConfig(flip=False, shift=0, rotation=0, scale=0, brightness=0, contrast=0, erasing=0)
    assert torch.allclose(BatchAugment(only)(x), x, atol=1e-5)  # every degradation is off by default
    out = BatchAugment(replace(only, **{degradation: 1.0}))(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    changed = (out - x).abs().flatten(1).max(dim=1).values > 1e-4
    assert changed.all(), f"{degradation} left {int((~changed).sum())} of 8 faces unchanged"
    if degradation == "blur":  # smoothing lowers the pixel-to-pixel differences
        assert (out.diff(dim=3).abs().mean() < x.diff(dim=3).abs().mean())


def test_photo_like_degradations_are_probabilities():
    with pytest.raises(ConfigError, match="augment.jpeg=2"):
        TrainConfig(augment=AugmentConfig(jpeg=2)).validate()


def test_logit_adjusted_loss_trains_on_shifted_logits_and_validates_on_raw_ones():
    """logit_adjustment=tau: the training loss sees logits + tau * log(class frequency) (Menon et al.),
    validation and export see the network's own logits."""
    from ferkit.training.module import soft_cross_entropy

    frequencies = torch.tensor([0.4, 0.3, 0.1, 0.1, 0.05, 0.02, 0.02, 0.01])
    config = TrainConfig(model="resnet", model_args=TINY_RESNET, logit_adjustment=0.5, channels_last=False,
                         augment=AugmentConfig(flip=False, shift=0, rotation=0, scale=0, brightness=0,
                                               contrast=0, erasing=0))
    module = FerClassifier(config, class_frequencies=frequencies).eval()  # eval: BatchNorm stays put
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    targets = torch.eye(8)[[0, 5, 7, 2]]
    module.log = lambda *args, **kwargs: None
    loss = module.training_step((images, targets), 0)
    logits = module.model(module._inputs(images, train=False))
    assert torch.allclose(loss, soft_cross_entropy(logits + 0.5 * torch.log(frequencies), targets), atol=1e-5)
    assert not torch.allclose(loss, soft_cross_entropy(logits, targets), atol=1e-3)
    with pytest.raises(ConfigError, match="logit_adjustment"):
        TrainConfig(logit_adjustment=-1).validate()
    with pytest.raises(ConfigError, match="remove it twice"):
        TrainConfig(logit_adjustment=0.5, class_balance="sampling").validate()


def test_fake_quantised_weights_sit_on_each_channels_7_bit_grid_and_pass_gradients_straight():
    from ferkit.training.quant import fake_quantize_weight

    weight = torch.randn(6, 4, 3, 3, requires_grad=True)
    rounded = fake_quantize_weight(weight, bits=7)
    reach = weight.detach().abs().amax(dim=(1, 2, 3))
    for channel, channel_reach in zip(rounded.detach(), reach, strict=True):
        steps = channel / (channel_reach / 64)  # ONNX Runtime's reduce_range levels: -64 .. 64
        assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 64 + 1e-3
    assert torch.allclose(rounded.detach().abs().amax(dim=(1, 2, 3)), reach)  # each channel's reach kept
    assert ((rounded - weight).abs() <= (reach / 128).view(-1, 1, 1, 1) + 1e-6).all()
    assert not torch.equal(rounded.detach(), weight.detach())
    rounded.sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))


def test_quant_aware_training_rounds_the_convolutions_the_int8_export_quantises(learnable_root, tmp_path):
    import onnx

    from ferkit.models import create_model
    from ferkit.release.export import export_onnx

    config = tiny_train_config(learnable_root, tmp_path, "qat", quant_aware=True, epochs=1,
                               limit_train_batches=2)
    run = train(config)
    # the weights stay float under their usual names, for every loader and exporter
    plain = create_model("resnet", **TINY_RESNET).state_dict()
    assert set(load_file(run / "model.safetensors")) == set(plain)
    quantised = FerClassifier(config).quant.quantised
    export = export_onnx(run, tmp_path / "qat.onnx", int8=True, data_root=learnable_root)
    graph = onnx.load(str(export.path)).graph
    dequantised = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    rounded_in_onnx = [c for c in convs if c.input[1] in dequantised]
    assert len(rounded_in_onnx) == len(quantised) == len(convs) - 1  # all but the stem
    assert "stem.0" not in quantised


def test_weight_ema_warms_up_from_the_live_weights():
    """The EMA copy follows the trained weights from the first step (decay ramps up as
    (1 + step) / (10 + step)), instead of keeping the random init in the average."""
    module = FerClassifier(TrainConfig(model="resnet", model_args=TINY_RESNET, ema_decay=0.999))
    live, ema = module.model.stem[0].weight, module.ema_model.stem[0].weight
    before = ema.detach().clone()
    with torch.no_grad():
        live.add_(1.0)
    module.on_train_batch_end(None, None, 0)  # step 0: decay 0.1, so 90% of the new weights
    assert torch.allclose(ema, 0.1 * before + 0.9 * live.detach(), atol=1e-6)


def test_channels_last_is_kept_off_only_for_nets_whose_shortcut_crashes_torch():
    from ferkit.models import create_model
    from ferkit.training.module import channels_last_is_safe

    # tiny nets' strided 1x1 shortcuts (8->8) crash torch's channels_last backward on AVX-512
    assert not channels_last_is_safe(create_model("resnet", **TINY_RESNET))
    for config in ("configs/resnet.yaml", "configs/resnet18h.yaml"):
        model_args = yaml.safe_load((Path(__file__).parents[1] / config).read_text())["model_args"]
        assert channels_last_is_safe(create_model("resnet", **model_args)), config
    tiny = FerClassifier(TrainConfig(model="resnet", model_args=TINY_RESNET, channels_last=True))
    assert not tiny.channels_last
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    tiny.model(tiny._inputs(images, train=True)).sum().backward()  # trains, does not crash


@pytest.mark.ddp
def test_ddp_on_two_cpu_processes_trains_a_model_the_rest_of_ferkit_loads(tmp_path):
    """A cluster user's `--devices N --strategy ddp` needs no code change: here 2 CPU processes on
    gloo split each epoch (EpochBatchSampler shards by rank) and rank 0 writes the run folder."""
    import os
    import subprocess
    import sys

    import numpy as np
    from conftest import write_learnable_root

    from ferkit.inference import Predictor

    root = write_learnable_root(tmp_path / "data", {"train": 128, "valid": 32, "test": 8})
    config = _tiny_yaml(tmp_path, root)
    ferkit = Path(sys.executable).with_name("ferkit")
    result = subprocess.run([str(ferkit), "train", "--config", str(config), "--name", "ddp", "--epochs", "2",
                             "--devices", "2", "--strategy", "ddp"], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    probs = Predictor(model=run).predict_faces(np.zeros((2, 48, 48), np.uint8))
    assert probs.shape == (2, 8) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_each_ddp_process_takes_its_own_share_of_an_epoch(monkeypatch):
    from ferkit.training import data

    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(data, "_rank_and_world", lambda rank=rank: (rank, 2))
        sampler = data.EpochBatchSampler(11, 2, shuffle=True, seed=3)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 3  # 5 of the 11 indices each, in batches of 2
        shares.append([i for b in batches for i in b])
    assert not set(shares[0]) & set(shares[1]) and len(shares[0]) == len(shares[1]) == 5


def test_ferkit_data_applies_to_a_config_without_a_data_root(tmp_path, monkeypatch):
    """`ferkit train --config X` reads $FERKIT_DATA unless X names its own `data:`."""
    from conftest import write_learnable_root

    root = write_learnable_root(tmp_path / "elsewhere", {"train": 16, "valid": 8, "test": 4})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": "resnet", "model_args": TINY_RESNET, "epochs": 1,
                                      "batch_size": 8, "threads": 1, "progress_bar": False,
                                      "runs_dir": str(tmp_path / "runs"), "early_stopping_patience": 0,
                                      "augment": {"enabled": False}}))
    monkeypatch.setenv("FERKIT_DATA", str(root))
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--name", "env"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "runs" / "env" / "config.yaml").read_text())["data"] == str(root)


def test_class_balanced_sampling_draws_a_rare_class_as_the_square_root_of_its_count():
    """class_balance=sampling: an epoch is n draws with replacement, a class's share ~ sqrt(count),
    the same for a resumed run (seeded by epoch) and different from one epoch to the next."""
    from ferkit.training import data

    labels = np.array([0] * 900 + [1] * 100)
    weights = data.sqrt_balanced_weights(labels)
    sampler = data.EpochBatchSampler(len(labels), 100, shuffle=True, seed=1, weights=weights)
    sampler.set_epoch(2)
    drawn = [i for b in sampler for i in b]
    again = data.EpochBatchSampler(len(labels), 100, shuffle=True, seed=1, weights=weights)
    again.set_epoch(2)
    assert drawn == [i for b in again for i in b] and len(drawn) == len(labels)
    rare_share = float(np.mean(labels[drawn] == 1))
    assert 0.19 < rare_share < 0.31  # sqrt(100) / (sqrt(900) + sqrt(100)) = 0.25; plain shuffle: 0.10
    sampler.set_epoch(3)
    assert [i for b in sampler for i in b] != drawn


def test_retrain_head_relearns_only_the_last_layer_into_a_new_folder(learnable_root, tmp_path):
    """`ferkit retrain-head`: the features are kept, the head is new, the source is untouched, and the
    folder says how it was made; an existing folder is never written over."""
    from ferkit.training.head import retrain_head

    run = train(tiny_train_config(learnable_root, tmp_path / "runs", "src", epochs=1))
    before = (run / "model.safetensors").read_bytes()
    out = retrain_head(str(run), tmp_path / "crt", learnable_root, protocol="all_votes", balance="full",
                       epochs=2, command="ferkit retrain-head -m runs/src --out crt")
    assert (run / "model.safetensors").read_bytes() == before
    source, retrained = load(run).state_dict(), load(out).state_dict()
    changed = {k for k in source if not torch.equal(source[k], retrained[k])}
    assert changed == {"fc.weight", "fc.bias"}
    config = json.loads((out / "model.json").read_text())
    assert config["head_retrained"]["balance"] == "full" and config["head_retrained"]["from"] == str(run)
    assert (out / "commands.txt").read_text().rstrip().endswith("ferkit retrain-head -m runs/src --out crt")
    result = CliRunner().invoke(app, ["retrain-head", "-m", str(run), "--out", str(out),
                                      "--data", str(learnable_root)])
    assert result.exit_code == 1 and "already exists and is not an empty folder" in result.output
    with pytest.raises(ArgumentError, match="--balance must be one of none, sqrt, full"):
        retrain_head(str(run), tmp_path / "crt2", learnable_root, balance="half")
    with pytest.raises(ArgumentError, match="--protocol must be one of"):
        retrain_head(str(run), tmp_path / "crt2", learnable_root, protocol="votes")
    (tmp_path / "a-file").write_text("kept")
    with pytest.raises(ArgumentError, match="not an empty folder"):
        retrain_head(str(run), tmp_path / "a-file", learnable_root)
    assert (tmp_path / "a-file").read_text() == "kept"


def test_class_balanced_head_calls_the_rare_class_more_often():
    """The point of cRT: on the same features, a head trained under full balance predicts the rare
    class for more of the overlap than one trained on the faces as they come."""
    from ferkit.training.head import train_head

    rng = np.random.default_rng(0)
    labels = np.array([0] * 900 + [1] * 100)
    features = torch.from_numpy(rng.normal(size=(1000, 2)) + np.where(labels[:, None] == 1, 1.0, 0.0)).float()
    targets = torch.nn.functional.one_hot(torch.from_numpy(labels), 8).float()
    fc = torch.nn.Linear(2, 8)
    rare = {}
    for balance in ("none", "full"):
        head = train_head(fc, features, targets, labels, balance, epochs=30, lr=0.05, seed=0)
        with torch.no_grad():
            rare[balance] = float((head(features).argmax(1) == 1).float().mean())
    assert rare["none"] < 0.08 and rare["full"] > 0.25  # 10% of the faces are rare


def test_a_fitted_temperature_recovers_over_confidence_and_changes_no_answer(learnable_root, tmp_path):
    from ferkit.training.head import fit_temperature, retrain_head

    rng = np.random.default_rng(0)
    true_logits = torch.from_numpy(rng.normal(scale=2.0, size=(4000, 8))).float()
    labels = torch.distributions.Categorical(logits=true_logits).sample().numpy()
    assert abs(fit_temperature(3.0 * true_logits, labels) - 3.0) < 0.3  # logits three times too sure

    run = train(tiny_train_config(learnable_root, tmp_path / "runs", "src", epochs=1))
    plain = retrain_head(str(run), tmp_path / "plain", learnable_root, epochs=2, calibrate=False)
    scaled = retrain_head(str(run), tmp_path / "scaled", learnable_root, epochs=2)
    temperature = json.loads((scaled / "model.json").read_text())["head_retrained"]["temperature"]
    assert temperature > 0 and abs(temperature - 1) > 1e-3
    faces = torch.from_numpy(rng.integers(0, 256, (32, 1, 48, 48)).astype(np.float32) / 255 * 4 - 2)
    with torch.no_grad():
        a, b = load(plain)(faces), load(scaled)(faces)
    assert torch.equal(a.argmax(1), b.argmax(1))
    torch.testing.assert_close(a / temperature, b, rtol=1e-4, atol=1e-4)


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(tmp_path, monkeypatch):
    from ferkit import hardware
    from ferkit.training.config import resolve_precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")  # AVX-512 without BF16
    assert not hardware.has_native_bf16(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert hardware.has_native_bf16(cpuinfo)
    assert not hardware.has_native_bf16(tmp_path / "absent")  # no /proc (macOS, Windows): fp32
    for native, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(hardware, "has_native_bf16", lambda native=native: native)
        assert resolve_precision(load_config(None, [{"precision": "auto"}])) == expected
    assert resolve_precision(load_config(None, [{"precision": "32-true"}])) == "32-true"
    for shipped in ("configs/student.yaml", "configs/resnet18h.yaml"):
        assert load_config(Path(__file__).parents[1] / shipped).precision == "auto"
