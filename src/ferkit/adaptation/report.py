"""The adapted model folder's report: report.md (read by people), report.json (by programs) and, with
a learning curve, learning_curve.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ferkit.emotions import EMOTIONS

# `result` below is a ferkit.adaptation.core.AdaptResult (core imports this module to write it).
AdaptResult = Any

REPORT_MD = "report.md"
REPORT_JSON = "report.json"
CURVE_PNG = "learning_curve.png"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def recall_rows(result: AdaptResult) -> list[tuple[str, str, str, int]]:
    """(emotion, shipped recall, adapted recall, support) of each class with photos."""
    rows = []
    for name in EMOTIONS:
        adapted, shipped = result.cv["per_class"][name], result.shipped["per_class"][name]
        if adapted["support"]:
            rows.append((name, _pct(shipped["recall"]), _pct(adapted["recall"]), adapted["support"]))
    return rows


def validation_line(result: AdaptResult) -> str:
    """How the figures were made, in one sentence."""
    folds = result.fold_count
    if result.folds == "grouped":
        return (f"{folds}-fold cross-validation grouped by `{result.faces.group_column}`: no person is in "
                "both the photos a fold's heads learn from and those they are scored on")
    return f"{folds}-fold cross-validation over photos. Warning: {result.warning}"


def write_report(result: AdaptResult) -> Path:
    """Write report.md, report.json (and learning_curve.png with a curve) into the model folder."""
    out = result.out
    data: dict[str, Any] = {
        "photos": str(result.faces.folder), "faces": len(result.faces), "per_class": result.faces.counts(),
        "validation": {"kind": result.folds, "folds": result.fold_count,
                       "group_column": result.faces.group_column, "warning": result.warning},
        "adapted": {"accuracy": result.cv["accuracy"], "balanced_accuracy": result.cv["balanced_accuracy"],
                    "per_class": {k: v for k, v in result.cv["per_class"].items() if v["support"]},
                    "confusion_matrix": result.cv["confusion_matrix"]},
        "shipped": {"accuracy": result.shipped["accuracy"],
                    "balanced_accuracy": result.shipped["balanced_accuracy"]},
        "temperature": result.temperature, "learning_curve": result.curve,
        "ferplus_valid": result.ferplus_valid, "onnx": result.onnx, "skipped": result.faces.skipped,
        "seconds": {k: round(v, 1) for k, v in result.seconds.items()},
    }
    (out / REPORT_JSON).write_text(json.dumps(data, indent=2) + "\n")
    lines = [f"# {out.name}: adapted to {result.faces.folder.name}", "",
             f"{len(result.faces):,} photos with a face: "
             + ", ".join(f"{k} {n}" for k, n in result.faces.counts().items()) + ".", "",
             validation_line(result) + ".", "",
             "| | accuracy | balanced accuracy |", "|---|---|---|",
             f"| shipped model, same photos | {result.shipped['accuracy']:.3f} | "
             f"{result.shipped['balanced_accuracy']:.3f} |",
             f"| adapted (held-out folds) | {result.cv['accuracy']:.3f} | "
             f"{result.cv['balanced_accuracy']:.3f} |",
             "", "| emotion | shipped recall | adapted recall | photos |", "|---|---|---|---|"]
    lines += [f"| {name} | {s} | {a} | {n} |" for name, s, a, n in recall_rows(result)]
    if result.curve:
        lines += ["", "Learning curve (balanced accuracy on held-out folds, heads fitted on at most N photos "
                  "per class of the other folds, mean of the draws):", "",
                  "| photos per class | balanced accuracy |", "|---|---|"]
        lines += [f"| {row['per_class']} | {row['balanced_accuracy']:.3f} |" for row in result.curve]
        lines += ["", f"![learning curve]({CURVE_PNG})"]
        plot_curve(result, out / CURVE_PNG)
    if result.ferplus_valid:
        v = result.ferplus_valid
        lines += ["", f"FERPlus Valid ({v['faces']:,} faces, majority labels): accuracy "
                  f"{v['shipped']['accuracy']:.3f} shipped, {v['adapted']['accuracy']:.3f} adapted."]
    lines += ["", f"ONNX export {result.onnx.get('runs')} ({result.onnx.get('precision')}): same top-1 as "
              f"PyTorch on {result.onnx.get('agreement_on_photos', 0):.1%} of these photos.",
              "Temperature (fitted on the held-out logits, folded into the heads): "
              f"{result.temperature:.3f}."]
    if result.faces.skipped:
        lines += ["", f"{len(result.faces.skipped)} photos left out:", ""]
        lines += [f"- {line}" for line in result.faces.skipped]
    (out / REPORT_MD).write_text("\n".join(lines) + "\n")
    return out / REPORT_MD


def plot_curve(result: AdaptResult, path: Path) -> None:
    """Balanced accuracy against photos per class, with the shipped model's level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.curve or []
    largest = max(result.faces.counts().values())
    x = [largest if r["per_class"] == "all" else r["per_class"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(x, [r["balanced_accuracy"] for r in rows], yerr=[r["sd"] for r in rows], marker="o",
                label="adapted (held-out folds)")
    ax.axhline(result.shipped["balanced_accuracy"], color="grey", linestyle="--", label="shipped model")
    ax.set_xscale("log")
    ax.set_xticks(x, [str(r["per_class"]) for r in rows])
    ax.set_xlabel("labelled photos per class")
    ax.set_ylabel("balanced accuracy")
    ax.set_title(f"{result.out.name}: {validation_line(result).split(':')[0]}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
