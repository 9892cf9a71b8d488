"""Explanations: Grad-CAM heatmaps of ferkit models and figures built from them.

    result = gradcam(model, faces_uint8)               # heatmaps (N, 48, 48) in [0, 1]
    rgb = overlay(face, result.heatmaps[0])            # HxWx3 uint8, jet heatmap blended over the face
"""

from ferkit.explain.gradcam import GradCamResult, colorize, conv_layer_names, gradcam, overlay

__all__ = ["GradCamResult", "colorize", "conv_layer_names", "gradcam", "overlay"]
