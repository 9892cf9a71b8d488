"""ferkit's web app: facial expressions in photos and from the webcam, in the browser.

    ferkit app        # or `make run` in a checkout; serves http://127.0.0.1:8501

Four modes (sidebar): Photo (an example photo in one click, or several uploads: each photo at full
width with its faces labelled by `ferkit.draw`, a grid of face cards with the top emotions and the
8-emotion chart on demand, Grad-CAM, a table and CSV of all faces), Webcam live (streamlit-webrtc: boxes
on the live video, a live chart of the largest face, the frame rate), Webcam snapshot (st.camera_input,
works in every browser), and About the model (architecture, size, test accuracy and recall from the
model's metrics.json). The sidebar shows only the controls that apply to the mode on show.

This file only lays out the page; the decisions live in photos, live, about and common so that unit tests and
`streamlit.testing.v1.AppTest` can drive them. The model loads once per process (`st.cache_resource`),
analyses are cached per file content, and no Python traceback ever reaches the page: bad files get
one readable sentence, unexpected failures a short notice (the traceback goes to the server log).

Environment: FERKIT_MODEL picks another model (a bundled name, a run folder or an .onnx file; default:
the bundled model); FERKIT_ICE_SERVERS adds STUN/TURN servers for remote webcam users (see the live
page's help); FERKIT_APP_THREADS sets PyTorch's threads (default 1: the app is already parallel).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from ferkit.app import about, common, live, photos
from ferkit.errors import FerkitError
from ferkit.inference.tracking import DEFAULT_SMOOTH_S
from ferkit.settings import ICE_SERVERS_ENV

log = logging.getLogger("ferkit.app")

PHOTO, LIVE, SNAPSHOT, ABOUT = "Photo", "Webcam (live)", "Webcam (snapshot)", "About the model"
MODES = (PHOTO, LIVE, SNAPSHOT, ABOUT)
LIVE_REFRESH_S = 0.5  # how often the live chart and frame rate are redrawn
FACES_PER_ROW = 4  # face cards to a row: a 24-face photo is 6 rows of small cards, not a long scroll
FACE_CARD_MIN_WIDTH = 180  # px: on a narrow screen the grid wraps to fewer cards a row

# The sidebar's settings, kept in st.session_state under their widget keys. Streamlit forgets a widget's
# value when a run does not draw it, and a mode hides the controls that do not apply to it: the values
# are re-stated on every run (`keep_settings`), and the widgets take them from there (no default given).
SETTING_DEFAULTS: dict[str, Any] = {
    "detector": common.AUTO_DETECTOR, "gradcam": False, "min_face": common.DEFAULT_MIN_FACE,
    "prior": common.MODEL_PRIOR, "smooth": DEFAULT_SMOOTH_S,
}
EXAMPLE_KEY = "example"  # session state: the example on show (a file of photos.EXAMPLES), or None
UPLOADER_ROUND_KEY = "uploader_round"  # session state: part of the uploader's key; a new round empties it


@dataclass(frozen=True)
class Settings:
    """The sidebar's choices; part of every cache key, so changing one never shows stale results."""

    mode: str
    model: str | None
    detector: str
    gradcam: bool
    min_face: int
    prior: str | None = None  # None: the model's own default (see ferkit.priors)
    smooth_s: float = DEFAULT_SMOOTH_S  # live webcam: label smoothing over time


# ---------------------------------------------------------------- cached work


@st.cache_resource(show_spinner="Loading the model…")
def load_predictor(model: str | None, detector: str) -> Any:
    """One Predictor per (model, detector) per process, shared by all sessions and threads
    (the Predictor is thread-safe); the weights are read from disk once, not per interaction."""
    from ferkit import Predictor
    from ferkit.hardware import set_torch_threads

    set_torch_threads(common.app_threads())  # process-wide; see ferkit.settings.APP_THREADS_ENV
    chosen = None if detector == common.AUTO_DETECTOR else detector  # None: photos mtcnn, live blazeface
    return Predictor(model=model, detector=chosen, min_face=common.DEFAULT_MIN_FACE)


def predictor_for(settings: Settings) -> Any:
    """The shared Predictor of the chosen model and detector, answering under the chosen prior."""
    return load_predictor(settings.model, settings.detector).with_prior(settings.prior)


@st.cache_data(max_entries=64, show_spinner=False)
def analyze(data: bytes, name: str, model: str | None, detector: str,
            prior: str | None) -> photos.PhotoResult:
    """Analysis of one file, cached by its content: toggling Grad-CAM or moving the face-size
    slider re-draws the page without running the detector and the model again."""
    return photos.analyze_photo(load_predictor(model, detector).with_prior(prior), data, name,
                                max_mb=upload_limit_mb())


@st.cache_data(show_spinner=False)
def example_thumbnail(name: str) -> np.ndarray:
    return photos.example_thumbnail(name)


def upload_limit_mb() -> int:
    """The largest upload, in MB: Streamlit's server.maxUploadSize (config.toml), the limit Streamlit
    enforces on the uploader; the page states it and holds other bytes to it."""
    return int(st.get_option("server.maxUploadSize"))


@st.cache_data(max_entries=256, show_spinner=False)
def gradcam_overlays(crops: np.ndarray, model: str | None, detector: str,
                     prior: str | None) -> list[np.ndarray]:
    return photos.gradcam_overlays(load_predictor(model, detector).with_prior(prior), crops)


# ---------------------------------------------------------------- sidebar


def keep_settings() -> None:
    """Re-state every sidebar setting in st.session_state (its default on the first run), so a control
    that the mode on show hides keeps its value for when it is shown again."""
    for key, default in SETTING_DEFAULTS.items():
        st.session_state[key] = st.session_state.get(key, default)


def sidebar() -> Settings:
    """Mode and model, then the controls the chosen mode uses: detector, minimum face size and class
    prior wherever faces are found (not About), Grad-CAM where face cards are shown (photos, snapshot),
    smoothing where there are frames to smooth over (live). The model in use is shown once loaded."""
    from ferkit.faces import DEFAULT_DETECTOR, LIVE_DETECTOR, list_detectors

    keep_settings()
    with st.sidebar:
        st.title("ferkit")
        st.caption("Facial expressions: 8 FERPlus emotions")
        mode = st.radio("Mode", MODES, key="mode")
        model = st.selectbox("Model", common.model_choices(), key="model",
                             help="A bundled model: `default` is ferkit's most accurate; `deep_cnn` "
                                  "is the seed's Phase 2 network. Start the app with `ferkit app -m MODEL` "
                                  "to use another.")
        if mode != ABOUT:
            auto = f"auto ({DEFAULT_DETECTOR} for photos, {LIVE_DETECTOR} live)"
            st.selectbox("Face detector", [common.AUTO_DETECTOR, *list_detectors()], key="detector",
                         format_func=lambda name: auto if name == common.AUTO_DETECTOR else name,
                         help=f"Which detector finds the faces: {DEFAULT_DETECTOR} finds the most, "
                              f"{LIVE_DETECTOR} is about 10x faster. Changing it loads a second "
                              "copy of the model once.")
            st.slider("Minimum face size (px)", min_value=common.DEFAULT_MIN_FACE, max_value=400, step=4,
                      key="min_face", help="Faces whose shorter side is smaller are ignored.")
            st.selectbox("Class prior", common.PRIOR_CHOICES, key="prior",
                         format_func=common.PRIOR_CHOICES.get, help=common.PRIOR_HELP)
        if mode in (PHOTO, SNAPSHOT):
            st.toggle("Grad-CAM overlays", key="gradcam",
                      help="Show, for each face, which pixels drove the predicted emotion.")
        if mode == LIVE:
            st.slider("Live smoothing (s)", min_value=0.0, max_value=2.0, step=0.1, key="smooth",
                      help="Each face's probabilities are averaged over about this long, so a steady "
                           "face keeps a steady label. 0 = every frame on its own.")
    state = st.session_state
    return Settings(mode=mode, model=model, detector=state["detector"], gradcam=state["gradcam"],
                    min_face=state["min_face"],
                    prior=None if state["prior"] == common.MODEL_PRIOR else state["prior"],
                    smooth_s=state["smooth"])


def show_model_in_sidebar(predictor: Any) -> None:
    report = about.model_report(predictor.model_info, about.torch_model(predictor))
    accuracy = f"{report.accuracy:.1%} {report.accuracy_label}" if report.accuracy is not None \
        else "accuracy not measured yet"
    if report.balanced_accuracy is not None:
        accuracy += f", {report.balanced_accuracy:.1%} balanced"
    st.sidebar.markdown(f"**Model:** `{report.name}` ({report.architecture})  \n{accuracy}")


# ---------------------------------------------------------------- photos


def show_photo(result: photos.PhotoResult, settings: Settings, all_faces: int) -> None:
    """One analysed image: the error, or the photo at full width with its faces labelled, then a grid
    of face cards."""
    st.subheader(result.name)
    if result.error:
        st.error(result.error)
        return
    if not result.faces:
        hidden = all_faces - len(result.faces)
        extra = (f" ({hidden} face(s) smaller than {settings.min_face} px are hidden: lower "
                 "\"Minimum face size\")") if hidden else ""
        st.warning(f"No face found in {result.name}{extra}.")
        st.image(result.image, caption=result.name)
        return
    count, hidden = len(result.faces), all_faces - len(result.faces)
    caption = f"{count} face{'s' if count > 1 else ''} · {result.seconds * 1000:.0f} ms"
    if hidden:
        caption += f" · {hidden} smaller than {settings.min_face} px hidden"
    st.image(photos.annotated_image(result), caption=caption, width="stretch")
    show_face_cards(result, face_overlays(result, settings))


def show_face_cards(result: photos.PhotoResult, overlays: list[np.ndarray]) -> None:
    """A card per face, numbered as on the photo: its colour thumbnail (and Grad-CAM overlay), its top
    emotions in percent, and the 8-emotion chart in an expander (opened on demand: a photo of many
    faces stays a compact grid)."""
    grid = st.grid(FACES_PER_ROW, min_column_width=FACE_CARD_MIN_WIDTH, border=True)
    for face in result.faces:
        with grid.cell():
            thumbnail = photos.face_thumbnail(result, face)
            if overlays:
                left, right = st.columns(2)
                left.image(thumbnail, caption=f"Face {face.index}", width="stretch")
                right.image(overlays[face.index - 1], caption="Grad-CAM", width="stretch")
            else:
                st.image(thumbnail)
            st.markdown(photos.face_summary(face))
            with st.expander("All 8 emotions"):
                st.altair_chart(photos.probability_chart(face.probabilities), width="stretch")


def face_overlays(result: photos.PhotoResult, settings: Settings) -> list[np.ndarray]:
    """Grad-CAM overlays when the toggle is on and the model is a PyTorch one."""
    if not settings.gradcam:
        return []
    if about.torch_model(load_predictor(settings.model, settings.detector)) is None:
        st.info("Grad-CAM needs PyTorch and the model's weights (pip install 'ferkit[torch]'); this "
                "model runs on ONNX Runtime alone.")
        return []
    crops = np.stack([f.crop for f in result.faces])
    try:
        with st.spinner("Computing Grad-CAM…"):
            return gradcam_overlays(crops, settings.model, settings.detector, settings.prior)
    except FerkitError as exc:
        st.warning(f"Grad-CAM is not available for this model: {exc}")
        return []


def analyze_photos(named: list[tuple[str, bytes]],
                   settings: Settings) -> list[tuple[photos.PhotoResult, int]]:
    """(result filtered by the minimum face size, number of faces before filtering) per (name, bytes)."""
    out = []
    for name, data in named:
        with st.spinner(f"Analysing {name}…"):
            full = analyze(data, name, settings.model, settings.detector, settings.prior)
        out.append((photos.keep_faces_at_least(full, settings.min_face), len(full.faces)))
    return out


def show_example(name: str) -> None:
    """An example's button: show it instead of any uploads (a new uploader round empties the
    uploader, so the page shows one thing at a time)."""
    st.session_state[EXAMPLE_KEY] = name
    st.session_state[UPLOADER_ROUND_KEY] = st.session_state.get(UPLOADER_ROUND_KEY, 0) + 1


def forget_example() -> None:
    """The uploader changed: the uploads are on show now."""
    st.session_state[EXAMPLE_KEY] = None


PHOTO_INTRO = ("ferkit finds every face in a photo and tells which of 8 emotions it shows (neutral, "
               "happiness, surprise, sadness, anger, disgust, fear, contempt) and how sure it is. "
               "Try an example, or upload your own photos.")


def photo_page(settings: Settings) -> None:
    st.header("Photos")
    st.markdown(PHOTO_INTRO)
    uploader_column, *example_columns = st.columns([4, *[1] * len(photos.EXAMPLES)])
    limit = upload_limit_mb()
    uploader_round = st.session_state.get(UPLOADER_ROUND_KEY, 0)
    files = uploader_column.file_uploader(
        f"Your photos: JPEG, PNG or WebP, up to {limit} MB each", type=list(common.ACCEPTED_TYPES),
        accept_multiple_files=True, key=f"photos-{uploader_round}", on_change=forget_example,
        help=f"Up to {limit} MB and {common.MAX_PIXELS / 1e6:.0f} megapixels per photo; several at once.")
    for column, (name, who) in zip(example_columns, photos.EXAMPLES.items(), strict=True):
        column.image(example_thumbnail(name), width="stretch")
        column.button(who, key=f"example-{name}", on_click=show_example, args=(name,), width="stretch",
                      help=f"Analyse the example photo of {who} (public domain).")
    example = st.session_state.get(EXAMPLE_KEY)
    if files:
        named = [(file.name, file.getvalue()) for file in files]
    elif example:
        named = [(example, photos.example_bytes(example))]
    else:
        st.info("Upload one or several photos, or click an example: every face is labelled on the photo, "
                "with its top emotions below.")
        return
    results = analyze_photos(named, settings)
    for result, all_faces in results:
        show_photo(result, settings, all_faces)
    table = photos.faces_table([r for r, _ in results])
    st.subheader("All faces")
    if table.empty:
        st.caption("No faces to list.")
        return
    percent = st.column_config.NumberColumn(format="%.0f%%")
    st.dataframe(photos.shown_table(table), hide_index=True,
                 column_config={name: percent for name in photos.PERCENT_COLUMNS})
    st.download_button("Download CSV", photos.table_csv(table), file_name="ferkit_faces.csv",
                       mime="text/csv", key="download_csv",
                       help="Every face with its box and the 8 probabilities (0-1), as `ferkit predict "
                            "--csv` writes them.")


# ---------------------------------------------------------------- webcam

LIVE_HELP = f"""
The video goes from your browser to this server over WebRTC and comes back with boxes drawn.
No STUN/TURN server is configured, so it works on this machine and on a local network with no
internet access. **Remote users** (behind NAT or a firewall) need ICE servers: start the app with
`{ICE_SERVERS_ENV}` set to a JSON list, e.g.
`{ICE_SERVERS_ENV}='[{{"urls": ["stun:stun.example.org:3478"]}}, {{"urls": "turn:turn.example.org:3478",
"username": "USER", "credential": "PASSWORD"}}]' make run`.
If the live video does not start, use **Webcam (snapshot)**, which works everywhere.
"""


def live_processor(settings: Settings) -> live.LiveProcessor:
    """This session's frame processor, kept across reruns; the sidebar's current choices are
    pushed into it on every run (the worker thread reads them on the next frame)."""
    predictor = predictor_for(settings).for_video()  # the live detector unless one was chosen
    processor = st.session_state.get("live_processor")
    if processor is None:
        processor = live.LiveProcessor(predictor, settings.min_face)
        st.session_state["live_processor"] = processor
    processor.predictor, processor.min_face = predictor, settings.min_face
    processor.tracker.smooth_s = settings.smooth_s
    return processor


def live_page(settings: Settings) -> None:
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    st.header("Webcam, live")
    with st.expander("How it works, and remote users"):
        st.markdown(LIVE_HELP)
    configuration, problem = live.rtc_configuration()
    if problem:
        st.warning(problem)
    processor = live_processor(settings)
    try:
        context = webrtc_streamer(
            key="live", mode=WebRtcMode.SENDRECV, rtc_configuration=configuration,
            media_stream_constraints={"video": True, "audio": False},
            video_frame_callback=processor.callback, async_processing=True)
    except Exception as exc:  # e.g. no Streamlit server session (a test harness), a broken aiortc
        log.exception("the live webcam component failed")
        st.error(f"The live webcam cannot start here ({type(exc).__name__}). Use **{SNAPSHOT}** instead.")
        return
    chart, caption = st.empty(), st.empty()
    if not context.state.playing:
        caption.caption("Press START and allow the camera.")
        return
    while context.state.playing:  # the script stays here while the video plays; a rerun ends it
        stats = processor.stats()
        if stats.largest is not None:
            chart.altair_chart(photos.probability_chart(stats.largest.probabilities), width="stretch")
        caption.markdown(live.live_caption(stats) + (f"  \n:red[{stats.error}]" if stats.error else ""))
        time.sleep(LIVE_REFRESH_S)


def snapshot_page(settings: Settings) -> None:
    st.header("Webcam, snapshot")
    shot = st.camera_input("Take a photo", key="snapshot")
    if shot is None:
        st.caption("A single photo from your camera; works in every browser, no WebRTC needed.")
        return
    full = analyze(shot.getvalue(), "Your snapshot", settings.model, settings.detector, settings.prior)
    show_photo(photos.keep_faces_at_least(full, settings.min_face), settings, len(full.faces))


# ---------------------------------------------------------------- about


def about_page(predictor: Any) -> None:
    report = about.model_report(predictor.model_info, about.torch_model(predictor))
    st.header("About the model")
    left, middle, right, balanced = st.columns(4)
    left.metric("Architecture", report.architecture)
    middle.metric("Parameters", f"{report.parameters:,}" if report.parameters is not None else "unknown")
    right.metric(report.accuracy_label, f"{report.accuracy:.1%}" if report.accuracy is not None
                 else "not measured yet")
    balanced.metric("Balanced accuracy", f"{report.balanced_accuracy:.1%}"
                    if report.balanced_accuracy is not None else "not measured yet",
                    help="Mean recall over the emotions: every emotion counts the same, however rare.")
    st.caption(f"Model `{report.name}`" + (f"; measured on the {report.evaluated_on}, under FERPlus's own "
                                            "class prior" if report.evaluated_on else "")
               + f". Photos and the webcam answer under the class prior chosen in their sidebar (now "
                 f"{predictor.prior}).")
    st.subheader("Recall per emotion")
    if report.recall:
        st.dataframe(about.recall_table(report), hide_index=True,
                     column_config={"recall": st.column_config.ProgressColumn(
                         "recall", format="percent", min_value=0.0, max_value=1.0)})
    else:
        st.write("Not measured yet: this model ships no metrics.json.")
    if report.confusion_image is not None:
        st.subheader("Confusion matrix")
        st.image(str(report.confusion_image))


# ---------------------------------------------------------------- main


def main() -> None:
    st.set_page_config(page_title="ferkit: facial expressions", layout="wide")
    settings = sidebar()
    try:
        predictor = predictor_for(settings)
    except (FerkitError, ValueError) as exc:
        st.error(f"The model could not be loaded: {exc}")
        st.info("To use another model, start the app with `ferkit app -m MODEL` (a run folder with "
                "model.json + model.safetensors, an .onnx file, or a bundled model's name).")
        return
    show_model_in_sidebar(predictor)
    pages = {PHOTO: photo_page, LIVE: live_page, SNAPSHOT: snapshot_page}
    if settings.mode == ABOUT:
        about_page(predictor)
    else:
        pages[settings.mode](settings)


def run() -> None:
    """main() with a last safety net: an unexpected error becomes one line on the page and a
    traceback in the server log (Streamlit's rerun/stop signals are BaseExceptions and pass)."""
    try:
        main()
    except Exception:
        log.exception("the app failed")
        st.error("Something went wrong while building this page (details are in the server log). "
                 "Reload the page to try again.")


if __name__ == "__main__":
    run()
