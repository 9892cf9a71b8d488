"""Inference: image loading (bad inputs refused, odd formats converted), the Predictor API,
bundled-model lookup, video, and the `ferkit predict` / `ferkit video` commands.

Most tests use a fake "blob" detector (bright rectangles are faces), so boxes are known exactly
and the tests do not depend on ferkit.faces; the real detector is used where marked."""

from __future__ import annotations

import io
import json
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import (
    REAL_FACES,
    REAL_FERPLUS,
    needs_face_detector,
    needs_ferplus,
    needs_real_faces,
    write_random_model,
)
from PIL import Image, ImageFile
from typer.testing import CliRunner

import ferkit
from ferkit import hardware, images
from ferkit.cli import app
from ferkit.emotions import EMOTIONS
from ferkit.errors import ImageError, ModelFileError
from ferkit.inference import Face, Predictor, load_image, prepare_faces
from ferkit.inference import backends as backends_mod
from ferkit.models import bundled as bundled_mod
from ferkit.models import load, normalize
from ferkit.release.bundle import int8_keeps_answers
from ferkit.release.export import max_flip_margin


@dataclass
class Blob:
    box: tuple[int, int, int, int]
    confidence: float = 0.99
    landmarks: dict | None = None


def blob_detector(image: np.ndarray) -> list[Blob]:
    """Bright (> 160) rectangles of at least 8x8 pixels, largest first: a stand-in face detector."""
    gray = image.mean(axis=2) if image.ndim == 3 else image
    mask = (gray > 160).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    boxes = [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)
             if stats[i, 2] >= 8 and stats[i, 3] >= 8]
    return [Blob(b) for b in sorted(boxes, key=lambda b: -b[2] * b[3])]


def scene(width: int = 200, height: int = 120, boxes=((20, 10, 40, 50), (120, 40, 30, 30)),
          seed: int = 0) -> np.ndarray:
    """A dark RGB image with textured bright rectangles (the 'faces') at `boxes`."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for x, y, w, h in boxes:
        img[y:y + h, x:x + w] = rng.integers(200, 256, (h, w, 1), dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def predictor(tiny_model) -> Predictor:
    return Predictor(model=tiny_model, detector=blob_detector)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


# ---- load_image: bad inputs ----------------------------------------------------------------

def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, and (almost) no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_bad_files_raise_image_error_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n" * 20)
    good = tmp_path / "good.jpg"
    Image.fromarray(scene(400, 300)).save(good, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(huge_png_header(100_000, 100_000))
    cases = {empty: "empty (0 bytes)", text: "not an image", truncated: "truncated",
             bomb: "decompression bomb", tmp_path / "missing.png": "not found", tmp_path: "folder"}
    for path, reason in cases.items():
        with pytest.raises(ImageError) as info:
            load_image(path)
        assert str(path) in str(info.value) and reason in str(info.value), str(info.value)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"GIF89a nonsense", name="upload.gif")


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(huge_png_header(9_000, 8_000))  # 72 MP: above ferkit's 64 MP, below PIL's limits
    with pytest.raises(ImageError, match="megapixels"):
        load_image(path)
    small = tmp_path / "small.png"
    Image.fromarray(scene(200, 120)).save(small)
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)  # the app may lower the limit at run time
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1))
    with pytest.raises(ImageError, match=r"200x120 = 0.0 megapixels.*refused before decoding"):
        load_image(small)
    assert not decoded
    monkeypatch.undo()
    assert load_image(small).shape == (120, 200, 3)


def test_bad_arrays_and_arguments():
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((4, 4), dtype=object))
    with pytest.raises(ValueError, match="color"):
        load_image(np.zeros((4, 4, 3), dtype=np.uint8), color="hsv")
    with pytest.raises(ImageError, match="unsupported input type"):
        load_image(12345)


# ---- load_image: conversions ---------------------------------------------------------------

def test_odd_formats_are_converted_to_rgb(tmp_path):
    ramp = np.tile(np.arange(0, 65536, 256, dtype=np.uint16), (8, 1))  # 8 x 256, 16-bit
    wide = tmp_path / "sixteen.png"
    Image.fromarray(ramp).save(wide)
    assert Image.open(wide).mode.startswith("I")
    out = load_image(wide)
    assert out.dtype == np.uint8 and out.shape == (8, 256, 3)
    np.testing.assert_array_equal(out[0, :, 0], (ramp[0].astype(np.int64) * 255 // 65535).astype(np.uint8))

    rgb = scene(64, 48, boxes=((10, 10, 20, 20),))
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=95)
    assert Image.open(cmyk).mode == "CMYK"
    assert np.abs(load_image(cmyk).astype(int) - rgb).mean() < 12

    palette = tmp_path / "palette.png"
    pal_img = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_img.save(palette)
    np.testing.assert_array_equal(load_image(palette), np.asarray(pal_img.convert("RGB")))

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    rgba[:, :10, 3] = 0  # fully transparent strip -> white
    rgba_path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(rgba_path)
    out = load_image(rgba_path)
    assert (out[:, :10] == 255).all()
    np.testing.assert_array_equal(out[:, 10:], rgb[:, 10:])

    la_path = tmp_path / "la.png"
    Image.fromarray(rgba, mode="RGBA").convert("LA").save(la_path)
    out = load_image(la_path)
    assert out.shape == (48, 64, 3) and (out[:, :10] == 255).all()
    assert (out[..., 0] == out[..., 1]).all()


def test_all_input_types_load_the_same_pixels(tmp_path):
    rgb = scene()
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(rgb))
    with path.open("rb") as fh:
        from_file = load_image(fh)
    variants = [load_image(path), load_image(str(path)), load_image(path.read_bytes()), from_file,
                load_image(Image.open(path)), load_image(rgb),
                load_image(rgb[:, :, ::-1].copy(), color="bgr"),
                load_image(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]))]
    for v in variants:
        np.testing.assert_array_equal(v, rgb)
        assert v.flags.c_contiguous
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(load_image(gray), np.dstack([gray] * 3))


def test_exif_orientation_is_honoured(tmp_path, predictor):
    stored = scene(200, 100, boxes=((20, 10, 40, 30),))
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(path, quality=98, exif=exif)
    shown = load_image(path)
    assert shown.shape == (200, 100, 3)  # displayed upright: 100 wide, 200 tall
    # Stored pixel (x, y) shows at (H - 1 - y, x):
    # x in [20, 60), y in [10, 40) -> x' in [60, 90), y' in [20, 60).
    faces = predictor.predict(path)
    assert [f.box for f in faces] == [(60, 20, 30, 40)]


# ---- Predictor ------------------------------------------------------------------------------

def test_predict_gives_faces_with_probabilities(predictor):
    faces = predictor.predict(scene())
    assert [f.box for f in faces] == [(20, 10, 40, 50), (120, 40, 30, 30)]
    for face in faces:
        assert isinstance(face, Face) and face.probabilities.shape == (8,)
        assert face.probabilities.sum() == pytest.approx(1, abs=1e-5)
        assert face.emotion == EMOTIONS[int(face.probabilities.argmax())]
        assert face.confidence == pytest.approx(face.probabilities.max())
        assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
        d = face.to_json()
        assert "crop" not in d and json.loads(json.dumps(d)) == d
        assert d["box"] == dict(zip(("x", "y", "width", "height"), face.box, strict=True))
        assert list(d["probabilities"]) == list(EMOTIONS)
    assert predictor.predict(np.zeros((60, 80, 3), np.uint8)) == []
    assert ferkit.Predictor is Predictor and ferkit.Face is Face


def test_every_input_type_gives_the_same_result(tmp_path, predictor):
    rgb = np.repeat(scene()[:, :, :1], 3, axis=2)  # gray content, so the gray array is the same image
    path = tmp_path / "faces.png"
    path.write_bytes(png_bytes(rgb))
    reference = predictor.predict(path)
    assert len(reference) == 2
    for source, kwargs in [(str(path), {}), (path.read_bytes(), {}), (rgb, {}), (rgb[:, :, ::-1].copy(),
                           {"color": "bgr"}), (rgb[:, :, 0].copy(), {}), (Image.open(path), {})]:
        faces = predictor.predict(source, **kwargs)
        assert [f.box for f in faces] == [f.box for f in reference]
        for a, b in zip(faces, reference, strict=True):
            np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_many_faces_are_classified_in_one_batch(predictor, monkeypatch):
    boxes = [(10 + 40 * (i % 6), 10 + 40 * (i // 6), 24, 24) for i in range(24)]
    calls = []
    original = predictor.backend.probabilities
    monkeypatch.setattr(predictor.backend, "probabilities",
                        lambda faces, tta, bs: calls.append(len(faces)) or original(faces, tta, bs))
    faces = predictor.predict(scene(260, 170, boxes))
    assert len(faces) == 24 and calls == [24]
    assert sorted(f.box for f in faces) == sorted(boxes)


def test_predict_faces_equals_plain_softmax_and_evaluate(predictor, tiny_model):
    rng = np.random.default_rng(1)
    faces = rng.integers(0, 256, (20, 48, 48), dtype=np.uint8)
    got = predictor.predict_faces(faces)
    model = load(tiny_model)
    with torch.no_grad():
        expected = torch.softmax(model(normalize(faces)), 1).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # softmax in NumPy, not torch
    assert got.dtype == np.float32 and got.shape == (20, 8)
    batched = Predictor(model=tiny_model, batch_size=8).predict_faces(faces)  # 3 internal batches
    np.testing.assert_allclose(batched, got, atol=1e-6)
    flip = predictor.predict_faces(faces[:5], tta="flip")
    mirrored = predictor.predict_faces(faces[:5, :, ::-1].copy())
    np.testing.assert_allclose(flip, (got[:5] + mirrored) / 2, atol=1e-6)
    try:
        from ferkit.evaluation.predict import predict_proba
    except ImportError:  # pragma: no cover - the evaluation package is another module
        return
    np.testing.assert_array_equal(got, predict_proba(model, faces))
    np.testing.assert_array_equal(batched, predict_proba(model, faces, batch_size=8))
    np.testing.assert_array_equal(predictor.predict_faces(faces, tta="flip"),
                                  predict_proba(model, faces, tta="flip"))


@needs_ferplus
def test_predict_faces_on_ferplus_test_matches_evaluate(predictor, tiny_model):
    from ferkit.evaluation.predict import predict_proba

    files = sorted((REAL_FERPLUS / "FER2013Test").glob("*.png"))[:32]
    faces = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    expected = predict_proba(load(tiny_model), faces)
    np.testing.assert_array_equal(predictor.predict_faces(faces), expected)
    np.testing.assert_array_equal(predictor.predict_faces([str(f) for f in files]), expected)


def test_predict_faces_accepts_crops_of_any_size_and_colour(predictor):
    rng = np.random.default_rng(2)
    big_gray = rng.integers(0, 256, (96, 96), dtype=np.uint8)
    small_rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pil = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    prepared = prepare_faces([big_gray, small_rgb, pil])
    assert prepared.shape == (3, 48, 48) and prepared.dtype == np.uint8
    np.testing.assert_array_equal(prepared[0], cv2.resize(big_gray, (48, 48), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(prepared[2], cv2.cvtColor(np.asarray(pil), cv2.COLOR_RGB2GRAY))
    probs = predictor.predict_faces([big_gray, small_rgb, pil])
    np.testing.assert_array_equal(probs, predictor.predict_faces(prepared))
    assert predictor.predict_faces(big_gray).shape == (1, 8)
    np.testing.assert_array_equal(predictor.predict_faces(prepared[:, None]), probs)
    assert predictor.predict_faces([]).shape == (0, 8)
    bgr = small_rgb[:, :, ::-1].copy()
    # one face alone vs in a batch of three: equal up to float summation order
    np.testing.assert_allclose(predictor.predict_faces(bgr, color="bgr"), probs[1:2], atol=1e-6)


def test_predict_many_batches_across_images_and_collects_errors(tmp_path, tiny_model):
    predictor = Predictor(model=tiny_model, detector=blob_detector, batch_size=3)
    paths = []
    for i, boxes in enumerate([((10, 10, 30, 30), (60, 20, 30, 30)), (), ((5, 5, 40, 40),)]):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(png_bytes(scene(120, 80, boxes, seed=i)))
        paths.append(p)
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    gone = tmp_path / "gone.png"
    results = predictor.predict_many([paths[0], bad, paths[1], paths[2], gone], progress=False)
    assert [r.source for r in results] == [str(p) for p in (paths[0], bad, paths[1], paths[2])] + [
        str(tmp_path / "gone.png")]
    assert [len(r.faces) for r in results] == [2, 0, 0, 1, 0]
    assert [r.ok for r in results] == [True, False, True, True, False]
    assert "bad.jpg" in results[1].error and "not found" in results[4].error
    single = predictor.predict(paths[0])
    np.testing.assert_allclose(results[0].faces[1].probabilities, single[1].probabilities, atol=1e-6)
    assert json.loads(json.dumps([r.to_json() for r in results]))[1]["error"] == results[1].error


def test_predictor_is_thread_safe(predictor):
    scenes = [scene(seed=s) for s in range(6)]
    serial = [[f.probabilities for f in predictor.predict(s)] for s in scenes]
    out: dict[int, list] = {}

    def work(i: int) -> None:
        out[i] = [f.probabilities for f in predictor.predict(scenes[i % 6])]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, probs in out.items():
        for a, b in zip(probs, serial[i % 6], strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)


# ---- bundled models --------------------------------------------------------------------------

def test_bundled_model_lookup(tmp_path, monkeypatch, tiny_model):
    weights = tmp_path / "weights"
    write_random_model(weights / "default", seed=0, metrics={"accuracy": 0.8})
    write_random_model(weights / "other", seed=1)
    (weights / "not-a-model").mkdir()
    monkeypatch.setattr(bundled_mod, "weights_root", lambda: weights)
    assert bundled_mod.list_bundled() == ["default", "other"]
    default = Predictor(detector=blob_detector)
    assert default.model_info["name"] == "default" and default.model_info["metrics"] == {"accuracy": 0.8}
    assert default.model_info["model"]["architecture"] == "baseline"
    assert default.model_info["backend"] == "torch"
    other = Predictor(model="other", detector=blob_detector)
    assert other.source.path == weights / "other"
    assert not np.array_equal(default.predict_faces(np.zeros((1, 48, 48), np.uint8)),
                              other.predict_faces(np.zeros((1, 48, 48), np.uint8)))
    assert Predictor(model=str(tiny_model)).source.backend == "torch"
    with pytest.raises(ModelFileError, match="unknown model 'nope'.*bundled: default, other"):
        Predictor(model="nope")
    monkeypatch.setattr(bundled_mod, "weights_root", lambda: tmp_path / "empty")
    with pytest.raises(ModelFileError, match="bundled default model is not installed"):
        Predictor()
    with pytest.raises(ValueError, match="tta"):
        Predictor(model=tiny_model, tta="rotate")


# ---- video ----------------------------------------------------------------------------------

def write_clip(path: Path, frames: int = 12, fps: float = 10.0) -> Path:
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (160, 120))
    assert writer.isOpened()
    for i in range(frames):
        rgb = scene(160, 120, boxes=((10 + 5 * i, 20, 40, 40),), seed=i)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_predict_video_streams_rows_and_writes_annotated_copy(tmp_path, predictor):
    clip = write_clip(tmp_path / "clip.avi")
    rows = list(predictor.predict_video(clip, progress=False))
    assert [r.frame for r in rows] == list(range(12)) and {r.index for r in rows} == {1}
    assert all(isinstance(r, Face) and r.crop.shape == (48, 48) for r in rows)  # the one face record
    assert rows[3].time_s == pytest.approx(0.3)
    assert abs(rows[4].box[0] - 30) <= 2 and rows[4].probabilities.shape == (8,)
    out = tmp_path / "annotated.mp4"
    every3 = predictor.predict_video(clip, every_n=3, out=out, progress=False)
    assert [r.frame for r in every3] == [0, 3, 6, 9]
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    assert set(rows[0].to_row()) >= {"frame", "time_s", "face", "x", "emotion", *EMOTIONS}
    assert rows[0].to_json()["frame"] == 0 and rows[3].to_json()["time_s"] == pytest.approx(0.3)


def test_bad_video_is_a_clear_error(tmp_path, predictor):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video at all " * 50)
    with pytest.raises(ImageError, match="fake.mp4: cannot open video"):
        predictor.predict_video(fake)  # fails at the call, not at the first row
    with pytest.raises(ImageError, match="not found"):
        predictor.predict_video(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="every_n"):
        predictor.predict_video(fake, every_n=0)


# ---- CLI ------------------------------------------------------------------------------------

@pytest.fixture
def fake_cli_predictor(monkeypatch, predictor):
    """`ferkit predict/video` with the blob detector instead of a real one."""
    import ferkit.inference

    monkeypatch.setattr(ferkit.inference, "Predictor", lambda **kwargs: predictor)


def test_cli_predict_csv_json_annotate_and_failures(tmp_path, fake_cli_predictor):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(png_bytes(scene()))
    Image.fromarray(scene(boxes=())).save(folder / "sub" / "empty.jpg")
    (folder / "readme.txt").write_text("skipped: not an image extension")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    runner = CliRunner()

    result = runner.invoke(app, ["predict", str(folder), "--csv", str(tmp_path / "out.csv"),
                                 "--annotate", str(tmp_path / "ann")])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0].split(",")[:8] == ["file", "face", "x", "y", "width", "height", "emotion", "confidence"]
    assert len(lines) == 1 + 2 + 1  # header, two faces of a.png, one empty row for empty.jpg
    assert lines[3].startswith(str(folder / "sub" / "empty.jpg") + ",,")
    assert (tmp_path / "ann" / "a.png").is_file() and (tmp_path / "ann" / "sub" / "empty.jpg").is_file()

    result = runner.invoke(app, ["predict", str(folder / "a.png"), str(broken), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert [len(r["faces"]) for r in payload] == [2, 0] and "broken.png" in payload[1]["error"]
    assert "1 failed" in result.stderr and "broken.png" in result.stderr

    result = runner.invoke(app, ["predict", str(folder)])
    assert result.exit_code == 0 and "no face found" in result.stdout and "a.png" in result.stdout
    assert runner.invoke(app, ["predict", str(tmp_path / "nothing")]).exit_code == 1
    assert runner.invoke(app, ["predict", str(folder), "--json", "--csv", "x.csv"]).exit_code == 1


def test_cli_video(tmp_path, fake_cli_predictor):
    clip = write_clip(tmp_path / "clip.avi", frames=6)
    result = CliRunner().invoke(app, ["video", str(clip), "--csv", str(tmp_path / "rows.csv"),
                                      "--analyse-every", "2", "--annotate", str(tmp_path / "ann.avi")])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 1 + 3
    assert "3 faces in 3 frames" in result.stdout and (tmp_path / "ann.avi").stat().st_size > 0
    bad = CliRunner().invoke(app, ["video", str(tmp_path / "rows.csv")])
    assert bad.exit_code == 1 and "cannot open video" in bad.stderr


@needs_face_detector
@needs_real_faces
def test_cli_predict_on_real_photos(tiny_model):
    photos = [REAL_FACES / "2008_001322.jpg", REAL_FACES / "dogs.jpg"]
    result = CliRunner().invoke(app, ["predict", *map(str, photos), "--json", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    people, dogs = json.loads(result.stdout)
    assert len(people["faces"]) >= 2 and dogs["faces"] == [] and dogs["error"] is None


# ---- annotation -------------------------------------------------------------------------------

def test_probability_panels_never_cover_a_face_or_each_other():
    from ferkit.inference.annotate import _overlaps, draw_faces, place_panel

    # a crowded row of faces, as in a group photo: 6 boxes 60 px apart
    boxes = [(20 + 60 * i, 100, 50, 50) for i in range(6)]
    occupied = list(boxes)
    placed = []
    for box in boxes:
        panel = place_panel(box, (90, 120), (400, 400), occupied)
        if panel is not None:
            assert not any(_overlaps(panel, other) for other in occupied)
            assert panel[0] >= 0 and panel[1] >= 0 and panel[0] + 90 <= 400 and panel[1] + 120 <= 400
            occupied.append(panel)
            placed.append(panel)
    assert len(placed) >= 2  # below and above the row are free
    assert place_panel((0, 0, 400, 400), (90, 120), (400, 400), [(0, 0, 400, 400)]) is None

    class Face:
        def __init__(self, box):
            self.box, self.probabilities = box, np.full(8, 0.125)

    image = np.zeros((400, 400, 3), np.uint8)
    out = draw_faces(image, [Face(b) for b in boxes])
    assert out.shape == image.shape and out.any() and not image.any()


def test_labels_never_cover_each_other_or_another_face():
    from ferkit.inference.annotate import Style, _overlaps, layout

    class Face:
        def __init__(self, box):
            self.box, self.probabilities = box, np.eye(8)[2] * 0.9 + 0.0125  # "surprise 91%"

    # small faces in two tight rows: full labels ("3: surprise 91%") are wider than a face
    boxes = [(10 + 40 * i, 60 + 45 * row, 30, 30) for row in range(2) for i in range(8)]
    placements = layout([Face(b) for b in boxes], (340, 200), Style.for_image(340, 200))
    rects = [p.label_rect for p in placements]
    for i, rect in enumerate(rects):
        assert not any(_overlaps(rect, other) for other in rects[:i] + rects[i + 1:]), placements[i]
        assert not any(_overlaps(rect, box) for j, box in enumerate(boxes) if j != i)
    assert placements[0].label == "1: surprise 91%"  # the first face still gets the full label (from 1)
    assert any(p.label.isdigit() for p in placements)  # crowded ones fall back to their number


@pytest.mark.parametrize("width,height", [(640, 480), (4000, 3000)])
def test_every_drawn_pixel_lies_in_a_box_label_or_chart_that_layout_reserved(width, height):
    """Labels are measured with the font they are drawn with: all the ink is inside a face's box, its
    label's rectangle or its chart's, so `layout`'s no-overlap rules hold for what people see, on a
    video frame and on a 12-megapixel photo alike; the caller's array is left as it was."""
    from ferkit.inference.annotate import Style, draw_faces, layout

    class Face:
        def __init__(self, box, top):
            self.box, self.probabilities = box, np.eye(8)[top] * 0.9 + 0.0125

    k = width / 640
    spaced = [(60, 120, 80, 80), (330, 120, 80, 80)]  # room for full labels and charts
    crowded = [(10 + 40 * i, 400, 30, 30) for i in range(8)]  # numbers only, some inside their box
    faces = [Face(tuple(round(v * k) for v in box), i % 8) for i, box in enumerate(spaced + crowded)]
    image = np.zeros((height, width, 3), np.uint8)
    out = draw_faces(image, faces)
    assert out.shape == image.shape and out.dtype == np.uint8 and not image.any()
    placements = layout(faces, (width, height), Style.for_image(width, height))
    assert sum(p.panel_rect is not None for p in placements) >= 2
    reserved = np.zeros((height, width), bool)
    for face, placed in zip(faces, placements, strict=True):
        for x, y, w, h in (face.box, placed.label_rect, placed.panel_rect or (0, 0, 0, 0)):
            reserved[y:y + h, x:x + w] = True
        x, y, w, h = placed.label_rect
        assert (out[y:y + h, x:x + w] > 128).any(), placed  # the label is there, in its colour
    assert not out.any(axis=2)[~reserved].any()


# ---- awkward but valid arrays, and values that must be refused ------------------------------

def test_predict_faces_accepts_any_strides_and_a_single_path(tiny_model, tmp_path):
    predictor = Predictor(model=tiny_model)
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    expected = predictor.predict_faces(np.ascontiguousarray(np.flip(faces, 2)))
    np.testing.assert_allclose(predictor.predict_faces(np.flip(faces, 2)), expected, rtol=1e-6)
    np.testing.assert_allclose(predictor.predict_faces(faces[::-1]), predictor.predict_faces(
        np.ascontiguousarray(faces[::-1])), rtol=1e-6)
    Image.fromarray(faces[0]).save(tmp_path / "a.png")
    one = predictor.predict_faces(str(tmp_path / "a.png"))  # one image, not its characters
    assert one.shape == (1, 8)
    np.testing.assert_allclose(one, predictor.predict_faces(faces[:1]), rtol=1e-6)


@pytest.mark.parametrize(("faces", "message"), [
    (np.zeros((3, 0, 0), np.uint8), "no pixels"),
    (np.full((2, 48, 48), np.nan, np.float32), "NaN or infinite"),
    (np.full((1, 60, 60), np.inf), "NaN or infinite"),
])
def test_predict_faces_refuses_empty_and_non_finite_input(tiny_model, faces, message):
    with pytest.raises(ImageError, match=message):
        Predictor(model=tiny_model).predict_faces(faces)


def test_model_files_with_bad_args_non_finite_or_damaged_weights_are_refused(tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from ferkit.models.folder import weights_sha256

    def copy(name: str) -> Path:
        folder = tmp_path / name
        shutil.copytree(tiny_model, folder)
        return folder

    bad_args = copy("bad-args")
    config = json.loads((bad_args / "model.json").read_text())
    (bad_args / "model.json").write_text(json.dumps({**config, "model_args": [1, 2]}))
    with pytest.raises(ModelFileError, match="'model_args' must be an object"):
        load(bad_args)
    (bad_args / "model.json").write_text(json.dumps({**config, "model_args": {"widths": 3}}))
    with pytest.raises(ModelFileError, match="model.json"):
        load(bad_args)

    nan = copy("nan")
    state = load_file(str(nan / "model.safetensors"))
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(nan / "model.safetensors"))
    with pytest.raises(ModelFileError, match=f"tensor '{key}' holds NaN or infinite values"):
        Predictor(model=nan)

    damaged = copy("damaged")
    config = json.loads((damaged / "model.json").read_text())
    (damaged / "model.json").write_text(json.dumps({**config, "weights_sha256": weights_sha256(damaged)}))
    assert load(damaged) is not None  # the recorded hash matches
    data = bytearray((damaged / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside the weights: loads silently without the hash
    (damaged / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        load(damaged)


def test_negligible_and_subnormal_weights_load_as_zero_and_change_no_answer(tiny_model, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    def with_first_two(name: str, values: list[float]) -> tuple[Path, str, torch.Tensor]:
        folder = tmp_path / name
        shutil.copytree(tiny_model, folder)
        state = load_file(str(folder / "model.safetensors"))
        key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
        state[key].view(-1)[:2] = torch.tensor(values)
        save_file(state, str(folder / "model.safetensors"))
        return folder, key, state[key]

    tiny = torch.finfo(torch.float32).tiny
    subnormal, key, stored = with_first_two("subnormal", [tiny / 4, -1e-33])  # subnormal, negligible
    zeros, _, _ = with_first_two("zeros", [0.0, 0.0])
    loaded = load(subnormal).state_dict()[key].view(-1)
    assert loaded[:2].tolist() == [0.0, 0.0]  # flushed: CPUs that microcode them slow down many-fold
    np.testing.assert_array_equal(loaded[2:].numpy(), stored.view(-1)[2:].numpy())  # normal ones kept
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    np.testing.assert_array_equal(Predictor(model=subnormal).predict_faces(faces),
                                  Predictor(model=zeros).predict_faces(faces))


def test_every_bundled_model_records_and_matches_its_weights_hash():
    from ferkit.models.bundled import list_bundled, weights_root
    from ferkit.models.folder import weights_sha256

    for name in list_bundled():
        config = json.loads((weights_root() / name / "model.json").read_text())
        assert config["weights_sha256"] == weights_sha256(weights_root() / name), name


def test_a_huge_image_is_refused_without_pils_own_warning_first():
    import warnings

    data = bytearray(png_bytes(np.zeros((1, 1, 3), np.uint8)))
    ihdr = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)  # 100 MP: PIL warns, ferkit refuses
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match="megapixels"):
            load_image(bytes(data), name="huge.png")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_broken_link_in_a_folder_is_reported_not_skipped(tmp_path):
    from ferkit.inference import find_images

    (tmp_path / "a.png").write_bytes(png_bytes(scene()))
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    files, problems = find_images([tmp_path])
    assert files == [tmp_path / "a.png"]
    assert problems == [f"{tmp_path / 'gone.jpg'}: broken link (its target does not exist)"]


def test_evaluating_an_onnx_file_on_ferplus_says_what_to_do(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"onnx")
    result = CliRunner().invoke(app, ["evaluate", "-m", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and "ONNX file cannot be evaluated on FERPlus" in result.output
    assert "missing model.json" not in result.output


def test_a_video_with_damaged_frames_in_the_middle_is_read_to_its_end(tmp_path, fake_cli_predictor):
    """100 frames, bytes zeroed in the middle: reading used to stop at the damage (rows for frames
    0-39, exit 0). It goes on past it, and says how many frames could not be read."""
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    for i in range(100):
        writer.write(cv2.cvtColor(scene(160, 120, boxes=((10 + (i % 20) * 5, 20, 40, 40),), seed=i),
                                  cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(clip.read_bytes())
    start = len(data) * 2 // 5
    data[start:start + len(data) // 10] = bytes(len(data) // 10)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["video", str(damaged), "--csv", str(tmp_path / "rows.csv")])
    assert result.exit_code == 0, result.output
    frames = [int(line.split(",")[0]) for line in (tmp_path / "rows.csv").read_text().splitlines()[1:]]
    assert max(frames) > 90  # rows after the damaged stretch
    assert "unreadable (skipped)" in result.stderr and "100 frames its header declares" in result.stderr
    read = int(result.stderr.split(" frames read")[0].split()[-1])
    unreadable = int(result.stderr.split(" unreadable")[0].split()[-1])
    assert read == len(set(frames)) and read + unreadable == 100 and unreadable > 0


# ---- the bundled models' ONNX Runtime path (the default) against their PyTorch weights ----------

ONNX_PROB_TOLERANCE = {"fp32": 1e-4, "int8": 0.15}  # max |probability difference| on any Valid face


@pytest.mark.realdata
@needs_ferplus
@pytest.mark.parametrize("name", bundled_mod.list_bundled())  # shipped exports and first-use ones alike
def test_bundled_onnx_path_agrees_with_pytorch_on_ferplus_valid(name):
    from ferkit.data import label_split, load_ferplus

    valid = label_split(load_ferplus(REAL_FERPLUS, splits=("valid",))["valid"], "majority")
    fast, exact = Predictor(name, prior="ferplus"), Predictor(name, backend="torch", prior="ferplus")
    assert fast.backend.kind == "onnx" and exact.backend.kind == "torch"
    p_onnx, p_torch = fast.predict_faces(valid.images), exact.predict_faces(valid.images)
    agreement = float((p_onnx.argmax(1) == p_torch.argmax(1)).mean())
    flip_margin = max_flip_margin(p_torch, p_onnx)
    precision = fast.model_info["onnx"]["precision"]
    # the bundling rule (ferkit.release.bundle.INT8_RULE): few changed answers, and only near-ties
    assert int8_keeps_answers(agreement, flip_margin), \
        f"{name} ({precision}): agreement {agreement:.4f}, changed an answer fp32 gave by {flip_margin:.2f}"
    assert np.abs(p_onnx - p_torch).max() <= ONNX_PROB_TOLERANCE[precision]
    # Grad-CAM needs the PyTorch model: the ONNX path loads it on demand, the same weights
    assert sum(p.numel() for p in fast.model.parameters()) == sum(p.numel() for p in exact.model.parameters())


def test_bundled_int8_exports_have_7_bit_weights_and_run_on_any_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "int8_is_exact", lambda: False)  # an x86 CPU without VNNI
    for name in bundled_mod.list_bundled():
        predictor = Predictor(name)
        assert predictor.backend.kind == "onnx"
        if predictor.model_info["onnx"]["precision"] == "int8":
            assert predictor.model_info["onnx"]["weight_bits"] == 7


def test_an_int8_export_with_8_bit_weights_falls_back_to_pytorch_without_vnni(tmp_path, monkeypatch, caplog):
    import shutil

    import onnx

    folder = tmp_path / "fast"
    shutil.copytree(bundled_mod.resolve_model("fast").path, folder)
    export = onnx.load(str(folder / "model.int8.onnx"))  # as ferkit exported it before 7-bit weights
    kept = [p for p in export.metadata_props if p.key != backends_mod.META_INT8_WEIGHT_BITS]
    del export.metadata_props[:]
    export.metadata_props.extend(kept)
    onnx.save(export, str(folder / "model.int8.onnx"))
    monkeypatch.setattr(hardware, "int8_is_exact", lambda: False)
    assert Predictor(folder).backend.kind == "torch"  # its sums would overflow here
    assert "8-bit weights" in caplog.text and "ferkit export -m FOLDER --bundled" in caplog.text
    assert Predictor(folder, backend="onnx").backend.kind == "onnx"  # unless asked for
    assert Predictor(folder / "model.int8.onnx").model_info["onnx"]["weight_bits"] == 8
    monkeypatch.setattr(hardware, "int8_is_exact", lambda: True)  # VNNI: exact either way
    assert Predictor(folder).backend.kind == "onnx"


def test_vnni_is_read_from_the_cpu_flags(tmp_path, monkeypatch):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    assert not hardware.int8_is_exact(cpuinfo)
    for vnni in ("avx512_vnni", "avx_vnni", "amx_int8"):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {vnni}\n")
        assert hardware.int8_is_exact(cpuinfo)
    assert hardware.int8_is_exact(tmp_path / "absent")  # cannot tell (macOS, Windows): as checked
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert hardware.int8_is_exact(tmp_path / "absent")


def test_a_stale_onnx_export_in_a_model_folder_is_refused(tmp_path):
    import shutil

    from ferkit.inference.backends import META_MODEL_JSON
    from ferkit.models.onnx_export import write_metadata as _write_metadata

    folder = tmp_path / "fast"
    shutil.copytree(bundled_mod.weights_root() / "fast", folder)
    export = bundled_mod.resolve_model(folder).onnx_export
    # a folder that ships its export runs it (asked for: without VNNI auto takes PyTorch for int8)
    assert Predictor(folder, backend="onnx").backend.kind == "onnx"
    config = json.loads((folder / "model.json").read_text())
    config["weights_sha256"] = "0" * 64  # as if exported from other weights than the folder's
    _write_metadata(export, {META_MODEL_JSON: json.dumps(config)})
    with pytest.raises(ModelFileError, match="not exported from"):
        Predictor(folder, backend="onnx")
    assert Predictor(folder, backend="torch").backend.kind == "torch"


@needs_real_faces
@needs_face_detector
@pytest.mark.parametrize("name,faces_expected", [("bald_guys.jpg", 24), ("2008_007676.jpg", 7)])
def test_every_face_of_a_group_photo_is_labelled_and_no_label_covers_another_face(name, faces_expected):
    """ferkit.draw: each face's label is on the photo, or its number is there and its label in the
    key beside it; no label lies over another face's box; the colours have a legend."""
    from ferkit.inference.annotate import Style, _overlaps, draw, draw_faces, layout

    rgb = load_image(REAL_FACES / name)
    faces = Predictor(model="fast").predict(rgb)
    assert len(faces) == faces_expected
    height, width = rgb.shape[:2]
    placements = layout(faces, (width, height), Style.for_image(width, height), probabilities=False)
    boxes = [tuple(int(v) for v in f.box) for f in faces]
    for i, placed in enumerate(placements):
        assert not any(_overlaps(placed.label_rect, box) for j, box in enumerate(boxes) if j != i), placed
        assert placed.label.split(":")[0] == str(faces[i].index)  # its number, at least
        assert placed.full_label.startswith(f"{faces[i].index}: {faces[i].emotion} ")
    keyed = [p for p in placements if p.shortened]
    drawn = draw(rgb, faces)
    assert drawn.shape[0] >= height and drawn.shape[1] > width  # the key (and legend) beside the photo
    np.testing.assert_array_equal(drawn[:height, :width], draw_faces(rgb, faces, probabilities=False))
    swatches = drawn[:, width + Style.for_image(width, height).line + 2]  # the key's colour squares
    coloured = np.flatnonzero((swatches != 255).any(axis=1))
    entries = np.count_nonzero(np.diff(coloured) > 1) + 1 if len(coloured) else 0
    assert entries == len(keyed) + len(EMOTIONS)  # every keyed label, then the legend
    assert 0 < len(keyed) < len(faces) or name == "2008_007676.jpg"
