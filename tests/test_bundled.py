"""The models shipped as package data: found by name, carrying their Test metrics, reproducing them."""

from __future__ import annotations

import json

import pytest
from conftest import REAL_FERPLUS, needs_ferplus

from ferkit.data import label_split, load_ferplus
from ferkit.models import bundled, load

SHIPPED = ("default", "fast", "deep_cnn")  # most accurate, a single fast network, the seed's Phase 2
shipped = pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.skipif(name not in bundled.list_bundled(),
                                                reason=f"no bundled {name!r} model"))
    for name in SHIPPED])


@shipped
def test_shipped_models_carry_their_test_metrics(name):
    folder = bundled.weights_root() / name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["protocol"] == "majority"
    assert metrics["images"] == 3137
    assert set(metrics["per_class"]) == {"neutral", "happiness", "surprise", "sadness", "anger",
                                         "disgust", "fear", "contempt"}
    assert metrics["training"]["commands"] and metrics["training"]["train_seconds"] > 0
    assert (folder / "model.safetensors").stat().st_size < 25_000_000
    assert load(folder) is not None


@pytest.mark.realdata
@shipped
@needs_ferplus
def test_predictor_reproduces_the_shipped_test_accuracy(name):
    from ferkit import Predictor

    metrics = json.loads((bundled.weights_root() / name / "metrics.json").read_text())
    test = label_split(load_ferplus(REAL_FERPLUS, splits=("test",))["test"], "majority")
    # metrics.json is FERPlus Test under FERPlus's own prior (`ferkit evaluate`); photos get the
    # model's default prior, which is recorded beside it
    exact = (Predictor(backend="torch", prior="ferplus") if name == "default"
             else Predictor(model=name, backend="torch", prior="ferplus"))
    assert str(Predictor(model=name).prior) == metrics.get("default_prior", "ferplus")
    proba = exact.predict_faces(test.images)
    correct = int((proba.argmax(axis=1) == test.labels).sum())
    assert correct == metrics["correct"]
    assert correct / len(test) == pytest.approx(metrics["accuracy"], abs=1e-12)
    # the default path (the shipped ONNX export) reproduces its own recorded Test figure
    default_path = Predictor(model=name, prior="ferplus")
    if default_path.backend.kind == "onnx":
        onnx_correct = int((default_path.predict_faces(test.images).argmax(1) == test.labels).sum())
        assert onnx_correct == metrics["onnx"]["test"]["correct"]


def test_a_bundled_model_is_known_as_bundled_however_it_is_named(tmp_path):
    import shutil

    resolve_model = bundled.resolve_model
    folder = bundled.weights_root() / "fast"
    assert resolve_model("fast").is_bundled and resolve_model(folder).is_bundled
    assert resolve_model(str(folder / "model.json")).is_bundled
    copy = shutil.copytree(folder, tmp_path / "fast")  # a user's copy may be written into
    assert not resolve_model(copy).is_bundled
    assert not resolve_model(copy / "model.int8.onnx").is_bundled
