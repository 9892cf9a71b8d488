"""What a newcomer meets: `pip install ferkit` (the core, from the wheel) into a fresh virtualenv, and
the first prediction in a fresh process, beside the peer (PyPI `fer`) in the same run.

- The wheel: built from this checkout (its size).
- The install: a new virtualenv, `pip install WHEEL` with pip's cache off, so every dependency is
  fetched from the package index as a user's first install is (time), then the virtualenv's size on
  disk and which of the extras' big packages came with it (none should).
- The first prediction: in a fresh interpreter, `from ferkit import Predictor`,
  `Predictor().predict(photo)`, timed from before the import to the faces (median of --runs
  processes; the interpreter's own start is shown apart).
- The peer: `from fer import FER`, `FER().detect_emotions(image)` on the same photo, timed the same
  way in its own virtualenv (bench/tools/peer_env.py: fer with tensorflow-cpu, --no-deps beside what
  its classifier path imports, so its size is a lower bound of `pip install fer`, which also pulls
  facenet-pytorch with PyTorch and moviepy).

    .venv/bin/python -m bench.speed.fresh_install
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from bench.common import ONE_FACE, PHOTOS, build_wheel, cpu_name
from bench.tools.peer_env import peer_python

# the extras' big packages, none of which the core install may pull in
EXTRAS_PACKAGES = ("torch", "opencv-python-headless", "scikit-learn", "scipy", "matplotlib", "onnx")

FERKIT_FIRST = """
import time
start = time.perf_counter()
from ferkit import Predictor
faces = Predictor().predict({photo!r})
took = time.perf_counter() - start
print(repr(faces))
print({{"seconds": took, "faces": len(faces), "emotion": faces[0].emotion if faces else None}})
"""

FER_FIRST = """
import os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import time
start = time.perf_counter()
import cv2
from fer.fer import FER
faces = FER().detect_emotions(cv2.imread({photo!r}))
took = time.perf_counter() - start
top = max(faces[0]["emotions"], key=faces[0]["emotions"].get) if faces else None
print({{"seconds": took, "faces": len(faces), "emotion": top}})
"""


def largest_packages(env_dir: Path, count: int = 8) -> dict[str, float]:
    """The `count` largest entries of the virtualenv's site-packages (a package and its .libs folder
    together), in MB."""
    site = next(env_dir.glob("lib/python*/site-packages"))
    sizes: dict[str, float] = {}
    for entry in site.iterdir():
        if entry.is_dir() and not entry.name.endswith((".dist-info", "__pycache__")):
            name = entry.name.removesuffix(".libs").removesuffix("_headless")
            sizes[name] = sizes.get(name, 0.0) + folder_mb(entry)
    return dict(sorted(sizes.items(), key=lambda item: -item[1])[:count])


def folder_mb(path: Path) -> float:
    """Bytes on disk (allocated blocks, as `du` counts) under `path`, in MB."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file gone meanwhile
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total / 1e6


def first_prediction(python: str, code: str, runs: int, cwd: Path) -> dict:
    """Median over `runs` fresh processes: the in-process seconds and the whole process's."""
    inside, whole, last = [], [], {}
    for _ in range(runs):
        start = time.perf_counter()
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd, check=False)
        whole.append(time.perf_counter() - start)
        if out.returncode != 0:
            raise SystemExit(f"{python}: failed\n{out.stderr[-2000:]}")
        last = ast.literal_eval(out.stdout.strip().splitlines()[-1])
        inside.append(last["seconds"])
        last["printed"] = out.stdout.strip().splitlines()[0]
    return {"import_load_predict_s": statistics.median(inside), "process_s": statistics.median(whole),
            "faces": last["faces"], "emotion": last["emotion"], "printed": last["printed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per first-prediction timing")
    parser.add_argument("--photo", type=Path, default=PHOTOS / ONE_FACE)
    parser.add_argument("--no-peer", action="store_true", help="skip fer")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferkit-fresh-") as tmp:
        workdir = Path(tmp)
        wheel = build_wheel(workdir)
        env_dir = workdir / "venv"
        venv.create(env_dir, with_pip=True)
        python = str(env_dir / "bin" / "python")
        empty = folder_mb(env_dir)
        start = time.perf_counter()
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-cache-dir",
                        "--disable-pip-version-check", str(wheel)], check=True)
        install_s = time.perf_counter() - start
        listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True,
                                text=True, check=True)
        packages = {p["name"].lower() for p in json.loads(listed.stdout)}
        # the first use builds nothing for the default model (it ships its export); the cache is fresh
        os.environ["FERKIT_CACHE_DIR"] = str(workdir / "cache")
        ferkit = first_prediction(python, FERKIT_FIRST.format(photo=str(args.photo)), args.runs, workdir)
        result = {
            "cpu": cpu_name(), "python": sys.version.split()[0],
            "wheel_mb": wheel.stat().st_size / 1e6,
            "install_s": install_s, "venv_mb": folder_mb(env_dir), "empty_venv_mb": empty,
            "torch_installed": "torch" in packages, "packages": len(packages),
            "extras_present": sorted(set(EXTRAS_PACKAGES) & packages),
            "largest_mb": largest_packages(env_dir),
            "ferkit": ferkit,
        }
        if not args.no_peer:
            peer = peer_python()
            fer = first_prediction(peer, FER_FIRST.format(photo=str(args.photo)), args.runs, workdir)
            fer["venv_mb"] = folder_mb(Path(peer).parents[1])
            result["fer"] = fer
            result["ratio_first_prediction"] = fer["import_load_predict_s"] / ferkit["import_load_predict_s"]
            result["ratio_venv_size"] = fer["venv_mb"] / result["venv_mb"]
    print(json.dumps(result, indent=2))
    print(f"\nwheel {result['wheel_mb']:.1f} MB; core install {result['install_s']:.0f} s, "
          f"virtualenv {result['venv_mb']:.0f} MB ({result['packages']} packages; of "
          f"{', '.join(EXTRAS_PACKAGES)}: {', '.join(result['extras_present']) or 'none'}); import + load + "
          f"first prediction "
          f"{ferkit['import_load_predict_s']:.2f} s (process {ferkit['process_s']:.2f} s)")
    print("largest: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in result["largest_mb"].items()))
    if "fer" in result:
        fer = result["fer"]
        print(f"fer: virtualenv {fer['venv_mb']:.0f} MB ({result['ratio_venv_size']:.1f}x ferkit's), "
              f"import + load + first prediction {fer['import_load_predict_s']:.2f} s "
              f"({result['ratio_first_prediction']:.1f}x ferkit's)")


if __name__ == "__main__":
    main()
