"""`train(config)`: one run from config to a complete run folder; `--resume` continues one."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping

import ferkit
from ferkit.errors import ConfigError
from ferkit.models import model_config, save_model, summarize_model
from ferkit.models.folder import append_command
from ferkit.training.callbacks import HistoryCallback, RunCheckpoint
from ferkit.training.config import TrainConfig, load_config, resolve_precision, save_config
from ferkit.training.data import FerplusDataModule
from ferkit.training.distill import (
    TEACHER_PASS_FILES,
    cached_teacher_probabilities,
    load_setting_model,
    mix_targets,
)
from ferkit.training.loggers import AppendingCSVLogger, ResumedLogs
from ferkit.training.module import FerClassifier

log = logging.getLogger("ferkit.training")

CHECKPOINTS = "checkpoints"
# What a run writes before its first epoch ends. A folder holding nothing else never finished an epoch:
# there is nothing to resume, so running the same command again starts over in it, keeping the stored
# teacher pass (the costly part of function matching: ~15 min for 8 views of FERPlus on 2 cores).
BEFORE_FIRST_EPOCH = {"config.yaml", "commands.txt", "train.log", "model_summary.txt", "logs", CHECKPOINTS,
                      *TEACHER_PASS_FILES}


def _log_to_file(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("ferkit", "lightning", "lightning.pytorch"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("ferkit").setLevel(logging.INFO)
    return handler


def _class_weights(frequencies: np.ndarray) -> torch.Tensor:
    """1/sqrt(frequency), scaled so the average sample weight is 1."""
    w = 1.0 / np.sqrt(np.maximum(frequencies, 1e-4))
    w = w / (frequencies * w).sum()
    return torch.tensor(w, dtype=torch.float32)


def launched_rank() -> int:
    """The process's rank when Lightning's DDP launcher started it (0 for the first process and for
    plain runs): ranks above 0 re-run the same command and share rank 0's run folder."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def new_run_dir(config: TrainConfig) -> Path:
    name = config.name or f"{config.model}-{datetime.now():%Y%m%d-%H%M%S}"
    if Path(name).name != name or name in ("", ".", ".."):
        # a run is one folder under runs_dir: a name with a path in it could write anywhere
        raise ConfigError(f"name {name!r}: a run name is a single folder name under {config.runs_dir}/ "
                          "(no '/' or '..')")
    run_dir = Path(config.runs_dir) / name
    if launched_rank() > 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not never_finished_an_epoch(run_dir):
            raise ConfigError(f"{run_dir}: run folder exists; use --resume {run_dir} or another --name")
        discard_unfinished(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def never_finished_an_epoch(run_dir: Path) -> bool:
    """True for a run folder that holds only what a run writes before its first checkpoint."""
    checkpoints = run_dir / CHECKPOINTS
    return (all(entry.name in BEFORE_FIRST_EPOCH for entry in run_dir.iterdir())
            and not (checkpoints.is_dir() and any(checkpoints.iterdir())))


def discard_unfinished(run_dir: Path) -> None:
    """Empty a run folder that never finished an epoch, but keep its stored teacher pass; remove the
    folder when nothing is left to keep."""
    kept = [run_dir / name for name in TEACHER_PASS_FILES if (run_dir / name).is_file()]
    if not kept:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():
        if entry in kept:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def resume_config(run_dir: Path, overrides: list[dict] | None = None) -> TrainConfig:
    """The saved config of a run folder, with optional overrides (e.g. more epochs)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.yaml)")
    last = run_dir / CHECKPOINTS / "last.ckpt"
    if not last.is_file():
        raise ConfigError(f"{run_dir}: nothing to resume (no {CHECKPOINTS}/last.ckpt)")
    check_checkpoint(last)
    saved = load_config(run_dir / "config.yaml")
    config = load_config(run_dir / "config.yaml", overrides)
    before, after = saved.to_dict(), config.to_dict()
    fixed = [key for key in after if after[key] != before.get(key) and key not in RESUME_KEYS
             and not (key == "epochs" and saved.schedule in ("plateau", "constant"))]
    if fixed:
        raise ConfigError(f"{run_dir}: {', '.join(fixed)} cannot change on --resume: the checkpoint brings "
                          "back the optimizer, the learning-rate schedule and early stopping as they were "
                          "(a one-cycle or cosine schedule is sized by epochs); start a new run instead")
    return config


# What `--resume` may change: where and how the run computes, not what it learns. `epochs` too, under a
# schedule that does not depend on it (plateau, constant).
RESUME_KEYS = frozenset({"data", "threads", "progress_bar", "max_hours", "accelerator", "devices", "strategy",
                         "skip_bad", "limit_val_batches", "keep_epoch"})


def check_checkpoint(path: Path) -> None:
    """A checkpoint must load as plain tensors and containers (weights_only=True, whatever
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says: a checkpoint can carry code); a truncated or foreign
    file gets an error naming it instead of torch's traceback."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"{path}: damaged or not a ferkit checkpoint; cannot resume from it "
                          f"({first})") from None



def train(config: TrainConfig, resume: Path | None = None,
          extra_callbacks: list[L.Callback] | None = None, command: str | None = None) -> Path:
    """Train one model; returns the run folder (model.safetensors + model.json and the rest).
    `command` (the CLI line) is appended to the run's commands.txt, so a bundled model can say
    exactly how it was made, resumes included."""
    config.validate()
    run_dir = Path(resume) if resume else new_run_dir(config)
    if command and launched_rank() == 0:
        append_command(run_dir, command)
    handler = _log_to_file(run_dir)
    try:
        return _train(config, run_dir, resume is not None, extra_callbacks or [])
    except BaseException:
        # A new run that never finished an epoch holds nothing to resume: empty its folder but for the
        # stored teacher pass, so that the same command can simply be run again and reuse that pass.
        if resume is None and launched_rank() == 0 and not (run_dir / CHECKPOINTS / "last.ckpt").exists():
            handler.close()
            discard_unfinished(run_dir)
        raise
    finally:
        for name in ("ferkit", "lightning", "lightning.pytorch"):
            logging.getLogger(name).removeHandler(handler)
        handler.close()


def _train(config: TrainConfig, run_dir: Path, resuming: bool,
           extra_callbacks: list[L.Callback]) -> Path:
    """Set up, fit (resuming from last.ckpt), then export the best-validation epoch."""
    torch.set_num_threads(config.threads or os.cpu_count() or 1)
    L.seed_everything(config.seed, workers=True, verbose=False)
    writer = launched_rank() == 0  # under DDP only rank 0 writes the run folder
    if writer:
        header = f"ferkit {ferkit.__version__}, seed {config.seed}"
        save_config(config, run_dir / "config.yaml", header=header)
    log.info("%s run %s (ferkit %s, torch %s, %d threads, precision %s)",
             "resuming" if resuming else "starting", run_dir, ferkit.__version__, torch.__version__,
             torch.get_num_threads(), resolve_precision(config))

    # before the data: a wrong init is told at once, not after a teacher pass
    initial = warm_start_weights(config) if config.init and not resuming else None
    datamodule = _datamodule(config, run_dir)
    frequencies = datamodule.class_frequencies()
    weights = _class_weights(frequencies) if config.class_balance == "weights" else None
    module = FerClassifier(config, weights, torch.tensor(frequencies, dtype=torch.float32), initial)
    summary = summarize_model(module.model)
    if writer:
        (run_dir / "model_summary.txt").write_text(summary.to_text(config.model))
    history = HistoryCallback(run_dir, title=config.model)
    best = RunCheckpoint(dirpath=run_dir / CHECKPOINTS, filename="best", monitor="val_loss",
                           mode="min", save_top_k=1, save_on_train_epoch_end=True,
                           enable_version_counter=False)
    trainer = _trainer(config, run_dir, [history, *extra_callbacks, best])
    started = time.perf_counter()
    last = run_dir / CHECKPOINTS / "last.ckpt"
    # weights_only=True explicitly: the environment cannot switch it off (see check_checkpoint)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=last if resuming else None, weights_only=True)
    except RuntimeError as exc:
        if resuming and "loading state_dict" in str(exc):
            first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
            raise ConfigError(f"{last}: holds the weights of another network than {run_dir}/config.yaml "
                              f"describes; cannot resume from it ({first[:200]})") from None
        raise
    except SystemExit:
        # Ctrl-C (Lightning stops gracefully, then calls sys.exit(1)) or SIGTERM (SIGTERMException):
        # the best epoch so far is exported, so a stopped run leaves a usable model; `--resume` goes on
        if writer and trainer.interrupted and history.history:
            _export_best(config, run_dir, module, best, history.history, time.perf_counter() - started,
                         summary.total)
            log.warning("stopped after epoch %d: its best epoch so far is exported; `ferkit train --resume "
                        "%s` goes on", len(history.history), run_dir)
        raise
    seconds = time.perf_counter() - started
    if writer:
        _export_best(config, run_dir, module, best, history.history, seconds, summary.total)
    return run_dir


def warm_start_weights(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The weights of `config.init` (a model folder or bundled name), checked to be this run's network;
    ConfigError naming the setting otherwise."""
    from ferkit.models import read_model_config

    model, folder = load_setting_model("init", config.init)
    made = read_model_config(folder)
    theirs = (made.get("architecture"), made.get("model_args", {}))
    if theirs != (config.model, config.model_args):
        raise ConfigError(f"config value init={config.init!r}: its network ({theirs[0]} {theirs[1]}) is "
                          f"not this run's ({config.model} {config.model_args})")
    log.info("warm start: the weights of %s", folder)
    return model.state_dict()


def _datamodule(config: TrainConfig, run_dir: Path) -> FerplusDataModule:
    """FERPlus in memory under the run's protocol, with the teacher's targets when distilling."""
    datamodule = FerplusDataModule(config.data, config.protocol, config.batch_size, config.seed,
                                   skip_bad=config.skip_bad)
    datamodule.setup()
    datamodule.balanced_sampling = config.class_balance == "sampling"
    log.info("data: %d train, %d valid images (protocol %s)", len(datamodule.train_split),
             len(datamodule.valid_split), config.protocol)
    train_split = datamodule.train_split
    if config.teacher and config.teacher_views:
        from ferkit.training.data import ViewBatches
        from ferkit.training.distill import cached_teacher_views, load_view_mix

        views, view_probs = cached_teacher_views(
            run_dir, config.teacher, train_split.images, config.augment, config.teacher_views,
            config.distill_temperature, config.seed, reuse_from=config.teacher_pass_from)
        mix = (load_view_mix(run_dir, *views.shape[:2]) if config.augment.view_mixup else (None, None))
        datamodule.train_views = ViewBatches(views, train_split.targets, view_probs, config.distill_weight,
                                             *mix)
        agreement = float((view_probs.argmax(2) == train_split.labels[None]).mean())
        log.info("distillation: %d views a face, weight %g; the teacher agrees with the vote label on "
                 "%.1f%% of the views", config.teacher_views, config.distill_weight, 100 * agreement)
    elif config.teacher:
        teacher_probs = cached_teacher_probabilities(run_dir, config.teacher, train_split.images,
                                                     config.distill_temperature)
        datamodule.train_split = dataclasses.replace(train_split, targets=mix_targets(
            train_split.targets, teacher_probs, config.distill_weight))
        agreement = float((teacher_probs.argmax(1) == train_split.labels).mean())
        log.info("distillation: weight %g, teacher agrees with the vote label on %.1f%% of training faces",
                 config.distill_weight, 100 * agreement)
    return datamodule


def _trainer(config: TrainConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    """Lightning's Trainer with a last.ckpt every epoch, early stopping if asked, CSV (+ TensorBoard) logs."""
    # its own callback: Lightning's save_last=True only writes last.ckpt when a new best is saved,
    # so a killed run lost every epoch since its last val_loss improvement (6 epochs, measured)
    every_epoch = RunCheckpoint(dirpath=run_dir / CHECKPOINTS, filename="last", monitor=None,
                                save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False)
    callbacks = [*callbacks, every_epoch, ResumedLogs()]
    if config.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min",
                                       patience=config.early_stopping_patience))
    loggers = [AppendingCSVLogger(run_dir, name="", version="logs")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="", version="tensorboard"))
    except ImportError:
        pass
    return L.Trainer(
        max_epochs=config.epochs,
        max_time=timedelta(hours=config.max_hours) if config.max_hours else None,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=resolve_precision(config),
        callbacks=callbacks,
        logger=loggers,
        limit_train_batches=config.limit_train_batches,
        limit_val_batches=config.limit_val_batches,
        enable_progress_bar=config.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=run_dir,
        use_distributed_sampler=False,
        log_every_n_steps=10,
    )


def _export_best(config: TrainConfig, run_dir: Path, module: FerClassifier, best: RunCheckpoint,
                 rows: list[dict], seconds: float, params: int) -> None:
    """Write the run's model: EarlyStopping's "restore best weights" (the best-validation-loss epoch), or
    the last epoch finished with `keep_epoch: last`."""
    kept = best.best_model_path if config.keep_epoch == "best" else run_dir / CHECKPOINTS / "last.ckpt"
    if kept and Path(kept).is_file():
        state = torch.load(kept, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])  # strict: a key mismatch is a bug to see
    best_row = min(rows, key=lambda r: r["val_loss"]) if rows else {}
    kept_row = best_row if config.keep_epoch == "best" or not rows else rows[-1]
    metrics = {
        "best_epoch": best_row.get("epoch"),
        "kept_epoch": kept_row.get("epoch"),
        "val_loss": kept_row.get("val_loss"),
        "val_acc": kept_row.get("val_acc"),
        "val_protocol": config.protocol,
        "epochs_trained": len(rows),
        "train_seconds": round(sum(r["seconds"] for r in rows), 1),
        "wall_seconds": round(seconds, 1),  # this invocation of train, pauses included
    }
    save_model(module.eval_model().float(), run_dir, model_config(
        config.model, config.model_args, protocol=config.protocol, metrics=metrics,
        ferkit_version=ferkit.__version__, params=params))
    log.info("done: %s", json.dumps(metrics))


def train_from_cli(config_path: Path | None, overrides: list[dict], resume: Path | None,
                   command: str | None = None) -> Path:
    if resume:
        config = resume_config(resume, overrides)
        return train(config, resume=resume, command=command)
    return train(load_config(config_path, overrides), command=command)
