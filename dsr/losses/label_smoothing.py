"""Label-smoothed cross entropy for the attention decoder.

The smoothed target puts ``1 - smoothing`` on the reference token and spreads
``smoothing`` uniformly over the whole vocabulary (reference included), i.e.
``loss = (1 - smoothing) * -log p(y) + smoothing * mean_v(-log p(v))``: the
definition of ``torch.nn.functional.cross_entropy(label_smoothing=...)`` and of
icefall's ``LabelSmoothingLoss``.  Computed in float32 whatever the autocast dtype,
because it is a sum over many positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["label_smoothing_loss"]


def label_smoothing_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    smoothing: float = 0.1,
    ignore_index: int = -1,
    reduction: str = "sum",
) -> torch.Tensor:
    """Label-smoothed cross entropy.

    Args:
        logits: (N, L, V) unnormalised scores.
        targets: (N, L) token ids, ``ignore_index`` at positions that do not count.
        smoothing: mass in [0, 1) moved from the reference to the uniform distribution.
        ignore_index: target value of ignored (padded) positions.
        reduction: ``"sum"`` over counted positions (the trainer normalises itself),
            ``"mean"`` over counted positions, or ``"none"`` ((N, L), 0 where ignored).

    Returns:
        float32 scalar, or (N, L) with ``reduction="none"``.
    """
    if logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point (N, L, V) tensor, got {logits.dtype} {tuple(logits.shape)}")
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets must be {tuple(logits.shape[:2])}, got {tuple(targets.shape)}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1) (got {smoothing})")
    if reduction not in ("sum", "mean", "none"):
        raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    n, length, v = logits.shape
    loss = F.cross_entropy(
        logits.float().reshape(n * length, v),
        targets.reshape(-1).long(),
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        reduction=reduction,
    )
    return loss.reshape(n, length) if reduction == "none" else loss
