"""Write an evaluation folder: metrics.json, predictions.csv, PNGs, report.md and report.html.

The report is built once as a small `Document` (headings, paragraphs, tables, images, text
blocks) and rendered twice, so report.md and report.html always say the same thing. The HTML
embeds every image as base64 so it can be mailed or archived as a single file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report

from ferkit.emotions import EMOTIONS
from ferkit.evaluation import plots
from ferkit.evaluation.plots import Figure
from ferkit.evaluation.result import Evaluation

WORST_PER_CLASS = 5
FILES = ("metrics.json", "predictions.csv", "confusion_matrix.png", "classification_report.txt",
         "classification_report.png", "roc_curves.png", "reliability.png", "worst_misclassified.png",
         "report.md", "report.html")


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table; '-' for undefined (None)."""
    return "-" if value is None else f"{value:.{digits}f}"


@dataclass
class Document:
    """A report as blocks: ("h", level, text), ("p", text), ("table", header, rows),
    ("image", file, alt), ("pre", text)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, file: str, alt: str) -> None:
        self.blocks.append(("image", file, alt))

    def preformatted(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, *rest in self.blocks:
            if kind == "h":
                out += ["#" * rest[0] + " " + rest[1], ""]
            elif kind == "p":
                out += [rest[0], ""]
            elif kind == "table":
                header, rows = rest
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(row) + " |" for row in rows]
                out.append("")
            elif kind == "image":
                out += [f"![{rest[1]}]({rest[0]})", ""]
            elif kind == "pre":
                out += ["```text", rest[0].rstrip("\n"), "```", ""]
        return "\n".join(out)

    def to_html(self, folder: Path) -> str:
        """Standalone HTML: images from `folder` inlined as data: URIs."""
        e = html.escape
        body = [f"<h1>{e(self.title)}</h1>"]
        for kind, *rest in self.blocks:
            if kind == "h":
                body.append(f"<h{rest[0]}>{e(rest[1])}</h{rest[0]}>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(rest[0])}</p>")
            elif kind == "table":
                header, rows = rest
                head = "".join(f"<th>{e(h)}</th>" for h in header)
                lines = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode((Path(folder) / rest[0]).read_bytes()).decode("ascii")
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(rest[1])}">'
                            f"<figcaption>{e(rest[1])}</figcaption></figure>")
            elif kind == "pre":
                body.append(f"<pre>{e(rest[0])}</pre>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{e(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
        "padding:3px 9px;text-align:right}th:first-child,td:first-child{text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}figcaption{color:#666;"
        "font-size:90%}pre{background:#f6f6f6;padding:.8em;overflow-x:auto}code{background:#f3f3f3}")


def _inline_html(text: str) -> str:
    """Escape, then render the one markdown feature the paragraphs use: `code`."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def classification_report_text(y_true: np.ndarray, y_pred: np.ndarray,
                               missed_per_class: dict[str, int] | None = None) -> str:
    """scikit-learn's classification_report over the classes present, 3 digits. Faces that got no
    prediction (photos where no face was found) count as misses of their true class, as in
    metrics.json (ferkit.evaluation.metrics), so the two agree."""
    missed = np.repeat(np.arange(len(EMOTIONS)), [(missed_per_class or {}).get(e, 0) for e in EMOTIONS])
    truth = np.concatenate([np.asarray(y_true, dtype=int), missed])
    predicted = np.concatenate([np.asarray(y_pred, dtype=int), np.full(len(missed), -1)])
    present = [k for k in range(len(EMOTIONS)) if (truth == k).any()]
    names = [EMOTIONS[k] for k in present]
    return classification_report(truth, predicted, labels=present, target_names=names, digits=3,
                                 zero_division=0)


def worst_misclassified(evaluation: Evaluation, per_class: int = WORST_PER_CLASS) -> dict[int, np.ndarray]:
    """Per true class, the misclassified images the model believed least in the truth of
    (lowest probability on the true class first)."""
    y_true, y_pred, proba = evaluation.y_true, evaluation.y_pred, evaluation.proba
    out = {}
    for k in range(len(EMOTIONS)):
        wrong = np.flatnonzero((y_true == k) & (y_pred != k))
        out[k] = wrong[np.argsort(proba[wrong, k], kind="stable")][:per_class]
    return out


def plot_worst(evaluation: Evaluation) -> Figure:
    proba, y_pred, names = evaluation.proba, evaluation.y_pred, evaluation.data.image_names
    rows = []
    for k, picks in worst_misclassified(evaluation).items():
        faces = [(evaluation.data.images[i],
                  f"{Path(str(names[i])).stem}\nas {EMOTIONS[y_pred[i]]} {proba[i, y_pred[i]]:.2f}\n"
                  f"p({EMOTIONS[k]}) {proba[i, k]:.2f}") for i in picks]
        rows.append((EMOTIONS[k], faces))
    title = f"{evaluation.name}: worst-misclassified {evaluation.split} faces per true class"
    return plots.plot_face_grid(rows, WORST_PER_CLASS, title)


def write_predictions(evaluation: Evaluation, path: Path) -> Path:
    """One row per image: name, true and predicted class, the 8 probabilities."""
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "true", "predicted", *EMOTIONS])
        for name, t, p, row in zip(evaluation.data.image_names, evaluation.y_true, evaluation.y_pred,
                                   evaluation.proba, strict=True):
            w.writerow([name, EMOTIONS[t], EMOTIONS[p], *(f"{v:.6f}" for v in row)])
    return Path(path)


def build_document(evaluation: Evaluation) -> Document:
    m = evaluation.metrics
    photos = evaluation.photos
    where = f"photos in {photos['folder']}" if photos else f"FERPlus {evaluation.split}"
    doc = Document(f"Evaluation of {evaluation.name} on {where}")
    if evaluation.command:
        doc.paragraph(f"Written by `{evaluation.command}` on {datetime.now():%Y-%m-%d %H:%M}.")
    if photos:
        doc.paragraph(f"Model `{evaluation.architecture}` from `{evaluation.run}`, {m['images']:,} labelled "
                      f"photos through the photo pipeline (face detector `{photos['detector']}`, the largest "
                      f"face of each photo), class prior `{evaluation.prior}`, test-time augmentation: "
                      f"{evaluation.tta or 'none'}. Classes present: {', '.join(photos['classes_present'])}. "
                      f"A photo with no face found counts as an error ({m.get('missed', 0):,} of them).")
    else:
        doc.paragraph(f"Model `{evaluation.architecture}` from `{evaluation.run}`, data "
                      f"`{evaluation.data_root}`, label protocol `{evaluation.protocol}`, {m['images']:,} "
                      f"images, test-time augmentation: {evaluation.tta or 'none'}, class prior "
                      f"`{evaluation.prior}`.")
    doc.heading("Headline numbers")
    header = ["accuracy", "balanced accuracy", "macro F1", "weighted F1", "macro AUC", "ECE (15 bins)", "NLL"]
    row = [fmt(m["accuracy"]), fmt(m["balanced_accuracy"]), fmt(m["macro"]["f1"]), fmt(m["weighted"]["f1"]),
           fmt(m["macro_auc"]), fmt(m["ece"]), fmt(m["nll"])]
    if "kl_divergence" in m:
        header.append("KL to votes")
        row.append(fmt(m["kl_divergence"]))
    doc.table(header, [row])
    doc.paragraph(f"{m['correct']:,} of {m['images']:,} faces classified correctly. Balanced accuracy is "
                  "the mean recall over the emotions present (every emotion counts the same, so rare "
                  "classes such as contempt count as much as happiness); macro averages weigh every "
                  "emotion equally too, weighted averages follow the class sizes. ECE is the average gap "
                  "between confidence and accuracy (0 = perfectly calibrated); NLL is the mean "
                  "-log probability of the true class (lower is better)."
                  + (" KL is the mean KL divergence from the annotators' vote distribution to the "
                     "predicted distribution." if "kl_divergence" in m else "")
                  + (" Photos with no face found count in accuracy, recall and support; the confusion "
                     "matrix, precision, AUC and calibration are over the photos with a face."
                     if photos else ""))
    doc.heading("Per class")
    doc.table(["emotion", "support", "precision", "recall", "F1", "ROC AUC"],
              [[name, str(c["support"]), fmt(c["precision"]), fmt(c["recall"]), fmt(c["f1"]), fmt(c["auc"])]
               for name, c in m["per_class"].items()])
    doc.paragraph("'-' marks a number that is undefined: a class with no test image has no recall or AUC.")
    doc.heading("Most confused pairs")
    if m["most_confused"]:
        doc.table(["true class", "predicted as", "images", "share of true class"],
                  [[c["true"], c["predicted"], str(c["count"]), f"{c['rate']:.1%}"]
                   for c in m["most_confused"]])
    else:
        doc.paragraph("No confusions: every image was classified correctly.")
    doc.heading("Confusion matrix")
    doc.image("confusion_matrix.png", "Confusion matrix: counts (left) and each row divided by the "
                                      + ("number of its photos with a face found (right)" if photos else
                                         "true class's size (right; the diagonal is per-class recall)"))
    doc.heading("Classification report")
    doc.preformatted((evaluation.out_dir / "classification_report.txt").read_text())
    doc.heading("ROC curves")
    doc.image("roc_curves.png", "One-vs-rest ROC curve per emotion; the dashed diagonal is chance")
    doc.heading("Calibration")
    doc.image("reliability.png", "Reliability diagram: bars below the diagonal mean over-confidence, "
                                 "above it under-confidence")
    if photos:
        doc.heading("Photos with no face found")
        doc.preformatted("\n".join(f"{m['image']} ({m['emotion']})" for m in photos["missed"]) or "none")
        if photos["skipped"]:
            doc.heading("Skipped (bad rows or files)")
            doc.preformatted("\n".join(photos["skipped"]))
        if photos["aliases"]:
            doc.paragraph("Emotion aliases read: "
                          + ", ".join(f"{a} ({n})" for a, n in photos["aliases"].items()))
    doc.heading("Worst-misclassified faces")
    doc.image("worst_misclassified.png", f"Per true class, up to {WORST_PER_CLASS} misclassified faces with "
                                         "the lowest probability on their true class")
    return doc


def write_report(evaluation: Evaluation, out_dir: str | Path) -> dict[str, Path]:
    """Write every file of an evaluation folder; returns {file name: path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    evaluation.out_dir = out
    m = evaluation.metrics
    title = evaluation.name
    (out / "metrics.json").write_text(json.dumps(evaluation.metrics_json(), indent=2) + "\n")
    write_predictions(evaluation, out / "predictions.csv")
    report_text = classification_report_text(evaluation.y_true, evaluation.y_pred, m.get("missed_per_class"))
    (out / "classification_report.txt").write_text(report_text)
    figures = {
        "classification_report.png": plots.plot_text(
            report_text, f"{title}: {evaluation.split}, protocol {evaluation.protocol}"),
        "confusion_matrix.png": plots.plot_confusion(np.array(m["confusion_matrix"]), title),
        "roc_curves.png": plots.plot_roc(evaluation.y_true, evaluation.proba,
                                         {name: c["auc"] for name, c in m["per_class"].items()}, title),
        "reliability.png": plots.plot_reliability(m["calibration"]["table"], m["ece"], title),
        "worst_misclassified.png": plot_worst(evaluation),
    }
    for name, figure in figures.items():
        plots.save(figure, out / name)
    doc = build_document(evaluation)
    (out / "report.md").write_text(doc.to_markdown())
    (out / "report.html").write_text(doc.to_html(out))
    return {name: out / name for name in FILES}
