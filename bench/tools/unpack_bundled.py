"""Write each member of a bundled ensemble as a model folder of its own, to combine them with new runs.

    .venv/bin/python -m bench.tools.unpack_bundled default --out runs

The member runs of a shipped ensemble are not in git; its weights and its training record
(metrics.json `training`) are. Each member becomes `OUT/<its run name>/` (model.json +
model.safetensors + a metrics.json holding only that member's training record), which
`bench/experiments/ensemble_valid.py`, `ferkit evaluate` and `ferkit ensemble` take like a run folder, and
whose training record `ferkit bundle` reports again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ferkit.models import load, model_config, read_model_config, save_model
from ferkit.models.bundled import resolve_model
from ferkit.models.folder import METRICS_FILE, read_json_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="bundled name or model folder of an ensemble")
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    folder = resolve_model(args.model).path
    config = read_model_config(folder)
    if config["architecture"] != "ensemble":
        raise SystemExit(f"{args.model}: not an ensemble ({config['architecture']})")
    members = config["model_args"]["members"]
    records = read_json_file(folder / METRICS_FILE).get("training", {}).get("members",
                                                                             [{}] * len(members))
    weights = load(folder).members
    for i, (member, spec, record) in enumerate(zip(weights, members, records, strict=True)):
        out = args.out / record.get("run", f"{folder.name}-member{i}")
        save_model(member, out, model_config(spec["architecture"], spec.get("model_args", {}),
                                             protocol=config.get("protocol"),
                                             metrics={"val_acc": record.get("valid", {}).get("val_acc"),
                                                      "best_epoch": record.get("best_epoch")}))
        if record:
            (out / METRICS_FILE).write_text(json.dumps({"training": record}, indent=2) + "\n")
        print(out)


if __name__ == "__main__":
    main()
