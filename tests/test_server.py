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
    """`ferkit serve --model fast` with small limits (1 MB uploads, 1 request at a time, 4 crops a request,
    16 connections, 2 s for headers and 3 s for a body)."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    ferkit = Path(sys.executable).with_name("ferkit")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        process = subprocess.Popen([str(ferkit), "serve", "--model", "fast", "--port", str(port),
                                    "--max-upload-mb", "1", "--max-concurrent", "1", "--max-files", "4",
                                    "--max-connections", "16", "--header-timeout", "2",
                                    "--body-timeout", "3"],
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
    yield url, log
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@needs_real_faces
@needs_face_detector
def test_predict_answers_what_the_predictor_says_for_real_photos(server):
    server, _ = server
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
            # the API answers each face's Face.to_json(): the same fields, the same boxes
            assert [set(f) for f in body["faces"]] == [set(f.to_json()) for f in expected]
            assert [f["box"] for f in body["faces"]] == [f.to_json()["box"] for f in expected]
            assert [f["emotion"] for f in body["faces"]] == [f.emotion for f in expected]
            for got, face in zip(body["faces"], expected, strict=True):
                np.testing.assert_allclose(list(got["probabilities"].values()), face.probabilities, atol=1e-5)


@needs_real_faces
def test_options_prior_and_model_facts(server):
    server, _ = server
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
    server, _ = server
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
    server, _ = server
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
    server, _ = server
    data = (REAL_FACES / "2008_002506.jpg").read_bytes()

    def post(_):
        return httpx.post(f"{server}/v1/predict", content=data, timeout=120)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    codes = sorted(r.status_code for r in responses)
    assert set(codes) <= {200, 429} and codes.count(200) >= 1 and codes.count(429) >= 1, codes
    busy = next(r for r in responses if r.status_code == 429)
    assert "retry" in busy.json()["error"] and busy.headers["retry-after"] == "1"


def raw_request(url: str, head: bytes, body: bytes = b"", wait_s: float = 10) -> bytes:
    """Send bytes as they are (what httpx refuses to send), and read the answer until the server closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head + body)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def status_and_error(answer: bytes) -> tuple[int, str]:
    import json

    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def test_uploads_in_formats_outside_the_allow_list_are_refused_before_any_decoder(server):
    server, _ = server
    for fmt in ("EPS", "ICO", "PCX", "SGI", "TGA", "DDS", "IM", "QOI"):
        buf = io.BytesIO()
        Image.new("RGB", (16, 16)).save(buf, fmt)
        answer = httpx.post(f"{server}/v1/predict", files={"file": (f"x.{fmt.lower()}", buf.getvalue())},
                            timeout=60)
        assert answer.status_code == 422, (fmt, answer.text)
        assert "format ferkit does not read (supported: JPEG, PNG" in answer.json()["error"]
        assert "Ghostscript" not in answer.text


def test_a_chunked_body_is_refused_whatever_content_length_says(server):
    server, _ = server
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 10\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    answer = raw_request(server, head, b"100000\r\n" + b"\xff" * 0x100000)
    status, error = status_and_error(answer)
    assert status == 411 and "Transfer-Encoding" in error


def test_a_slow_upload_is_admitted_before_its_body_and_cut_at_the_body_deadline(server):
    """max_concurrent 1: a client holding its upload open takes the one slot; the next gets 429 at once,
    /healthz still answers, and the slow one gets 408 at the 3 s body deadline."""
    server, _ = server
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as slow:
        slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 900000\r\n\r\n" + b"\xff" * 1000)
        time.sleep(0.5)
        started = time.monotonic()
        busy = httpx.post(f"{server}/v1/predict", content=b"\xff\xd8", timeout=10)
        assert busy.status_code == 429 and time.monotonic() - started < 1
        assert httpx.get(f"{server}/healthz", timeout=1).status_code == 200
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
    status, error = status_and_error(answer)
    assert status == 408 and "within 3 s" in error


def test_half_sent_headers_are_dropped_and_idle_connections_are_capped(server):
    server, _ = server
    host, port = server.removeprefix("http://").split(":")
    half = [socket.create_connection((host, int(port)), timeout=10) for _ in range(40)]  # cap: 16
    try:
        for sock in half:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost:")
        started = time.monotonic()
        assert httpx.get(f"{server}/healthz", timeout=1).status_code == 200  # never locked out
        assert time.monotonic() - started < 1
        closed = 0
        deadline = time.monotonic() + 6  # the header deadline is 2 s
        for sock in half:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                closed += sock.recv(100) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(half)
    finally:
        for sock in half:
            sock.close()


def test_a_request_caps_its_files_and_its_decoded_megapixels(server):
    server, _ = server
    crop = io.BytesIO()
    Image.new("L", (40, 40)).save(crop, "PNG")
    five = [("files", (f"f{i}.png", crop.getvalue(), "image/png")) for i in range(5)]
    too_many = httpx.post(f"{server}/v1/predict-faces", files=five, timeout=60)
    assert too_many.status_code == 413 and "at most 4 per request" in too_many.json()["error"]
    started = time.monotonic()
    two_bombs = [("files", (f"big{i}.png", png_claiming(6000, 6000), "image/png")) for i in range(2)]
    heavy = httpx.post(f"{server}/v1/predict-faces", files=two_bombs, timeout=60)
    assert heavy.status_code == 413 and "72.0 megapixels" in heavy.json()["error"]
    assert time.monotonic() - started < 2  # refused from the headers: nothing decoded


def test_every_refusal_has_the_one_error_shape_and_its_status(server):
    server, log = server
    huge = httpx.post(f"{server}/v1/predict", files={"file": ("huge.png", png_claiming(20000, 20000))},
                      timeout=60)  # above Pillow's own 179 MP limit: the same 413 as above ours
    assert huge.status_code == 413 and "megapixels" in huge.json()["error"]
    bad_boundary = httpx.post(f"{server}/v1/predict", content=b"--nope\r\n\r\n", timeout=60,
                              headers={"Content-Type": "multipart/form-data"})
    assert bad_boundary.status_code == 400 and "error" in bad_boundary.json()
    many_parts = httpx.post(f"{server}/v1/predict", data={f"f{i}": "x" for i in range(1200)},
                            files={"file": ("a.jpg", b"\xff\xd8")}, timeout=60)
    assert many_parts.status_code == 400 and "Too many fields" in many_parts.json()["error"]
    two = httpx.post(f"{server}/v1/predict", files=[("file", ("a.jpg", b"\xff\xd8")),
                                                    ("file", ("b.jpg", b"\xff\xd8"))], timeout=60)
    assert two.status_code == 422 and "2 files sent, at most 1" in two.json()["error"]
    text = httpx.post(f"{server}/v1/predict", data={"file": "hello"}, files={"other": ("x", b"x")},
                      timeout=60)
    assert text.status_code == 422 and "holds text, not a file" in text.json()["error"]
    crop = io.BytesIO()
    Image.new("L", (40, 40)).save(crop, "PNG")
    empty_part = httpx.post(f"{server}/v1/predict-faces", timeout=60,
                            files=[("files", ("a.png", crop.getvalue())), ("files", ("b.png", b""))])
    assert empty_part.status_code == 422 and "'files[1]' (b.png): the file is empty" in empty_part.text
    assert httpx.get(f"{server}/v1/nothing", timeout=10).json() == {"error": "Not Found"}
    wrong_method = httpx.get(f"{server}/v1/predict", timeout=10)
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
    overflowing = ",".join(["1e308"] * 8)
    data = (REAL_FACES / "2008_001009.jpg").read_bytes() if REAL_FACES.is_dir() else None
    if data and len(data) < 1_000_000:
        answer = httpx.post(f"{server}/v1/predict?prior={overflowing}", content=data, timeout=60)
        assert answer.status_code == 200, answer.text
        for face in answer.json()["faces"]:
            assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
    # a client that leaves mid-upload: no traceback in the server's log
    raw_request(server, b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"\xff" * 10,
                wait_s=0.3)
    time.sleep(0.5)
    assert "Traceback" not in log.read_text()
