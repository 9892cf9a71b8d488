"""A second peer network trained beyond FER2013: face-api.js's face expression net, in PyTorch.

@vladmandic/face-api (MIT, the maintained fork of face-api.js) ships the net's weights in its npm
package: a 0.3 MB tfjs weights file (uint8-quantised) for a 112x112 RGB face, 7 classes (no
contempt), "trained on a variety of images from publicly available datasets as well as images
scraped from the web". The package is fetched once with `npm pack` into the user's cache
(~/.cache/ferkit-bench/face-api-1.7.15) and checked against the registry's integrity hash; the net is
rebuilt here from face-api's source (src/faceFeatureExtractor: four dense blocks of depthwise-separable
convolutions, a 7x7 average pool, a linear layer). Used by bench/experiments/posed_inputs.py --faceapi.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PACKAGE = "@vladmandic/face-api@1.7.15"
LABELS = ["neutral", "happiness", "sadness", "anger", "fear", "disgust", "surprise"]  # its outputs, renamed
MEAN_RGB = (122.782, 117.001, 104.298)


def default_location() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ferkit-bench" / "face-api-1.7.15"


def model_files(location: Path | None = None) -> tuple[Path, Path]:
    """(manifest, weights) of the expression net, fetched with npm on first use."""
    location = location or default_location()
    stem = location / "package" / "model" / "face_expression_model"
    manifest, weights = stem.with_name(stem.name + "-weights_manifest.json"), stem.with_suffix(".bin")
    if manifest.is_file() and weights.is_file():
        return manifest, weights
    print(f"fetching {PACKAGE} into {location} with npm ...", file=sys.stderr, flush=True)
    location.mkdir(parents=True, exist_ok=True)
    packed = json.loads(subprocess.run(["npm", "pack", PACKAGE, "--json"], cwd=location, check=True,
                                       capture_output=True, text=True).stdout)[0]
    tarball = location / packed["filename"]
    algorithm, digest = packed["integrity"].split("-", 1)
    if base64.b64encode(hashlib.new(algorithm, tarball.read_bytes()).digest()).decode() != digest:
        raise RuntimeError(f"{tarball}: does not match the registry's {algorithm}")
    with tarfile.open(tarball) as archive:
        archive.extractall(location, filter="data")
    return manifest, weights


def load_weights(manifest: Path, weights: Path) -> dict[str, torch.Tensor]:
    """The tfjs weights by name, de-quantised (q * scale + min) to float32, in tf's layouts."""
    buffer, offset, tensors = weights.read_bytes(), 0, {}
    for group in json.loads(manifest.read_text()):
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"]))
            if quant := spec.get("quantization"):
                values = np.frombuffer(buffer, np.uint8, count, offset) * quant["scale"] + quant["min"]
                offset += count
            else:
                values = np.frombuffer(buffer, np.float32, count, offset)
                offset += 4 * count
            tensors[spec["name"]] = torch.from_numpy(values.astype(np.float32).reshape(spec["shape"]))
    if offset != len(buffer):
        raise RuntimeError(f"{weights}: {len(buffer) - offset} bytes not described by {manifest.name}")
    return tensors


def _same(x: torch.Tensor, stride: int) -> torch.Tensor:
    # tf's 'same' padding for a 3x3 kernel: stride 2 on an even side pads only bottom and right
    return F.pad(x, (0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1))


class FaceApiExpressionNet(torch.nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.w = tensors

    def separable(self, x: torch.Tensor, name: str, stride: int) -> torch.Tensor:
        depthwise = self.w[f"{name}/depthwise_filter"].permute(2, 3, 0, 1)  # (C, 1, 3, 3)
        pointwise = self.w[f"{name}/pointwise_filter"].permute(3, 2, 0, 1)  # (O, C, 1, 1)
        x = F.conv2d(_same(x, stride), depthwise, stride=stride, groups=x.shape[1])
        return F.conv2d(x, pointwise, self.w[f"{name}/bias"])

    def dense_block(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if name == "dense0":  # a plain convolution on the RGB input
            filters = self.w[f"{name}/conv0/filters"].permute(3, 2, 0, 1)
            out1 = F.relu(F.conv2d(_same(x, 2), filters, self.w[f"{name}/conv0/bias"], stride=2))
        else:
            out1 = F.relu(self.separable(x, f"{name}/conv0", 2))
        out2 = self.separable(out1, f"{name}/conv1", 1)
        out3 = self.separable(F.relu(out1 + out2), f"{name}/conv2", 1)
        out4 = self.separable(F.relu(out1 + out2 + out3), f"{name}/conv3", 1)
        return F.relu(out1 + out2 + out3 + out4)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) float pixels 0-255 -> (N, 7) logits in LABELS order."""
        x = (rgb - torch.tensor(MEAN_RGB).view(1, 3, 1, 1)) / 255
        for block in ("dense0", "dense1", "dense2", "dense3"):  # 112 -> 56 -> 28 -> 14 -> 7
            x = self.dense_block(x, block)
        x = F.avg_pool2d(x, 7, 2).flatten(1)  # (N, 256)
        return x @ self.w["fc/weights"] + self.w["fc/bias"]


def faceapi_probabilities(faces: np.ndarray, net: FaceApiExpressionNet | None = None,
                          batch: int = 256) -> np.ndarray:
    """Softmax over LABELS for uint8 grey faces (N, H, W), up-sampled to 112x112 and repeated to RGB."""
    net = net or FaceApiExpressionNet(load_weights(*model_files()))
    out = []
    for start in range(0, len(faces), batch):
        x = torch.from_numpy(np.ascontiguousarray(faces[start:start + batch])).float()[:, None]
        x = F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        out.append(torch.softmax(net(x), dim=1).numpy())
    return np.concatenate(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--location", type=Path, default=None, help="where the npm package is unpacked")
    print(model_files(parser.parse_args().location)[0])
