"""From a run folder and a data root to predictions + metrics (`evaluate_run`), and to a
written report folder (`evaluate`). `compare` reuses `load_eval_split` + `evaluate_run`."""

from __future__ import annotations

from pathlib import Path

from ferkit.data import SOFT_PROTOCOLS, LabeledSplit, label_split, load_ferplus
from ferkit.errors import EvaluationError
from ferkit.evaluation.metrics import compute_metrics
from ferkit.evaluation.predict import predict_proba
from ferkit.evaluation.report import FILES, write_report
from ferkit.evaluation.result import Evaluation
from ferkit.files import claim_folder
from ferkit.models import load, read_model_config
from ferkit.models.classify import cpu_threads
from ferkit.priors import ClassPrior, PriorSpec, resolve_prior
from ferkit.settings import run_data_root
from ferkit.tta import check_tta


def load_eval_split(data_root: str | Path, split: str = "test", protocol: str = "majority") -> LabeledSplit:
    """One split under one protocol; an error naming the root when nothing is left to evaluate."""
    labeled = label_split(load_ferplus(data_root, splits=(split,))[split], protocol)
    if len(labeled) == 0:
        raise EvaluationError(f"{data_root}: the {split} split has no images under protocol "
                              f"{protocol!r} (dropped: {labeled.dropped})")
    return labeled


def evaluate_run(run: str | Path, data: LabeledSplit, data_root: str | Path, tta: str | None = None,
                 batch_size: int = 256, progress: bool = False, threads: int | None = None,
                 prior: PriorSpec | ClassPrior = "ferplus") -> Evaluation:
    """Load RUN's model, predict `data` with all CPU cores (or `threads`), compute the metrics
    (probabilities under `prior`, see ferkit.priors). Soft protocols also get the KL divergence to
    their vote distributions."""
    tta = check_tta(tta)
    prior = resolve_prior(prior)
    run = Path(run)
    config = read_model_config(run)
    model = load(Path(run))
    with cpu_threads(threads):
        proba = prior.apply(predict_proba(model, data.images, batch_size=batch_size, tta=tta,
                                          progress=progress))
    targets = data.targets if data.protocol in SOFT_PROTOCOLS else None
    metrics = compute_metrics(data.labels, proba, targets)
    return Evaluation(run=run, architecture=config["architecture"], data_root=Path(data_root),
                      split=data.name, protocol=data.protocol, tta=tta, data=data, proba=proba,
                      metrics=metrics, prior=prior)


def resolve_data_root(run: str | Path, data_root: str | Path | None) -> Path:
    """`data_root` if given, else the run's own training data root."""
    if data_root is not None:
        return Path(data_root)
    found = run_data_root(run)
    if found is None:
        raise EvaluationError(f"{run}: no data root given and the run's config.yaml names none "
                              "that exists here; pass data_root (--data)")
    return found


def evaluate(run: str | Path, split: str = "test", protocol: str = "majority",
             data_root: str | Path | None = None, tta: str | None = None, out: str | Path | None = None,
             batch_size: int = 256, progress: bool = False, threads: int | None = None,
             prior: PriorSpec | ClassPrior = "ferplus", command: str | None = None) -> Evaluation:
    """Evaluate RUN on a FERPlus split and write the report folder (default RUN/eval-<split>/):
    metrics.json, predictions.csv, the plots, report.md and a self-contained report.html.
    `command` (the CLI line) is named in report.md."""

    run = Path(run)
    read_model_config(run)  # a missing/bad run folder fails before the data is loaded
    tta = check_tta(tta)
    out_dir = claim_folder(Path(out) if out else run / f"eval-{split}", FILES)
    root = resolve_data_root(run, data_root)
    data = load_eval_split(root, split, protocol)
    evaluation = evaluate_run(run, data, root, tta=tta, batch_size=batch_size, progress=progress,
                              threads=threads, prior=prior)
    evaluation.command = command
    evaluation.out_dir = out_dir
    write_report(evaluation, evaluation.out_dir)
    return evaluation
