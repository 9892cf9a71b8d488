"""Inference: images -> faces -> emotions, with PyTorch or ONNX Runtime.

`Predictor` is the entry point (`from ferkit import Predictor`); `load_image` is the one
door every image comes in through; `export_onnx` writes a standalone, parity-checked .onnx.
"""

from ferkit.images import IMAGE_EXTENSIONS, MAX_PIXELS, find_images, load_image
from ferkit.inference.crops import prepare_faces
from ferkit.inference.face import Face, ImageResult
from ferkit.inference.predictor import Predictor

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "Face",
    "ImageResult",
    "Predictor",
    "find_images",
    "load_image",
    "prepare_faces",
]
