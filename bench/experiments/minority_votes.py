"""How much "subtle expression" FERPlus holds: neutral-majority faces that a minority called something else.

    .venv/bin/python -m bench.experiments.minority_votes [--splits train valid] [--min-votes 2 3 4]

A posed face whose expression is subtle (posed anger, fear, disgust) is read as neutral by a
network trained on FERPlus's crowd votes. A label protocol that relabels such faces by their
minority emotion could only teach "subtle anger" if FERPlus has enough of them: this counts, per
split, the faces whose majority label (the reference protocol) is neutral but that got at least
k of the 10 votes for another emotion, next to each emotion's own majority count.

A second table gives each emotion's vote mass, over every face of the split, and the share of it
that the reference protocols discard as outliers (a count of 1 is zeroed before any protocol but
`argmax` and `all_votes` builds its target): the rare classes lose far more of their evidence than
neutral does.
No model runs.
"""

from __future__ import annotations

import argparse

import numpy as np

from ferkit.data import label_split, load_ferplus
from ferkit.emotions import EMOTIONS
from ferkit.settings import data_root

NEUTRAL = EMOTIONS.index("neutral")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", nargs="*", default=["train", "valid"])
    parser.add_argument("--min-votes", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--data", default=str(data_root()))
    args = parser.parse_args()
    data = load_ferplus(args.data, splits=tuple(args.splits))
    others = [e for e in EMOTIONS if e != "neutral"]
    print("| split | faces (majority) | row | " + " | ".join(others) + " |")
    print("|---|---|---|" + "---|" * len(others))
    for split in args.splits:
        labelled = label_split(data[split], "majority")
        votes = labelled.votes  # (N, 10) raw counts of the faces the protocol keeps
        majority = np.bincount(labelled.labels, minlength=len(EMOTIONS))
        cells = " | ".join(str(majority[EMOTIONS.index(e)]) for e in others)
        print(f"| {split} | {len(votes)} | majority label | {cells} |")
        neutral = votes[labelled.labels == NEUTRAL]
        for k in args.min_votes:
            cells = " | ".join(str(int((neutral[:, EMOTIONS.index(e)] >= k).sum())) for e in others)
            print(f"| {split} | | neutral majority, >= {k} votes for | {cells} |")
    print()
    print("| split | row | " + " | ".join(EMOTIONS) + " |")
    print("|---|---|" + "---|" * len(EMOTIONS))
    for split in args.splits:
        votes = np.asarray(data[split].votes, dtype=np.int64)[:, :len(EMOTIONS)]  # every face, raw counts
        mass = votes.sum(axis=0)
        single = np.where(votes == 1, 1, 0).sum(axis=0)
        print(f"| {split} | votes | " + " | ".join(f"{m:,}" for m in mass) + " |")
        print(f"| {split} | share in counts of 1 (dropped as outliers) | "
              + " | ".join(f"{s / max(m, 1):.2f}" for s, m in zip(single, mass, strict=True)) + " |")


if __name__ == "__main__":
    main()
