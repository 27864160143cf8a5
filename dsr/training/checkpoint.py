"""Checkpoints for training: atomic save and pruning of step checkpoints.

``epoch-<E>.pt`` is written at the end of epoch E (1-based); ``checkpoint-<step>.pt``
every ``save_every_n`` steps.  Both hold everything needed to resume exactly:
model, optimiser, scheduler, grad scaler, sampler state and counters.  Finding, loading
and averaging them (which decoding needs too) is :mod:`dsr.models.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dsr.models.checkpoint import step_checkpoints
from dsr.utils import atomic_path


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def prune_step_checkpoints(exp_dir: Path, keep_last_k: int) -> None:
    for _, p in step_checkpoints(exp_dir)[:-keep_last_k] if keep_last_k > 0 else []:
        p.unlink(missing_ok=True)
