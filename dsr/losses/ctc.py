"""CTC loss: a thin wrapper over :func:`torch.nn.functional.ctc_loss`.

Two things differ from calling torch directly, on purpose:

* it always computes in fp32: the CTC forward-backward sums log-probs over
  hundreds of frames, which fp16/bf16 cannot represent precisely (and the CPU
  kernel has no half-precision version at all);
* ``zero_infinity=True``: an utterance whose labels do not fit in its frames
  (after subsampling, ``T' < U + #repeats``) has an infinite loss and a NaN
  gradient, and a single NaN would poison the whole batch update.  Such
  utterances contribute 0 to the loss and the gradient instead.

It also takes batch-first ``(N, T, V)`` log-probs, like the rest of dsr, and
targets as a list of label sequences or as one concatenated tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ctc_loss"]

Targets = Tensor | Sequence[Sequence[int] | Tensor]


def _concat_targets(targets: Targets, target_lengths: Tensor | None, N: int, device: torch.device) -> tuple:
    """Return (concatenated int64 targets, int64 target_lengths), both on ``device``."""
    if isinstance(targets, Tensor):
        if targets.ndim != 1:
            raise ValueError(
                f"a tensor `targets` must be the 1-D concatenation of all label sequences, "
                f"got shape {tuple(targets.shape)}"
            )
        if target_lengths is None:
            raise ValueError("target_lengths is required when targets is a concatenated tensor")
        flat = targets
    else:
        if len(targets) != N:
            raise ValueError(f"targets has {len(targets)} sequences but log_probs has batch size {N}")
        seqs = [torch.as_tensor(t, dtype=torch.int64).reshape(-1) for t in targets]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
        if target_lengths is not None and not torch.equal(target_lengths.cpu().to(torch.int64), lengths):
            raise ValueError(
                f"target_lengths {target_lengths.tolist()} do not match the targets' lengths {lengths.tolist()}"
            )
        target_lengths = lengths
        flat = torch.cat(seqs) if seqs else torch.zeros(0, dtype=torch.int64)
    if target_lengths.shape != (N,):
        raise ValueError(f"target_lengths must have shape (N,) = ({N},), got {tuple(target_lengths.shape)}")
    if flat.numel() != int(target_lengths.sum()):
        raise ValueError(f"targets hold {flat.numel()} labels but target_lengths sum to {int(target_lengths.sum())}")
    # int64 targets on the log-probs' device select PyTorch's native kernel on
    # every device (cuDNN's needs int32 CPU targets and equal input lengths).
    return flat.to(device=device, dtype=torch.int64), target_lengths.to(device=device, dtype=torch.int64)


def ctc_loss(
    log_probs: Tensor,
    lengths: Tensor,
    targets: Targets,
    target_lengths: Tensor | None = None,
    blank: int = 0,
    reduction: str = "sum",
) -> Tensor:
    """CTC loss (negative log-likelihood) of a batch.

    Args:
      log_probs: (N, T, V) log-probabilities (``log_softmax`` output; apply it
        in fp32 if you care about precision, this function only upcasts).
      lengths: (N,) number of valid frames per utterance, each <= T.
      targets: a list of N label sequences (lists or 1-D tensors), or a 1-D
        tensor with all label sequences concatenated; labels must not be
        ``blank``.
      target_lengths: (N,) label counts; required for concatenated targets,
        optional (checked) for a list.
      blank: blank id, ``0 <= blank < V``.
      reduction: ``"sum"`` (default; the trainer normalises by frame count
        itself), ``"none"`` ((N,) per utterance) or ``"mean"`` (torch's
        definition: each loss divided by its target length, then averaged).

    Returns:
      fp32 loss, a scalar or (N,).
    """
    if log_probs.ndim != 3 or not log_probs.is_floating_point():
        raise ValueError(
            f"log_probs must be a floating-point (N, T, V) tensor, got {log_probs.dtype} {tuple(log_probs.shape)}"
        )
    N, T, V = log_probs.shape
    if lengths.shape != (N,):
        raise ValueError(f"lengths must have shape (N,) = ({N},), got {tuple(lengths.shape)}")
    if not 0 <= blank < V:
        raise ValueError(f"blank must be in [0, V={V}), got {blank}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if N > 0 and int(lengths.max()) > T:
        raise ValueError(f"lengths must be <= T={T}, got max {int(lengths.max())}")
    flat, target_lengths = _concat_targets(targets, target_lengths, N, log_probs.device)
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),  # torch wants (T, N, V)
        flat,
        lengths.to(device=log_probs.device, dtype=torch.int64),
        target_lengths,
        blank=blank,
        reduction=reduction,
        zero_infinity=True,
    )
