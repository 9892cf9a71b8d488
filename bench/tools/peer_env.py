"""The peer's own virtualenv: PyPI `fer` 25.10.3 with tensorflow-cpu, made on first use.

fer needs tensorflow, which ferkit does not, so it never enters ferkit's environment. Its other hard
requirements (facenet-pytorch, moviepy) serve only its MTCNN and video paths, so fer is installed
with --no-deps beside what its classifier path imports. The venv is kept in the user's cache
(~/.cache/ferkit-bench/fer-25.10.3) and reused; `peer_python()` returns its interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

FER_VERSION = "25.10.3"
REQUIREMENTS = ["tensorflow-cpu==2.21.*", "opencv-python-headless<5", "setuptools<81", "requests", "pandas",
                "matplotlib", "tqdm", "pillow"]


def default_location() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferkit-bench" / f"fer-{FER_VERSION}"


def peer_python(location: Path | None = None) -> str:
    """The interpreter of a virtualenv that can `import fer`, made (a few minutes, ~600 MB) if absent."""
    location = location or default_location()
    python = location / "bin" / "python"
    check = [str(python), "-c", "from fer.fer import FER"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python)
    print(f"making the peer's virtualenv in {location} (fer {FER_VERSION} + tensorflow-cpu) ...",
          file=sys.stderr, flush=True)
    venv.create(location, with_pip=True, clear=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", f"fer=={FER_VERSION}"], check=True)
    subprocess.run(check, check=True)
    return str(python)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--location", type=Path, default=None, help="where the virtualenv goes")
    print(peer_python(parser.parse_args().location))
