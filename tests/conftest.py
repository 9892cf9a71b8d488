"""Shared fixtures: small synthetic FERPlus roots in both layouts, and a private cache dir."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.browser import webcam_frames, write_y4m
from bench.common import fit_frame  # noqa: F401  (the tests' frames are the benchmarks')
from ferkit.data.ferplus import MICROSOFT_FOLDERS

REAL_FERPLUS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ferplus"
REAL_FACES = REAL_FERPLUS.parent / "faces-dlib-examples"

needs_ferplus = pytest.mark.skipif(
    not (REAL_FERPLUS / "FER2013Train" / "label.csv").is_file(),
    reason=f"real FERPlus data not found at {REAL_FERPLUS} (put ../shared beside the repo)",
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own cache dir, so no test sees another's (or the user's) cache."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(path))
    return path


# Hand-made vote rows (neutral..contempt, unknown, NF) and what majority makes of them.
VOTE_ROWS = [
    [0, 8, 0, 0, 0, 0, 0, 0, 2, 0],  # happiness
    [7, 0, 1, 0, 0, 0, 0, 0, 2, 0],  # neutral
    [0, 0, 6, 0, 0, 0, 4, 0, 0, 0],  # surprise
    [3, 0, 0, 5, 0, 0, 0, 0, 2, 0],  # no majority (dropped under majority)
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 9],  # not a face (dropped)
    [0, 0, 0, 0, 9, 1, 0, 0, 0, 0],  # anger
]


def face_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def write_microsoft_root(root: Path, rows_per_split: int = 6, votes=None) -> Path:
    """A tiny Microsoft-layout root: FER2013{Train,Valid,Test}/label.csv + 48x48 PNGs."""
    votes = votes or VOTE_ROWS
    for s, folder in enumerate(MICROSOFT_FOLDERS.values()):
        d = root / folder
        d.mkdir(parents=True)
        with (d / "label.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            for i in range(rows_per_split):
                name = f"fer{s:02d}{i:05d}.png"
                Image.fromarray(face_image(s * 1000 + i), mode="L").save(d / name)
                w.writerow([name, "(0, 0, 48, 48)", *votes[i % len(votes)]])
    return root


@pytest.fixture
def microsoft_root(tmp_path) -> Path:
    return write_microsoft_root(tmp_path / "ferplus")


def write_kaggle_root(root: Path) -> Path:
    """fer2013.csv + fer2013new.csv with 2 rows per split and one unlabeled row."""
    root.mkdir(parents=True)
    usages = ["Training", "Training", "Training", "PublicTest", "PublicTest", "PrivateTest",
              "PrivateTest"]
    names = ["fer0000000.png", "fer0000001.png", "", "fer0000003.png", "fer0000004.png",
             "fer0000005.png", "fer0000006.png"]
    with (root / "fer2013.csv").open("w", newline="") as pf, \
            (root / "fer2013new.csv").open("w", newline="") as lf:
        p, lab = csv.writer(pf), csv.writer(lf)
        p.writerow(["emotion", "pixels", "Usage"])
        lab.writerow(["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger",
                      "disgust", "fear", "contempt", "unknown", "NF"])
        for i, (usage, name) in enumerate(zip(usages, names, strict=True)):
            p.writerow([0, " ".join(map(str, face_image(i).ravel())), usage])
            lab.writerow([usage, name, *VOTE_ROWS[i % len(VOTE_ROWS)]])
    return root


@pytest.fixture
def kaggle_root(tmp_path) -> Path:
    return write_kaggle_root(tmp_path / "kaggle")


def learnable_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a bright 14x14 patch in quadrant `label` (0..3): a task a tiny CNN learns fast."""
    img = rng.integers(0, 90, (48, 48)).astype(np.uint8)
    y, x = divmod(label, 2)
    oy, ox = y * 24 + rng.integers(2, 8), x * 24 + rng.integers(2, 8)
    img[oy:oy + 14, ox:ox + 14] = 230
    return img


def write_learnable_root(root: Path, per_split: dict[str, int] | None = None, seed: int = 0) -> Path:
    """Microsoft-layout root whose class (neutral/happiness/surprise/sadness) is the bright quadrant."""
    per_split = per_split or {"train": 256, "valid": 64, "test": 64}
    rng = np.random.default_rng(seed)
    for split, folder in MICROSOFT_FOLDERS.items():
        d = root / folder
        d.mkdir(parents=True)
        with (d / "label.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            for i in range(per_split[split]):
                label = i % 4
                name = f"{split}{i:05d}.png"
                Image.fromarray(learnable_image(label, rng), mode="L").save(d / name)
                votes = [0] * 10
                votes[label] = 9
                votes[(label + 1) % 4] = 1
                w.writerow([name, "(0, 0, 48, 48)", *votes])
    return root


@pytest.fixture(scope="session")
def learnable_root(tmp_path_factory) -> Path:
    return write_learnable_root(tmp_path_factory.mktemp("learnable") / "ferplus")


# ---------------------------------------------------------------- the web app (tests/test_app*.py)

REPO = Path(__file__).resolve().parents[1]
APP_FILE = REPO / "src" / "ferkit" / "app" / "main.py"

needs_faces = pytest.mark.skipif(
    not (REAL_FACES / "2008_002506.jpg").is_file(),
    reason=f"face photos not found at {REAL_FACES} (put ../shared beside the repo)",
)


def face_photo(name: str) -> bytes:
    """A photo from ../shared/datasets/faces-dlib-examples as uploaded bytes."""
    return (REAL_FACES / name).read_bytes()


def app_test_metrics() -> dict:
    """A metrics.json as `ferkit evaluate` writes it (made-up numbers, distinct per class)."""
    from ferkit.emotions import EMOTIONS

    return {"split": "test", "protocol": "majority", "images": 3137, "accuracy": 0.8125,
            "per_class": {e: {"recall": round(0.5 + i / 20, 3), "support": 100}
                          for i, e in enumerate(EMOTIONS)}}


def write_random_model(folder: Path, seed: int = 0, metrics: dict | None = None) -> Path:
    """A random-weight `baseline` saved as a bundled-style folder (model.json, model.safetensors):
    fast to load, export and run, and deterministic per seed. The last layer's weights are scaled
    up so different faces get visibly different probabilities (an untrained net says ~1/8 for
    everything). With `metrics`, also metrics.json and a confusion_matrix.png, as a bundled model
    ships them; the numbers are made up, tests check that exactly what the file says is shown."""
    import json

    import torch

    from ferkit.models import create_model, model_config, save_model

    torch.manual_seed(seed)
    model = create_model("baseline").eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(40.0)
    save_model(model, folder, model_config("baseline", {}, protocol="majority"))
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
        Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).save(
            folder / "confusion_matrix.png")
    return folder


@pytest.fixture(scope="session")
def app_model(tmp_path_factory) -> Path:
    """Model folder with metrics.json + confusion matrix (what the app tests run on)."""
    return write_random_model(tmp_path_factory.mktemp("app-model") / "tiny", metrics=app_test_metrics())


@pytest.fixture(scope="session")
def app_model_unmeasured(tmp_path_factory) -> Path:
    """The same kind of model without metrics.json: About must say "not measured yet"."""
    return write_random_model(tmp_path_factory.mktemp("app-model") / "unmeasured", seed=1)


@pytest.fixture(scope="session")
def webcam_y4m(tmp_path_factory) -> Path:
    if not (REAL_FACES / "Tom_Cruise_avp_2014_4.jpg").is_file():
        pytest.skip(f"face photos not found at {REAL_FACES}")
    # 30 frames/s, a webcam's rate: the live page's frame rate cannot exceed its camera's
    return write_y4m(tmp_path_factory.mktemp("webcam") / "faces.y4m", webcam_frames(fps=30), fps=30)


# ---- inference (Predictor, export) ----------------------------------------------------------

def _has_face_detector() -> bool:
    try:
        from ferkit.faces import detect_faces  # noqa: F401
    except ImportError:
        return False
    return True


needs_face_detector = pytest.mark.skipif(not _has_face_detector(),
                                         reason="ferkit.faces (the face detector) is not installed")
needs_real_faces = pytest.mark.skipif(not (REAL_FACES / "dogs.jpg").is_file(),
                                      reason=f"real photos not found at {REAL_FACES}")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("models") / "tiny", metrics={"test_accuracy": 0.5})


# ---- evaluation and Grad-CAM (tests/test_evaluation.py, tests/test_explain.py) ------------------

TINY_RESNET = {"widths": [8, 16, 16], "depths": [1, 1, 1], "stem_width": 8, "dropout": 0.0}


def tiny_train_config(root: Path, runs: Path, name: str, **extra):
    """A TrainConfig for a tiny resnet on a learnable root (seconds per epoch on one thread)."""
    from ferkit.training.config import load_config

    values = {"data": str(root), "runs_dir": str(runs), "name": name, "model": "resnet",
              "model_args": TINY_RESNET, "epochs": 3, "batch_size": 32, "lr": 0.01, "threads": 1,
              "progress_bar": False, "schedule": "plateau", "early_stopping_patience": 0,
              "augment": {"enabled": False}}  # flips would swap the quadrants that decide the class
    return load_config(None, [values, extra])


def train_tiny_run(root: Path, runs: Path, name: str, epochs: int, seed: int = 0) -> Path:
    """A trained tiny resnet run folder."""
    from ferkit.training.run import train

    return train(tiny_train_config(root, runs, name, epochs=epochs, seed=seed))


@pytest.fixture(scope="session")
def tiny_runs(learnable_root, tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny resnet model folders for `learnable_root`: (trained 4 epochs, untrained).
    Session-scoped fixtures run before the per-test private cache, so this sets its own."""
    import torch

    from ferkit.models import create_model, model_config, save_model

    runs = tmp_path_factory.mktemp("eval-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERKIT_CACHE_DIR", str(runs / "cache"))
        trained = train_tiny_run(learnable_root, runs, "tiny-a", epochs=4)
    torch.manual_seed(1)
    untrained = runs / "tiny-b"
    save_model(create_model("resnet", **TINY_RESNET).eval(), untrained, model_config("resnet", TINY_RESNET))
    return trained, untrained


@pytest.fixture
def one_torch_thread():
    """One torch thread: tiny models gain nothing from more, and the machine's 2 cores are shared."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
