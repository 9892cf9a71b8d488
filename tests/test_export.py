"""ONNX export: parity with PyTorch within 1e-4, dynamic batch, standalone metadata, int8, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import write_learnable_root
from typer.testing import CliRunner

from ferkit.cli import app
from ferkit.errors import ModelFileError
from ferkit.inference import Predictor
from ferkit.inference.backends import META_MODEL_JSON, META_OPSET, META_PRECISION
from ferkit.models import read_model_config
from ferkit.release.bundle import INT8_MAX_DROP, int8_keeps_answers
from ferkit.release.export import PARITY_ATOL, export_onnx


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """`ferkit export -m RUN --onnx OUT` (no FERPlus data: random faces for the parity check)."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", "-m", str(tiny_model), "--onnx", str(out),
                                      "--data", str(out.parent / "no-data")])
    assert result.exit_code == 0, result.output
    return out, result.stdout


def test_export_is_standalone_and_matches_pytorch(exported, tiny_model):
    path, stdout = exported
    assert f"wrote {path} (fp32, opset 17, dynamic batch axis)" in stdout
    diff = float(stdout.split("max |difference| = ")[1].split()[0])
    assert diff <= PARITY_ATOL
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta[META_MODEL_JSON]) == read_model_config(tiny_model)
    assert meta[META_OPSET] == "17" and meta[META_PRECISION] == "fp32"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    faces = np.random.default_rng(3).integers(0, 256, (9, 48, 48), dtype=np.uint8)
    torch_p = Predictor(model=tiny_model)
    onnx_p = Predictor(model=path)  # the .onnx alone: no model.json beside it is needed
    assert onnx_p.backend.kind == "onnx" and onnx_p.model_info["onnx"]["opset"] == "17"
    assert onnx_p.model_info["model"] == torch_p.model_info["model"]
    assert onnx_p.model_info["metrics"] == torch_p.model_info["metrics"]
    for batch in (faces[:1], faces):  # dynamic batch axis
        np.testing.assert_allclose(onnx_p.predict_faces(batch), torch_p.predict_faces(batch), atol=1e-5)
    flip = onnx_p.predict_faces(faces, tta="flip")
    np.testing.assert_allclose(flip, torch_p.predict_faces(faces, tta="flip"), atol=1e-5)


def test_onnx_files_without_ferkit_metadata_are_refused(exported, tmp_path):
    bare = onnx.load(str(exported[0]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFileError, match="no ferkit metadata"):
        Predictor(model=tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(ModelFileError, match="junk.onnx: not a valid ONNX model"):
        Predictor(model=tmp_path / "junk.onnx")
    with pytest.raises(ModelFileError, match="already an ONNX file"):
        export_onnx(exported[0], tmp_path / "again.onnx")
    bad = CliRunner().invoke(app, ["export", "-m", str(tmp_path / "nope"), "--onnx",
                                   str(tmp_path / "x.onnx")])
    assert bad.exit_code == 1 and "unknown model" in bad.stderr


def test_a_refused_export_leaves_the_file_at_its_path_as_it_was(tiny_model, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier export, kept")
    with pytest.raises(ModelFileError, match="export refused"):
        export_onnx(tiny_model, out, atol=-1.0)  # no parity can pass: the export is refused
    assert out.read_bytes() == b"an earlier export, kept"
    assert export_onnx(tiny_model, out).path == out  # a good export replaces it
    assert onnx.load(str(out)).graph.node


def test_int8_export_with_and_without_calibration_data(tiny_model, tmp_path):
    root = write_learnable_root(tmp_path / "ferplus", {"train": 32, "valid": 16, "test": 4})
    report = export_onnx(tiny_model, tmp_path / "int8.onnx", int8=True, data_root=root)
    assert report.precision == "int8" and "static QDQ" in report.quantization
    assert report.accuracy["faces"] == 16 and report.accuracy["split"] == "valid"
    assert abs(report.accuracy["change"] - (report.accuracy["int8"] - report.accuracy["fp32"])) < 1e-9
    predictor = Predictor(model=report.path)
    assert predictor.model_info["onnx"]["precision"] == "int8"
    probs = predictor.predict_faces(np.zeros((2, 48, 48), np.uint8))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert any("int8" in line for line in report.lines())
    # every ReLU after a quantised convolution is folded into its output range: no quantised tensor
    # is dequantised just to be re-quantised at a ReLU's scale (which costs time at batch 1)
    graph = onnx.load(str(report.path)).graph
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    relus = [node for node in graph.node if node.op_type == "Relu"]
    assert relus and not [r for r in relus if made_by.get(r.input[0]) == "DequantizeLinear"]

    dynamic = export_onnx(tiny_model, tmp_path / "dyn.onnx", int8=True, data_root=None)
    assert "dynamic" in dynamic.quantization and dynamic.accuracy is None
    assert any("not measured" in note for note in dynamic.notes)


def test_ensemble_of_members_with_different_map_sides_exports_with_parity(tmp_path):
    """A three-stage (6x6), a four-stage (3x3) and a four-stage ResNet fed 64x64 faces (4x4) in one
    ensemble: the upsampling and the repeat/pool that aligns their maps export to ONNX and match
    PyTorch (export refuses a mismatch)."""
    import torch

    from ferkit.models import create_model, model_config, save_model
    from ferkit.models.ensemble import ensemble

    members = [{"architecture": "resnet", "model_args": {"widths": [8, 16, 16], "stem_width": 8}},
               {"architecture": "resnet", "model_args": {"widths": [16, 16, 16, 16], "depths": [1] * 4,
                                                         "stem_width": 8}},
               {"architecture": "resnet", "model_args": {"widths": [16, 16, 16, 16], "depths": [1] * 4,
                                                         "stem_width": 8, "input_side": 64}}]
    torch.manual_seed(0)
    model = ensemble(members, flip=True).eval()
    assert model.repeats == [2, 4, 3] and create_model("ensemble", members=members).repeats == [2, 4, 3]
    save_model(model, tmp_path / "ens", model_config("ensemble", {"members": members, "flip": True}))
    report = export_onnx(tmp_path / "ens", tmp_path / "ens.onnx", measure_accuracy=False)
    assert report.max_abs_diff <= PARITY_ATOL


def test_onnx_files_of_the_wrong_shape_are_refused_at_load(exported, tmp_path):
    """A file with ferkit's metadata but another input side or more outputs fails when loaded,
    naming itself, not on the first face of a long predict run."""
    from onnx import TensorProto, helper

    meta = {p.key: p.value for p in onnx.load(str(exported[0])).metadata_props}

    def save(graph, name: str):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(tmp_path / name))
        return tmp_path / name

    x64 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 64, 64])
    flat = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4096])
    wrong_side = save(helper.make_graph([helper.make_node("Flatten", ["x"], ["y"])], "g", [x64], [flat]),
                      "side64.onnx")
    with pytest.raises(ModelFileError, match=r"side64.onnx: input shape .*64.* is not \(N, 1, 48, 48\)"):
        Predictor(model=wrong_side)
    x48 = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 48, 48])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1, 48, 48]) for n in "abc"]
    nodes = [helper.make_node("Identity", ["x"], [n]) for n in "abc"]
    three = save(helper.make_graph(nodes, "g", [x48], outs), "three.onnx")
    with pytest.raises(ModelFileError, match="three.onnx: expected 1 input and 1 output, got 1 and 3"):
        Predictor(model=three)


@pytest.mark.realdata
def test_a_model_folder_ships_one_export_that_the_predictor_runs(tiny_model, tmp_path):
    """`ferkit export -m FOLDER --bundled`: int8 or fp32 by the accuracy and agreement rule, recorded in
    metrics.json with the default path's own Test figure; refused without weights_sha256 or FERPlus."""
    import shutil

    from conftest import REAL_FERPLUS

    from ferkit.models.folder import ONNX_FP32, ONNX_INT8, weights_sha256

    folder = tmp_path / "tiny"
    shutil.copytree(tiny_model, folder)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "-m", str(folder), "--bundled", "--data", str(REAL_FERPLUS)])
    assert result.exit_code == 1 and "no weights_sha256" in result.output  # not bundled yet
    config = json.loads((folder / "model.json").read_text())
    config["weights_sha256"] = weights_sha256(folder)
    (folder / "model.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["export", "-m", str(folder), "--bundled", "--data", str(tmp_path / "none")])
    assert result.exit_code == 1 and "need FERPlus" in result.output
    if not (REAL_FERPLUS / "FER2013Valid").is_dir():
        pytest.skip(f"FERPlus not found at {REAL_FERPLUS}")
    result = runner.invoke(app, ["export", "-m", str(folder), "--bundled", "--data", str(REAL_FERPLUS)])
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "metrics.json").read_text())["onnx"]
    valid = record["valid"]
    keep_int8 = (valid["change"] >= -INT8_MAX_DROP
                 and int8_keeps_answers(valid["agreement"], valid["max_flip_margin"]))
    assert record["runs"] == (ONNX_INT8 if keep_int8 else ONNX_FP32)
    assert (folder / record["runs"]).is_file()
    assert not (folder / (ONNX_FP32 if keep_int8 else ONNX_INT8)).exists()  # one export only
    predictor = Predictor(folder, backend="onnx")  # (auto runs int8 on PyTorch on a CPU without VNNI)
    assert predictor.backend.kind == "onnx"
    assert predictor.model_info["onnx"]["precision"] == record["precision"]
    assert record["test"]["faces"] == 3137 and 0 <= record["test"]["accuracy"] <= 1


def test_a_weights_only_bundled_model_builds_its_export_once_into_the_user_cache(tmp_path, monkeypatch):
    """deep_cnn and baseline ship their weights only: the first Predictor builds the fp32 export into
    the user cache (checked against PyTorch), later ones reuse it, without PyTorch too; new weights
    get a new file, and a failed build leaves none."""
    import os
    import shutil
    import subprocess
    import sys

    from ferkit.models import resolve_model
    from ferkit.models.folder import cached_export_path
    from ferkit.models.onnx_export import cached_export

    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    source = resolve_model("baseline")
    path = cached_export_path(source.path)
    assert source.exports_on_first_use and source.onnx_export is None and not path.exists()
    built = Predictor("baseline", prior="ferplus")
    assert built.backend.kind == "onnx" and path.is_file()
    stamp = path.stat().st_mtime_ns
    faces = np.random.default_rng(3).integers(0, 256, (32, 48, 48), dtype=np.uint8)
    exact = Predictor("baseline", backend="torch", prior="ferplus").predict_faces(faces)
    assert np.abs(Predictor("baseline", prior="ferplus").predict_faces(faces) - exact).max() < 1e-4
    assert path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    no_torch = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx"):
            raise ImportError(name)
sys.meta_path.insert(0, NoTorch())
from ferkit import Predictor
print(Predictor("baseline").backend.kind)
"""
    reused = subprocess.run([sys.executable, "-c", no_torch], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "FERKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert reused.returncode == 0 and reused.stdout.strip() == "onnx", reused.stderr[-2000:]
    # other weights (a copy whose model.json records another sha256): another file
    other = shutil.copytree(source.path, tmp_path / "baseline")
    config = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**config, "weights_sha256": "0" * 64}))
    assert cached_export_path(other) != path and cached_export_path(other).parent == path.parent
    # a build that fails part-way leaves no file behind
    import ferkit.models.onnx_export as onnx_export

    def broken(*args, **kwargs):
        raise ModelFileError("parity refused")

    monkeypatch.setattr(onnx_export, "export_checked", broken)
    path.unlink()
    with pytest.raises(ModelFileError, match="parity refused"):
        cached_export(source.path)
    assert not path.exists() and list(path.parent.iterdir()) == []
