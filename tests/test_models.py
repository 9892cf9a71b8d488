"""Model registry, the seed's pinned parameter counts, shapes, summaries and save/load."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.errors import ModelFileError
from ferkit.models import (
    create_model,
    list_models,
    load,
    model_config,
    normalize,
    save_model,
    summarize_model,
)
from ferkit.models.base import FerModel
from ferkit.models.classify import model_input
from ferkit.settings import PIXEL_MEAN, PIXEL_STD


def test_deep_cnn_has_the_seed_parameter_counts():
    summary = summarize_model(create_model("deep_cnn"))
    assert summary.total == 5_873_096
    assert summary.trainable == 5_870_280
    assert summary.non_trainable == 2_816
    dense = [r for r in summary.rows if r.kind == "Linear"][0]
    assert dense.params == 4_719_104 and dense.output_shape == (512,)
    text = summary.to_text("deep_cnn")
    assert "Total params: 5,873,096" in text and "Non-trainable params: 2,816" in text


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_faces_to_8_logits_via_features_and_head(name):
    model = create_model(name).eval()
    x = normalize(np.zeros((3, 48, 48), np.uint8))
    assert x.shape == (3, 1, 48, 48)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[0] == 3
    logits = model.forward_head(features)
    assert logits.shape == (3, 8)
    torch.testing.assert_close(model(x), logits)


def test_registry_lists_the_seed_models_and_rejects_unknown_names():
    assert {"baseline", "deep_cnn", "resnet"} <= set(list_models())
    with pytest.raises(ValueError, match="unknown model 'vgg99'"):
        create_model("vgg99")
    with pytest.raises(ValueError, match="bad arguments for model 'resnet'"):
        create_model("resnet", colour=True)


def test_normalize_is_the_documented_formula():
    x = normalize(np.array([[[0, 128, 255]]], np.uint8))
    torch.testing.assert_close(x.flatten(), (torch.tensor([0, 128, 255]) / 255 - 0.5) / 0.25)


def test_inference_input_is_bit_identical_to_what_training_feeds():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    trained_on = (torch.from_numpy(pixels).float() / 255.0 - PIXEL_MEAN) / PIXEL_STD  # training/module.py
    got = model_input(pixels)
    assert got.dtype == np.float32 and got.shape == (1, 1, 16, 16)
    np.testing.assert_array_equal(got[:, 0], trained_on.numpy())
    np.testing.assert_array_equal(normalize(pixels).numpy(), got)


def test_save_and_load_round_trip_without_pickle(tmp_path):
    model = create_model("resnet", widths=(8, 16, 16), stem_width=8).eval()
    save_model(model, tmp_path, model_config("resnet", {"widths": [8, 16, 16], "stem_width": 8}))
    config = json.loads((tmp_path / "model.json").read_text())
    assert config["classes"][0] == "neutral" and config["normalization"]["std"] == 0.25
    loaded = load(tmp_path)
    x = torch.randn(2, 1, 48, 48)
    torch.testing.assert_close(loaded(x), model(x))


def test_float16_storage_halves_the_file_and_keeps_predictions(tmp_path):
    from safetensors.torch import load_file

    torch.manual_seed(0)
    model = create_model("resnet", widths=(8, 16, 16), stem_width=8)
    model.train()(torch.randn(16, 1, 48, 48))  # non-trivial BatchNorm running statistics
    model.eval()
    config = model_config("resnet", {"widths": [8, 16, 16], "stem_width": 8})
    save_model(model, tmp_path / "fp32", config)
    save_model(model, tmp_path / "fp16", config, storage="float16")
    state = load_file(str(tmp_path / "fp16" / "model.safetensors"))
    assert all(v.dtype == torch.float16 for k, v in state.items() if k.endswith(".weight"))
    assert all(v.dtype == torch.float32 for k, v in state.items() if "running_" in k)
    sizes = [(tmp_path / kind / "model.safetensors").stat().st_size for kind in ("fp32", "fp16")]
    assert sizes[1] < 0.6 * sizes[0]
    assert json.loads((tmp_path / "fp16" / "model.json").read_text())["weight_storage"] == "float16"
    x = torch.randn(32, 1, 48, 48)
    loaded = load(tmp_path / "fp16")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=2e-2)
    assert torch.equal(loaded(x).argmax(1), model(x).argmax(1))
    with pytest.raises(ValueError, match="storage"):
        save_model(model, tmp_path / "bad", config, storage="int4")


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(ModelFileError, match="missing'.*nor an existing run folder"):
        load(tmp_path / "missing")
    with pytest.raises(ModelFileError, match="unknown model 'no-such-name': not a bundled model name"):
        load("no-such-name")
    (tmp_path / "exported.onnx").write_bytes(b"")
    with pytest.raises(ModelFileError, match="already an ONNX file, which holds no trainable weights"):
        load(tmp_path / "exported.onnx")
    with pytest.raises(ModelFileError, match="missing model.json"):
        load(tmp_path)
    save_model(create_model("baseline"), tmp_path, model_config("baseline", {}))
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="cannot read weights"):
        load(tmp_path)
    save_model(create_model("baseline"), tmp_path, model_config("deep_cnn", {}))
    with pytest.raises(ModelFileError, match="weights do not fit deep_cnn"):
        load(tmp_path)


def _small_resnet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet", widths=(8, 16, 16), stem_width=8).eval()


def test_ensemble_is_the_mean_of_its_members_log_probabilities():
    from ferkit.models.ensemble import Ensemble

    members = [_small_resnet(0), _small_resnet(1)]
    model = Ensemble(members).eval()
    x = torch.randn(3, 1, 48, 48)
    expected = (torch.log_softmax(members[0](x), 1) + torch.log_softmax(members[1](x), 1)) / 2
    torch.testing.assert_close(model(x), expected)
    assert model.forward_features(x).shape == (3, 32, 6, 6)  # the members' 16 + 16 channels
    assert model.cam_layer == ["members.0.stages.1", "members.1.stages.1"]
    odd_sides = Ensemble([create_model("resnet", widths=(8,) * 4, depths=(1,) * 4, stem_width=8),
                          create_model("resnet", widths=(8,) * 5, depths=(1,) * 5, stem_width=8)])
    assert odd_sides.repeats == [2, 3]  # 3x3 and 2x2 maps meet at 6x6

    class FlatFeatures(FerModel):  # features without a spatial map cannot be aligned
        def forward_features(self, x):
            return x.flatten(1)

        def forward_head(self, features):
            return features[:, :8]

    with pytest.raises(ValueError, match="not square"):
        Ensemble([members[0], FlatFeatures()])
    with pytest.raises(ValueError, match=r"members\[1\]: expected"):
        create_model("ensemble", members=[{"architecture": "resnet"}, {"model_args": {}}])


def test_ensemble_of_members_with_different_map_sides_is_still_their_mean():
    from ferkit.models.ensemble import Ensemble

    torch.manual_seed(2)
    four_stages = create_model("resnet", widths=(8, 8, 16, 16), depths=(1, 1, 1, 1), stem_width=8).eval()
    at_64 = create_model("resnet", widths=(8, 8, 16, 16), depths=(1, 1, 1, 1), stem_width=8,
                         input_side=64).eval()
    members = [_small_resnet(0), four_stages, at_64]  # maps 6x6, 3x3 and 4x4: aligned at 12x12
    assert four_stages.cam_layer == "stages.1"  # Grad-CAM on the 12x12 stage, as in three-stage nets
    for flip in (False, True):
        model = Ensemble(members, flip=flip).eval()
        assert model.repeats == [2, 4, 3]
        x = torch.randn(3, 1, 48, 48)
        views = [torch.log_softmax(m(v), 1) for v in ((x, x.flip(-1)) if flip else (x,)) for m in members]
        torch.testing.assert_close(model(x), sum(views) / len(views))
        assert model.forward_features(x).shape == (3, 48 * (2 if flip else 1), 12, 12)


def test_mobilenetv2_keeps_a_shortcut_only_where_a_block_keeps_the_shape():
    model = create_model("mobilenetv2", widths=(8, 16), depths=(2, 2), stem_width=8, head_width=32).eval()
    blocks = [block for stage in model.stages for block in stage]
    assert [block.residual for block in blocks] == [False, True, False, True]  # stride 2 opens a stage
    depthwise = blocks[0].block[1][0]
    assert depthwise.groups == depthwise.in_channels == 8 * 4  # one 3x3 filter per widened channel
    x = torch.randn(2, 1, 48, 48)
    assert model.forward_features(x).shape == (2, 32, 12, 12)  # 48 -> 24 -> 12, then the 1x1 head
    assert model.cam_layer == "stages.0"  # two stages: Grad-CAM on the one before the last


def test_resnet_input_side_resizes_the_face_inside_the_model():
    torch.manual_seed(0)
    model = create_model("resnet", widths=(8, 16, 16, 16), depths=(1, 1, 1, 1), stem_width=8,
                         input_side=64).eval()
    x = torch.randn(2, 1, 48, 48)
    assert model.forward_features(x).shape == (2, 16, 4, 4)  # 64 -> 32 -> 16 -> 8 -> 4
    upsampled = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(x), model.forward_head(model.stages(model.stem(upsampled))))
    smaller = create_model("resnet", widths=(8, 16, 16), depths=(1, 1, 1), stem_width=8, input_side=40).eval()
    assert smaller.forward_features(x).shape == (2, 16, 5, 5)  # 48 -> 40, then 20 -> 10 -> 5
    with pytest.raises(ValueError, match="input_side"):
        create_model("resnet", input_side=24)


def test_save_ensemble_writes_a_model_folder_that_loads_alone(tmp_path):
    from ferkit.models.folder import read_commands
    from ferkit.models.io import save_ensemble

    folders = []
    for seed in (0, 1):
        folders.append(tmp_path / f"run{seed}")
        save_model(_small_resnet(seed), folders[-1], model_config("resnet", {"widths": [8, 16, 16],
                                                                             "stem_width": 8}))
    out = save_ensemble(folders, tmp_path / "ens", command="ferkit ensemble run0 run1 --out ens")
    config = json.loads((out / "model.json").read_text())
    assert config["architecture"] == "ensemble" and config["member_runs"] == [str(f) for f in folders]
    assert config["params"] == 2 * sum(p.numel() for p in _small_resnet(0).parameters())
    assert read_commands(out) == ["ferkit ensemble run0 run1 --out ens"]
    x = torch.randn(2, 1, 48, 48)
    expected = sum(torch.log_softmax(load(f)(x), 1) for f in folders) / 2
    torch.testing.assert_close(load(out)(x), expected)
    with pytest.raises(ValueError, match="already exists"):
        save_ensemble(folders, out)
    with pytest.raises(ValueError, match="at least two runs, or one with flip"):
        save_ensemble(folders[:1], tmp_path / "one")
    one = load(save_ensemble(folders[:1], tmp_path / "one-flip", flip=True))
    network = load(folders[0])
    torch.testing.assert_close(one(x), (torch.log_softmax(network(x), 1)
                                        + torch.log_softmax(network(x.flip(-1)), 1)) / 2)
    with pytest.raises(ModelFileError, match="model not found"):
        save_ensemble([folders[0], tmp_path / "nope"], tmp_path / "bad")


def test_flip_ensemble_averages_plain_and_mirrored_faces_and_is_mirror_invariant():
    from ferkit.models.ensemble import Ensemble

    members = [_small_resnet(0), _small_resnet(1)]
    model = Ensemble(members, flip=True).eval()
    x = torch.randn(3, 1, 48, 48)
    views = [torch.log_softmax(m(v), 1) for v in (x, x.flip(-1)) for m in members]
    torch.testing.assert_close(model(x), sum(views) / 4)
    torch.testing.assert_close(model(x.flip(-1)), model(x))
    assert model.forward_features(x).shape == (3, 64, 6, 6)  # (plain, mirrored) x 2 members x 16


@pytest.mark.parametrize(("name", "config", "trainable"), [("resnet18h", "resnet18h.yaml", 2_797_608),
                                                           ("resnet_small", "resnet.yaml", 691_576)])
def test_shipped_variants_are_registered_by_name_as_their_configs_build_them(name, config, trainable):
    import yaml
    from typer.testing import CliRunner

    from ferkit.cli import app

    args = yaml.safe_load((Path(__file__).parents[1] / "configs" / config).read_text())["model_args"]
    by_name, by_config = create_model(name), create_model("resnet", **args)
    assert [p.shape for p in by_name.parameters()] == [p.shape for p in by_config.parameters()]
    result = CliRunner().invoke(app, ["summary", name])
    assert result.exit_code == 0 and f"Trainable params: {trainable:,}" in result.output


def test_one_door_from_a_name_to_a_model():
    """Everything in the package that needs a PyTorch model goes through models.load: no other module
    calls the folder loader."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "src" / "ferkit"
    callers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if re.search(r"\bload_folder\(|\bload_model\(", p.read_text())
                     and p.parent.name != "models")
    assert callers == []
    bundled = load("fast")
    assert sum(p.numel() for p in bundled.parameters()) > 0
