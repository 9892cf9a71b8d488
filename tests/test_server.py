"""`ferkit serve`: the HTTP API started as a user starts it, on 127.0.0.1 and a free port, called by a
real HTTP client (httpx) with real photos."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_FACES, needs_face_detector, needs_real_faces
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

PHOTOS = ("2008_002506.jpg", "2008_001009.jpg", "dogs.jpg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`ferkit serve --model fast` with small limits (1 MB uploads, 1 request at a time)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    ferkit = Path(sys.executable).with_name("ferkit")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        process = subprocess.Popen([str(ferkit), "serve", "--model", "fast", "--port", str(port),
                                    "--max-upload-mb", "1", "--max-concurrent", "1"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("ferkit serve did not answer within 120 s:\n" + log.read_text()[-3000:])
        time.sleep(0.2)
    yield url
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@needs_real_faces
@needs_face_detector
def test_predict_answers_what_the_predictor_says_for_real_photos(server):
    from ferkit import Predictor

    predictor = Predictor(model="fast")
    for name in PHOTOS:
        data = (REAL_FACES / name).read_bytes()
        if len(data) > 1024 * 1024:
            continue
        expected = predictor.predict(REAL_FACES / name)
        multipart = {"file": (name, data, "image/jpeg")}
        for response in (httpx.post(f"{server}/v1/predict", files=multipart, timeout=60),
                         httpx.post(f"{server}/v1/predict", content=data,
                                    headers={"content-type": "image/jpeg"}, timeout=60)):
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"] == "fast" and body["prior"] == predictor.prior.to_dict()  # its default
            assert [f["box"] for f in body["faces"]] == [f.to_dict()["box"] for f in expected]
            assert [f["emotion"] for f in body["faces"]] == [f.emotion for f in expected]
            for got, face in zip(body["faces"], expected, strict=True):
                np.testing.assert_allclose(list(got["probabilities"].values()), face.probabilities, atol=1e-5)


@needs_real_faces
def test_options_prior_and_model_facts(server):
    data = (REAL_FACES / "2008_001009.jpg").read_bytes()
    uniform = httpx.post(f"{server}/v1/predict?prior=uniform&min_face=30", content=data, timeout=60).json()
    assert uniform["prior"]["name"] == "uniform" and uniform["faces"]
    fewer_neutral = httpx.post(f"{server}/v1/predict?prior=neutral:0.5", content=data, timeout=60).json()
    assert fewer_neutral["prior"] == {"name": "neutral:0.5", "target": fewer_neutral["prior"]["target"],
                                      "strength": 1.0}
    bad = httpx.post(f"{server}/v1/predict?prior=sometimes", content=data, timeout=60)
    assert bad.status_code == 422 and "--prior" in bad.json()["error"]
    facts = httpx.get(f"{server}/v1/model", timeout=10).json()
    assert facts["name"] == "fast" and 0.8 < facts["accuracy"] < 1 and facts["balanced_accuracy"] > 0.5
    assert facts["support"]["contempt"] > 0
    assert httpx.get(f"{server}/docs", timeout=10).status_code == 200
    assert "/v1/predict-faces" in httpx.get(f"{server}/openapi.json", timeout=10).json()["paths"]


def test_predict_faces_takes_cropped_faces(server):
    crops = []
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (60, 50), dtype=np.uint8)).save(buf, "PNG")
        crops.append(("files", (f"face{i}.png", buf.getvalue(), "image/png")))
    body = httpx.post(f"{server}/v1/predict-faces", files=crops, timeout=60).json()
    assert [f["file"] for f in body["faces"]] == ["face0.png", "face1.png"]
    assert all(abs(sum(f["probabilities"].values()) - 1) < 1e-4 for f in body["faces"])
    from ferkit.inference import Predictor

    expected = Predictor(model="fast").predict_faces([Image.open(io.BytesIO(c[1][1])) for c in crops])
    answered = np.array([list(f["probabilities"].values()) for f in body["faces"]])
    np.testing.assert_allclose(answered, expected, atol=1e-5)  # what the Python API says for the crops


def png_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_every_limit_is_a_4xx_with_a_json_error(server):
    too_big = httpx.post(f"{server}/v1/predict", content=b"\xff" * (2 * 1024 * 1024), timeout=60)
    assert too_big.status_code == 413 and "above the limit of 1 MB" in too_big.json()["error"]
    bomb = httpx.post(f"{server}/v1/predict", files={"file": ("bomb.png", png_claiming(9000, 9000))},
                      timeout=60)
    assert bomb.status_code == 413 and "megapixels" in bomb.json()["error"]
    junk = httpx.post(f"{server}/v1/predict", files={"file": ("notes.jpg", b"not an image")}, timeout=60)
    assert junk.status_code == 422 and "notes.jpg" in junk.json()["error"]
    empty = httpx.post(f"{server}/v1/predict", content=b"", timeout=60)
    assert empty.status_code == 422 and "no image" in empty.json()["error"]
    chunked = httpx.post(f"{server}/v1/predict", content=iter([b"\xff" * 1024] * 4), timeout=60)
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["error"]
    bad_option = httpx.post(f"{server}/v1/predict?min_face=abc", content=b"\xff\xd8", timeout=60)
    assert bad_option.status_code == 422 and "min_face" in bad_option.json()["error"]
    # `curl --data-binary @photo.jpg` (form-encoded by default) and a multipart field of another name
    as_form = httpx.post(f"{server}/v1/predict", content=b"\xff\xd8 a jpeg", timeout=60,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    misnamed = httpx.post(f"{server}/v1/predict", files={"image": ("a.jpg", b"\xff\xd8")}, timeout=60)
    for response in (as_form, misnamed):
        assert response.status_code == 422 and "field 'file'" in response.json()["error"], response.text


@needs_real_faces
@needs_face_detector
def test_requests_beyond_the_concurrency_limit_get_429_at_once(server):
    data = (REAL_FACES / "2008_002506.jpg").read_bytes()

    def post(_):
        return httpx.post(f"{server}/v1/predict", content=data, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and codes.count(200) >= 1 and codes.count(429) >= 1, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert "retry" in busy.json()["error"] and busy.headers["retry-after"] == "1"
