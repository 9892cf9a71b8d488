"""Find the model a Predictor should load: a bundled model by name, a run folder or an .onnx file.

Bundled models are package data: `ferkit/weights/<name>/` holding model.json +
model.safetensors (+ metrics.json), located with importlib.resources so they are found in an
installed wheel as well as in a source checkout. `default` is the one `Predictor()` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from ferkit.errors import ModelFileError
from ferkit.models.folder import CONFIG_FILE, WEIGHTS_FILE, ModelFolder, cached_export_path

DEFAULT_MODEL = "default"


def weights_root() -> Path:
    """The folder holding the bundled models (may not exist before any model is bundled)."""
    return Path(str(resources.files("ferkit").joinpath("weights")))


def list_bundled() -> list[str]:
    """Names of the bundled models (folders under ferkit/weights with a model.json), `default`
    first, then by name: the order the app and `ferkit card` show them in."""
    root = weights_root()
    if not root.is_dir():
        return []
    names = [p.name for p in root.iterdir() if ModelFolder(p).is_model()]
    return sorted(names, key=lambda name: (name != DEFAULT_MODEL, name))


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and how to run it."""

    path: Path  # a model folder (torch) or an .onnx file
    backend: Literal["torch", "onnx"]
    name: str  # the bundled name, or the path as given

    @property
    def is_bundled(self) -> bool:
        """A model shipped in the package (whose folder is never written into), however it was named."""
        return self.backend == "torch" and self.path.resolve().parent == weights_root().resolve()

    def pytorch_folder(self) -> Path:
        """The model folder, for what needs the PyTorch weights (training, Grad-CAM, export, head
        re-training); ModelFileError for an .onnx file, which has none."""
        if self.backend != "torch":
            raise ModelFileError(f"{self.name}: already an ONNX file, which holds no trainable weights and "
                                 "runs in a Predictor only; give the model folder it was exported from, or "
                                 "a bundled name")
        return self.path

    @property
    def onnx_export(self) -> Path | None:
        """A model folder's own ONNX export, int8 first; None if it has none (or is an .onnx file)."""
        if self.backend != "torch":
            return None
        return ModelFolder(self.path).onnx_export

    @property
    def exports_on_first_use(self) -> bool:
        """A bundled model that ships its weights only (the wheel's size budget): a Predictor runs its
        fp32 ONNX export, built on first use into the user cache (`onnx_export.cached_export`)."""
        return self.is_bundled and self.onnx_export is None and cached_export_path(self.path) is not None


def _looks_like_name(text: str) -> bool:
    return "/" not in text and "\\" not in text and not Path(text).suffix


def resolve_model(model: str | Path | None = None) -> ModelSource:
    """None -> the bundled default; a bundled name; else a run/model folder or an .onnx file.

    A plain word (no slash, no suffix) that names a bundled model is the bundled model even if a
    folder of that name happens to exist in the working directory; anything else is a path."""
    bundled = list_bundled()
    choices = ", ".join(bundled) if bundled else "none installed"
    text = DEFAULT_MODEL if model is None else str(model)
    if (model is None or isinstance(model, str)) and _looks_like_name(text) and text in bundled:
        return ModelSource(weights_root() / text, "torch", text)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix.lower() == ".onnx":
        return ModelSource(path, "onnx", text)
    if path.is_dir() or (path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE)):
        return ModelSource(path if path.is_dir() else path.parent, "torch", text)
    if model is None:
        raise ModelFileError(f"the bundled default model is not installed (ferkit/weights/{DEFAULT_MODEL} "
                             f"is missing; bundled models: {choices}); give a run folder or an .onnx file "
                             "(model=PATH, or --model PATH on the command line)")
    if path.is_file():
        raise ModelFileError(f"{text}: not a model (expected a run folder with model.json + "
                             "model.safetensors, or an .onnx file)")
    raise ModelFileError(f"unknown model {text!r}: not a bundled model name (bundled: {choices}) "
                         "nor an existing run folder or .onnx file")
