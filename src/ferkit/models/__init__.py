"""Models: a registry of architectures, each split into forward_features / forward_head, and the one
door from a name to a model (`load`: a bundled name, a run folder; `resolve_model` says which).

Names are imported on first use (PEP 562): finding a bundled model and reading its files needs no
PyTorch, so the ONNX path (`Predictor` on a bundled model) runs without it; the networks, `load` and
`create_model` bring PyTorch in (and register every architecture) when first asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_WHERE = {
    "DEFAULT_MODEL": "bundled", "ModelSource": "bundled", "list_bundled": "bundled",
    "resolve_model": "bundled", "ModelFolder": "folder", "read_model_config": "folder",
    "INPUT_SIZE": "base", "NUM_CLASSES": "base",
    "FerModel": "base", "normalize": "base",
    "load": "io", "model_config": "io", "save_model": "io",
    "create_model": "registry", "list_models": "registry", "model_description": "registry",
    "register_model": "registry",
    "ModelSummary": "summary", "summarize_model": "summary",
}
_REGISTERED = {"create_model", "list_models", "model_description"}  # need every architecture imported
__all__ = [
    "DEFAULT_MODEL",
    "INPUT_SIZE",
    "NUM_CLASSES",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "FerModel",
    "ModelFolder",
    "ModelSource",
    "ModelSummary",
    "create_model",
    "list_bundled",
    "list_models",
    "load",
    "model_config",
    "model_description",
    "normalize",
    "read_model_config",
    "register_model",
    "resolve_model",
    "save_model",
    "summarize_model",
]

if TYPE_CHECKING:
    from ferkit.models.base import INPUT_SIZE, NUM_CLASSES, FerModel, normalize
    from ferkit.models.bundled import DEFAULT_MODEL, ModelSource, list_bundled, resolve_model
    from ferkit.models.folder import ModelFolder, read_model_config
    from ferkit.models.io import load, model_config, save_model
    from ferkit.models.registry import create_model, list_models, model_description, register_model
    from ferkit.models.summary import ModelSummary, summarize_model
    from ferkit.settings import PIXEL_MEAN, PIXEL_STD


def __getattr__(name: str):
    if name in ("PIXEL_MEAN", "PIXEL_STD"):  # the one normalisation: ferkit.settings
        from ferkit import settings

        return getattr(settings, name)
    if name not in _WHERE:
        raise AttributeError(f"module 'ferkit.models' has no attribute {name!r}")
    if name in _REGISTERED:
        import_module("ferkit.models.io")  # registers every architecture
    return getattr(import_module(f"ferkit.models.{_WHERE[name]}"), name)
