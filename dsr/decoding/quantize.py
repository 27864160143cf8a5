"""Dynamic int8 quantisation of a trained model's Linear layers for CPU decoding.

Weights are stored as int8 and activations quantised per call (``torch.ao``'s dynamic
quantisation), so the encoder's matrix products, ~2/3 of its time, run in int8. The
scores change slightly, so hypotheses can differ from the float model's: a decode with
``--int8`` writes its results under its own name (``<method>-int8``) for comparison.
On one thread it halved a 20M-parameter Conformer's encoder time (docs/RESULTS.md).
"""

from __future__ import annotations

import warnings
from copy import deepcopy
from typing import TypeVar, cast

import torch

from dsr.errors import OptionError
from dsr.models.whisper.model import TextDecoder

M = TypeVar("M", bound=torch.nn.Module)


def quantize_int8(model: M, device: torch.device) -> M:
    """A copy of ``model`` with every ``nn.Linear`` replaced by a dynamic int8 one (CPU only; eval mode).

    A Whisper text decoder's output projection, tied to its token embedding, is made a Linear
    first (:meth:`TextDecoder.untie_output_projection`) so that it is quantised too: it is the
    largest matrix of tiny.en's decoding step, and CTranslate2's int8 quantises it as well.
    """
    if device.type != "cpu":
        raise OptionError(f"{{int8}} runs on the CPU only (got {{device}} {device.type}); drop {{int8}} on a GPU")
    copy = deepcopy(model).eval()
    for module in copy.modules():
        if isinstance(module, TextDecoder):
            module.untie_output_projection()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        # The copy, of its own class, with the Linear submodules swapped in place.
        return cast(M, torch.ao.quantization.quantize_dynamic(copy, {torch.nn.Linear}, dtype=torch.qint8, inplace=True))
