"""Which test-time augmentation views help, measured on FERPlus Valid (never on Test).

    .venv/bin/python -m bench.experiments.tta_valid runs/A runs/B ... [--shift 2] [--threads 1]

Runs every model on Valid under each view (identity, mirror, shifts by +-`--shift` pixels with
edge padding, a 1.1x centre zoom, and the mirror of each) and prints, for each set of views, the
accuracy / macro-F1 / rare-class recall of each single run and of the ensemble of all runs
(mean of log-probabilities over members and views, as `ferkit ensemble` combines them).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, recall_score

from bench.common import runs_on_valid_parser, valid_split
from ferkit.emotions import EMOTIONS, emotion_index
from ferkit.models import load
from ferkit.models.base import normalize


def shifted(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate (N, 1, H, W) by (dx, dy) pixels, repeating the edge into the uncovered border."""
    p = max(abs(dx), abs(dy))
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    h, w = x.shape[-2:]
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def zoomed(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Centre crop of side H/factor resized back to H (a zoom-in)."""
    h = x.shape[-1]
    side = round(h / factor)
    start = (h - side) // 2
    crop = x[..., start:start + side, start:start + side]
    return F.interpolate(crop, size=(h, h), mode="bilinear", align_corners=False)


def views(shift: int) -> dict[str, callable]:
    base = {"id": lambda x: x,
            **{f"shift{dx:+d}{dy:+d}": (lambda x, dx=dx, dy=dy: shifted(x, dx, dy))
               for dx, dy in ((shift, 0), (-shift, 0), (0, shift), (0, -shift))},
            "zoom1.1": lambda x: zoomed(x, 1.1)}
    return {**base, **{f"flip-{name}": (lambda x, f=f: f(x).flip(-1)) for name, f in base.items()}}


def log_proba(model: torch.nn.Module, images: np.ndarray, view, batch_size: int = 256) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = view(normalize(images[start:start + batch_size]))
            out.append(torch.log_softmax(model(x).float(), dim=1).numpy())
    return np.concatenate(out)


def main() -> None:
    parser = runs_on_valid_parser(__doc__.splitlines()[0])
    parser.add_argument("--shift", type=int, default=2)
    args = parser.parse_args()
    valid = valid_split(args)
    y = valid.labels
    all_views = views(args.shift)
    scores = {}  # (run, view) -> (N, 8) log-probabilities
    for run in args.runs:
        model = load(run).eval()
        for name, view in all_views.items():
            scores[run, name] = log_proba(model, valid.images, view)
    view_sets = {
        "id": ["id"],
        "id+flip": ["id", "flip-id"],
        "id+shifts": ["id", *[v for v in all_views if v.startswith("shift")]],
        "id+flip+shifts (10)": [v for v in all_views if "zoom" not in v],
        "id+flip+zoom (4)": ["id", "flip-id", "zoom1.1", "flip-zoom1.1"],
        "all (12)": list(all_views),
    }
    rare = [emotion_index("disgust"), emotion_index("contempt")]
    print(f"FERPlus Valid, majority protocol, {len(y):,} images, shift {args.shift} px")
    print("| model | views | Valid acc | macro F1 | disgust recall | contempt recall |")
    print("|---|---|---|---|---|---|")
    members = [[r] for r in args.runs] + ([list(args.runs)] if len(args.runs) > 1 else [])
    for subset in members:
        label = subset[0].name if len(subset) == 1 else f"ensemble of {len(subset)}"
        for set_name, names in view_sets.items():
            predicted = np.mean([scores[r, v] for r in subset for v in names], axis=0).argmax(1)
            recall = recall_score(y, predicted, average=None, labels=list(range(len(EMOTIONS))),
                                  zero_division=0)
            print(f"| {label} | {set_name} | {(predicted == y).mean():.4f} | "
                  f"{f1_score(y, predicted, average='macro'):.3f} | {recall[rare[0]]:.2f} | "
                  f"{recall[rare[1]]:.2f} |")


if __name__ == "__main__":
    main()
