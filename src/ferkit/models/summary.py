"""A Keras-style model summary: layer, output shape, parameters, and the three totals.

Counts follow Keras: BatchNorm moving mean/variance are non-trainable parameters (PyTorch
keeps them as buffers; `num_batches_tracked` is bookkeeping and not counted).

Why not torchinfo or Lightning's ModelSummary: both count BatchNorm's running statistics as no
parameters at all, so neither gives the Phase 2 specification's 5,873,096 total (which is Keras's,
moving mean/variance included) nor its table; this module is the forward hooks that table needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ferkit.models.base import INPUT_SIZE


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


@dataclass
class ModelSummary:
    rows: list[LayerRow]
    trainable: int
    non_trainable: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    def to_text(self, title: str = "") -> str:
        width = 78
        lines = [f'Model: "{title}"' if title else "", "_" * width,
                 f"{'Layer (type)':<40}{'Output Shape':<24}{'Param #':>14}", "=" * width]
        for row in self.rows:
            shape = "(None, " + ", ".join(str(d) for d in row.output_shape) + ")"
            lines.append(f"{row.name + ' (' + row.kind + ')':<40}{shape:<24}{row.params:>14,}")
        lines += ["=" * width,
                  f"Total params: {self.total:,}",
                  f"Trainable params: {self.trainable:,}",
                  f"Non-trainable params: {self.non_trainable:,}",
                  "_" * width]
        return "\n".join(line for line in lines if line is not None) + "\n"


def _non_trainable(module: nn.Module, recurse: bool) -> int:
    buffers = sum(b.numel() for n, b in module.named_buffers(recurse=recurse)
                  if not n.endswith("num_batches_tracked"))
    frozen = sum(p.numel() for p in module.parameters(recurse=recurse) if not p.requires_grad)
    return buffers + frozen


def summarize_model(model: nn.Module, input_size: int = INPUT_SIZE) -> ModelSummary:
    """Run one dummy batch through the model, recording each leaf layer's output shape."""
    rows: list[LayerRow] = []
    hooks = []
    for name, module in model.named_modules():
        if list(module.children()) or not name:
            continue

        def hook(mod, _inputs, output, name=name):
            own = sum(p.numel() for p in mod.parameters(recurse=False))
            own += _non_trainable(mod, recurse=False) - sum(
                p.numel() for p in mod.parameters(recurse=False) if not p.requires_grad)
            rows.append(LayerRow(name, type(mod).__name__, tuple(output.shape[1:]), own))

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, input_size, input_size))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return ModelSummary(rows, trainable, _non_trainable(model, recurse=True))
