"""ferkit: facial expression recognition for the 8 FERPlus emotions."""

from ferkit.emotions import EMOTIONS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "Face", "Predictor", "__version__", "adapt", "draw", "evaluate_photos"]


def __getattr__(name: str):
    # Lazy: `import ferkit` stays light (no torch) until a model is needed.
    if name == "adapt":
        from ferkit.errors import require_extra

        require_extra("torch", "ferkit.adapt", "torch", "sklearn", "matplotlib")
        from ferkit.adaptation.core import adapt

        return adapt
    if name == "draw":
        from ferkit.inference.annotate import draw

        return draw
    if name == "evaluate_photos":
        from ferkit.evaluation import evaluate_photos  # MissingExtra without the eval extra

        return evaluate_photos
    if name in ("Predictor", "Face"):
        import ferkit.inference

        return getattr(ferkit.inference, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")
