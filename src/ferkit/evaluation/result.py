"""`Evaluation`: one model's predictions on one labelled split and the metrics computed from them,
what the pipeline makes and the report, the comparison and the app read."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.data import LabeledSplit
from ferkit.priors import ClassPrior, resolve_prior


@dataclass
class Evaluation:
    """One model's predictions on one labelled split, and the metrics computed from them."""

    run: Path
    architecture: str
    data_root: Path
    split: str
    protocol: str
    tta: str | None
    data: LabeledSplit
    proba: np.ndarray  # (N, 8) softmax, EMOTIONS order
    metrics: dict
    out_dir: Path | None = None
    prior: ClassPrior = field(default_factory=lambda: resolve_prior(None))
    command: str | None = None  # the command line that made it, named in report.md
    photos: dict | None = None  # a photo-folder evaluation: folder, detector, missed/skipped photos

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def y_true(self) -> np.ndarray:
        return self.data.labels

    @property
    def y_pred(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    def metrics_json(self) -> dict:
        """metrics.json: what was evaluated (run, data, protocol, TTA), then the numbers."""
        return {"run": str(self.run), "architecture": self.architecture, "data": str(self.data_root),
                "split": self.split, "protocol": self.protocol, "tta": self.tta or "none",
                "prior": self.prior.to_dict(), **({"photos": self.photos} if self.photos else {}),
                **self.metrics}
