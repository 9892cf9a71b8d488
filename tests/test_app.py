"""The web app's logic (ferkit.app) and its page (ferkit/app/main.py) driven by Streamlit's AppTest
(no browser).

AppTest runs the page in this process with the real Predictor, face detector and Grad-CAM on a small
untrained model (tests/conftest.py `app_model`), so these tests check what the page shows, not what
the model knows. The browser end-to-end tests are in test_app_browser.py.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from conftest import APP_FILE, app_test_metrics, face_photo, needs_faces, write_random_model
from PIL import Image

from ferkit import settings
from ferkit.app import about, common, launch, live, photos
from ferkit.emotions import EMOTIONS
from ferkit.errors import FerkitError
from ferkit.inference.scores import EmotionScores

# ---------------------------------------------------------------- logic, with stand-in predictors


@dataclass
class FakeFace(EmotionScores):
    box: tuple[int, int, int, int]
    probabilities: np.ndarray
    crop: np.ndarray
    track: int | None = None


def fake_face(box: tuple[int, int, int, int], top: int = 1) -> FakeFace:
    probs = np.full(8, 0.3 / 7, dtype=np.float32)
    probs[top] = 0.7
    return FakeFace(box, probs, np.zeros((48, 48), np.uint8))


class ListPredictor:
    """Returns the same faces for every image (or raises `error`)."""

    def __init__(self, faces: list[FakeFace], error: Exception | None = None):
        self.faces, self.error, self.calls = faces, error, 0

    def predict(self, image: np.ndarray) -> list[FakeFace]:
        self.calls += 1
        if self.error:
            raise self.error
        return self.faces


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's signature)."""
    data = bytearray(png_bytes(1, 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_faces_numbered_left_to_right_within_a_row():
    faces = photos.numbered_faces([fake_face((300, 10, 40, 40)), fake_face((10, 20, 60, 60), top=3)])
    assert [(f.index, f.box[0], f.emotion) for f in faces] == [(1, 10, "sadness"), (2, 300, "happiness")]
    assert faces[0].probabilities.shape == (8,) and faces[0].confidence == pytest.approx(0.7)


def test_faces_numbered_in_reading_order_row_by_row():
    # a back row (slightly uneven heights) above a front row: 1 2 3 in the back, 4 5 in front
    boxes = [(300, 210, 50, 50), (20, 20, 40, 40), (160, 28, 40, 40), (280, 12, 40, 40), (10, 200, 60, 60)]
    faces = photos.numbered_faces([fake_face(b) for b in boxes])
    assert [f.box[:2] for f in faces] == [(20, 20), (160, 28), (280, 12), (10, 200), (300, 210)]


def test_analyze_photo_reads_bytes_and_keeps_faces():
    predictor = ListPredictor([fake_face((5, 5, 30, 30))])
    result = photos.analyze_photo(predictor, png_bytes(), "a.png")
    assert result.ok and result.image.shape == (48, 64, 3) and len(result.faces) == 1


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "empty"),
    (b"just some text, not a picture", "not an image"),
    (png_bytes()[:60], "png"),  # truncated: corrupt or truncated, named by format
    (png_claiming(8_000, 8_000), "megapixels"),
])
def test_analyze_photo_bad_files_become_one_readable_error(data, expected):
    predictor = ListPredictor([])
    result = photos.analyze_photo(predictor, data, "upload.jpg")
    assert not result.ok and "upload.jpg" in result.error and expected in result.error.lower()
    assert "Traceback" not in result.error and predictor.calls == 0


def test_a_large_upload_is_kept_only_at_display_size_with_boxes_in_its_own_pixels():
    """What the app caches per upload is bounded: a 7000x7000 photo (147 MB decoded) is kept at
    1600 px (7.7 MB), while faces keep the uploaded image's coordinates and are drawn scaled."""
    buf = io.BytesIO()
    Image.new("RGB", (7000, 7000), (90, 100, 110)).save(buf, format="PNG")
    predictor = ListPredictor([fake_face((3500, 3500, 700, 700))])
    result = photos.analyze_photo(predictor, buf.getvalue(), "big.png")
    assert result.ok and result.image.shape == (common.DISPLAY_SIDE, common.DISPLAY_SIDE, 3)
    assert result.image.nbytes <= common.DISPLAY_SIDE ** 2 * 3
    assert result.faces[0].box == (3500, 3500, 700, 700)
    drawn = photos.annotated_image(result)
    x = round(3500 * result.display_scale)
    assert (drawn[x + 20, x] != result.image[x + 20, x]).any()  # the box's left edge, at display scale
    thumbnail = photos.face_thumbnail(result, result.faces[0])  # cut from the shown photo too
    assert thumbnail.shape == (photos.THUMBNAIL_SIDE, photos.THUMBNAIL_SIDE, 3)
    small = photos.analyze_photo(ListPredictor([]), png_bytes(), "small.png")
    assert small.display_scale == 1.0 and small.image.shape == (48, 64, 3)


def test_analyze_photo_size_limit_is_enforced_before_decoding():
    result = photos.analyze_photo(ListPredictor([]), b"x" * (2_000_000 + 1), "big.jpg", max_mb=2)
    assert "above the limit of 2 MB" in result.error
    # one unit: the size shown is the one a browser and Streamlit's file chip show (decimal MB)
    result = photos.analyze_photo(ListPredictor([]), b"x" * 30_000_000, "chip.jpg", max_mb=20)
    assert "file is 30.0 MB, above the limit of 20 MB" in result.error
    under = photos.analyze_photo(ListPredictor([]), b"x" * 1_990_000, "ok.jpg", max_mb=2).error
    assert "above the limit" not in under and "not an image" in under  # refused only for its content


def test_analyze_photo_turns_predictor_failures_into_messages():
    failing = ListPredictor([], FerkitError("detector 'hog' needs dlib"))
    readable = photos.analyze_photo(failing, png_bytes(), "p.png")
    assert readable.error == "detector 'hog' needs dlib" and readable.image is not None
    bug = photos.analyze_photo(ListPredictor([], RuntimeError("boom")), png_bytes(), "p.png")
    assert "failed unexpectedly" in bug.error and "boom" not in bug.error


def test_min_face_filter_renumbers():
    result = photos.PhotoResult("p", np.zeros((200, 200, 3), np.uint8), photos.numbered_faces(
        [fake_face((0, 0, 20, 90)), fake_face((50, 0, 60, 60)), fake_face((120, 0, 80, 80))]))
    kept = photos.keep_faces_at_least(result, 50)
    assert [(f.index, f.box[0]) for f in kept.faces] == [(1, 50), (2, 120)]
    assert len(photos.keep_faces_at_least(result, 0).faces) == 3


def test_live_frames_are_boxed_in_green_without_touching_the_input():
    image = np.zeros((120, 160, 3), np.uint8)
    faces = photos.numbered_faces([fake_face((40, 0, 50, 50)), fake_face((100, 60, 40, 40))])
    out = live.draw_frame(image, faces)
    assert image.max() == 0 and out.shape == image.shape
    green = np.all(out == common.BOX_COLOR, axis=2)
    assert green[60:100, 100].all()  # the left edge of the second box
    assert green[0:50, 40].any()  # the first box, label drawn inside since there is no room above


def test_the_photo_shown_is_drawn_by_ferkit_draw():
    """One drawing routine: the page's photo is `ferkit.draw` of the faces (a key and legend beside)."""
    from ferkit import draw

    faces = photos.numbered_faces([fake_face((20, 30, 60, 60), top=1), fake_face((120, 30, 60, 60), top=3)])
    result = photos.PhotoResult("p.png", np.full((120, 200, 3), 90, np.uint8), faces)
    np.testing.assert_array_equal(photos.annotated_image(result), draw(result.image, faces))


def test_face_thumbnail_is_the_colour_photo_around_the_box():
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:160, 200:260] = (200, 40, 30)  # the "face": red, in colour
    result = photos.PhotoResult("p.png", image, photos.numbered_faces([fake_face((200, 100, 60, 60))]))
    thumbnail = photos.face_thumbnail(result, result.faces[0])
    assert thumbnail.shape == (photos.THUMBNAIL_SIDE, photos.THUMBNAIL_SIDE, 3)
    centre = thumbnail[70:90, 70:90].reshape(-1, 3)
    assert (centre == (200, 40, 30)).all()  # the face in its colours, centred
    assert (thumbnail[:10, :10] == 0).all()  # with some of the photo around it
    corner = photos.PhotoResult("p.png", image, photos.numbered_faces([fake_face((0, 0, 60, 60))]))
    assert photos.face_thumbnail(corner, corner.faces[0]).shape[:2] == (160, 160)  # kept inside the photo


def test_face_summary_numbers_the_face_and_gives_its_top_emotions_in_percent():
    face = photos.numbered_faces([fake_face((0, 0, 9, 9), top=1)])[0]
    face.probabilities = np.array([0.09, 0.873, 0.02, 0.005, 0.004, 0.003, 0.003, 0.002])
    assert [(e, round(p, 3)) for e, p in photos.top_emotions(face)] == [
        ("happiness", 0.873), ("neutral", 0.09), ("surprise", 0.02)]
    assert photos.face_summary(face) == "**Face 1 · happiness 87%**  \nneutral 9% · surprise 2%"


def test_probability_chart_keeps_emotions_order():
    probs = np.array([0.05, 0.1, 0.5, 0.05, 0.1, 0.1, 0.05, 0.05])
    spec = photos.probability_chart(probs).to_dict()
    assert spec["encoding"]["y"]["sort"] == list(EMOTIONS)  # horizontal bars: names down the side
    assert spec["encoding"]["x"]["scale"]["domain"] == [0, 1]
    assert "surprise" in spec["encoding"]["color"]["condition"]["test"]  # the top one is highlighted
    assert list(photos.probability_frame(probs)["emotion"]) == list(EMOTIONS)


def test_faces_table_and_csv():
    faces = photos.numbered_faces([fake_face((1, 2, 30, 40), top=4)])
    results = [photos.PhotoResult("a.jpg", np.zeros((9, 9, 3), np.uint8), faces),
               photos.PhotoResult("bad.jpg", error="bad.jpg: not an image")]
    table = photos.faces_table(results)
    # the columns of `ferkit predict --csv` (one face-row schema), without its error column
    assert list(table.columns) == ["file", "face", "x", "y", "width", "height", "emotion", "confidence",
                                   *EMOTIONS]
    back = pd.read_csv(io.BytesIO(photos.table_csv(table)))
    assert back.shape == (1, 16) and back.loc[0, "emotion"] == "anger" and back.loc[0, "width"] == 30
    assert back[list(EMOTIONS)].sum(axis=1).iloc[0] == pytest.approx(1.0, abs=1e-3)
    # the page's table: in percent, without the box and the confidence (which stay in the CSV)
    shown = photos.shown_table(table)
    assert list(shown.columns) == ["file", "face", "emotion", *EMOTIONS]
    assert shown.loc[0, "anger"] == pytest.approx(70.0)
    assert shown.loc[0, "fear"] == pytest.approx(30 / 7, abs=1e-3)
    assert table.loc[0, "anger"] == pytest.approx(0.7)  # the CSV's table is left as it was


def test_the_example_photos_ship_with_their_sources():
    sources = (photos.EXAMPLES_DIR / "SOURCES.md").read_text()
    assert sorted(photos.EXAMPLES) == sorted(p.name for p in photos.EXAMPLES_DIR.glob("*.jpg"))
    for name in photos.EXAMPLES:
        assert f"`{name}`" in sources and photos.example_bytes(name)[:2] == b"\xff\xd8"  # a JPEG


def test_one_upload_limit_for_the_app_and_the_http_api():
    """`ferkit app` gives Streamlit ferkit's one upload limit (settings.MAX_UPLOAD_MB, the HTTP API's
    default), which Streamlit enforces on the uploader and the page reads and states."""
    assert launch.streamlit_options()["server.maxUploadSize"] == settings.MAX_UPLOAD_MB
    assert f"--server.maxUploadSize={settings.MAX_UPLOAD_MB}" in launch.streamlit_flags()
    import tomllib

    assert "maxUploadSize" not in tomllib.loads(launch.CONFIG.read_text())["server"]  # one owner


def test_model_report_reads_metrics_and_says_when_absent(tmp_path):
    metrics = app_test_metrics()
    (tmp_path / "confusion_matrix.png").write_bytes(png_bytes())
    info = {"name": "tiny", "source": str(tmp_path), "model": {"architecture": "baseline", "params": 7},
            "metrics": metrics}
    report = about.model_report(info, None)
    assert (report.name, report.architecture, report.parameters) == ("tiny", "baseline", 7)  # model.json
    assert report.accuracy == metrics["accuracy"]
    assert report.recall == {e: metrics["per_class"][e]["recall"] for e in EMOTIONS}
    assert report.confusion_image == tmp_path / "confusion_matrix.png"
    assert "test split" in report.evaluated_on and "3,137 images" in report.evaluated_on
    assert report.accuracy_label == "FERPlus test accuracy"
    valid = about.model_report({**info, "metrics": {**metrics, "split": "valid"}}, None)
    assert valid.accuracy_label == "FERPlus valid accuracy"  # never claims "test" for another split
    bare = about.model_report({"name": "x", "model": {"architecture": "resnet"}, "metrics": {}}, None)
    assert bare.accuracy is None and bare.recall == {} and bare.confusion_image is None
    members = [{"architecture": "resnet", "model_args": {}}] * 3
    ensemble = about.model_report({"name": "e", "model": {"architecture": "ensemble",
                                                          "model_args": {"members": members}}}, None)
    assert ensemble.architecture == "ensemble of 3 resnet"


def test_rtc_configuration_defaults_to_no_servers_and_reads_env():
    assert live.rtc_configuration({}) == ({"iceServers": []}, None)
    servers = [{"urls": ["stun:stun.example.org:3478"]}]
    configured = live.rtc_configuration({settings.ICE_SERVERS_ENV: json.dumps(servers)})
    assert configured == ({"iceServers": servers}, None)
    config, problem = live.rtc_configuration({settings.ICE_SERVERS_ENV: "[{oops"})
    assert config == {"iceServers": []} and "not valid JSON" in problem
    assert "list of objects" in live.rtc_configuration({settings.ICE_SERVERS_ENV: '{"urls": 1}'})[1]


def test_app_threads_default_to_one_and_read_env():
    assert common.app_threads({}) == 1
    assert common.app_threads({settings.APP_THREADS_ENV: "4"}) == 4
    assert common.app_threads({settings.APP_THREADS_ENV: "zero"}) == 1
    assert common.app_threads({settings.APP_THREADS_ENV: "0"}) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_live_processor_draws_counts_frames_and_tracks_the_largest_face():
    clock = Clock()
    small, large = fake_face((10, 10, 30, 30), top=2), fake_face((100, 20, 80, 80), top=1)
    processor = live.LiveProcessor(ListPredictor([small, large]), min_face=20, clock=clock)
    frame = np.zeros((240, 320, 3), np.uint8)
    for _ in range(11):
        out = processor.process(frame)
        clock.now += 0.1
    stats = processor.stats()
    assert stats.frames == 11 and stats.faces == 2 and stats.fps == pytest.approx(10.0)
    assert stats.largest.emotion == "happiness"
    assert np.all(out == common.BOX_COLOR, axis=2).sum() > 100
    assert "10.0 fps" in live.live_caption(stats) and "happiness 70.0%" in live.live_caption(stats)
    processor.min_face = 50  # the sidebar changed: the next frame ignores the small face
    processor.process(frame)
    assert processor.stats().faces == 1


def test_live_processor_starts_tracks_afresh_when_the_model_or_prior_changes():
    """Smoothing over a change of prior (or model, or detector) would mix two models' answers."""
    face = fake_face((100, 20, 80, 80), top=1)
    processor = live.LiveProcessor(ListPredictor([face]))
    processor.process(np.zeros((240, 320, 3), np.uint8))
    tracker = processor.tracker
    processor.predictor = ListPredictor([face])  # a page rerun: the same model and prior
    assert processor.tracker is tracker
    other = ListPredictor([face])
    other.prior = "uniform"
    processor.tracker.smooth_s = 0.5
    processor.predictor = other
    assert processor.tracker is not tracker and processor.predictor is other
    assert processor.tracker.smooth_s == 0.5  # the sidebar's smoothing is kept


def test_live_processor_keeps_the_video_flowing_when_a_frame_fails():
    processor = live.LiveProcessor(ListPredictor([], RuntimeError("detector crashed")))
    frame = np.full((60, 80, 3), 7, np.uint8)
    out = processor.process(frame)
    assert out.shape == frame.shape and processor.stats().error == "RuntimeError: detector crashed"
    assert "no face in view" in live.live_caption(processor.stats())


def test_live_processor_av_callback_round_trip():
    av = pytest.importorskip("av")
    processor = live.LiveProcessor(ListPredictor([fake_face((8, 8, 40, 40))]))
    frame = av.VideoFrame.from_ndarray(np.zeros((64, 96, 3), np.uint8), format="rgb24")
    out = processor.callback(frame).to_ndarray(format="rgb24")
    assert out.shape == (64, 96, 3) and np.all(out == common.BOX_COLOR, axis=2).any()


# ---------------------------------------------------------------- app.py through AppTest


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """AppTest runs app.py in this process, and the app sets PyTorch's (process-wide) thread count:
    put it back so the rest of the test session runs as it would without these tests."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def app_config():
    """Streamlit's options as `ferkit app` sets them (config.toml), put back afterwards: AppTest runs
    the page in this process, where nothing else sets them."""
    from streamlit import config

    options = launch.streamlit_options()
    before = {name: config.get_option(name) for name in options}
    for name, value in options.items():
        config.set_option(name, value)
    yield options
    for name, value in before.items():
        config.set_option(name, value)


UPLOAD_LIMIT_MB = launch.streamlit_options()["server.maxUploadSize"]


@pytest.fixture
def app(app_model, monkeypatch):
    """app.py on the tiny test model, first run done (the model is cached for the whole process)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERKIT_MODEL", str(app_model))
    monkeypatch.delenv("FERKIT_ICE_SERVERS", raising=False)
    at = AppTest.from_file(str(APP_FILE), default_timeout=120)
    at.run()
    assert not at.exception
    return at


def upload(at, *files: tuple[str, bytes]):
    uploader = at.file_uploader[0]  # keyed by its round: an example's button empties it with a new key
    for name, data in files:
        uploader.upload(name, data, "image/jpeg")
    at.run()
    assert not at.exception, at.exception
    return at


def photo_captions(at) -> list[str]:
    """The captions of the analysed photos (the example buttons' pictures have none)."""
    return [i.proto.imgs[0].caption for i in at.main.image if i.proto.imgs[0].caption]


def face_summaries(at) -> list[str]:
    return [m.value for m in at.main.markdown if m.value.startswith("**Face ")]


def sidebar_keys(at) -> set[str]:
    """The keys of the sidebar's controls on show."""
    return {w.key for kind in ("radio", "selectbox", "slider", "toggle") for w in at.sidebar.get(kind)}


def charts(at) -> list[pd.DataFrame]:
    """The data behind each probability chart on the page, in page order."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    return [convert_arrow_bytes_to_pandas_df(chart.proto.datasets[0].data.data)
            for chart in at.get("vega_lite_chart")]


def test_app_starts_with_the_sidebar_and_the_model_in_use(app, app_model):
    assert [r.label for r in app.sidebar.radio] == ["Mode"]
    assert app.sidebar.selectbox(key="detector").value == "auto"  # mtcnn for photos, blazeface live
    assert app.sidebar.toggle(key="gradcam").value is False
    sidebar_text = " ".join(m.value for m in app.sidebar.markdown)
    assert str(app_model) in sidebar_text and "baseline" in sidebar_text and "81.2%" in sidebar_text
    assert "Upload one or several photos, or click an example" in app.info[0].value
    assert "8 emotions" in app.main.markdown[0].value  # the intro says what the app does
    # controls shown where they apply: live smoothing only in live mode
    assert sidebar_keys(app) == {"mode", "model", "detector", "min_face", "prior", "gradcam"}
    # one upload limit: config.toml's, which Streamlit enforces, stated at the uploader
    assert app.file_uploader[0].label.endswith(f"up to {UPLOAD_LIMIT_MB} MB each")
    assert app.file_uploader[0].proto.max_upload_size_mb == UPLOAD_LIMIT_MB
    assert [b.label for b in app.main.button] == list(photos.EXAMPLES.values())


def test_an_example_is_analysed_in_one_click_and_uploads_replace_it(app):
    app.button(key="example-grace-hopper.jpg").click().run()
    assert not app.exception and not app.error
    assert [s.value for s in app.subheader] == ["grace-hopper.jpg", "All faces"]
    assert photo_captions(app)[0].startswith("1 face")
    assert len(face_summaries(app)) == 1 and face_summaries(app)[0].startswith("**Face 1 · ")
    assert list(app.dataframe[0].value["file"]) == ["grace-hopper.jpg"]
    upload(app, ("mine.png", png_bytes()))  # an upload: the example goes
    assert [s.value for s in app.subheader] == ["mine.png", "All faces"]
    app.button(key="example-astronaut.jpg").click().run()  # an example again: the uploader is emptied
    assert [s.value for s in app.subheader] == ["astronaut.jpg", "All faces"]
    assert app.file_uploader[0].value == []


def test_controls_keep_their_value_while_a_mode_hides_them(app):
    app.sidebar.slider(key="min_face").set_value(60).run()
    app.sidebar.selectbox(key="prior").set_value("uniform").run()
    app.sidebar.radio(key="mode").set_value("About the model").run()
    assert sidebar_keys(app) == {"mode", "model"}  # nothing else applies to the model's figures
    app.sidebar.radio(key="mode").set_value("Webcam (live)").run()
    assert sidebar_keys(app) == {"mode", "model", "detector", "min_face", "prior", "smooth"}
    app.sidebar.radio(key="mode").set_value("Photo").run()
    assert not app.exception
    assert app.sidebar.slider(key="min_face").value == 60
    assert app.sidebar.selectbox(key="prior").value == "uniform"


@needs_faces
def test_photo_with_faces_boxes_charts_and_table(app):
    upload(app, ("2008_002506.jpg", face_photo("2008_002506.jpg")))
    assert not app.error and not app.warning
    assert photo_captions(app)[0].startswith("3 faces")
    data = charts(app)  # one per face card, in its expander
    assert len(data) == 3 and [e.label for e in app.expander] == ["All 8 emotions"] * 3
    for frame in data:
        assert list(frame["emotion"]) == list(EMOTIONS)
        assert frame["probability"].sum() == pytest.approx(1, abs=1e-4)
    assert [h.split(" · ")[0] for h in face_summaries(app)] == ["**Face 1", "**Face 2", "**Face 3"]
    table = app.dataframe[0].value
    assert list(table["face"]) == [1, 2, 3] and set(table["emotion"]) <= set(EMOTIONS)
    assert table[list(EMOTIONS)].sum(axis=1).to_numpy() == pytest.approx(100, abs=0.01)  # percent
    formats = {name: c.get("type_config", {}).get("format")
               for name, c in json.loads(app.dataframe[0].proto.columns).items()}
    assert formats["neutral"] == formats["contempt"] == "%.0f%%"  # shown as "87%"
    assert app.download_button(key="download_csv").label == "Download CSV"


@needs_faces
def test_several_files_each_with_its_own_outcome(app):
    upload(app, ("2008_002506.jpg", face_photo("2008_002506.jpg")), ("notes.jpg", b"meeting notes\n"),
           ("dogs.jpg", face_photo("dogs.jpg")))
    assert [s.value for s in app.subheader] == ["2008_002506.jpg", "notes.jpg", "dogs.jpg", "All faces"]
    assert len(app.error) == 1 and "notes.jpg: not an image" in app.error[0].value
    assert "No face found in dogs.jpg" in app.warning[0].value
    assert app.image[-1].proto.imgs[0].caption == "dogs.jpg"  # the dog photo is still shown
    assert set(app.dataframe[0].value["file"]) == {"2008_002506.jpg"}


def test_oversized_and_bomb_uploads_get_readable_errors(app):
    # AppTest hands files over without Streamlit's size check: the page holds them to the same limit
    upload(app, ("huge.jpg", b"\xff" * (UPLOAD_LIMIT_MB * settings.BYTES_PER_MB + 1)),
           ("bomb.png", png_claiming(8_000, 8_000)))
    messages = [e.value for e in app.error]
    assert f"above the limit of {UPLOAD_LIMIT_MB} MB" in messages[0]
    assert "bomb.png" in messages[1] and "megapixels" in messages[1]
    assert app.main.caption[-1].value == "No faces to list."


@needs_faces
def test_min_face_slider_hides_small_faces_without_rerunning_the_model(app, app_model):
    from ferkit import Predictor

    upload(app, ("2008_002506.jpg", face_photo("2008_002506.jpg")))
    app.sidebar.slider(key="min_face").set_value(400).run()
    assert not app.exception
    expected = "No face found in 2008_002506.jpg (3 face(s) smaller than 400 px are hidden"
    assert expected in app.warning[0].value
    # A threshold between the face sizes (slider steps of 4 px from 20): the largest face stays. The
    # sizes are the boxes of the CSV (the page's table leaves them out), found as the page finds them.
    predictor = Predictor(model=str(app_model), min_face=common.DEFAULT_MIN_FACE)
    faces = photos.analyze_photo(predictor, face_photo("2008_002506.jpg"), "2008_002506.jpg").faces
    sizes = sorted(face.size for face in faces)
    threshold = 20 + 4 * ((sizes[-1] - 20) // 4)
    hidden = sum(s < threshold for s in sizes)
    app.sidebar.slider(key="min_face").set_value(threshold).run()
    caption = photo_captions(app)[0]
    if hidden:
        assert caption.startswith(f"{3 - hidden} face")
        assert caption.endswith(f"· {hidden} smaller than {threshold} px hidden")
    assert list(app.dataframe[0].value["face"]) == list(range(1, 4 - hidden))  # renumbered


@needs_faces
def test_gradcam_toggle_adds_one_overlay_per_face(app):
    upload(app, ("2008_002506.jpg", face_photo("2008_002506.jpg")))
    app.sidebar.toggle(key="gradcam").set_value(True).run()
    assert not app.exception and not app.error
    overlays = [i for i in app.image if i.proto.imgs[0].caption == "Grad-CAM"]
    assert len(overlays) == 3


def test_gradcam_explains_under_the_prior_the_page_answers_with(monkeypatch):
    """`deep_cnn` answers photos under its own default prior (neutral:0.7); Grad-CAM must explain the
    class shown under that prior, not FERPlus's."""
    import ferkit.explain
    from ferkit import Predictor

    predictor = Predictor(model="deep_cnn")
    seen = []
    real = ferkit.explain.gradcam
    monkeypatch.setattr(ferkit.explain, "gradcam", lambda *a, **k: seen.append(k["prior"]) or real(*a, **k))
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    overlays = photos.gradcam_overlays(predictor, list(faces))
    assert len(overlays) == 2 and overlays[0].shape == (144, 144, 3)
    assert [str(p) for p in seen] == [str(predictor.prior)] == ["neutral:0.7"]
    chosen = predictor.with_prior("uniform")
    photos.gradcam_overlays(chosen, list(faces))
    assert str(seen[-1]) == "uniform"


@needs_faces
def test_snapshot_mode_predicts_on_the_camera_photo(app):
    app.sidebar.radio(key="mode").set_value("Webcam (snapshot)").run()
    buf = io.BytesIO()
    Image.open(io.BytesIO(face_photo("Tom_Cruise_avp_2014_4.jpg"))).save(buf, format="JPEG")
    app.camera_input(key="snapshot").set_value(("shot.jpg", buf.getvalue(), "image/jpeg")).run()
    assert not app.exception and not app.error
    assert photo_captions(app)[0].startswith("1 face")
    assert len(charts(app)) == 1 and face_summaries(app)[0].startswith("**Face 1 · ")
    assert "gradcam" in sidebar_keys(app) and "smooth" not in sidebar_keys(app)


def test_live_page_explains_ice_servers_and_never_shows_a_traceback(app):
    app.sidebar.radio(key="mode").set_value("Webcam (live)").run()
    assert not app.exception
    assert "smooth" in sidebar_keys(app) and "gradcam" not in sidebar_keys(app)  # shown where they apply
    help_text = app.expander[0].markdown[0].value
    assert "FERKIT_ICE_SERVERS" in help_text and "turn:" in help_text
    # AppTest has no real server session for the WebRTC component: the page says so and points
    # to the snapshot mode (the browser test runs the real thing).
    assert "Webcam (snapshot)" in app.error[0].value


def test_about_page_shows_what_metrics_json_says(app, app_model):
    import torch

    from ferkit.models import load

    app.sidebar.radio(key="mode").set_value("About the model").run()
    assert not app.exception
    metrics = json.loads((app_model / "metrics.json").read_text())
    shown = {m.label: m.value for m in app.metric}
    expected_params = sum(p.numel() for p in load(app_model).parameters())
    recalls = [metrics["per_class"][e]["recall"] for e in EMOTIONS]
    assert shown == {"Architecture": "baseline", "Parameters": f"{expected_params:,}",
                     "FERPlus test accuracy": f"{metrics['accuracy']:.1%}",
                     "Balanced accuracy": f"{sum(recalls) / len(recalls):.1%}"}
    recall = app.dataframe[0].value
    assert list(recall["emotion"]) == list(EMOTIONS)
    assert list(recall["recall"]) == recalls
    assert list(recall["test images"]) == [metrics["per_class"][e]["support"] for e in EMOTIONS]
    assert [s.value for s in app.subheader] == ["Recall per emotion", "Confusion matrix"]
    assert len(app.image) == 1
    del torch


def test_about_page_without_metrics_says_not_measured(app_model_unmeasured, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERKIT_MODEL", str(app_model_unmeasured))
    at = AppTest.from_file(str(APP_FILE), default_timeout=120)
    at.run()
    at.sidebar.radio(key="mode").set_value("About the model").run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["FERPlus test accuracy"] == shown["Balanced accuracy"] == "not measured yet"
    assert any("Not measured yet" in m.value for m in at.markdown)
    assert not at.image  # no confusion matrix shipped


def test_bundled_model_about_page_matches_its_metrics_file(monkeypatch):
    from ferkit.models.bundled import DEFAULT_MODEL, list_bundled, weights_root

    if DEFAULT_MODEL not in list_bundled():
        pytest.skip("no bundled default model yet (ferkit/weights/default)")
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("FERKIT_MODEL", raising=False)
    at = AppTest.from_file(str(APP_FILE), default_timeout=120)
    at.run()
    at.sidebar.radio(key="mode").set_value("About the model").run()
    assert not at.exception
    metrics_file = weights_root() / DEFAULT_MODEL / "metrics.json"
    shown = {m.label: m.value for m in at.metric}["FERPlus test accuracy"]
    if metrics_file.is_file():
        assert shown == f"{json.loads(metrics_file.read_text())['accuracy']:.1%}"
    else:
        assert shown == "not measured yet"


@needs_faces
def test_model_loads_once_per_process_not_per_interaction(monkeypatch, tmp_path):
    """Two browser sessions, uploads, toggles, slider moves and mode changes: one Predictor built."""
    from streamlit.testing.v1 import AppTest

    import ferkit.inference

    built = []

    class CountingPredictor(ferkit.inference.Predictor):
        def __init__(self, *args, **kwargs):
            built.append(kwargs.get("model", args[0] if args else None))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(ferkit.inference, "Predictor", CountingPredictor)
    model = write_random_model(tmp_path / "fresh")  # a new path: nothing cached for it yet
    monkeypatch.setenv("FERKIT_MODEL", str(model))
    for _ in range(2):  # two sessions of the same server process
        at = AppTest.from_file(str(APP_FILE), default_timeout=120)
        at.run()
        upload(at, ("2008_002506.jpg", face_photo("2008_002506.jpg")))
        at.sidebar.toggle(key="gradcam").set_value(True).run()
        at.sidebar.slider(key="min_face").set_value(60).run()
        at.sidebar.radio(key="mode").set_value("About the model").run()
        assert not at.exception
    assert built == [str(model)]


def test_model_that_cannot_load_gives_a_readable_error(monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FERKIT_MODEL", str(tmp_path / "no-such-model"))
    at = AppTest.from_file(str(APP_FILE), default_timeout=60)
    at.run()
    assert not at.exception
    message = at.error[0].value
    assert message.startswith("The model could not be loaded:") and "no-such-model" in message


class FlickeringPredictor:
    """One still face, mostly read as happiness, that every third frame reads as surprise (what
    noise does to a close call)."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, image: np.ndarray) -> list[FakeFace]:
        self.calls += 1
        probs = np.full(8, 0.02)
        probs[[1, 2]] = (0.47, 0.41) if self.calls % 3 else (0.42, 0.46)
        return [FakeFace((20, 20, 40, 40), probs / probs.sum(), np.zeros((48, 48), np.uint8))]


def test_live_labels_are_steady_when_smoothed_and_flicker_without():
    for smooth_s, expected_flips in ((0.3, 0), (0.0, 19)):
        clock = Clock()
        processor = live.LiveProcessor(FlickeringPredictor(), clock=clock, smooth_s=smooth_s)
        labels = []
        for _ in range(30):
            clock.now += 1 / 30
            processor.process(np.zeros((80, 80, 3), np.uint8))
            labels.append(processor.stats().largest.emotion)
        assert sum(a != b for a, b in zip(labels, labels[1:], strict=False)) == expected_flips


@needs_faces
def test_the_app_table_predict_csv_and_api_json_are_one_face_record(tmp_path):
    """The same photo through `ferkit predict --csv`, `--json` and the app's table: the same faces,
    boxes, probabilities and numbers, all written by Face.to_row / Face.to_json."""
    import csv

    from typer.testing import CliRunner

    from ferkit import Predictor
    from ferkit.cli import app
    from ferkit.inference.face import FACE_FIELDS

    photo = tmp_path / "group.jpg"
    photo.write_bytes(face_photo("2008_001009.jpg"))
    runner = CliRunner()
    assert runner.invoke(app, ["predict", str(photo), "--csv", str(tmp_path / "faces.csv"),
                               "--model", "fast"]).exit_code == 0
    assert (answer := runner.invoke(app, ["predict", str(photo), "--json", "--model", "fast"])).exit_code == 0
    analysed = photos.analyze_photo(Predictor(model="fast"), photo.read_bytes(), photo.name)
    table = photos.faces_table([analysed])

    def comparable(rows):
        return sorted(tuple(r[c] if c == "emotion" else str(round(float(r[c]), 4)) for c in FACE_FIELDS)
                      for r in rows)

    with (tmp_path / "faces.csv").open() as fh:
        from_csv = list(csv.DictReader(fh))
    from_json = [{**{k: f["box"][k] for k in ("x", "y", "width", "height")}, "emotion": f["emotion"],
                  "confidence": f["confidence"], **f["probabilities"]}
                 for f in json.loads(answer.stdout)[0]["faces"]]
    assert len(from_csv) == 2 and comparable(from_csv) == comparable(table.to_dict("records"))
    assert comparable(from_json) == comparable(from_csv)
    # one numbering: from 1, in reading order, in the app, the CSV and the JSON alike
    assert list(table["face"]) == [int(r["face"]) for r in from_csv] == [1, 2]
    numbered = {int(r["face"]): (int(r["x"]), int(r["y"])) for r in from_csv}
    from_json_faces = json.loads(answer.stdout)[0]["faces"]
    assert {f["face"]: (f["box"]["x"], f["box"]["y"]) for f in from_json_faces} == numbered
    assert {int(r["face"]): (int(r["x"]), int(r["y"])) for r in table.to_dict("records")} == numbered
    # ... and in the pictures: `predict --annotate` draws what the app shows, each number at its face
    from PIL import Image

    from ferkit.inference.annotate import Style, layout

    lossless = tmp_path / "group.png"
    Image.open(photo).save(lossless)
    assert runner.invoke(app, ["predict", str(lossless), "--annotate", str(tmp_path / "annotated"),
                               "--model", "fast"]).exit_code == 0
    drawn = np.asarray(Image.open(tmp_path / "annotated" / "group.png"))
    assert analysed.display_scale == 1 and np.array_equal(drawn, photos.annotated_image(analysed))
    height, width = analysed.image.shape[:2]
    placements = layout(analysed.faces, (width, height), Style.for_image(width, height), probabilities=False)
    assert {int(p.full_label.split(":")[0]): (f.box[0], f.box[1])
            for p, f in zip(placements, analysed.faces, strict=True)} == numbered
