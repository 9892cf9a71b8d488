"""Release tooling, for maintainers: turn a trained run into a bundled model (bundle.py: weights,
metrics.json, the one ONNX export) and describe it (model_card.py: `ferkit card`)."""
