"""A CSV logger that keeps the rows a resumed run logged before it was stopped.

Lightning's CSVLogger deletes logs/metrics.csv when its folder already holds one, so `--resume`
lost every row logged before the stop. This one appends to the file, under the header it has.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning's version removes metrics.csv; instead, carry on under its header.
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])


class AppendingCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv survives a resume (rows are appended)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
