"""Peak tensor memory of a block of PyTorch code, on any device, independent of the allocator.

``torch.cuda.max_memory_allocated`` exists only on CUDA, and a process's resident
size on the CPU moves with the allocator's caching and fragmentation.  This
counts what the model itself keeps alive: the bytes of every tensor storage
created inside the block, while it is referenced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class PeakTensorMemory(TorchDispatchMode):
    """Context manager: ``peak_bytes`` is the most tensor storage alive at once inside the block.

    Storages that existed before the block (parameters, inputs) are not counted, so
    for a training step it measures activations, gradients and temporaries.  Every
    operator pays a Python call and a scan of the live storages: use it to compare
    configurations, not while timing them.

    Example::

        with PeakTensorMemory() as mem:
            model(x).sum().backward()
        print(mem.peak_bytes)
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak_bytes = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # Drop storages freed since the last operator before adding this one's outputs.
        self._live = {key: v for key, v in self._live.items() if not v[0].expired()}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                self._live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.peak_bytes = max(self.peak_bytes, sum(n for _, n in self._live.values()))
        return out


def saved_for_backward_bytes(
    forward: Callable[[], torch.Tensor], to_loss: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> int:
    """Bytes of the distinct storages autograd keeps for the backward pass of ``forward()``.

    Runs ``forward()`` with saved-tensor hooks, then the backward pass of its output
    (reduced by ``to_loss`` first, outside the hooks, when the output is not a scalar).
    Deterministic and allocator-independent: what training memory grows with.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    (out if to_loss is None else to_loss(out)).backward()
    return sum(storages.values())


def proc_status_bytes(field: str) -> int:
    """A memory field of ``/proc/self/status`` (Linux), e.g. ``VmRSS`` or ``VmHWM``, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class PeakProcessMemory:
    """Context manager: the process's peak memory growth inside the block, and CUDA's peak.

    ``rss_delta_bytes`` is the peak resident size (VmHWM) during the block minus the
    resident size at its start: what the block added at its worst, with whatever the
    allocator kept cached.  VmHWM is reset at the start when the kernel allows it
    (``rss_reset`` is then True); otherwise an earlier, higher peak hides the block's and
    the delta is a lower bound (0 when the earlier peak was higher).  Without
    ``/proc/self/status`` (not Linux) both are None.  ``cuda_peak_bytes`` is
    ``torch.cuda.max_memory_allocated`` of ``device`` during the block (tensors only, not
    the allocator's cache); None on other devices.

    Example::

        with PeakProcessMemory(device) as mem:
            decode_everything()
        print(mem.rss_delta_bytes, mem.cuda_peak_bytes)
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.rss_delta_bytes: int | None = None
        self.rss_reset = False
        self.cuda_peak_bytes: int | None = None
        self._start_rss: int | None = None

    def __enter__(self) -> PeakProcessMemory:
        try:
            self._start_rss = proc_status_bytes("VmRSS")
            self.rss_reset = reset_peak_rss()
        except (OSError, RuntimeError):
            self._start_rss = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        if self._start_rss is not None:
            self.rss_delta_bytes = max(0, proc_status_bytes("VmHWM") - self._start_rss)
