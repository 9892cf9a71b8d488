"""The package's import structure: every module imports on its own, and no two modules import each
other, even through an import hidden inside a function (which only fails later, at call time) or
under TYPE_CHECKING (a cycle the type checker sees is a layering the reader has to untangle too)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "ferkit"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(source: str, known: dict[str, Path] | set[str]) -> set[str]:
    """ferkit modules a module's `source` imports anywhere: at the top, inside functions and under
    TYPE_CHECKING. `from ferkit.x import y` counts as importing ferkit.x.y when y is a module, else
    ferkit.x."""
    tree = ast.parse(source)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ferkit"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
    return out


def test_every_module_imports_in_a_fresh_interpreter():
    names = [n for n in modules() if n != "ferkit.__main__"]
    script = f"import importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, or None (depth-first search with colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_import_cycle_between_modules():
    known = modules()
    # A package's __init__ importing its own submodules is its public face, not a cycle.
    graph = {name: {t for t in imports_of(path.read_text(), known)
                    if t != name and not t.startswith(name + ".")} for name, path in known.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_and_under_type_checking_count():
    known = {"ferkit.a", "ferkit.b", "ferkit.c", "ferkit.d"}
    source = """
from typing import TYPE_CHECKING
import ferkit.a
if TYPE_CHECKING:
    from ferkit.b import Thing
def later():
    from ferkit import c
    from ferkit.d import function
"""
    assert imports_of(source, known) == known


def test_the_api_and_the_command_work_without_the_app_extra(tmp_path):
    """`pip install .` (no extras) must give a working Predictor and `ferkit predict`: run both in a
    fresh interpreter where importing Streamlit (or its webcam component) fails."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())
    base = " ".join(pyproject["project"]["dependencies"])
    app_extra = " ".join(pyproject["project"]["optional-dependencies"]["app"])
    assert "streamlit" not in base and "streamlit" in app_extra
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 120, 120)).save(tmp_path / "grey.png")
    script = f"""
import sys
class NoApp:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("streamlit", "streamlit_webrtc", "altair"):
            raise ImportError("not installed: " + name)
sys.meta_path.insert(0, NoApp())
import numpy as np
from ferkit import Predictor
assert Predictor(model="fast").predict_faces(np.zeros((1, 48, 48), np.uint8)).shape == (1, 8)
from ferkit.cli import app
sys.argv = ["ferkit", "predict", {str(tmp_path / "grey.png")!r}, "--model", "fast"]
app()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no face found" in result.stdout
    assert "streamlit" not in result.stderr.lower()
    # `ferkit app` without the app extra: one line naming the extra, exit code 2
    launch = script.split("from ferkit.cli import app")[0] + (
        "from ferkit.cli import app\nsys.argv = ['ferkit', 'app']\napp()\n")
    result = subprocess.run([sys.executable, "-c", launch], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "pip install 'ferkit[app]'" in result.stderr and "Traceback" not in result.stderr


def test_the_core_runs_without_torch_and_torch_commands_name_their_extra(tmp_path):
    """`pip install ferkit` has neither PyTorch nor scikit-learn, matplotlib, onnx or OpenCV: the
    bundled models run on ONNX Runtime, the photo pipeline on NumPy and Pillow. In a fresh interpreter
    where importing those fails, the Predictor, `predict` (with a drawn copy), `models`, `serve` and
    `app` work, and `evaluate --photos` with the eval extra alone; each command that needs an extra
    exits 2 with the pip line of that extra."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())
    core = " ".join(pyproject["project"]["dependencies"])
    assert not any(name in core for name in ("torch", "captum", "lightning", "scikit-learn", "matplotlib",
                                             "onnx>", "scipy", "opencv"))
    photos = PACKAGE.parents[2] / "shared" / "datasets" / "faces-dlib-examples"
    if not (photos / "2008_001009.jpg").is_file():
        import pytest

        pytest.skip(f"face photos not found at {photos}")
    (tmp_path / "study" / "happiness").mkdir(parents=True)
    (tmp_path / "study" / "happiness" / "a.jpg").write_bytes((photos / "2008_001009.jpg").read_bytes())
    torch_only = ("torch", "captum", "lightning", "onnx")
    core_only = (*torch_only, "sklearn", "scipy", "matplotlib", "cv2")

    def run(code: str, missing: tuple[str, ...] = core_only) -> subprocess.CompletedProcess:
        block = f"""
import sys
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {missing!r}:
            raise ImportError("No module named " + repr(name))
sys.meta_path.insert(0, Missing())
"""
        # an empty cache: deep_cnn's export is not built yet
        env = {**os.environ, "FERKIT_CACHE_DIR": str(tmp_path / "cache")}
        return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, env=env)

    def ferkit(*args: str, missing: tuple[str, ...] = core_only) -> subprocess.CompletedProcess:
        return run(f"from ferkit.cli import app\nsys.argv = ['ferkit', *{list(args)!r}]\napp()\n", missing)

    photo = str(photos / "2008_001009.jpg")
    faces = run(f"from ferkit import Predictor\nprint(Predictor().predict({photo!r}))")
    assert faces.returncode == 0 and faces.stdout.count("Face(") == 2, faces.stderr[-2000:]
    works = [ferkit("predict", photo, "--model", "fast", "--annotate", str(tmp_path / "drawn.jpg")),
             ferkit("models"), ferkit("card", "-m", "fast"),
             ferkit("evaluate", "-m", "fast", "--photos", str(tmp_path / "study"),
                    "--out", str(tmp_path / "eval"), missing=torch_only),
             ferkit("serve", "--help"), ferkit("app", "--help")]
    for result in works:
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "drawn.jpg").stat().st_size > 0  # drawn without OpenCV
    for args, extra in ((["train"], "train"), (["explain", "x.jpg", "--model", "fast"], "torch"),
                        (["export", "-m", "fast", "--onnx", "x.onnx"], "torch"),
                        (["evaluate", "-m", "fast"], "torch"),
                        (["video", "x.mp4"], "video"),
                        (["predict", photo, "--detector", "haar"], "video"),
                        (["evaluate", "-m", "fast", "--photos", str(tmp_path / "study")], "eval"),
                        (["adapt", "-m", "default", "--photos", ".", "--out", "o"], "torch"),
                        # ships its weights only: the ONNX export is built with PyTorch on first use
                        (["predict", photo, "-m", "deep_cnn"], "torch")):
        result = ferkit(*args)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert f"pip install 'ferkit[{extra}]'" in result.stderr and "Traceback" not in result.stderr, args
