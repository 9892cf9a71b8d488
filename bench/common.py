"""What the benchmarks share: where the data is, the CPU's name, rate timing, test frames, and a
`ferkit serve` to load."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import httpx
import numpy as np

from ferkit.images import load_image

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHARED = REPO.parent / "shared" / "datasets"
PHOTOS = SHARED / "faces-dlib-examples"
ONE_FACE = "Tom_Cruise_avp_2014_4.jpg"
# Five real faces (photo, face box x, y, w, h as ferkit.faces' MTCNN finds it), cut out with a margin
# and tiled onto one 640x480 frame.
FIVE_FACES = [("Tom_Cruise_avp_2014_4.jpg", (85, 155, 390, 555)), ("2008_002506.jpg", (336, 72, 99, 116)),
              ("2008_002506.jpg", (117, 50, 87, 111)), ("2008_001009.jpg", (129, 198, 82, 105)),
              ("2008_001009.jpg", (147, 71, 66, 88))]


def build_wheel(workdir: Path) -> Path:
    """The wheel users install, built from a copy of this checkout's sources in `workdir` (the build
    leaves its scratch folders there, not in the repository)."""
    source = workdir / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--quiet", "--disable-pip-version-check", "-w", str(workdir / "dist")], check=True,
                   timeout=600)
    return next((workdir / "dist").glob("ferkit-*.whl"))


def median_rate(run: Callable[[], None], items: int, repeats: int, calls: int) -> float:
    """Items per second: median over `repeats` timings of `calls` calls of `run` (after a warm-up)."""
    run()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        rates.append(items * calls / (time.perf_counter() - start))
    return statistics.median(rates)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def fit_frame(rgb: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """Scale an RGB image to fit width x height (aspect kept, even sides) and centre it on grey."""
    scale = min(width / rgb.shape[1], height / rgb.shape[0])
    w, h = int(rgb.shape[1] * scale) // 2 * 2, int(rgb.shape[0] * scale) // 2 * 2
    frame = np.full((height, width, 3), 96, dtype=np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    frame[y:y + h, x:x + w] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    return frame


def five_face_frame() -> np.ndarray:
    """Each face with half its size as margin, scaled to 150 px tall, 3 on top and 2 below."""
    frame = np.full((480, 640, 3), 96, dtype=np.uint8)
    spots = [(20, 30), (235, 30), (450, 30), (120, 260), (340, 260)]
    for (name, (x, y, w, h)), (sx, sy) in zip(FIVE_FACES, spots, strict=True):
        rgb = load_image(PHOTOS / name)
        x0, y0 = max(0, x - w // 2), max(0, y - h // 2)
        patch = rgb[y0:y + h + h // 2, x0:x + w + w // 2]
        scale = min(190 / patch.shape[0], 170 / patch.shape[1])
        small = cv2.resize(patch, (int(patch.shape[1] * scale), int(patch.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        frame[sy:sy + small.shape[0], sx:sx + small.shape[1]] = small
    return frame


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def running_server(args: list[str], threads: int = 1) -> Iterator[tuple[str, int]]:
    """`ferkit serve ARGS` on 127.0.0.1 and a free port until the block ends: (its URL, its PID)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ferkit = Path(sys.executable).with_name("ferkit")
    server = subprocess.Popen([str(ferkit), "serve", *args, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("ferkit serve did not start")
            time.sleep(0.2)
        yield url, server.pid
    finally:
        os.kill(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def runs_on_valid_parser(description: str) -> argparse.ArgumentParser:
    """The arguments of an experiment over trained runs on FERPlus Valid: RUNS, --data, --threads."""
    from ferkit.settings import data_root

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", default=str(data_root()))
    parser.add_argument("--threads", type=int, default=1)
    return parser


def valid_split(args: argparse.Namespace):
    """FERPlus Valid under the majority protocol, with torch on `args.threads` threads."""
    import torch

    from ferkit.data import label_split, load_ferplus

    torch.set_num_threads(args.threads)
    return label_split(load_ferplus(args.data, splits=("valid",))["valid"], "majority")
