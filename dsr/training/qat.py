"""Quantisation-aware training for the int8 ONNX export (``dsr train --qat-int8``).

``dsr export onnx`` writes ``*.int8.onnx`` with onnxruntime's dynamic quantisation
(``quantize_dynamic``, QInt8 weights, per tensor): every MatMul weight is stored as
``round(W / s)`` with ``s = max|W| / 127`` (symmetric, [-127, 127]), and each call quantises
its input to uint8 over ``[min(0, x.min()), max(0, x.max())]`` (``DynamicQuantizeLinear``).
:func:`enable_int8_qat` makes every ``nn.Linear`` of a model compute with exactly those
rounded values in the forward pass and pass gradients straight through the rounding
(the straight-through estimator), so fine-tuning learns weights that survive it.

The swap changes the modules' class only: parameter names, the state dict and checkpoints
stay those of the plain model, which decodes and exports as before (the float weights are
saved; onnxruntime rounds them the same way at export).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fake_quant_weight_int8(w: torch.Tensor) -> torch.Tensor:
    """``w`` rounded as onnxruntime's symmetric per-tensor QInt8 weights, straight-through gradient."""
    scale = w.detach().abs().max().clamp(min=1e-12) / 127.0
    q = (w.detach() / scale).round().clamp(-127, 127) * scale
    return w + (q - w).detach()


def fake_quant_activation_uint8(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded as onnxruntime's DynamicQuantizeLinear (uint8, per tensor, range including 0),
    straight-through gradient."""
    xd = x.detach()
    lo, hi = xd.min().clamp(max=0.0), xd.max().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp(min=1e-12)
    zero_point = (-lo / scale).round().clamp(0, 255)
    q = ((xd / scale).round() + zero_point).clamp(0, 255)
    return x + ((q - zero_point) * scale - x).detach()


class FakeInt8Linear(nn.Linear):
    """``nn.Linear`` whose forward uses int8-rounded weights and uint8-rounded inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features)."""
        return F.linear(fake_quant_activation_uint8(x), fake_quant_weight_int8(self.weight), self.bias)


def enable_int8_qat(model: nn.Module) -> int:
    """Turn every plain ``nn.Linear`` of ``model`` into a :class:`FakeInt8Linear` in place
    (same parameters); returns how many were converted."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = FakeInt8Linear
            count += 1
    return count
