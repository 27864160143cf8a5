"""Knowledge-distillation losses: KL(teacher || student) between output posteriors.

For each position (a CTC frame, or a (frame, symbol) cell of the pruned transducer
lattice) with teacher distribution ``p`` and student distribution ``q``, both taken
at temperature ``tau`` (``softmax(logits / tau)``)::

    KL(p || q) = sum_v p(v) * (log p(v) - log q(v))

summed over the valid positions of the batch and multiplied by ``tau ** 2`` so that
the gradient's size does not depend on the temperature (Hinton et al., 2015).  The
teacher side is detached: only the student receives gradients.  Computed in float32.
Log-probabilities are valid logits (they differ from them by a constant per position),
so the CTC head's log-softmax output can be passed as is.
"""

from __future__ import annotations

import torch

__all__ = ["ctc_distillation_loss", "kl_divergence", "pruned_joiner_distillation_loss"]


def kl_divergence(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``tau^2 * sum over masked positions of KL(softmax(teacher/tau) || softmax(student/tau))``.

    Args:
        student_logits: (..., V) student logits or log-probabilities.
        teacher_logits: (..., V) teacher logits or log-probabilities (detached here).
        mask: (...) bool, True at positions that count.
        temperature: softmax temperature tau > 0.

    Returns:
        float32 scalar.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher shapes differ: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}"
        )
    if mask.shape != student_logits.shape[:-1] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool {tuple(student_logits.shape[:-1])}, got {mask.dtype} {tuple(mask.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        log_q = (student_logits.float() / temperature).log_softmax(dim=-1)
        log_p = (teacher_logits.detach().float() / temperature).log_softmax(dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
        return kl.masked_fill(~mask, 0.0).sum() * temperature**2


def ctc_distillation_loss(
    student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, lens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL between CTC frame posteriors, summed over the valid frames.

    Args:
        student_log_probs, teacher_log_probs: (N, T, V) CTC log-posteriors.
        lens: (N,) valid frames per utterance.
    """
    if student_log_probs.dim() != 3:
        raise ValueError(f"log-probs must be (N, T, V), got {tuple(student_log_probs.shape)}")
    n, t, _ = student_log_probs.shape
    if lens.shape != (n,):
        raise ValueError(f"lens must be ({n},), got {tuple(lens.shape)}")
    mask = torch.arange(t, device=lens.device)[None, :] < lens[:, None]
    return kl_divergence(student_log_probs, teacher_log_probs, mask.to(student_log_probs.device), temperature)


def pruned_joiner_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    ranges: torch.Tensor,
    frame_lens: torch.Tensor,
    symbol_lens: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL between pruned-joiner outputs on the same lattice cells (the student's ranges).

    A cell (n, t, s) counts when frame t is valid and its symbol position
    ``ranges[n, t, s]`` is at most the utterance's label count (shorter utterances'
    windows can reach past their last label; those cells are padding).

    Args:
        student_logits, teacher_logits: (N, T, S, V) joiner logits on ``ranges``.
        ranges: (N, T, S) symbol positions.
        frame_lens: (N,) valid frames; symbol_lens: (N,) labels per utterance.
    """
    if student_logits.dim() != 4 or ranges.shape != student_logits.shape[:3]:
        raise ValueError(
            f"logits must be (N, T, S, V) and ranges (N, T, S); got {tuple(student_logits.shape)} "
            f"and {tuple(ranges.shape)}"
        )
    n, t = ranges.shape[:2]
    if frame_lens.shape != (n,) or symbol_lens.shape != (n,):
        raise ValueError(f"frame_lens and symbol_lens must be ({n},)")
    frame_ok = torch.arange(t, device=ranges.device)[None, :, None] < frame_lens.to(ranges.device)[:, None, None]
    mask = frame_ok & (ranges <= symbol_lens.to(ranges.device)[:, None, None])
    return kl_divergence(student_logits, teacher_logits, mask, temperature)
