"""Training on PyTorch Lightning (needs the `train` extra)."""
