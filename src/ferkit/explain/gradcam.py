"""Grad-CAM (Selvaraju et al. 2017) for ferkit models, computed by captum's `LayerGradCam`.

The heatmap of class c at a conv layer is ReLU(sum_k w_k A_k), with A_k the layer's channel
maps and w_k the spatial mean of d logit_c / d A_k. ferkit then upsamples it (bilinear) to the
48x48 input and scales each image's map to [0, 1], so maps are comparable across images.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from matplotlib import colormaps
from PIL import Image
from torch import nn

from ferkit.emotions import EMOTIONS, emotion_index
from ferkit.errors import ArgumentError, EvaluationError
from ferkit.models import INPUT_SIZE, FerModel, normalize
from ferkit.models.classify import eval_mode
from ferkit.priors import ClassPrior, PriorSpec, resolve_prior

BATCH_SIZE = 64
# Grad-CAM hooks the model's layers while it runs: one at a time per process, since the app's browser
# sessions share one cached model and two runs would read each other's activations.
_HOOKED = threading.Lock()
OVERLAY_ALPHA = 0.45


@dataclass
class GradCamResult:
    """Grad-CAM of N faces: heatmaps for the explained classes, and the model's probabilities."""

    heatmaps: np.ndarray  # (N, 48, 48) float32 in [0, 1], 1 = the most important pixel
    classes: np.ndarray  # (N,) int: the class each heatmap explains (EMOTIONS index)
    probabilities: np.ndarray  # (N, 8) float32 softmax of the model
    layer: str  # the layer the maps come from

    def __len__(self) -> int:
        return len(self.heatmaps)

    def class_names(self) -> list[str]:
        return [EMOTIONS[k] for k in self.classes]


class _FeatureStage(nn.Module):
    """The model's `forward_features` as a module, so its output can be hooked even in models
    where no single submodule produces it."""

    def __init__(self, model: FerModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _Split(nn.Module):
    """model(x) computed as forward_head(features(x)), with `features` a hookable module."""

    def __init__(self, model: FerModel):
        super().__init__()
        self.features = _FeatureStage(model)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.features(x))


def conv_layer_names(model: nn.Module) -> list[str]:
    """Names of the model's conv layers (for error messages and UIs)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def resolve_target(target: int | str | None, n: int, predicted: np.ndarray) -> np.ndarray:
    """None -> the predicted class per image; an index or emotion name -> that class for all."""
    if target is None:
        return predicted.astype(int)
    if isinstance(target, str):
        return np.full(n, emotion_index(target), dtype=int)  # ValueError lists the valid names
    if isinstance(target, (int, np.integer)) and 0 <= int(target) < len(EMOTIONS):
        return np.full(n, int(target), dtype=int)
    raise ArgumentError(f"target {target!r}: expected None, an index 0..{len(EMOTIONS) - 1} or one of "
                     f"{', '.join(EMOTIONS)}")


def _layers(model: FerModel, layer: str | list[str] | None) -> tuple[nn.Module, list[nn.Module], str]:
    """(forward function, hooked layers, layer label) for captum. Without a name, the model's own
    `cam_layer` choice if it has one (an ensemble names one layer per member), else the output of
    forward_features."""
    layer = layer or getattr(model, "cam_layer", None)
    if layer is None:
        split = _Split(model)
        return split, [split.features], "forward_features"
    names = [layer] if isinstance(layer, str) else list(layer)
    hooked = []
    for name in names:
        try:
            hooked.append(model.get_submodule(name))
        except AttributeError:
            raise ArgumentError(f"layer {name!r} not found in {type(model).__name__}; conv layers: "
                             f"{', '.join(conv_layer_names(model))}") from None
    return model, hooked, ", ".join(names)


def _faces(faces_uint8: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces_uint8)
    if faces.ndim == 2:
        faces = faces[None]
    if faces.ndim == 4 and faces.shape[1] == 1:
        faces = faces[:, 0]
    if faces.ndim != 3 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE) or faces.dtype != np.uint8:
        raise EvaluationError(f"faces: expected uint8 (N, {INPUT_SIZE}, {INPUT_SIZE}), got "
                              f"{faces.dtype} {faces.shape}")
    return faces


def _normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) raw Grad-CAM -> (N, 48, 48) in [0, 1]: ReLU, bilinear upsampling, / per-image max.
    An all-zero map (no positive evidence) stays all zero."""
    maps = F.interpolate(maps.clamp(min=0), size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                         align_corners=False)[:, 0]
    peak = maps.flatten(1).max(dim=1).values.clamp(min=1e-12)[:, None, None]
    return (maps / peak).clamp(0, 1)


def _one_map_per_face(model: FerModel, raw: torch.Tensor, faces: int) -> torch.Tensor:
    """A model with built-in flip TTA (ensemble flip=True) runs its layers on faces then mirrored
    faces (2N maps): mirror the second half back and add it to the first."""
    if getattr(model, "flip", False) and raw.shape[0] == 2 * faces:
        plain, mirrored = raw.chunk(2)
        return plain + mirrored.flip(-1)
    return raw


def gradcam(model: FerModel, faces_uint8: np.ndarray, target: int | str | None = None,
            layer: str | list[str] | None = None, prior: PriorSpec | ClassPrior = None) -> GradCamResult:
    """Grad-CAM heatmaps of uint8 faces (N, 48, 48) (or one face (48, 48)).

    target: None explains each face's predicted class; an index or emotion name explains that
    class for every face. layer: a module name (e.g. "features.2.3", "stages.1"); default is the
    model's `cam_layer` if it names one (ResNets: the stage before the last), else the output of
    `forward_features`, the last convolutional stage. Several layers (an ensemble's members) give
    the ReLU of the sum of their maps, each upsampled to 48x48 first. `prior` (ferkit.priors)
    re-weights the probabilities, and so decides the predicted class; a class's map is the same under
    any prior (the prior adds a constant to each logit).
    The model is run in eval mode and its training mode restored afterwards."""
    faces = _faces(faces_uint8)
    prior = resolve_prior(prior)
    forward, hooked, label = _layers(model, layer)
    explainers = [LayerGradCam(forward, module) for module in hooked]
    device = next(model.parameters()).device
    heatmaps, classes, probabilities = [], [], []
    with _HOOKED, eval_mode(model):
        for start in range(0, len(faces), BATCH_SIZE):
            x = normalize(faces[start:start + BATCH_SIZE]).to(device)
            with torch.no_grad():
                proba = torch.from_numpy(prior.apply(torch.softmax(model(x).float(), dim=1).cpu().numpy()))
            wanted = resolve_target(target, len(x), proba.argmax(dim=1).cpu().numpy())
            with torch.enable_grad():
                goal = torch.as_tensor(wanted, device=device)
                raws = [_one_map_per_face(model, explainer.attribute(x, target=goal).detach().float(), len(x))
                        for explainer in explainers]
            raw = raws[0] if len(raws) == 1 else sum(
                F.interpolate(r, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
                for r in raws)
            heatmaps.append(_normalize_maps(raw).cpu().numpy())
            classes.append(wanted)
            probabilities.append(proba.cpu().numpy())
    if not heatmaps:
        return GradCamResult(np.zeros((0, INPUT_SIZE, INPUT_SIZE), np.float32), np.zeros(0, int),
                             np.zeros((0, len(EMOTIONS)), np.float32), label)
    return GradCamResult(np.concatenate(heatmaps).astype(np.float32), np.concatenate(classes),
                         np.concatenate(probabilities).astype(np.float32), label)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap -> uint8 RGB with the jet colormap (blue = low, red = high)."""
    rgba = colormaps["jet"](np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(face: np.ndarray, heatmap: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """Blend a heatmap over a face: (1 - alpha) * face + alpha * jet(heatmap) -> HxWx3 uint8 RGB.

    face: uint8 grayscale (H, W) or RGB (H, W, 3), any size; the heatmap is resized (bilinear)
    to the face's size, so a 48x48 map can be laid over the original photo crop."""
    face = np.asarray(face)
    if face.ndim == 2:
        face = np.repeat(face[..., None], 3, axis=2)
    if face.ndim != 3 or face.shape[2] != 3:
        raise ArgumentError(f"face: expected a grayscale (H, W) or RGB (H, W, 3) image, "
                            f"got shape {face.shape}")
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ArgumentError(f"heatmap: expected a 2-D map, got shape {heatmap.shape}")
    if heatmap.shape != face.shape[:2]:
        resized = Image.fromarray(heatmap).resize((face.shape[1], face.shape[0]), Image.Resampling.BILINEAR)
        heatmap = np.asarray(resized, dtype=np.float32)
    blended = (1 - alpha) * face.astype(np.float32) + alpha * colorize(heatmap).astype(np.float32)
    return np.clip(blended.round(), 0, 255).astype(np.uint8)
