"""The wheel users install: at most 50 MB, holding every bundled model, the app with its config and
example photos, and the face detectors; installed outside the repository, every bundled model runs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "ferkit"
WHEEL_LIMIT = 50_000_000  # bytes: the size budget of the wheel (PyPI's default limit is 100 MB)

pytestmark = pytest.mark.wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    from bench.common import build_wheel

    return build_wheel(tmp_path_factory.mktemp("build"))


def package_files(*patterns: str) -> set[str]:
    """Files of the source package matching `patterns`, as the wheel names them."""
    return {f"ferkit/{path.relative_to(PACKAGE).as_posix()}" for pattern in patterns
            for path in PACKAGE.glob(pattern) if path.is_file() and "__pycache__" not in path.parts}


def test_the_wheel_fits_its_budget_and_holds_every_model_the_app_and_the_detectors(wheel):
    assert wheel.stat().st_size <= WHEEL_LIMIT, f"{wheel.name}: {wheel.stat().st_size:,} bytes"
    names = set(zipfile.ZipFile(wheel).namelist())
    models = [path.parent for path in sorted((PACKAGE / "weights").glob("*/model.json"))]
    assert {folder.name for folder in models} >= {"default", "fast", "deep_cnn", "baseline"}
    for folder in models:
        shipped = package_files(f"weights/{folder.name}/*")
        assert shipped and shipped <= names, folder.name
        assert f"ferkit/weights/{folder.name}/model.safetensors" in names
    app = package_files("app/*.py", "app/config.toml", "app/examples/*")
    assert {"ferkit/app/main.py", "ferkit/app/config.toml", "ferkit/app/examples/astronaut.jpg"} <= app
    assert app <= names
    assert package_files("faces/*_onnx/*.onnx") <= names and package_files("faces/*_onnx/*.onnx")
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "ferkit = ferkit.cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_bundled_model_runs_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--disable-pip-version-check", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    script = """
import json, sys
from importlib import resources
import numpy as np
import ferkit
from ferkit import Predictor
from ferkit.models import list_bundled
faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
runs = {}
for name in list_bundled():
    predictor = Predictor(name)
    probs = predictor.predict_faces(faces)
    runs[name] = [predictor.backend.kind, list(probs.shape), bool(np.allclose(probs.sum(1), 1, atol=1e-4))]
app = resources.files("ferkit.app")
shipped = ("main.py", "config.toml", "examples/astronaut.jpg")
print(json.dumps({"package": ferkit.__file__, "runs": runs,
                  "app": [(app / name).is_file() for name in shipped]}))
"""
    # outside the repository, with only the installed wheel on the path ahead of the editable install
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(site),
           "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).is_relative_to(site)
    assert set(report["runs"]) == {p.parent.name for p in (PACKAGE / "weights").glob("*/model.json")}
    for name, (backend, shape, sums_to_one) in report["runs"].items():
        assert backend == "onnx" and shape == [4, 8] and sums_to_one, name
    assert all(report["app"])
