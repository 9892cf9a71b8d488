"""Quantisation-aware training: the int8 export's rounding, emulated while the weights still learn.

`ferkit export --int8` quantises a network after training (release/export.py): every Conv but the
ones reading the input pixels gets per-channel symmetric weights of INT8_WEIGHT_BITS bits and a
per-tensor uint8 input calibrated on FERPlus faces. A network whose answers sit near that rounding's
edges changes some of them when exported. With `quant_aware: true` the training forward pass rounds
the same weights and activations the same way (fake quantisation, straight-through gradients, Jacob
et al. 2018), so the weights settle where the rounding does not move the answer. The stored weights
stay float, with the same names: the export quantises them as it would any network.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver
from torch.func import functional_call


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric rounding to `bits` bits (levels -2^(bits-1) .. 2^(bits-1)), as
    ONNX Runtime's per-channel QInt8 with reduce_range; the gradient passes straight through."""
    levels = 2 ** (bits - 1)
    reach = weight.detach().abs().amax(dim=tuple(range(1, weight.dim())), keepdim=True)
    scale = reach.clamp_min(1e-8) / levels
    rounded = (weight / scale).round().clamp(-levels, levels) * scale
    return weight + (rounded - weight).detach()


class QuantAware:
    """Fake int8 for the Conv layers `ferkit export --int8` quantises, hooked onto `model`.

    Activations: a uint8 per-tensor fake quantiser on each such Conv's input, its range a moving
    average of the batches' min/max while training (fixed in eval). Weights: rounded per call by
    `forward(model, x)`, which runs the model with the rounded weights in place of its own
    (torch.func.functional_call), so the parameters, their names and the optimiser are untouched.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], weight_bits: int) -> None:
        self.weight_bits = weight_bits
        self.quantised = _convs_not_reading_the_input(model, input_shape)
        modules = dict(model.named_modules())
        self.activation: dict[str, FakeQuantize] = {}
        for name in self.quantised:
            quantiser = FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                     dtype=torch.quint8, qscheme=torch.per_tensor_affine)
            self.activation[name] = quantiser
            modules[name].register_forward_pre_hook(self._input_hook(quantiser))

    @staticmethod
    def _input_hook(quantiser: FakeQuantize):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x = args[0]
            if module.training:  # observe ranges in training only
                quantiser.enable_observer()
            else:
                quantiser.disable_observer()
            return (quantiser(x.float()).to(x.dtype), *args[1:])
        return hook

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        params = dict(model.named_parameters())
        for name in self.quantised:
            params[f"{name}.weight"] = fake_quantize_weight(params[f"{name}.weight"], self.weight_bits)
        return functional_call(model, params, (x,))


def _convs_not_reading_the_input(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """Names of the Conv2d layers the int8 export quantises: all but those fed the input itself."""
    reads_input, convs, handles = set(), [], []
    probe = torch.zeros(1, *input_shape)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            convs.append(name)
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: reads_input.add(name) if args[0] is probe else None))
    was_training = model.training
    with torch.no_grad():
        model.eval()(probe)
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return [name for name in convs if name not in reads_input]
