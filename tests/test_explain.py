"""Grad-CAM: valid heatmaps for every model, heatmaps that point at the evidence, overlays,
and `ferkit explain` (image files and the test-set gallery)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REAL_FACES, learnable_image, needs_faces
from PIL import Image
from typer.testing import CliRunner

from ferkit.cli import app
from ferkit.data import label_split, load_ferplus
from ferkit.emotions import EMOTIONS
from ferkit.explain import colorize, gradcam, overlay
from ferkit.explain.figures import explain_files
from ferkit.models import create_model, list_models, load, normalize
from ferkit.models.cnn import PlainCNN

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def peak_quadrants(heatmaps: np.ndarray) -> np.ndarray:
    """Quadrant (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of each map's maximum."""
    rows, cols = np.unravel_index(heatmaps.reshape(len(heatmaps), -1).argmax(axis=1), heatmaps.shape[1:])
    return (rows >= 24) * 2 + (cols >= 24)


@pytest.mark.parametrize("name", list_models())
def test_heatmaps_are_normalised_maps_of_the_input_size_for_every_model(name):
    torch.manual_seed(0)
    model = create_model(name)  # untrained, in training mode
    result = gradcam(model, faces(3))
    assert result.heatmaps.shape == (3, 48, 48) and result.heatmaps.dtype == np.float32
    assert result.heatmaps.min() >= 0 and result.heatmaps.max() <= 1
    assert result.probabilities.shape == (3, 8)
    assert np.allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(result.classes, result.probabilities.argmax(axis=1))  # default: predicted
    assert model.training  # the caller's mode is restored
    assert all(p.grad is None for p in model.parameters())  # no gradients left on the weights


def train_tiny_cnn(root, epochs: int = 5) -> tuple[PlainCNN, object]:
    """A small member of the seed CNN family (Flatten + Dense head), trained by a plain loop."""
    torch.manual_seed(0)
    data = load_ferplus(root, splits=("train", "test"))
    train, test = label_split(data["train"], "majority"), label_split(data["test"], "majority")
    model = PlainCNN((8, 16, 16), dense=32, block_dropout=0.0, dense_dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = normalize(train.images), torch.as_tensor(train.labels)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            batch = order[start:start + 32]
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), test


def test_heatmap_peaks_where_the_class_evidence_is(learnable_root):
    # The class of a learnable face is the quadrant holding its bright patch.
    model, test = train_tiny_cnn(learnable_root)
    result = gradcam(model, test.images)  # default layer: the last conv stage (6x6)
    correct = result.probabilities.argmax(axis=1) == test.labels
    assert correct.mean() > 0.6
    hits = peak_quadrants(result.heatmaps[correct]) == test.labels[correct]
    assert hits.mean() >= 0.7, f"peak in the patch quadrant for only {hits.mean():.0%}"


def test_named_layer_of_a_trained_resnet_points_at_the_patch(tiny_runs, learnable_root):
    # In a global-average-pooled ResNet the last stage (6x6, receptive field ~ the whole face)
    # reads the patch's position from the borders, so its map is diffuse; the first stage
    # (24x24) still shows where the evidence is, and naming a layer reaches it.
    model = load(tiny_runs[0])
    test = label_split(load_ferplus(learnable_root, splits=("test",))["test"], "majority")
    result = gradcam(model, test.images, layer="stages.0")
    assert result.layer == "stages.0"
    correct = result.probabilities.argmax(axis=1) == test.labels
    hits = peak_quadrants(result.heatmaps[correct]) == test.labels[correct]
    assert correct.mean() > 0.6 and hits.mean() >= 0.7


def test_target_class_by_name_or_index_and_clear_errors():
    model = create_model("baseline")
    face = faces(1)[0]
    by_name = gradcam(model, face, target="happiness")  # one (48, 48) face is fine too
    by_index = gradcam(model, face, target=1)
    assert by_name.class_names() == ["happiness"] and by_index.classes.tolist() == [1]
    assert np.allclose(by_name.heatmaps, by_index.heatmaps)
    deep = gradcam(create_model("deep_cnn"), faces(2), target="fear", layer="features.2.3")
    assert deep.heatmaps.shape == (2, 48, 48) and deep.classes.tolist() == [6, 6]
    with pytest.raises(ValueError, match="unknown emotion 'joy'; expected one of neutral, happiness"):
        gradcam(model, face, target="joy")
    with pytest.raises(ValueError, match="expected None, an index 0..7"):
        gradcam(model, face, target=8)
    with pytest.raises(ValueError, match="'features.9' not found in PlainCNN; conv layers: features.0.0, "):
        gradcam(model, face, layer="features.9")


def test_overlay_blends_a_resized_jet_heatmap_over_gray_or_rgb():
    heatmap = np.zeros((48, 48), np.float32)
    heatmap[:24] = 1.0  # hot top half
    gray = np.full((48, 48), 100, np.uint8)
    out = overlay(gray, heatmap, alpha=0.5)
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    hot, cold = colorize(np.array([1.0]))[0], colorize(np.array([0.0]))[0]
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red high, blue low
    assert np.array_equal(out[0, 0], np.round(0.5 * 100 + 0.5 * hot.astype(float)).astype(np.uint8))
    photo = np.zeros((120, 90, 3), np.uint8)
    big = overlay(photo, heatmap)
    assert big.shape == (120, 90, 3)
    assert big[5, 45, 0] > big[5, 45, 2] and big[115, 45, 2] > big[115, 45, 0]  # top hot, bottom cold
    with pytest.raises(ValueError, match="face: expected a grayscale"):
        overlay(np.zeros((4, 4, 4), np.uint8), heatmap)


def test_cli_explain_writes_one_figure_per_image(tiny_runs, tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(learnable_image(1, rng)).save(tmp_path / "face.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", str(tmp_path / "face.png"), "--model", str(tiny_runs[0]),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "face-gradcam.png").is_file()
    printed = " ".join(result.output.split())
    assert "face.png: happiness p=" in printed  # patch top-right -> happiness, the predicted class
    with Image.open(out / "face-gradcam.png") as figure:
        assert figure.width > 2 * figure.height  # face | heatmap | overlay side by side

    result = runner.invoke(app, ["explain", str(tmp_path / "face.png"), "--model", str(tiny_runs[0]),
                                 "--class", "sadness", "--out", str(out)])
    assert result.exit_code == 0 and "face.png: sadness p=" in " ".join(result.output.split())


def test_cli_explain_takes_a_bundled_model_name_and_writes_outside_the_package(tmp_path, monkeypatch):
    Image.fromarray(learnable_image(1, np.random.default_rng(3))).save(tmp_path / "face.png")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["explain", "face.png", "--model", "fast", "--class", "happiness"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "explain-fast" / "face-gradcam.png").is_file()
    assert "face.png: happiness p=" in " ".join(result.output.split())


@needs_faces
def test_cli_explain_finds_the_faces_in_photos_and_lists_photos_without_one(tiny_runs, tmp_path):
    """A photo is not squeezed whole into 48x48: each detected face gets its own figure, on the
    crop `ferkit predict` classifies; a photo without a face is named at the end (exit code 1)
    after the other figures are written."""
    from ferkit.inference import Predictor

    photos = [REAL_FACES / "Tom_Cruise_avp_2014_4.jpg", REAL_FACES / "2008_002506.jpg"]
    Image.fromarray(np.zeros((100, 80, 3), np.uint8)).save(tmp_path / "blank.jpg")
    Image.fromarray(learnable_image(1, np.random.default_rng(3))).save(tmp_path / "face.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["explain", *map(str, photos), str(tmp_path / "blank.jpg"),
                                 str(tmp_path / "face.png"), "--model", str(tiny_runs[0]),
                                 "--out", str(out)])
    assert result.exit_code == 1, result.output
    printed = " ".join(result.output.split())
    assert "blank.jpg: no face found" in printed and (out / "face-gradcam.png").is_file()
    predictor = Predictor(model=str(tiny_runs[0]))
    single, group = (predictor.predict(photo) for photo in photos)
    assert len(single) == 1 and len(group) >= 2
    assert (out / "Tom_Cruise_avp_2014_4-gradcam.png").is_file()
    assert sorted(p.name for p in out.glob("2008_002506-face*-gradcam.png")) == \
        [f"2008_002506-face{i}-gradcam.png" for i in range(1, len(group) + 1)]
    assert f"Tom_Cruise_avp_2014_4.jpg face {single[0].box}:" in printed
    # the explained face is the aligned crop `ferkit predict` classified, not the resized photo
    done, no_face = explain_files(load(tiny_runs[0]), [photos[0]], tmp_path / "again",
                                  find_faces=lambda rgb: [(f.crop, f.box) for f in predictor.predict(rgb)])
    assert no_face == [] and len(done) == 1 and done[0].box == single[0].box and not done[0].resized
    expected = predictor.predict_faces(single[0].crop[None])[0]
    assert done[0].predicted == EMOTIONS[int(expected.argmax())]


def test_cli_explain_errors_are_one_readable_line(tiny_runs, tmp_path):
    Image.fromarray(faces(1)[0]).save(tmp_path / "face.png")
    result = runner.invoke(app, ["explain", str(tmp_path / "face.png"), "--model", str(tiny_runs[0]),
                                 "--class", "joy"])
    assert result.exit_code == 1
    assert f"unknown emotion 'joy'; expected one of {', '.join(EMOTIONS)}" in " ".join(result.output.split())
    result = runner.invoke(app, ["explain", str(tmp_path / "missing.png"), "--model", str(tiny_runs[0])])
    assert result.exit_code == 1 and "missing.png: image file not found" in result.output
    result = runner.invoke(app, ["explain", str(tmp_path / "face.png"), "--model", str(tmp_path / "norun")])
    assert result.exit_code == 1 and "norun': not a bundled model name" in result.output
    result = runner.invoke(app, ["explain", "--model", str(tiny_runs[0])])
    assert result.exit_code == 1 and "nothing to explain" in result.output


def test_cli_gallery_writes_one_figure(tiny_runs, learnable_root, tmp_path):
    result = runner.invoke(app, ["explain", "--gallery", "--model", str(tiny_runs[0]),
                                 "--data", str(learnable_root), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "gallery.png") as figure:
        assert figure.height > figure.width  # a row per emotion


def test_resnet_defaults_to_its_penultimate_stage_and_others_to_forward_features():
    import numpy as np

    from ferkit.explain import gradcam
    from ferkit.models import create_model

    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    resnet = gradcam(create_model("resnet", widths=(8, 16, 16), stem_width=8), faces)
    assert resnet.layer == "stages.1" and resnet.heatmaps.shape == (2, 48, 48)
    assert gradcam(create_model("baseline"), faces).layer == "forward_features"


def test_ensemble_gradcam_sums_its_members_maps():
    import numpy as np

    from ferkit.explain import gradcam
    from ferkit.models import create_model

    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    members = [{"architecture": "resnet", "model_args": {"widths": [8, 16, 16], "stem_width": 8}}] * 2
    result = gradcam(create_model("ensemble", members=members).eval(), faces, target="happiness")
    assert result.layer == "members.0.stages.1, members.1.stages.1"
    assert result.heatmaps.shape == (2, 48, 48) and result.heatmaps.min() >= 0
    assert result.heatmaps.max() <= 1 and (result.classes == 1).all()


def test_flip_ensemble_gradcam_of_a_mirrored_face_is_the_mirrored_map():
    import numpy as np

    from ferkit.explain import gradcam
    from ferkit.models import create_model

    face = np.random.default_rng(1).integers(0, 256, (1, 48, 48), dtype=np.uint8)
    members = [{"architecture": "resnet", "model_args": {"widths": [8, 16, 16], "stem_width": 8}}] * 2
    torch.manual_seed(0)  # the test must not depend on the random state earlier tests leave
    model = create_model("ensemble", members=members, flip=True).eval()
    plain = gradcam(model, face)  # explains the predicted class, the same for both views
    mirrored = gradcam(model, face[:, :, ::-1].copy())
    assert plain.heatmaps.shape == (1, 48, 48) and plain.heatmaps.max() > 0
    np.testing.assert_allclose(mirrored.heatmaps[0], plain.heatmaps[0][:, ::-1], atol=1e-5)
    np.testing.assert_allclose(mirrored.probabilities, plain.probabilities, atol=1e-6)
