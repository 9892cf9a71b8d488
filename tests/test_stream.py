"""FaceStream: faces through frames with the shipped model and the live detector (real faces).

A still face with noise and jitter keeps its label when smoothed; a cut to another expression is
followed within 0.5 s; detecting every 3rd frame still follows a moving face under one track id."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REAL_FACES, fit_frame, needs_face_detector, needs_real_faces

from ferkit.errors import ArgumentError
from ferkit.inference import Predictor, load_image
from ferkit.inference.stream import FaceStream
from ferkit.inference.tracking import DEFAULT_SMOOTH_S

FPS = 30.0
pytestmark = [needs_face_detector, needs_real_faces]


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(threads=1)


def labels(predictor: Predictor, frames: list[np.ndarray], smooth_s: float, detect_every: int = 1):
    stream = FaceStream(predictor.for_video(), smooth_s=smooth_s, detect_every=detect_every)
    return [stream.update(frame, k / FPS) for k, frame in enumerate(frames)]


def jittered(frame: np.ndarray, count: int, noise: float = 6.0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        dx, dy = rng.integers(-2, 3, size=2)
        moved = cv2.warpAffine(frame, np.float32([[1, 0, dx], [0, 1, dy]]), frame.shape[1::-1],
                               borderMode=cv2.BORDER_REPLICATE)
        out.append(np.clip(moved + rng.normal(0, noise, moved.shape), 0, 255).astype(np.uint8))
    return out


def test_the_live_path_uses_the_live_detector_unless_one_was_chosen(predictor):
    assert predictor.for_video().detector_name == "blazeface"
    assert Predictor(detector="mtcnn").for_video().detector_name == "mtcnn"
    assert predictor.detector_name == "mtcnn"  # photos keep the detector that finds the most faces


def test_a_still_noisy_face_keeps_one_track_and_one_smoothed_label(predictor):
    # the grimacing man of 2008_002506.jpg: a close call between emotions, frame by frame
    group = load_image(REAL_FACES / "2008_002506.jpg")
    frames = jittered(fit_frame(group[40:230, 190:350]), 45)
    smoothed = labels(predictor, frames, DEFAULT_SMOOTH_S)
    assert all(len(faces) == 1 for faces in smoothed)
    assert len({faces[0].track for faces in smoothed}) == 1
    assert len({faces[0].emotion for faces in smoothed[5:]}) == 1  # after a settling sixth of a second


def test_a_cut_to_another_expression_is_followed_within_half_a_second(predictor):
    happy = fit_frame(load_image(REAL_FACES / "Tom_Cruise_avp_2014_4.jpg"))
    group = load_image(REAL_FACES / "2008_002506.jpg")
    other = fit_frame(group[40:230, 190:350])
    target = predictor.predict(other)[0].emotion
    assert predictor.predict(happy)[0].emotion == "happiness" != target
    run = labels(predictor, [happy] * 30 + [other] * 30, DEFAULT_SMOOTH_S)
    assert run[29][0].emotion == "happiness"
    followed = next(k for k in range(30, 60) if run[k][0].emotion == target)
    assert (followed - 30) / FPS <= 0.5


def test_detecting_every_third_frame_follows_a_moving_face(predictor):
    face = load_image(REAL_FACES / "Tom_Cruise_avp_2014_4.jpg")
    face = cv2.resize(face, (150, int(150 * face.shape[0] / face.shape[1])))
    frames = []
    for k in range(30):  # 4 px a frame to the right
        frame = np.full((480, 640, 3), 96, np.uint8)
        frame[100:100 + face.shape[0], 100 + 4 * k:250 + 4 * k] = face
        frames.append(frame)
    calls = []
    live = predictor.for_video()
    detect = live.detect
    live.detect = lambda rgb: calls.append(1) or detect(rgb)  # count the detector's runs
    stream = FaceStream(live, detect_every=3)
    run = [stream.update(frame, k / FPS) for k, frame in enumerate(frames)]
    assert len(calls) == 10 and all(len(faces) == 1 for faces in run)
    assert len({faces[0].track for faces in run}) == 1
    # boxes between detections move with the face (velocity from detection to detection)
    xs = [faces[0].box[0] for faces in run]
    assert all(xs[k] > xs[k - 1] for k in range(4, 30) if k % 3)  # each followed frame moves on
    assert abs((xs[-1] - xs[3]) - 4 * 26) <= 8  # and as far as the face did


def test_detect_every_must_be_positive(predictor):
    with pytest.raises(ArgumentError, match="detect_every"):
        FaceStream(predictor, detect_every=0)


def test_a_face_followed_towards_the_edge_stays_in_the_frame():
    """Between detections a face moves with its velocity; near the edge the move stops at the frame
    (a box outside it could not be cropped, and `ferkit video` would stop)."""
    from types import SimpleNamespace

    from ferkit.inference.stream import MovedDetection

    face = SimpleNamespace(box=(580, 10, 50, 60), landmarks={"left_eye": (600.0, 30.0)}, confidence=0.9)
    moved = MovedDetection.of(face, 40.0, -25.0, frame=(640, 480))
    assert moved.box == (590, 0, 50, 60)  # right edge at 640, top at 0
    assert moved.landmarks == {"left_eye": (610.0, 20.0)}  # moved as far as the box
    assert MovedDetection.of(face, 40.0, -25.0).box == (620, -15, 50, 60)  # no frame: moved as asked
