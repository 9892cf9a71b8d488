"""The web app's memory under a stream of large uploads: server RSS before, during and after.

    .venv/bin/python -m bench.speed.app_memory [--model default] [--pages N] [--per-page N]

`ferkit app` on 127.0.0.1 (tests/test_app_browser.py's helpers), Debian's Chromium driven
by Playwright. Each browser session uploads `--per-session` PNGs of 143 KB that decode to
7000x7000 RGB (147 MB each, under the app's 50 MP limit), waits until the page has drawn them, and
closes. The server's resident memory (/proc/PID/status VmRSS) is read after the first (warm-up)
page, after every session, and 20 s after the last session ended.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.browser import chromium, open_app, streamlit_app, upload, wait_until_idle


def big_png(path: Path, shade: int) -> Path:
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (shade, 100, 110)).save(buf, format="PNG", optimize=True)
    path.write_bytes(buf.getvalue())
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def server_pid(port: int) -> int:
    """The streamlit process listening on `port` (the child of our Popen is the python itself)."""
    import subprocess

    out = subprocess.run(["ss", "-ltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(out.split("pid=")[1].split(",")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--pages", type=int, default=3)
    parser.add_argument("--per-page", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [big_png(folder / f"big{i}.png", 60 + i) for i in range(args.pages * args.per_page)]
        print(f"{len(files)} uploads of {files[0].stat().st_size / 1e3:.0f} KB, 7000x7000 each")
        from ferkit.models.bundled import resolve_model

        with streamlit_app(resolve_model(args.model).path, folder / "app.log") as url, chromium() as browser:
            pid = server_pid(int(url.rsplit(":", 1)[1]))
            page = open_app(browser, url)
            wait_until_idle(page)
            page.context.close()
            start = rss_mb(pid)
            print(f"start (model loaded, one page served): {start:.0f} MB")
            for s in range(args.pages):
                page = open_app(browser, url)
                upload(page, *files[s * args.per_page:(s + 1) * args.per_page])
                wait_until_idle(page, timeout_s=300)
                page.locator('[data-testid="stImage"]').first.wait_for()
                print(f"session {s + 1}: {rss_mb(pid):.0f} MB with its page open")
                page.context.close()
            time.sleep(20)
            end = rss_mb(pid)
            print(f"20 s after the last session closed: {end:.0f} MB ({end - start:+.0f} MB against "
                  "the start)")


if __name__ == "__main__":
    main()
