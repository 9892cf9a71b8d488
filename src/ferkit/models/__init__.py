"""Models: a registry of architectures, each split into forward_features / forward_head."""

from ferkit.models import cnn, ensemble, mobilenet, resnet  # noqa: F401  (registers the models)
from ferkit.models.base import INPUT_SIZE, NUM_CLASSES, PIXEL_MEAN, PIXEL_STD, FerModel, normalize
from ferkit.models.io import load_model, model_config, read_model_config, save_model
from ferkit.models.registry import create_model, list_models, model_description, register_model
from ferkit.models.summary import ModelSummary, summarize_model

__all__ = [
    "INPUT_SIZE",
    "NUM_CLASSES",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "FerModel",
    "ModelSummary",
    "create_model",
    "list_models",
    "load_model",
    "model_config",
    "read_model_config",
    "save_model",
    "model_description",
    "normalize",
    "register_model",
    "summarize_model",
]
