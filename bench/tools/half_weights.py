"""Store a bundled model's weights in float16, if that keeps its answers (a maintainer's tool).

The rule, fixed before any figure was read: float16 storage ships when, on FERPlus Valid (majority),
top-1 agreement with the float32 weights is at least HALF_MIN_AGREEMENT and accuracy drops at most
HALF_MAX_DROP. The model then ships one form only (the wheel's size budget): its float16 weights, and
its fp32 ONNX export is built on first use into the user cache (`ferkit.models.onnx_export.cached_export`).
Test is read once, to record the figures of the form that ships.

    .venv/bin/python -m bench.tools.half_weights deep_cnn baseline
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.common import SHARED
from ferkit.data import label_split, load_ferplus
from ferkit.models.bundled import weights_root
from ferkit.models.folder import ONNX_FP32, ModelFolder, weights_sha256
from ferkit.models.io import load_folder, save_model
from ferkit.models.onnx_export import FIRST_USE, cached_export
from ferkit.release.bundle import onnx_test_accuracy

HALF_MIN_AGREEMENT = 0.999
HALF_MAX_DROP = 0.001


def predictions(folder: Path, images: np.ndarray) -> np.ndarray:
    import torch

    from ferkit.models import normalize

    model = load_folder(folder)
    with torch.inference_mode():
        return np.concatenate([model(normalize(images[i:i + 512])).argmax(1).numpy()
                               for i in range(0, len(images), 512)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--data", default=str(SHARED / "ferplus"))
    args = parser.parse_args()
    data = load_ferplus(args.data, splits=("valid", "test"))
    valid, test = (label_split(data[split], "majority") for split in ("valid", "test"))
    for name in args.names:
        folder = ModelFolder(weights_root() / name)
        config = folder.read_config()
        if config.get("weight_storage") == "float16":
            print(f"{name}: already float16")
            continue
        full = predictions(folder.path, valid.images)
        with tempfile.TemporaryDirectory() as tmp:
            half_config = {k: v for k, v in config.items() if k != "weights_sha256"}
            save_model(load_folder(folder.path), Path(tmp), half_config, storage="float16")
            half = predictions(Path(tmp), valid.images)
            agreement = float((half == full).mean())
            change = float((half == valid.labels).mean() - (full == valid.labels).mean())
            print(f"{name}: FERPlus Valid ({len(valid)} faces) top-1 agreement {agreement:.5f}, "
                  f"accuracy {float((full == valid.labels).mean()):.4f} -> "
                  f"{float((half == valid.labels).mean()):.4f}")
            if agreement < HALF_MIN_AGREEMENT or change < -HALF_MAX_DROP:
                print(f"{name}: float16 refused by the rule; left as it is")
                continue
            test_correct = int((predictions(Path(tmp), test.images) == test.labels).sum())
            for file in ("model.safetensors", "model.json"):
                (Path(tmp) / file).replace(folder.path / file)
        config = folder.read_config()
        config["weights_sha256"] = weights_sha256(folder.path)
        folder.write_config(config)
        (folder.path / ONNX_FP32).unlink(missing_ok=True)
        metrics = folder.read_metrics()
        before = metrics["correct"]
        print(f"{name}: FERPlus Test correct {before} (float32) -> {test_correct} (float16)")
        if test_correct != before:  # the card's figures describe the form that ships
            metrics["correct"] = test_correct
            metrics["accuracy"] = test_correct / metrics["images"]
            metrics["half_storage_note"] = (f"float32 weights scored {before}; the per-class figures "
                                            "are the float32 evaluation's")
        # the path a Predictor takes by default: the export built on first use, scored once on Test
        onnx = metrics.get("onnx", {})
        onnx.update({"runs": ONNX_FP32, "precision": "fp32", "built": FIRST_USE,
                     "test": onnx_test_accuracy(cached_export(folder.path), folder.path, args.data),
                     "half_storage": {"valid_agreement": agreement, "valid_accuracy_change": change,
                                      "rule": f"float16 if on FERPlus Valid top-1 agreement >= "
                                              f"{HALF_MIN_AGREEMENT} and accuracy drops at most "
                                              f"{HALF_MAX_DROP * 100:.1f} points"}})
        metrics["onnx"] = onnx
        folder.write_metrics(metrics)
        print(f"{name}: stored in float16 ({(folder.path / 'model.safetensors').stat().st_size:,} bytes)")
        print(json.dumps(onnx["half_storage"]))


if __name__ == "__main__":
    main()
