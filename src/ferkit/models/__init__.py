"""Models: a registry of architectures, each split into forward_features / forward_head, and the one
door from a name to a model (`load`: a bundled name, a run folder; `resolve_model` says which)."""

from ferkit.models import cnn, ensemble, mobilenet, resnet  # noqa: F401  (registers the models)
from ferkit.models.base import INPUT_SIZE, NUM_CLASSES, PIXEL_MEAN, PIXEL_STD, FerModel, normalize
from ferkit.models.bundled import DEFAULT_MODEL, ModelSource, list_bundled, resolve_model
from ferkit.models.io import load, model_config, read_model_config, save_model
from ferkit.models.registry import create_model, list_models, model_description, register_model
from ferkit.models.summary import ModelSummary, summarize_model

__all__ = [
    "DEFAULT_MODEL",
    "INPUT_SIZE",
    "NUM_CLASSES",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "FerModel",
    "ModelSource",
    "ModelSummary",
    "create_model",
    "list_models",
    "list_bundled",
    "load",
    "model_config",
    "read_model_config",
    "save_model",
    "model_description",
    "normalize",
    "register_model",
    "resolve_model",
    "summarize_model",
]
