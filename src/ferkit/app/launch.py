"""How `ferkit app` starts the app: Streamlit on the page in main.py, with the settings of config.toml
given on its command line (so they hold from any working directory, in an installed package too)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

from ferkit import settings

PAGE = Path(__file__).with_name("main.py")
CONFIG = Path(__file__).with_name("config.toml")


def streamlit_options() -> dict[str, Any]:
    """config.toml by Streamlit's option names ([server] maxMessageSize = 200 -> server.maxMessageSize:
    200), and the upload limit, which is ferkit's one (settings.MAX_UPLOAD_MB, the HTTP API's too)."""
    config = tomllib.loads(CONFIG.read_text())
    options = {f"{section}.{key}": value for section, values in config.items()
               for key, value in values.items()}
    return {**options, "server.maxUploadSize": settings.MAX_UPLOAD_MB}


def streamlit_flags() -> list[str]:
    """`streamlit_options` as Streamlit's flags: --server.maxUploadSize=20, ..."""
    return [f"--{name}={str(value).lower() if isinstance(value, bool) else value}"
            for name, value in streamlit_options().items()]


def streamlit_command(address: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The command that serves the app on address:port (headless: no browser is opened)."""
    return [sys.executable, "-m", "streamlit", "run", str(PAGE), *streamlit_flags(),
            "--server.address", address, "--server.port", str(port), "--server.headless", "true"]
