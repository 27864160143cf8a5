"""The torch device a stage runs on, from its ``device`` option.

A module of its own (rather than the trainer) so that inference, training and the LM
stages share it without inference importing training code.
"""

from __future__ import annotations

import torch

from dsr.errors import OptionError


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; any other name as torch spells it.

    Raises :class:`~dsr.errors.OptionError` (naming the option ``device``) for a name torch does
    not know or CUDA without a GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise OptionError(f"{{device}} {name!r} is not a valid torch device") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"{{device}} {name} asked for CUDA but no GPU is available; use {{device}} cpu")
    return dev
