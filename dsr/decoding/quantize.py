"""Dynamic int8 quantisation of a trained model's Linear layers for CPU decoding.

Weights are stored as int8 and activations quantised per call (``torch.ao``'s dynamic
quantisation), so the encoder's matrix products, ~2/3 of its time, run in int8. The
scores change slightly, so hypotheses can differ from the float model's: a decode with
``--int8`` writes its results under its own name (``<method>-int8``) for comparison.
On one thread it halved a 20M-parameter Conformer's encoder time (docs/RESULTS.md).
"""

from __future__ import annotations

import warnings
from typing import TypeVar, cast

import torch

from dsr.errors import OptionError

M = TypeVar("M", bound=torch.nn.Module)


def quantize_int8(model: M, device: torch.device) -> M:
    """``model`` with every ``nn.Linear`` replaced by a dynamic int8 one (CPU only; eval mode)."""
    if device.type != "cpu":
        raise OptionError(f"{{int8}} runs on the CPU only (got {{device}} {device.type}); drop {{int8}} on a GPU")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        # A deep copy of the model, of its own class, with the Linear submodules swapped.
        return cast(M, torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8))
