"""Callbacks: per-epoch history (history.json, curves.png, a line in train.log), and checkpoints that
survive a moved run folder."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ferkit.evaluation.plots import save
from ferkit.files import write_whole
from ferkit.training.plots import plot_history

log = logging.getLogger("ferkit.training")


class HistoryCallback(L.Callback):
    """Writes history.json and curves.png after every epoch; its state rides in checkpoints so a
    resumed run keeps the earlier epochs."""

    def __init__(self, run_dir: Path, title: str = ""):
        self.run_dir = Path(run_dir)
        self.title = title
        self.history: list[dict[str, Any]] = []
        self._epoch_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": metrics.get("train_loss"),
            "train_acc": metrics.get("train_acc"),
            "val_loss": metrics.get("val_loss"),
            "val_acc": metrics.get("val_acc"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - self._epoch_start, 2),
        }
        self.history.append(row)
        if not trainer.is_global_zero:  # under DDP only rank 0 writes the run folder
            return
        write_whole(self.run_dir / "history.json", json.dumps(self.history, indent=1) + "\n")
        save(plot_history(self.history, self.title), self.run_dir / "curves.png")
        log.info("epoch %d: " + " ".join(f"{k}={v:.4g}" for k, v in row.items()
                                           if k != "epoch" and v is not None), row["epoch"])

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, resumable from a run folder that has moved since the checkpoint was
    written (copied to another machine, renamed). Lightning then drops the best score it kept, and the
    first resumed epoch would replace best.ckpt whatever its loss; here the stored paths are moved to
    the folder the run is in now."""

    @property
    def state_key(self) -> str:
        # the key checkpoints already carry (Lightning builds it from the class name)
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        stored = state_dict.get("dirpath")
        if stored and self.dirpath and stored != self.dirpath:
            def here(path: str) -> str:
                return str(Path(self.dirpath) / Path(path).name) if path else path

            paths = ("best_model_path", "kth_best_model_path", "last_model_path")
            best_k = state_dict.get("best_k_models", {})
            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{key: here(state_dict[key]) for key in paths if key in state_dict},
                          "best_k_models": {here(path): score for path, score in best_k.items()}}
        super().load_state_dict(state_dict)
