"""Per-utterance latency statistics of a decoding run (``result.json``'s ``latency_ms``)."""

from __future__ import annotations

import time

import numpy as np
import torch


def latency_stats(seconds: list[float]) -> dict[str, float | int] | None:
    """Mean, median, 90th percentile and maximum of ``seconds``, in milliseconds; None if empty."""
    if not seconds:
        return None
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "mean": float(ms.mean()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "max": float(ms.max()),
        "count": int(ms.size),
    }


def synced_clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device's queued work has finished (CUDA runs
    asynchronously: without the sync a timer would measure only the kernel launches)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
