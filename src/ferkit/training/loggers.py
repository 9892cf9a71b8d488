"""A CSV logger that keeps the rows a resumed run logged before it was stopped.

Lightning's CSVLogger deletes logs/metrics.csv when its folder already holds one, so `--resume`
lost every row logged before the stop. This one appends to the file, under the header it has, and
drops the rows of epochs the checkpoint did not keep (a run killed between validation and last.ckpt
logs that epoch again when resumed).
"""

from __future__ import annotations

import csv
import io
import os

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from ferkit.files import write_whole


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's version removes metrics.csv; instead, carry on under its header.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    def drop_epochs_from(self, epoch: int) -> None:
        """Forget the rows of `epoch` (0-based, as logged) and later."""
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as fh:
            reader = csv.DictReader(fh)
            keep = [r for r in reader if not r.get("epoch") or int(float(r["epoch"])) < epoch]
            fields = reader.fieldnames or self.metrics_keys
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=fields)
        writer.writeheader()
        writer.writerows(keep)
        write_whole(self.metrics_file_path, text.getvalue())


class AppendingCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resume (rows are appended)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class ResumedLogs(L.Callback):
    """On resume, metrics.csv keeps only the epochs the checkpoint holds (history.json rides in it)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.current_epoch == 0:
            return
        for logger in trainer.loggers:
            if isinstance(logger, AppendingCSVLogger):
                logger.experiment.drop_epochs_from(trainer.current_epoch)
