"""The web app's latency: upload -> chart for a 1-face and a 10-face photo, and the live webcam's frames/s.

    .venv/bin/python -m bench.speed.app_latency                       # bundled default model, mtcnn
    .venv/bin/python -m bench.speed.app_latency --model runs/NAME --docs docs/benchmarks.md

Three numbers, each measured the way the user meets it:

- function: the app's processing function, `ferkit.app.photos.analyze_photo` (decode, detect, align,
  classify) plus building every face's chart, in this process, warm, median of --repeat runs;
- browser: Debian's Chromium (Playwright) uploads the photo to `ferkit app`; the time from
  handing the file to the page until every face's 8-bar chart is drawn (upload, script rerun,
  analysis, rendering). Each repetition uploads differently encoded bytes, so Streamlit's cache never
  answers; median of --repeat uploads;
- webcam: the live page fed by Chromium's fake camera (the tests' .y4m of two faces, 640x480,
  10 frames/s); the processed frames/s the page reports, median over --observe seconds.

The browser runs with the app inside a network namespace (tests/test_app_browser.py's session, as the
tests do). The photos: Tom_Cruise_avp_2014_4.jpg (565x800, 1 face) and a 1200x600 grid of 10 faces
cut from bald_guys.jpg, both from ../shared/datasets/faces-dlib-examples.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.browser import CAPTION, run_in_namespace, webcam_frames, write_y4m
from bench.common import PHOTOS as REAL_FACES

# Faces of bald_guys.jpg (x, y, w, h) pasted into a 5x2 grid: a 10-face photo the detector finds whole.
TEN_FACES = [(66, 33, 161, 223), (61, 341, 150, 216), (67, 659, 153, 202), (53, 945, 138, 196),
             (73, 1259, 166, 233), (545, 59, 194, 253), (559, 382, 171, 236), (383, 752, 221, 319),
             (353, 1199, 189, 268), (878, 357, 161, 226)]


def ten_face_photo() -> np.ndarray:
    import cv2

    from ferkit.images import load_image

    image = load_image(REAL_FACES / "bald_guys.jpg")
    cells = []
    for x, y, w, h in TEN_FACES:
        mx, my = int(w * 0.35), int(h * 0.3)
        crop = image[max(0, y - my):y + h + my, max(0, x - mx):x + w + mx]
        cells.append(cv2.resize(crop, (240, 300), interpolation=cv2.INTER_AREA))
    return np.vstack([np.hstack(cells[:5]), np.hstack(cells[5:])])


def jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def photos() -> dict[str, tuple[np.ndarray, int]]:
    from ferkit.images import load_image

    return {"1 face": (load_image(REAL_FACES / "Tom_Cruise_avp_2014_4.jpg"), 1),
            "10 faces": (ten_face_photo(), 10)}


def time_function(model: str | None, detector: str, repeat: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """analyze_photo + one chart per face, in process, after one warm-up call; also the model's info."""
    import torch

    from ferkit import Predictor
    from ferkit.app import common, photos

    torch.set_num_threads(common.app_threads())  # as the app does
    predictor = Predictor(model=model, detector=detector, min_face=common.DEFAULT_MIN_FACE)
    out = {}
    for label, (rgb, expected) in photos().items():
        data = jpeg(rgb, 95)
        times, found = [], 0
        for i in range(repeat + 1):
            start = time.perf_counter()
            result = photos.analyze_photo(predictor, data, f"{label}.jpg")
            for face in result.faces:
                photos.probability_chart(face.probabilities).to_dict()
            if i:  # the first call is the warm-up
                times.append(time.perf_counter() - start)
            found = len(result.faces)
        out[label] = {"median_s": statistics.median(times), "faces": found, "expected": expected}
    return out, predictor.model_info


def time_browser(model_dir: str, detector: str, repeat: int, observe_s: float, work: Path) -> dict[str, Any]:
    """Upload -> charts in Chromium, and the live webcam's frames/s, in one namespaced session."""
    cases: list[dict[str, Any]] = []
    for label, (rgb, expected) in photos().items():
        for i in range(repeat + 1):  # a different encoding each time: never a cache hit
            path = work / f"{label.replace(' ', '_')}_{i}.jpg"
            path.write_bytes(jpeg(rgb, 95 - i))
            cases.append({"name": f"{label}#{i}", "kind": "photo", "files": [str(path)], "charts": expected,
                          "timeout_s": 120})
    cases.append({"name": "webcam", "kind": "webcam", "observe_s": observe_s})
    video = write_y4m(work / "faces.y4m", webcam_frames())
    spec = {"out": str(work / "session"), "model": model_dir, "video": str(video), "cases": cases}
    if detector != "mtcnn":
        raise SystemExit("the browser part runs the app's default detector (mtcnn) only")
    results = run_in_namespace(spec, timeout_s=240 + observe_s + 30 * repeat)
    browser: dict[str, Any] = {}
    for label, (_, expected) in photos().items():
        runs = [results[f"{label}#{i}"] for i in range(1, repeat + 1)]  # #0 warms the detector up
        failed = [r["error"] for r in runs if "error" in r]
        if failed:
            raise SystemExit(f"browser case {label} failed:\n{failed[0]}")
        complete = [r for r in runs if r["bars"] == [8] * expected]
        browser[label] = {"median_s": statistics.median(r["seconds"] for r in complete) if complete else None,
                          "complete": len(complete), "runs": len(runs)}
    webcam = results["webcam"]
    if "error" in webcam:
        raise SystemExit(f"webcam case failed:\n{webcam['error']}")
    fps = [float(m["fps"]) for m in map(CAPTION.match, webcam["captions"][3:]) if m]
    browser["webcam"] = {"median_fps": statistics.median(fps) if fps else 0.0,
                         "max_fps": max(fps, default=0.0), "first_face_s": webcam["first_face_s"]}
    return browser


def browser_cell(b: dict[str, Any] | None) -> str:
    if b is None:
        return "not run"
    if b["median_s"] is None:
        return "no complete run"
    return f"{b['median_s']:.2f} s ({b['complete']}/{b['runs']} runs)"


def markdown(args: argparse.Namespace, info: dict[str, Any], function: dict, browser: dict | None) -> str:
    architecture = info.get("model", {}).get("architecture", "?")
    load1, load5, _ = os.getloadavg()
    model_flag = f" --model {args.model}" if args.model else ""
    lines = [
        "## App", "",
        "Time from upload to chart in the web app (`ferkit app`), and the live webcam's frame rate.", "",
        f"Command: `.venv/bin/python -m bench.speed.app_latency{model_flag} --repeat {args.repeat} "
        f"--observe {args.observe:g}`", "",
        f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}); PyTorch on 1 thread (the app's "
        f"default, `FERKIT_APP_THREADS`); load average {load1:.1f} / {load5:.1f} (1 / 5 min) when "
        "measured: other jobs were running, so these numbers are pessimistic. "
        f"Model `{info.get('name', '?')}` ({architecture}; the time depends on the architecture, not on "
        f"the trained weights), detector `{args.detector}`.", "",
        "| photo | faces found | function: analyze_photo + charts | browser: upload -> all charts drawn |",
        "|---|---|---|---|",
    ]
    for label, f in function.items():
        cell = browser_cell((browser or {}).get(label))
        ms = f"{f['median_s'] * 1000:.0f} ms"
        lines.append(f"| {label} | {f['faces']} of {f['expected']} | {ms} | {cell} |")
    lines.append("")
    if browser:
        w = browser["webcam"]
        lines += [f"Live webcam (Chromium's fake camera, 640x480 at 10 frames/s, one face in view, WebRTC "
                  f"over loopback): **{w['median_fps']:.1f} processed frames/s** median (max "
                  f"{w['max_fps']:.1f}) over {args.observe:g} s; the first face was boxed "
                  f"{w['first_face_s']:.1f} s after START.", ""]
    lines += ["Medians of warm runs. The photos: `Tom_Cruise_avp_2014_4.jpg` (565x800) and a 1200x600 grid "
              "of 10 faces cut from `bald_guys.jpg` (../shared/datasets/faces-dlib-examples). \"function\" "
              "is the app's processing function alone (`ferkit.app.photos.analyze_photo` + the charts); "
              "\"browser\" adds the upload, Streamlit's rerun and drawing (Chromium headless, app on "
              "127.0.0.1).", ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the `## App` section of path (up to the next `## ` heading), or append it."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    match = re.search(r"^## App\s*$.*?(?=^## |\Z)", text, flags=re.S | re.M)
    if match:
        text = text[:match.start()] + section.rstrip() + "\n\n" + text[match.end():].lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="bundled name, run folder or .onnx (default: bundled)")
    parser.add_argument("--detector", default="mtcnn")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--observe", type=float, default=20.0, help="seconds of live webcam to average over")
    parser.add_argument("--no-browser", action="store_true", help="only time the processing function")
    parser.add_argument("--docs", type=Path, default=None, help="write the `## App` section of this file")
    args = parser.parse_args()
    if not (REAL_FACES / "bald_guys.jpg").is_file():
        raise SystemExit(f"face photos not found at {REAL_FACES}")
    function, info = time_function(args.model, args.detector, args.repeat)
    browser = None
    if not args.no_browser:
        with tempfile.TemporaryDirectory(prefix="ferkit-app-bench-") as work:
            browser = time_browser(info["source"], args.detector, args.repeat, args.observe, Path(work))
    section = markdown(args, info, function, browser)
    print(section)
    if args.docs:
        write_section(args.docs, section)
        print(f"written to {args.docs}")


if __name__ == "__main__":
    main()
