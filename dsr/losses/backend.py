"""Choose the implementation of the RNN-T loss functions.

All backends expose the same eight functions with k2's names, arguments and
semantics (see :mod:`dsr.losses.rnnt`)::

    backend = get_rnnt_backend("dsr")        # default: pure PyTorch, always available
    backend = get_rnnt_backend("fast_rnnt")  # C++/CUDA, tools/install_fast_rnnt.sh
    backend = get_rnnt_backend("k2")         # k2's copy of the same code
    loss, (px_grad, py_grad) = backend.rnnt_loss_smoothed(..., return_grad=True)

There is deliberately no "auto" choice: which backend ran must not depend on
what happens to be installed, or the same config would train different
numerics on different machines.  Pass keyword arguments beyond the first few
positional ones: that is the part of the API all backends agree on.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

__all__ = ["RNNT_BACKENDS", "RnntBackend", "get_rnnt_backend"]

RNNT_BACKENDS: tuple[str, ...] = ("dsr", "fast_rnnt", "k2")

_INSTALL_HINTS: dict[str, str] = {
    "fast_rnnt": "build it into your venv with `bash tools/install_fast_rnnt.sh` "
    "(set VENV=/path/to/venv if it is not the active one)",
    "k2": "install a k2 wheel matching your torch and CUDA versions, see https://k2-fsa.github.io/k2/installation/",
}


@dataclass(frozen=True)
class RnntBackend:
    """The RNN-T loss API of one implementation."""

    name: str
    get_rnnt_logprobs: Callable
    rnnt_loss_simple: Callable
    rnnt_loss_smoothed: Callable
    get_rnnt_prune_ranges: Callable
    do_rnnt_pruning: Callable
    rnnt_loss_pruned: Callable
    rnnt_loss: Callable
    mutual_information_recursion: Callable


_FUNCTIONS: tuple[str, ...] = tuple(f for f in RnntBackend.__dataclass_fields__ if f != "name")


def _import_backend_module(name: str) -> ModuleType:
    if name == "dsr":
        # Imported lazily: dsr.losses imports this module.
        return importlib.import_module("dsr.losses")
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(f"RNN-T loss backend {name!r} is not available ({e}); {_INSTALL_HINTS[name]}") from e


def get_rnnt_backend(name: str = "dsr") -> RnntBackend:
    """Return the RNN-T loss functions of backend ``name``.

    Args:
      name: ``"dsr"`` (default), ``"fast_rnnt"`` or ``"k2"``.

    Raises:
      ValueError: unknown name.
      ImportError: the backend is not installed (the message says how to
        install it), or is too old to have the ``rnnt_type`` API.
    """
    if name not in RNNT_BACKENDS:
        raise ValueError(f"unknown RNN-T loss backend {name!r}; choose one of {RNNT_BACKENDS}")
    module = _import_backend_module(name)
    missing = [f for f in _FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise ImportError(f"RNN-T loss backend {name!r} lacks {missing}; {_INSTALL_HINTS.get(name, '')}")
    # Old k2/fast_rnnt releases took `modified: bool` instead of `rnnt_type`;
    # calls written against the current API would silently misbehave there.
    if "rnnt_type" not in inspect.signature(module.rnnt_loss_simple).parameters:
        raise ImportError(
            f"the installed {name!r} predates the `rnnt_type` argument; upgrade it: {_INSTALL_HINTS[name]}"
        )
    return RnntBackend(name=name, **{f: getattr(module, f) for f in _FUNCTIONS})
