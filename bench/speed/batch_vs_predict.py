"""`ferkit batch` (Ray Data, local) against `ferkit predict` on the same photos: rows and throughput.

    .venv/bin/python -m bench.speed.batch_vs_predict [--photos 300] [--model default]

Takes the first N photos of ../shared/datasets/expressions-in-the-wild (a list file in a temporary
folder; nothing is copied), runs `ferkit predict FILES --csv` and `ferkit batch LIST --out x.csv`
as a user would (separate processes, wall time including start-up and model loading), and checks
that the two CSVs hold the same rows (file, face, box, emotion; probabilities to 1e-5).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SHARED

WILD = SHARED / "expressions-in-the-wild"


def rows(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    ferkit = str(Path(sys.executable).with_name("ferkit"))
    with (WILD / "labels.csv").open() as fh:
        files = [str(WILD / "images" / r["image"]) for r in list(csv.DictReader(fh))[:args.photos]]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        listing = folder / "list.csv"
        listing.write_text("path\n" + "\n".join(files) + "\n")
        timings = {}
        for name, command in (("predict", [ferkit, "predict", *files, "--csv", str(folder / "predict.csv"),
                                           "--model", args.model]),
                              ("batch", [ferkit, "batch", str(listing), "--out", str(folder / "batch.csv"),
                                         "--model", args.model])):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, text=True, check=False)
            timings[name] = time.perf_counter() - start
        a, b = rows(folder / "predict.csv"), rows(folder / "batch.csv")
        keys = ("file", "face", "x", "y", "width", "height", "emotion")
        emotions = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
        pairs = list(zip(a, b, strict=False))
        same = len(a) == len(b) and all(r[k] == q[k] for r, q in pairs for k in keys)
        close = same and all(abs(float(r[e] or 0) - float(q[e] or 0)) <= 1e-5
                             for r, q in pairs for e in emotions)
        print(f"# {len(files)} photos of expressions-in-the-wild, model {args.model}, 2 cores")
        print("| command | wall time (s) | photos/s | rows |")
        print("|---|---|---|---|")
        for name, label, found in (("predict", "ferkit predict", a),
                                   ("batch", "ferkit batch (local Ray)", b)):
            print(f"| {label} | {timings[name]:.1f} | {len(files) / timings[name]:.1f} | {len(found)} |")
        print(f"same rows: {same}; same probabilities (1e-5): {close}")


if __name__ == "__main__":
    main()
