"""Which network shapes can outrun fer's classifier: untrained candidates, int8, timed beside fer.

    .venv/bin/python -m bench.speed.arch_speed [--rounds 3] [--archs fast r4-1122 ...]

Speed does not depend on the weights, so each candidate is a freshly initialised network of the
given shape, saved to a temporary run folder, exported as `ferkit export --int8` would (static QDQ,
calibrated on FERPlus train faces), and handed to bench/speed/classifier_vs_fer.py with the bundled `fast`
as the reference: one run, 1 thread, interleaved with fer's TFLite model. Its accuracy columns mean
nothing for untrained nets. Used to pick a student network before spending an hour training it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench.common import REPO, SHARED
from bench.speed.train_throughput import forward_flops
from ferkit.models import create_model, model_config, save_model
from ferkit.release.export import export_onnx

# name -> (registered model, model_args); `fast` is the bundled student's shape, the others spend the
# same budget differently: a fourth 3x3 stage holds parameters at little compute, and inverted
# residuals (mobilenetv2) move the compute from dense 3x3 convolutions to 1x1s.
ARCHS = {
    "fast": ("resnet", dict(widths=[32, 64, 128], depths=[2, 2, 2], stem_width=16)),
    "fast-in40": ("resnet", dict(widths=[32, 64, 128], depths=[2, 2, 2], stem_width=16, input_side=40)),
    "fast-in36": ("resnet", dict(widths=[32, 64, 128], depths=[2, 2, 2], stem_width=16, input_side=36)),
    "r3-w160": ("resnet", dict(widths=[32, 64, 160], depths=[2, 2, 2], stem_width=16)),
    "r3-w24": ("resnet", dict(widths=[24, 48, 96], depths=[2, 2, 2], stem_width=16)),
    "r3-w24-128": ("resnet", dict(widths=[24, 48, 128], depths=[2, 2, 2], stem_width=16)),
    "r3-w16-128": ("resnet", dict(widths=[16, 48, 128], depths=[2, 2, 2], stem_width=16)),
    "r4-1111": ("resnet", dict(widths=[32, 64, 128, 256], depths=[1, 1, 1, 1], stem_width=16)),
    "r4-1122": ("resnet", dict(widths=[32, 64, 128, 256], depths=[1, 1, 2, 2], stem_width=16)),
    "r4-2221": ("resnet", dict(widths=[32, 64, 128, 256], depths=[2, 2, 2, 1], stem_width=16)),
    "r4-w24": ("resnet", dict(widths=[24, 48, 96, 192], depths=[2, 2, 2, 2], stem_width=16)),
    "resnet18h": ("resnet", dict(widths=[32, 64, 128, 256], depths=[2, 2, 2, 2], stem_width=32)),
    "mnv2": ("mobilenetv2", {}),
    "mnv2-e6": ("mobilenetv2", dict(expansion=6)),
    "mnv2-wide": ("mobilenetv2", dict(widths=[32, 64, 128, 256], depths=[2, 2, 3, 2])),
    "mnv2-small": ("mobilenetv2", dict(widths=[16, 32, 64, 128], depths=[1, 2, 2, 1], head_width=256)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferkit-arch-") as tmp:
        onnx_files = []
        print("| shape | model and model_args | params | MFLOPs/face |\n|---|---|---|---|")
        for name in args.archs:
            torch.manual_seed(0)
            model_name, model_args = ARCHS[name]
            model = create_model(model_name, **model_args).eval()
            params = sum(p.numel() for p in model.parameters())
            print(f"| {name} | {model_name} {model_args} | {params:,} | {forward_flops(model) / 1e6:.0f} |")
            folder = Path(tmp) / name
            save_model(model, folder, model_config(model_name, model_args))
            onnx_files.append(str(export_onnx(folder, Path(tmp) / f"{name}.int8.onnx", int8=True,
                                              data_root=SHARED / "ferplus").path))
        print(flush=True)
        subprocess.run([sys.executable, "-m", "bench.speed.classifier_vs_fer", "--rounds", str(args.rounds),
                        "--models", "fast", *onnx_files], check=True, cwd=REPO)


if __name__ == "__main__":
    main()
