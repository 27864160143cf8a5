"""AdamW with a warm-up + Eden-style decay schedule (icefall's Eden, driven by step and epoch)."""

from __future__ import annotations

import torch


class WarmupEden(torch.optim.lr_scheduler.LRScheduler):
    """lr = base * warmup(step) * ((epoch^2 + E^2) / E^2)^-0.25 * ((step^2 + S^2) / S^2)^-0.25.

    ``S`` (``lr_batches``) and ``E`` (``lr_epochs``) set where decay starts; the
    epoch factor lets a short run keep a high learning rate while a long one anneals.
    Call :meth:`set_epoch` at each epoch start and :meth:`step` after every batch.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        lr_epochs: float,
        lr_batches: float = 5000.0,
        last_epoch: int = -1,
    ):
        if warmup_steps < 0 or lr_epochs <= 0 or lr_batches <= 0:
            raise ValueError("warmup_steps must be >= 0 and lr_epochs, lr_batches > 0")
        self.warmup_steps = warmup_steps
        self.lr_epochs = lr_epochs
        self.lr_batches = lr_batches
        self.epoch = 0
        super().__init__(optimizer, last_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def factor(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        e = ((self.epoch**2 + self.lr_epochs**2) / self.lr_epochs**2) ** -0.25
        s = ((step**2 + self.lr_batches**2) / self.lr_batches**2) ** -0.25
        return warm * e * s

    def get_lr(self) -> list[float | torch.Tensor]:  # LRScheduler's signature: base_lrs may hold tensors
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def state_dict(self) -> dict:
        d = super().state_dict()
        d["epoch"] = self.epoch
        return d

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch = state_dict.pop("epoch", 0)
        super().load_state_dict(state_dict)
