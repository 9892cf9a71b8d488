"""Shared fixtures: small synthetic FERPlus roots in both layouts, and a private cache dir."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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
