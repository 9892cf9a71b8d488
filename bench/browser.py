"""ferkit's web app driven by Debian's Chromium through Playwright (PyPI, the driver only; never
`playwright install`), inside a fresh network namespace (loopback only, plus 127.0.0.2 for aiortc's
ICE): the browser tests (tests/test_app_browser.py) and the app benchmarks (bench/speed/app_*.py) use
it. A session starts `ferkit app`, opens a fresh page per case and returns plain facts; Chromium's
fake camera plays a .y4m. Inside the namespace it runs as `python -m bench.browser session SPEC.json`.
Screenshots go to the spec's "screenshots" folder (default: its "out" folder).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PHOTOS, fit_frame

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT_S = 90  # the app's first start imports torch, cold caches make it slow
SESSION_TIMEOUT_S = 240  # the whole namespaced app + browser session, app start included

BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             "--allow-loopback-in-peer-connection"]



# ---------------------------------------------------------------- the fake camera

def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """A raw YUV4MPEG2 (4:2:0) video Chromium plays as a fake camera
    (--use-file-for-fake-video-capture); frames are RGB uint8 of one even size."""
    import cv2

    height, width = frames[0].shape[:2]
    with path.open("wb") as fh:
        fh.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            fh.write(b"FRAME\n")
            fh.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())  # Y, then U, then V planes
    return path


def webcam_frames(seconds_per_face: float = 1.0, fps: int = 10) -> list[np.ndarray]:
    """Two different real faces, one after the other (so the live probabilities must change):
    Tom Cruise smiling, then the grimacing man in the middle of 2008_002506.jpg."""
    from ferkit.images import load_image

    first = fit_frame(load_image(PHOTOS / "Tom_Cruise_avp_2014_4.jpg"))
    group = load_image(PHOTOS / "2008_002506.jpg")
    second = fit_frame(group[40:230, 190:350])  # around the middle face's box (228, 84, 80, 110)
    n = max(1, int(seconds_per_face * fps))
    return [first] * n + [second] * n


# ---------------------------------------------------------------- the app and the browser


def chromium_args(video: Path | None) -> list[str]:
    return BASE_ARGS + ([f"--use-file-for-fake-video-capture={video}"] if video else [])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_app(url: str, process: subprocess.Popen, log: Path, timeout: float = START_TIMEOUT_S) -> None:
    """Poll Streamlit's health endpoint until it answers, the process dies, or time runs out."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM by PID, then SIGKILL if it has not gone after 10 s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def streamlit_app(model: Path, log: Path, host: str = "127.0.0.1") -> Iterator[str]:
    """`ferkit app` on a free port of `host`, as a subprocess (from another folder than the
    repository: the app's settings come with the package); yields its URL."""
    port = free_port(host)
    env = {**os.environ, "FERKIT_MODEL": str(model), "PYTHONUNBUFFERED": "1"}
    env.pop("FERKIT_ICE_SERVERS", None)
    command = [str(Path(sys.executable).with_name("ferkit")), "app", "--address", host, "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://{host}:{port}"
        wait_for_app(url, process, log)
        yield url
    finally:
        stop_process(process)


@contextmanager
def chromium(video: Path | None = None) -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (executable_path: no browser download)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(video),
                                             headless=True, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser: Any, url: str) -> Any:
    """A fresh page (own context: no state from another test) with the app loaded."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(url)
    page.locator('[data-testid="stSidebar"]').get_by_text("Mode", exact=True).wait_for()
    return page


def choose_mode(page: Any, mode: str) -> None:
    page.locator('[data-testid="stSidebar"]').get_by_text(mode, exact=True).click()


def upload(page: Any, *paths: Path) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files([str(p) for p in paths])


def wait_until_idle(page: Any, timeout_s: float = 60) -> None:
    """Wait until Streamlit has finished running the script (the app root's script state; the live
    webcam page never gets there while the video plays). A short pause first lets a rerun that a
    click has just asked for begin."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
        timeout=timeout_s * 1000)


def bars_per_chart(page: Any) -> list[int]:
    """Bar marks in each Vega-Lite chart (Streamlit renders Vega as SVG: one path per bar)."""
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    return [charts.nth(i).locator('[aria-roledescription="bar"]').count() for i in range(charts.count())]


def wait_for_charts(page: Any, count: int, timeout_s: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        bars = bars_per_chart(page)
        if len(bars) >= count and all(b == 8 for b in bars):
            return bars
        page.wait_for_timeout(250)
    return bars_per_chart(page)


CONTENT_HEIGHT_JS = """() => Math.max(...Array.from(
    document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"], section'),
    (e) => e.scrollHeight), document.body.scrollHeight)"""


def screenshot(page: Any, path: Path) -> Path:
    """The whole page: Streamlit scrolls an inner container (full_page sees only the viewport), so
    the viewport is stretched to the content's height for the shot."""
    size = page.viewport_size
    height = min(8000, max(size["height"], int(page.evaluate(CONTENT_HEIGHT_JS))))
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
    print(f"screenshot: {path}")
    return path


def green_pixels(png: bytes) -> int:
    """Pixels of the boxes' pure green (with slack for video compression)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((rgb[..., 1] > 180) & (rgb[..., 0] < 90) & (rgb[..., 2] < 90)).sum())


# ---------------------------------------------------------------- the cases, run inside the namespace

CAPTION = re.compile(r"(?P<fps>\d+\.\d) fps · (?P<frames>\d+) frames · (?P<rest>.*)")
CAPTION_JS = re.compile(r"\d+\.\d fps · \d+ frames")  # Playwright runs it as a JS regex: no named groups
ALERTS = {"errors": "stAlertContentError", "warnings": "stAlertContentWarning"}
# A face card's first line: "Face 1 · happiness 87%" (ferkit.app.photos.face_summary)
FACE_CARD = re.compile(r"^Face (?P<number>\d+) · (?P<emotion>[a-z]+) (?P<percent>\d+)%")

# What the main column's images measure: each <img>'s rendered width and its caption, and the width the
# column gives its content (its own width less its padding).
IMAGE_WIDTHS_JS = """() => Array.from(
    document.querySelectorAll('[data-testid="stMain"] [data-testid="stImage"]'),
    (e) => ({width: e.querySelector('img').getBoundingClientRect().width,
             caption: (e.querySelector('[data-testid="stImageCaption"]') || {}).innerText || ''}))"""
MAIN_WIDTH_JS = """() => { const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    const style = getComputedStyle(main);
    return main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight); }"""
# st.dataframe draws its cells on a canvas: the texts it draws are recorded (fillText), so a test can
# read what the table shows ("87%"), not the data behind it.
RECORD_CANVAS_TEXT_JS = """() => { if (window.ferkitCanvasTexts) return;
    window.ferkitCanvasTexts = new Set();
    const fillText = CanvasRenderingContext2D.prototype.fillText;
    CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        window.ferkitCanvasTexts.add(String(text)); return fillText.call(this, text, ...rest); }; }"""
# Each table's scroller: [scrollWidth, clientWidth]; wider content than room means a sideways scroll.
TABLE_SCROLL_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"] .dvn-scroller'),
    (e) => [e.scrollWidth, e.clientWidth])"""


def page_facts(page: Any) -> dict[str, Any]:
    """What a case's assertions look at: alerts, images and their captions, face cards, bars per chart,
    the sidebar's controls."""
    facts: dict[str, Any] = {name: page.locator(f'[data-testid="{testid}"]').all_inner_texts()
                             for name, testid in ALERTS.items()}
    facts["images"] = page.locator('[data-testid="stImage"]').count()
    facts["image_captions"] = page.locator('[data-testid="stImageCaption"]').all_inner_texts()
    facts["face_cards"] = [t for t in page.locator('[data-testid="stMarkdownContainer"]').all_inner_texts()
                           if FACE_CARD.match(t)]
    facts["sidebar_controls"] = page.locator('[data-testid="stSidebar"] [data-testid="stWidgetLabel"]'
                                             ).all_inner_texts()
    facts["bars"] = bars_per_chart(page)
    facts["download_buttons"] = page.locator('[data-testid="stDownloadButton"]').count()
    facts["traceback_shown"] = "Traceback" in page.content()
    return facts


def case_photo(page: Any, out: Path, case: dict[str, Any]) -> dict[str, Any]:
    """Upload `files`; wait for `charts` complete charts, or (no charts) for the `expect`ed alert.
    `seconds` is upload -> last chart drawn (what the app benchmark reports)."""
    started = time.monotonic()
    upload(page, *(Path(f) for f in case["files"]))
    charts = case.get("charts", 0)
    if charts:
        wait_for_charts(page, charts, timeout_s=case.get("timeout_s", 60))
    else:  # wait for the message the case expects: "errors" or "warnings"
        page.locator(f'[data-testid="{ALERTS[case["expect"]]}"]').first.wait_for()
    seconds = time.monotonic() - started
    wait_until_idle(page)
    return {"seconds": round(seconds, 3), **page_facts(page),
            "screenshot": str(screenshot(page, out / f"{case['name']}.png"))}


def case_example(page: Any, out: Path, case: dict[str, Any]) -> dict[str, Any]:
    """Photo mode: click the button of the `example` photo, then read what the page shows (the photo's
    width against the main column's, the face cards, the uploader's texts, the table's drawn cells and
    its scroll); then open face 1's "All 8 emotions" and count the bars of its chart. Screenshots: the
    page, and the face cards with that chart open."""
    page.evaluate(RECORD_CANVAS_TEXT_JS)  # before the table is drawn
    started = time.monotonic()
    page.get_by_role("button", name=case["example"], exact=True).click()
    page.mouse.move(0, 0)  # no tooltip over the screenshots
    page.locator('[data-testid="stDataFrame"]').wait_for()
    wait_until_idle(page)
    seconds = time.monotonic() - started
    page.wait_for_function("() => window.ferkitCanvasTexts.size > 0")  # the table has been drawn
    facts = {"seconds": round(seconds, 3), **page_facts(page), "image_widths": page.evaluate(IMAGE_WIDTHS_JS),
             "main_width": page.evaluate(MAIN_WIDTH_JS), "uploader": uploader_texts(page),
             "table_texts": sorted(page.evaluate("() => Array.from(window.ferkitCanvasTexts)")),
             "table_scroll": page.evaluate(TABLE_SCROLL_JS)}
    facts["screenshot"] = str(screenshot(page, out / f"{case['name']}.png"))
    first = page.locator('[data-testid="stExpander"]').first
    chart = first.locator('[data-testid="stVegaLiteChart"]')
    facts["chart_visible_closed"] = chart.is_visible()
    first.locator("summary").click()
    chart.wait_for(state="visible")
    page.wait_for_timeout(300)  # the expander's opening animation
    label = first.locator('summary [data-testid="stMarkdownContainer"]')  # not its icon's ligature
    facts["opened_chart"] = {"expander": label.inner_text(),
                             "bars": chart.locator('[aria-roledescription="bar"]').count()}
    path = out / f"{case['name']}_face_chart.png"
    page.locator('[data-testid="stGrid"]').first.screenshot(path=str(path))
    facts["face_chart_screenshot"] = str(path)
    return facts


def uploader_texts(page: Any) -> dict[str, Any]:
    """The uploader's label (ferkit's words) and its drop zone's line (Streamlit's, with the limit it
    enforces)."""
    uploader = page.locator('[data-testid="stFileUploader"]')
    return {"label": uploader.locator('[data-testid="stWidgetLabel"]').inner_text(),
            "dropzone": uploader.locator('[data-testid="stFileUploaderDropzoneInstructions"]').inner_text()}


def case_refused_upload(page: Any, out: Path, case: dict[str, Any]) -> dict[str, Any]:
    """Upload `files` that the uploader should refuse; return its texts before, and once it says why."""
    before = uploader_texts(page)  # the drop zone's line gives way to the files' chips
    upload(page, *(Path(f) for f in case["files"]))
    uploader = page.locator('[data-testid="stFileUploader"]')
    uploader.get_by_text(re.compile("must be")).wait_for()
    wait_until_idle(page)
    return {**page_facts(page), "uploader": before, "uploader_text": uploader.inner_text(),
            "screenshot": str(screenshot(page, out / f"{case['name']}.png"))}


def case_about(page: Any, out: Path, case: dict[str, Any]) -> dict[str, Any]:
    """About the model: its figures, and the sidebar's controls there."""
    choose_mode(page, "About the model")
    page.locator('[data-testid="stMetric"]').first.wait_for()
    wait_until_idle(page)
    return {**page_facts(page), "metrics": page.locator('[data-testid="stMetric"]').all_inner_texts(),
            "screenshot": str(screenshot(page, out / f"{case['name']}.png"))}


def case_snapshot(page: Any, out: Path, case: dict[str, Any]) -> dict[str, Any]:
    """Snapshot mode: take a photo with the (fake) camera and wait for its chart."""
    choose_mode(page, "Webcam (snapshot)")
    video = page.locator('[data-testid="stCameraInput"] video')
    video.wait_for()
    page.wait_for_function("(v) => v.readyState >= 2 && v.videoWidth > 0", arg=video.element_handle())
    started = time.monotonic()
    for _ in range(2):  # a click that lands while the stream (re)starts is ignored: try once more
        page.get_by_role("button", name=re.compile("take photo", re.I)).click()
        if wait_for_charts(page, 1, timeout_s=20) == [8]:
            break
    seconds = time.monotonic() - started
    wait_until_idle(page)
    return {"seconds": round(seconds, 3), **page_facts(page),
            "screenshot": str(screenshot(page, out / f"{case['name']}.png"))}


def start_live_video(page: Any, component: Any, caption: Any, attempts: int = 3, wait_s: float = 25) -> int:
    """Press START until the caption of processed frames shows; returns the attempts it took. A
    WebRTC connection that is not up after `wait_s` is stopped and started again, as a user would
    (a CI run once waited 60 s on a first connection that never came up; it takes ~2 s here)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for attempt in range(1, attempts + 1):
        component.get_by_role("button", name=re.compile("^start$", re.I)).click()
        try:
            caption.wait_for(timeout=wait_s * 1000)
            return attempt
        except PlaywrightTimeoutError:
            state = component.locator("body").inner_text()
            print(f"live video: no frames {wait_s:.1f} s after START {attempt}; the component says {state!r}")
            stop = component.get_by_role("button", name=re.compile("^stop$", re.I))
            if stop.count():
                stop.click()
            wait_until_idle(page)
    raise AssertionError(f"no processed frames after {attempts} STARTs of {wait_s:.1f} s each")


def case_webcam(page: Any, out: Path, case: dict[str, Any]) -> dict[str, Any]:
    """Live mode: press START, then for `observe_s` seconds read the caption under the live chart
    (fps, frames processed, largest face's emotion) and screenshot the video that comes back."""
    choose_mode(page, "Webcam (live)")
    page.get_by_text("Press START").wait_for()
    wait_until_idle(page)
    controls = page_facts(page)["sidebar_controls"]
    component = page.frame_locator('iframe[title*="webrtc"]')
    caption = page.get_by_text(CAPTION_JS)
    started = time.monotonic()
    attempts = start_live_video(page, component, caption, wait_s=case.get("start_wait_s", 25))
    result: dict[str, Any] = {"start_attempts": attempts, "captions": [], "green_pixels": [],
                              "video_screenshots": [], "sidebar_controls": controls}
    result["first_frame_s"] = round(time.monotonic() - started, 2)
    while "largest" not in caption.inner_text() and time.monotonic() - started < 60:
        page.wait_for_timeout(200)
    result["first_face_s"] = round(time.monotonic() - started, 2)
    end = time.monotonic() + case.get("observe_s", 6)
    while time.monotonic() < end:
        result["captions"].append(caption.inner_text())
        if len(result["captions"]) % 4 == 1:
            path = out / f"{case['name']}_video_{len(result['video_screenshots'])}.png"
            result["green_pixels"].append(green_pixels(component.locator("video").first.screenshot(path=str(path))))
            result["video_screenshots"].append(str(path))
        page.wait_for_timeout(500)
    result["screenshot"] = str(screenshot(page, out / f"{case['name']}.png"))
    return result


CASE_KINDS = {"photo": case_photo, "example": case_example, "refused_upload": case_refused_upload,
              "snapshot": case_snapshot, "webcam": case_webcam, "about": case_about}


def run_session(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """One app + one browser for all cases, each case on a fresh page; a failing case records its
    traceback and the others still run. Returns {case name: result}, plus "_session" timings."""
    results: dict[str, Any] = {}
    shots = Path(spec.get("screenshots", out))
    shots.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with streamlit_app(Path(spec["model"]), out / "app.log") as url, \
            chromium(Path(spec["video"]) if spec.get("video") else None) as browser:
        first = open_app(browser, url)
        wait_until_idle(first, timeout_s=START_TIMEOUT_S)  # the app's first run loads torch and the model
        first.context.close()
        results["_session"] = {"ready_s": round(time.monotonic() - started, 2)}
        for case in spec["cases"]:
            page = open_app(browser, url)
            try:
                wait_until_idle(page)
                results[case["name"]] = CASE_KINDS[case["kind"]](page, shots, case)
            except Exception:
                log = out / "app.log"  # the app's side of the failure: the traceback shows the page's
                results[case["name"]] = {"error": traceback.format_exc()
                                         + f"\napp log (last 3000 chars):\n{log.read_text()[-3000:]}"}
                with contextlib.suppress(Exception):
                    screenshot(page, shots / f"{case['name']}_failed.png")
            finally:
                page.context.close()
    results["_session"]["total_s"] = round(time.monotonic() - started, 2)
    return results


def session_main(spec_file: Path) -> int:
    """Entry point inside the namespace: read the spec, run it, write OUT/results.json."""
    spec = json.loads(spec_file.read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        results = run_session(spec, out)
    except Exception:
        results = {"_session": {"error": traceback.format_exc()}}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


NAMESPACE_SETUP = "ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec \"$0\" \"$@\""


def run_in_namespace(spec: dict[str, Any], timeout_s: float = SESSION_TIMEOUT_S) -> dict[str, Any]:
    """run_session in a fresh network namespace (loopback only, no internet, 127.0.0.2 added for
    aiortc's ICE); the process group this starts is killed by its leader's PID if it overruns."""
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec, indent=2))
    command = ["unshare", "-n", "sh", "-c", NAMESPACE_SETUP, sys.executable, "-m", "bench.browser",
               "session", str(spec_file)]
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"browser session overran {timeout_s:.0f} s:\n{output[-3000:]}") from None
    result_file = out / "results.json"
    if process.returncode != 0 or not result_file.is_file():
        raise AssertionError(f"browser session failed (exit {process.returncode}):\n{output[-3000:]}")
    results = json.loads(result_file.read_text())
    if "error" in results["_session"]:
        log = out / "app.log"
        tail = log.read_text()[-2000:] if log.is_file() else ""
        raise AssertionError(f"{results['_session']['error']}\napp log:\n{tail}")
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "session":
        sys.exit(session_main(Path(sys.argv[2])))
    sys.exit("usage: python -m bench.browser session SPEC.json  (normally started by run_in_namespace)")
