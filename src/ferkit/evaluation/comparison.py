"""`compare(run_a, run_b)`: two runs on the same labelled split, side by side, with deltas.

Both runs are scored by `evaluate_run` on one loaded split, so the numbers are exactly the ones
`ferkit evaluate` would report for each run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.emotions import EMOTIONS
from ferkit.evaluation import plots
from ferkit.evaluation.pipeline import evaluate_run, load_eval_split, resolve_data_root
from ferkit.evaluation.recorded import balanced_accuracy_of
from ferkit.evaluation.report import Document, fmt
from ferkit.evaluation.result import Evaluation
from ferkit.files import claim_folder
from ferkit.models import read_model_config
from ferkit.tta import check_tta

FILES = ("compare.md", "compare.html", "compare.json", "confusion_matrices.png", "per_class_recall.png",
         "per_class_f1.png")


@dataclass
class Comparison:
    a: Evaluation
    b: Evaluation
    out_dir: Path

    def agreement(self) -> dict:
        """How often the two runs agree, and who is right when they do not."""
        right_a = self.a.y_pred == self.a.y_true
        right_b = self.b.y_pred == self.b.y_true
        return {"same_prediction": float((self.a.y_pred == self.b.y_pred).mean()),
                "only_a_right": int((right_a & ~right_b).sum()),
                "only_b_right": int((right_b & ~right_a).sum()),
                "both_right": int((right_a & right_b).sum()),
                "both_wrong": int((~right_a & ~right_b).sum())}

    def rows(self) -> list[tuple[str, float | None, float | None]]:
        """(metric, A, B) for the side-by-side table."""
        ma, mb = self.a.metrics, self.b.metrics
        out = [("accuracy", ma["accuracy"], mb["accuracy"]),
               ("balanced accuracy", balanced_accuracy_of(ma), balanced_accuracy_of(mb)),
               ("macro F1", ma["macro"]["f1"], mb["macro"]["f1"]),
               ("weighted F1", ma["weighted"]["f1"], mb["weighted"]["f1"]),
               ("macro AUC", ma["macro_auc"], mb["macro_auc"]),
               ("ECE", ma["ece"], mb["ece"]),
               ("NLL", ma["nll"], mb["nll"])]
        for metric in ("recall", "f1"):
            out += [(f"{name} {metric}", ma["per_class"][name][metric], mb["per_class"][name][metric])
                    for name in EMOTIONS]
        return out

    def to_json(self) -> dict:
        return {"a": self.a.metrics_json(), "b": self.b.metrics_json(), "agreement": self.agreement(),
                "deltas": {metric: _delta(a, b) for metric, a, b in self.rows()}}


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _label(evaluation: Evaluation, other: Evaluation) -> str:
    """Run names, or full paths when two runs share a folder name."""
    return str(evaluation.run) if evaluation.name == other.name else evaluation.name


def build_document(comparison: Comparison) -> Document:
    a, b = comparison.a, comparison.b
    name_a, name_b = _label(a, b), _label(b, a)
    doc = Document(f"{name_a} vs {name_b} on FERPlus {a.split}")
    doc.paragraph(f"A = `{a.run}` ({a.architecture}), B = `{b.run}` ({b.architecture}). Both evaluated on "
                  f"the same {a.metrics['images']:,} images of `{a.data_root}` under protocol "
                  f"`{a.protocol}`, test-time augmentation: {a.tta or 'none'}. Delta = B - A: positive "
                  "means B is higher (better for every row except ECE and NLL, where lower is better).")
    doc.heading("Side by side")
    doc.table(["metric", "A", "B", "delta (B - A)"],
              [[metric, fmt(va), fmt(vb), "-" if (d := _delta(va, vb)) is None else f"{d:+.3f}"]
               for metric, va, vb in comparison.rows()])
    agree = comparison.agreement()
    doc.heading("Where they differ")
    doc.paragraph(f"Same prediction on {agree['same_prediction']:.1%} of images. Only A right: "
                  f"{agree['only_a_right']:,}; only B right: {agree['only_b_right']:,}; both right: "
                  f"{agree['both_right']:,}; both wrong: {agree['both_wrong']:,}.")
    doc.heading("Confusion matrices")
    doc.image("confusion_matrices.png", "Row-normalised confusion matrices of A and B, and B - A "
                                        "(on the diagonal, blue = B recalls that class better)")
    doc.heading("Per class")
    doc.image("per_class_recall.png", "Per-class recall, A and B")
    doc.image("per_class_f1.png", "Per-class F1, A and B")
    return doc


def compare(run_a: str | Path, run_b: str | Path, split: str = "test", protocol: str = "majority",
            data_root: str | Path | None = None, out: str | Path | None = None, tta: str | None = None,
            batch_size: int = 256, progress: bool = False, threads: int | None = None) -> Comparison:
    """Evaluate two runs on one split and write compare.md/.html/.json and the PNGs
    (default folder RUN_B/compare-<nameA>-vs-<nameB>/). Data root default: run A's."""
    run_a, run_b = Path(run_a), Path(run_b)
    for run in (run_a, run_b):
        read_model_config(run)  # fail on a bad run folder before loading data
    tta = check_tta(tta)
    out_dir = claim_folder(Path(out) if out else run_b / f"compare-{run_a.name}-vs-{run_b.name}", FILES)
    root = resolve_data_root(run_a, data_root)
    data = load_eval_split(root, split, protocol)
    a = evaluate_run(run_a, data, root, tta=tta, batch_size=batch_size, progress=progress, threads=threads)
    b = evaluate_run(run_b, data, root, tta=tta, batch_size=batch_size, progress=progress, threads=threads)
    comparison = Comparison(a, b, out_dir)
    write_comparison(comparison)
    return comparison


def write_comparison(comparison: Comparison) -> dict[str, Path]:
    out = comparison.out_dir
    out.mkdir(parents=True, exist_ok=True)
    a, b = comparison.a, comparison.b
    name_a, name_b = _label(a, b), _label(b, a)
    (out / "compare.json").write_text(json.dumps(comparison.to_json(), indent=2) + "\n")
    plots.save(plots.plot_confusion_comparison(np.array(a.metrics["confusion_matrix"]),
                                               np.array(b.metrics["confusion_matrix"]), name_a, name_b),
               out / "confusion_matrices.png")
    for metric, file in (("recall", "per_class_recall.png"), ("f1", "per_class_f1.png")):
        plots.save(plots.plot_per_class_bars(
            {f"A: {name_a}": [a.metrics["per_class"][e][metric] for e in EMOTIONS],
             f"B: {name_b}": [b.metrics["per_class"][e][metric] for e in EMOTIONS]}, metric), out / file)
    doc = build_document(comparison)
    (out / "compare.md").write_text(doc.to_markdown())
    (out / "compare.html").write_text(doc.to_html(out))
    return {name: out / name for name in FILES}
