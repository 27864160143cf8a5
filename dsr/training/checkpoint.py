"""Checkpoints for training: pruning of step checkpoints (saving and loading are in dsr.models.checkpoint).

``epoch-<E>.pt`` is written at the end of epoch E (1-based); ``checkpoint-<step>.pt``
every ``save_every_n`` steps.  Both hold everything needed to resume exactly:
model, optimiser, scheduler, grad scaler, sampler state and counters.  Finding, loading
and averaging them (which decoding needs too) is :mod:`dsr.models.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from dsr.models.checkpoint import step_checkpoints


def prune_step_checkpoints(exp_dir: Path, keep_last_k: int) -> None:
    for _, p in step_checkpoints(exp_dir)[:-keep_last_k] if keep_last_k > 0 else []:
        p.unlink(missing_ok=True)
