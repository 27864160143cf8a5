"""RNN-T losses (simple, smoothed, full and pruned) with the k2 / fast_rnnt API.

Function names, argument names, defaults, semantics and return values follow
``k2`` / ``fast_rnnt`` 1.3 so that the backends are interchangeable (see
:mod:`dsr.losses.backend`); only the regular (standard) RNN-T topology is
implemented, which is icefall's default.  Shapes used below:

* ``B`` batch, ``T`` frames, ``S`` symbols (labels, without blank), ``C``/``V``
  vocabulary size including the blank (``termination_symbol``);
* ``boundary``: optional int64 (B, 4) ``[begin_symbol, begin_frame,
  end_symbol, end_frame]``, default ``[0, 0, S, T]``; use it for ragged batches
  (``S_b <= S``, ``T_b <= T``).

All losses are negative log-likelihoods (positive numbers).  fp16/bf16 inputs
are computed in fp32, as icefall does by hand around k2 (under autocast the
loss must not be computed in half precision: per-sequence log-likelihoods are
hundreds of nats).

The typical pruned training step::

    simple_loss, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm=decoder_proj, am=encoder_proj, symbols=y, termination_symbol=blank,
        lm_only_scale=0.25, am_only_scale=0.0, boundary=boundary,
        reduction="sum", return_grad=True)
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range=5)
    am_pruned, lm_pruned = do_rnnt_pruning(am=encoder_out, lm=decoder_out, ranges=ranges)
    logits = joiner(am_pruned, lm_pruned)            # (B, T, s_range, V)
    pruned_loss = rnnt_loss_pruned(logits, y, ranges, blank, boundary, reduction="sum")
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from dsr.losses.mutual_information import mutual_information_recursion

__all__ = [
    "do_rnnt_pruning",
    "get_rnnt_logprobs",
    "get_rnnt_logprobs_joint",
    "get_rnnt_logprobs_pruned",
    "get_rnnt_logprobs_smoothed",
    "get_rnnt_prune_ranges",
    "rnnt_loss",
    "rnnt_loss_pruned",
    "rnnt_loss_simple",
    "rnnt_loss_smoothed",
]

_NEG_INF = float("-inf")
_REDUCTIONS = ("none", "mean", "sum")

LossAndGrads = Tensor | tuple[Tensor, tuple[Tensor, Tensor]]


# ----------------------------------------------------------------------------
# argument checking and small helpers
# ----------------------------------------------------------------------------


def _check_rnnt_type(rnnt_type: str) -> None:
    if rnnt_type != "regular":
        raise ValueError(
            f"rnnt_type={rnnt_type!r} is not supported by the dsr backend; only 'regular' "
            "(standard RNN-T) is implemented"
        )


def _check_reduction(reduction: str | None) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_symbols(symbols: Tensor, B: int, S: int) -> None:
    if symbols.shape != (B, S):
        raise ValueError(f"symbols must have shape (B, S) = ({B}, {S}), got {tuple(symbols.shape)}")
    if symbols.dtype != torch.int64:
        raise ValueError(f"symbols must be an int64 tensor, got {symbols.dtype}")


def _check_termination_symbol(termination_symbol: int, C: int) -> None:
    if not 0 <= termination_symbol < C:
        raise ValueError(f"termination_symbol must be in [0, C={C}), got {termination_symbol}")


def _check_boundary(boundary: Tensor | None, B: int) -> None:
    # Only the shape here; the values are checked by the recursion, which has
    # to copy them to the host anyway.
    if boundary is not None and boundary.shape != (B, 4):
        raise ValueError(f"boundary must have shape (B, 4) = ({B}, 4), got {tuple(boundary.shape)}")


def _float32_at_least(x: Tensor) -> Tensor:
    """fp16/bf16 -> fp32; fp32/fp64 unchanged."""
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point tensor, got {x.dtype}")
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _common_float(*xs: Tensor) -> tuple[Tensor, ...]:
    """Upcast to (at least) fp32 and to a common dtype."""
    ys = [_float32_at_least(x) for x in xs]
    dtype = torch.float64 if any(y.dtype == torch.float64 for y in ys) else torch.float32
    return tuple(y.to(dtype) for y in ys)


def _append_neg_inf_frame(px: Tensor) -> Tensor:
    """(B, S, T) -> (B, S, T+1) with ``px[:, :, T] = -inf``: no symbol can be
    emitted on the one-past-the-last frame, only the final blank."""
    B, S, _ = px.shape
    return torch.cat((px, px.new_full((B, S, 1), _NEG_INF)), dim=2)


def _fix_for_boundary(px: Tensor, boundary: Tensor | None) -> Tensor:
    """Put ``-inf`` at ``px[b, :, end_frame[b]]`` (out of place): like column T
    for full-length sequences, no symbol may follow the last real frame."""
    if boundary is None:
        return px
    B, S, T1 = px.shape
    index = boundary[:, 3].to(device=px.device, dtype=torch.int64).reshape(B, 1, 1).expand(B, S, 1)
    return px.scatter(2, index, _NEG_INF)


def _apply_delay_penalty(px: Tensor, boundary: Tensor | None, delay_penalty: float) -> Tensor:
    """Add ``delay_penalty * ((T_b - 1) / 2 - t)`` to symbol emissions at frame t
    (k2 issue #955): rewards early emission, penalises late, zero on average."""
    if delay_penalty == 0.0:
        return px
    B, S, T1 = px.shape
    if boundary is None:
        offset = torch.full((B, 1, 1), (T1 - 2) / 2, dtype=px.dtype, device=px.device)
    else:
        offset = ((boundary[:, 3].to(px.device) - 1) / 2).to(px.dtype).reshape(B, 1, 1)
    frames = torch.arange(T1, device=px.device, dtype=px.dtype).reshape(1, 1, T1)
    return px + (offset - frames) * delay_penalty


def _reduce_loss(scores: Tensor, reduction: str | None) -> Tensor:
    """Scores are log-likelihoods; the loss is their negation."""
    if reduction == "none":
        return -scores
    if reduction == "mean":
        return -scores.mean()
    return -scores.sum()


def _loss_from_logprobs(
    px: Tensor,
    py: Tensor,
    boundary: Tensor | None,
    delay_penalty: float,
    reduction: str | None,
    return_grad: bool,
) -> LossAndGrads:
    px = _apply_delay_penalty(px, boundary, delay_penalty)
    out = mutual_information_recursion(px=px, py=py, boundary=boundary, return_grad=return_grad)
    if return_grad:
        scores, grads = out
        return _reduce_loss(scores, reduction), grads
    assert isinstance(out, Tensor)  # without return_grad the recursion returns the scores alone
    return _reduce_loss(out, reduction)


def _check_lm_am(lm: Tensor, am: Tensor, symbols: Tensor, termination_symbol: int) -> tuple[int, int, int, int]:
    if lm.ndim != 3 or am.ndim != 3:
        raise ValueError(
            f"lm must be (B, S+1, C) and am (B, T, C); got lm.shape={tuple(lm.shape)}, am.shape={tuple(am.shape)}"
        )
    if lm.shape[0] != am.shape[0] or lm.shape[2] != am.shape[2]:
        raise ValueError(
            f"lm (B, S+1, C) and am (B, T, C) must agree on B and C; got lm.shape={tuple(lm.shape)}, "
            f"am.shape={tuple(am.shape)}"
        )
    B, T, C = am.shape
    S = lm.shape[1] - 1
    if S < 0:
        raise ValueError(f"lm must have at least one position (S+1 >= 1), got lm.shape={tuple(lm.shape)}")
    _check_symbols(symbols, B, S)
    _check_termination_symbol(termination_symbol, C)
    return B, S, T, C


def _exp_normalizers(lm: Tensor, am: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``normalizers[b, s, t] = logsumexp_c(lm[b, s, c] + am[b, t, c])`` of
    shape (B, S+1, T), via one batched matmul of exponentials instead of a
    (B, S+1, T, C) tensor.

    The maxima are subtracted before ``exp`` so nothing overflows; they are
    detached because the result does not depend on them (their gradient is
    exactly zero, so autograd through ``max`` would only cost time).

    Returns ``(normalizers, lm_probs, am_probs, lm_max, am_max)`` with
    ``*_probs = exp(x - x_max)`` and ``*_max`` keepdim maxima.
    """
    lm_max = lm.detach().amax(dim=2, keepdim=True)  # (B, S+1, 1)
    am_max = am.detach().amax(dim=2, keepdim=True)  # (B, T, 1)
    lm_probs = (lm - lm_max).exp()
    am_probs = (am - am_max).exp()
    # `tiny` keeps log() finite if every product underflows.
    normalizers = (torch.matmul(lm_probs, am_probs.transpose(1, 2)) + torch.finfo(am_probs.dtype).tiny).log()
    normalizers = normalizers + lm_max + am_max.transpose(1, 2)
    return normalizers, lm_probs, am_probs, lm_max, am_max


def _symbol_scores(lm: Tensor, am: Tensor, symbols: Tensor) -> tuple[Tensor, Tensor]:
    """``px_am[b, s, t] = am[b, t, symbols[b, s]]`` (B, S, T) and
    ``px_lm[b, s] = lm[b, s, symbols[b, s]]`` (B, S, 1).

    Gathering from ``am`` along C with a (B, T, S) index keeps the backward
    (a scatter into a (B, T, C) zero tensor) small, instead of gathering from a
    (B, S, T, C) expanded view whose backward materialises that whole tensor.
    """
    B, T, _ = am.shape
    S = symbols.shape[1]
    px_am = torch.gather(am, 2, symbols.unsqueeze(1).expand(B, T, S)).transpose(1, 2)
    px_lm = torch.gather(lm[:, :S], 2, symbols.unsqueeze(2))
    return px_am, px_lm


class _LogSoftmaxGather(torch.autograd.Function):
    """``log_softmax(logits, -1).gather(-1, index)`` without materialising the
    log-softmax, and with a hand-written backward.

    Autograd of ``logits.gather(...) - logits.logsumexp(...)`` allocates one
    zero-filled logits-sized tensor per gathered column plus the softmax and
    the sums of all of them; here the backward allocates only the result::

        d logits = onehot(index) * g - softmax(logits) * sum_k g[..., k]

    which matters because ``logits`` (B, T, s_range or S+1, V) is by far the
    largest tensor of the loss.  Computed in fp32 (or fp64); the gradient is
    returned in the dtype of ``logits``.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, index: Tensor) -> Tensor:
        compute = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        lse = torch.logsumexp(compute, dim=-1, keepdim=True)  # (..., 1)
        ctx.save_for_backward(logits, index, lse)
        return torch.gather(compute, -1, index) - lse  # (..., K)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        # Any: torch's FunctionCtx does not declare saved_tensors.
        ctx: Any,
        grad_out: Tensor,
    ) -> tuple[Tensor, None]:
        logits, index, lse = ctx.saved_tensors
        # The only logits-sized allocation of the backward; it becomes the result.
        grad = torch.empty_like(lse.expand_as(logits), memory_format=torch.contiguous_format)
        torch.sub(logits, lse, out=grad)
        grad.exp_()
        grad.mul_(grad_out.sum(dim=-1, keepdim=True).neg_())
        grad.scatter_add_(-1, index, grad_out.to(grad.dtype))
        return grad.to(logits.dtype), None


# ----------------------------------------------------------------------------
# simple (additive joiner) and smoothed losses
# ----------------------------------------------------------------------------


def get_rnnt_logprobs(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    rnnt_type: str = "regular",
    boundary: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Lattice log-probs of the "simple" joiner ``logits = lm[b, s] + am[b, t]``.

    Args:
      lm: (B, S+1, C) decoder ("language model") part of the logits.
      am: (B, T, C) encoder ("acoustic model") part of the logits.
      symbols: int64 (B, S) label sequences.
      termination_symbol: blank id, ``0 <= termination_symbol < C``.
      rnnt_type: only ``"regular"``.
      boundary: optional (B, 4), see the module docstring.

    Returns:
      ``(px, py)``: px (B, S, T+1) log-prob of emitting ``symbols[b, s]`` from
      lattice cell (s, t) (``-inf`` at t = T and at t = end_frame[b]); py
      (B, S+1, T) log-prob of blank from (s, t).  fp32 or fp64.
    """
    _check_rnnt_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am, symbols, termination_symbol)
    _check_boundary(boundary, B)
    lm, am = _common_float(lm, am)

    normalizers = _exp_normalizers(lm, am)[0]  # (B, S+1, T)
    px_am, px_lm = _symbol_scores(lm, am, symbols)
    px = _append_neg_inf_frame(px_am + px_lm - normalizers[:, :S])
    py = am[:, :, termination_symbol].unsqueeze(1) + lm[:, :, termination_symbol].unsqueeze(2) - normalizers
    return _fix_for_boundary(px, boundary), py


def rnnt_loss_simple(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    return_grad: bool = False,
) -> LossAndGrads:
    """RNN-T loss of the additive joiner ``logits[b, t, s] = am[b, t] + lm[b, s]``.

    Args:
      lm: (B, S+1, C); am: (B, T, C); symbols: int64 (B, S);
      termination_symbol: blank id; boundary: optional (B, 4);
      rnnt_type: only ``"regular"``;
      delay_penalty: >0 encourages earlier symbol emission (k2 issue #955);
      reduction: ``"none"`` (per-sequence, (B,)), ``"mean"`` (over the batch)
        or ``"sum"``;
      return_grad: also return the occupation probabilities
        ``(px_grad (B, S, T+1), py_grad (B, S+1, T))`` for
        :func:`get_rnnt_prune_ranges`.

    Returns:
      ``loss`` or ``(loss, (px_grad, py_grad))``.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs(lm, am, symbols, termination_symbol, rnnt_type, boundary)
    return _loss_from_logprobs(px, py, boundary, delay_penalty, reduction, return_grad)


def get_rnnt_logprobs_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Like :func:`get_rnnt_logprobs`, but the log-probs are interpolated with an
    "LM-only" model (``softmax(lm[b, s])``) and an "AM-only" model
    (``softmax(am[b, t] + log unigram)``, the unigram being the LM-only
    distribution averaged over all (b, s) positions, padding included, as in
    k2)::

        px = (1 - lm_only_scale - am_only_scale) * px_joint
             + lm_only_scale * px_lm_only + am_only_scale * px_am_only

    and the same for py.  The smoothing regularises the simple loss, whose
    occupation probabilities decide the pruning bounds.

    Shapes as in :func:`get_rnnt_logprobs`.
    """
    _check_rnnt_type(rnnt_type)
    B, S, T, C = _check_lm_am(lm, am, symbols, termination_symbol)
    _check_boundary(boundary, B)
    lm, am = _common_float(lm, am)

    normalizers, lm_probs, am_probs, lm_max, am_max = _exp_normalizers(lm, am)
    tiny = torch.finfo(lm_probs.dtype).tiny
    lm_sums = lm_probs.sum(dim=2, keepdim=True)  # (B, S+1, 1)
    unigram = (lm_probs / lm_sums).mean(dim=(0, 1)) + tiny  # (C,)
    # log sum_c unigram[c] * exp(am[b, t, c]): normaliser of the AM-only model.
    am_only_norm = (torch.matmul(am_probs, unigram).log() + am_max.squeeze(2)).unsqueeze(1)  # (B, 1, T)
    lm_only_norm = lm_sums.log() + lm_max  # (B, S+1, 1)
    log_unigram = unigram.log()

    px_am, px_lm = _symbol_scores(lm, am, symbols)  # (B, S, T), (B, S, 1)
    py_am = am[:, :, termination_symbol].unsqueeze(1)  # (B, 1, T)
    py_lm = lm[:, :, termination_symbol].unsqueeze(2)  # (B, S+1, 1)

    combined_scale = 1.0 - lm_only_scale - am_only_scale
    # Interpolate on the T real frames, where everything is finite, and append
    # the -inf frame afterwards: a zero scale then really contributes nothing
    # (k2 needs a 1e-20 fudge because it multiplies -inf by the scale).
    px = (px_am + px_lm - normalizers[:, :S]) * combined_scale
    py = (py_am + py_lm - normalizers) * combined_scale
    if lm_only_scale != 0.0:
        px = px + (px_lm - lm_only_norm[:, :S]) * lm_only_scale
        py = py + (py_lm - lm_only_norm) * lm_only_scale
    if am_only_scale != 0.0:
        px = px + (px_am + log_unigram[symbols].unsqueeze(2) - am_only_norm) * am_only_scale
        py = py + (py_am + log_unigram[termination_symbol] - am_only_norm) * am_only_scale
    return _fix_for_boundary(_append_neg_inf_frame(px), boundary), py


def rnnt_loss_smoothed(
    lm: Tensor,
    am: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    lm_only_scale: float = 0.1,
    am_only_scale: float = 0.1,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    return_grad: bool = False,
) -> LossAndGrads:
    """:func:`rnnt_loss_simple` on the smoothed log-probs of
    :func:`get_rnnt_logprobs_smoothed`; with both scales 0 it equals
    :func:`rnnt_loss_simple`.  Arguments and returns as there."""
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_smoothed(
        lm, am, symbols, termination_symbol, lm_only_scale, am_only_scale, boundary, rnnt_type
    )
    return _loss_from_logprobs(px, py, boundary, delay_penalty, reduction, return_grad)


# ----------------------------------------------------------------------------
# full loss (joiner output for every (t, s))
# ----------------------------------------------------------------------------


def get_rnnt_logprobs_joint(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice log-probs from full joiner logits (B, T, S+1, C).

    Returns ``(px (B, S, T+1), py (B, S+1, T))`` as :func:`get_rnnt_logprobs`.
    """
    _check_rnnt_type(rnnt_type)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, S+1, C), got shape {tuple(logits.shape)}")
    B, T, S1, C = logits.shape
    S = S1 - 1
    if S < 0:
        raise ValueError(f"logits must have S+1 >= 1 symbol positions, got shape {tuple(logits.shape)}")
    _check_symbols(symbols, B, S)
    _check_termination_symbol(termination_symbol, C)
    _check_boundary(boundary, B)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")

    # For every (t, s): log-prob of the next symbol (blank for s = S, whose
    # px entry is dropped) and of blank.
    symbols_ext = torch.cat((symbols, symbols.new_full((B, 1), termination_symbol)), dim=1)
    index = torch.stack((symbols_ext, torch.full_like(symbols_ext, termination_symbol)), dim=2)
    logprobs = _LogSoftmaxGather.apply(logits, index.unsqueeze(1).expand(B, T, S + 1, 2))  # (B, T, S+1, 2)
    px = _append_neg_inf_frame(logprobs[:, :, :S, 0].transpose(1, 2))
    py = logprobs[:, :, :, 1].transpose(1, 2)
    return _fix_for_boundary(px, boundary), py


def rnnt_loss(
    logits: Tensor,
    symbols: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    return_grad: bool = False,
) -> LossAndGrads:
    """Full RNN-T loss from joiner logits of shape (B, T, S+1, C).

    This needs the (B, T, S+1, C) logits and their gradient in memory; use
    the pruned loss for training.  Other arguments and the returns are as in
    :func:`rnnt_loss_simple`.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_joint(logits, symbols, termination_symbol, boundary, rnnt_type)
    return _loss_from_logprobs(px, py, boundary, delay_penalty, reduction, return_grad)


# ----------------------------------------------------------------------------
# pruning
# ----------------------------------------------------------------------------


def _monotonic_lower_bound(x: Tensor) -> Tensor:
    """Largest non-decreasing (along the last dim) sequence that is <= x:
    a reversed running minimum."""
    return torch.flip(torch.cummin(torch.flip(x, dims=(-1,)), dim=-1)[0], dims=(-1,))


def _adjust_pruning_lower_bound(s_begin: Tensor, s_range: int) -> Tensor:
    """Make the per-frame window starts (B, T) valid:

    * non-decreasing in t (the alignment is monotonic);
    * ``s_begin[t+1] - s_begin[t] <= s_range - 1``, so consecutive windows
      overlap and no symbol is skipped;
    * starting at 0.

    The second constraint is the first one applied to
    ``u[t] = (s_range - 1) * t - s_begin[t]`` (it says u is non-decreasing), so
    both are running minima; clamping u at 0 before mapping back makes the
    first frame start at symbol 0.
    """
    T = s_begin.shape[1]
    s_begin = _monotonic_lower_bound(s_begin)
    ramp = (s_range - 1) * torch.arange(T, device=s_begin.device)
    u = _monotonic_lower_bound(ramp - s_begin).clamp(min=0)
    return ramp - u


def get_rnnt_prune_ranges(
    px_grad: Tensor,
    py_grad: Tensor,
    boundary: Tensor | None,
    s_range: int,
) -> Tensor:
    """Per-frame windows of ``s_range`` consecutive symbol positions to keep.

    For every frame t the window start ``s_begin`` maximises the occupation
    mass kept: ``sum(py_grad[s_begin : s_begin + s_range, t]) - px_grad[s_begin - 1, t]``
    (the probability that the path leaves frame t from inside the window and
    did not enter the window's first row at this frame from the row below it).
    The starts are then made monotonic and gap-free, and frames from
    ``end_frame - 1`` on are forced to end at ``end_symbol`` (see
    :func:`_adjust_pruning_lower_bound`).

    Args:
      px_grad: (B, S, T+1) occupation of the symbol transitions
        (``return_grad`` of :func:`rnnt_loss_simple` / :func:`rnnt_loss_smoothed`).
      py_grad: (B, S+1, T) occupation of the blank transitions.
      boundary: (B, 4) ``[begin_symbol, begin_frame, end_symbol, end_frame]``;
        ``None`` means ``[0, 0, S, T]`` for every sequence.
      s_range: window size (normally 4 or 5).  As in fast_rnnt it is raised
        (with a warning) to ``max_b((S_b - 1) // T_b) + 2`` if smaller (at
        least 2 whenever a sequence has symbols), because a window of
        ``s_range`` positions lets at most ``s_range - 1`` symbols be emitted
        on a frame; and lowered to ``S + 1`` if larger (so 1 when S = 0).

    Returns:
      int64 (B, T, s_range): ``ranges[b, t] = s_begin[b, t] + arange(s_range)``.
    """
    if px_grad.ndim != 3 or py_grad.ndim != 3:
        raise ValueError(
            f"px_grad must be (B, S, T+1) and py_grad (B, S+1, T); got {tuple(px_grad.shape)} "
            f"and {tuple(py_grad.shape)}"
        )
    B, S, T1 = px_grad.shape
    T = py_grad.shape[2]
    if py_grad.shape != (B, S + 1, T) or T1 != T + 1:
        raise ValueError(
            f"px_grad must be (B, S, T+1) and py_grad (B, S+1, T); got {tuple(px_grad.shape)} "
            f"and {tuple(py_grad.shape)} (the 'modified' topology is not supported)"
        )
    if s_range < 1:
        raise ValueError(f"s_range must be a positive number of symbol positions, got {s_range}")
    device = px_grad.device
    if boundary is None:
        boundary = torch.tensor([[0, 0, S, T]] * B, dtype=torch.int64, device=device)
    _check_boundary(boundary, B)
    boundary = boundary.to(device=device, dtype=torch.int64)
    S_b, T_b = boundary[:, 2], boundary[:, 3]

    if B > 0:
        # One host sync.  Sequences without symbols need no window at all
        # (and T_b = 0 is clamped only to avoid dividing by zero).
        needed = (S_b - 1).div(T_b.clamp(min=1), rounding_mode="trunc") + 2
        s_range_min = int(torch.where(S_b > 0, needed, torch.ones_like(needed)).max())
        if s_range < s_range_min:
            warnings.warn(
                f"get_rnnt_prune_ranges: s_range={s_range} cannot cover {int(S_b.max())} symbols "
                f"in the given frames; using s_range={s_range_min}",
                stacklevel=2,
            )
            s_range = s_range_min
    if s_range > S:
        s_range = S + 1  # no pruning at all: every window is [0, S]

    # (B, S+2-s_range, T): blank occupation summed over each window.
    num_windows = S + 2 - s_range
    stride_b, stride_s, stride_t = py_grad.stride()
    windows = torch.as_strided(py_grad, (B, num_windows, s_range, T), (stride_b, stride_s, stride_s, stride_t)).sum(
        dim=2
    )
    # minus the symbol-transition occupation into the window's first row.
    entering = torch.cat((px_grad.new_zeros((B, 1, T)), px_grad[:, : num_windows - 1, :T]), dim=1)
    s_begin = torch.argmax(windows - entering, dim=1)  # (B, T)

    # From frame end_frame - 1 on (and on padding frames) the window must
    # contain end_symbol so the final blank is reachable.
    frames = torch.arange(T, device=device).reshape(1, T)
    last_window = (S_b - s_range + 1).clamp(min=0).reshape(B, 1)
    s_begin = torch.where(frames < T_b.reshape(B, 1) - 1, s_begin, last_window)
    s_begin = _adjust_pruning_lower_bound(s_begin, s_range)
    return s_begin.unsqueeze(2) + torch.arange(s_range, device=device)


def do_rnnt_pruning(am: Tensor, lm: Tensor, ranges: Tensor) -> tuple[Tensor, Tensor]:
    """Pick the encoder/decoder frames for the pruned joiner.

    Args:
      am: (B, T, C) encoder output (projected to the joiner dim).
      lm: (B, S+1, C) decoder output (projected to the joiner dim).
      ranges: int64 (B, T, s_range) from :func:`get_rnnt_prune_ranges`.

    Returns:
      ``(am_pruned, lm_pruned)``, both (B, T, s_range, C):
      ``am_pruned[b, t, j] = am[b, t]`` (an expanded view, no copy) and
      ``lm_pruned[b, t, j] = lm[b, ranges[b, t, j]]``.  The gather reads ``lm``
      directly rather than a (B, T, S+1, C) expanded view, so its backward is
      a scatter into a (B, S+1, C) tensor.
    """
    if am.ndim != 3 or lm.ndim != 3 or ranges.ndim != 3:
        raise ValueError(
            f"am must be (B, T, C), lm (B, S+1, C) and ranges (B, T, s_range); got "
            f"{tuple(am.shape)}, {tuple(lm.shape)}, {tuple(ranges.shape)}"
        )
    B, T, R = ranges.shape
    if am.shape[:2] != (B, T) or lm.shape[0] != B or am.shape[2] != lm.shape[2]:
        raise ValueError(
            f"am (B, T, C), lm (B, S+1, C) and ranges (B, T, s_range) disagree: "
            f"{tuple(am.shape)}, {tuple(lm.shape)}, {tuple(ranges.shape)}"
        )
    C = lm.shape[2]
    am_pruned = am.unsqueeze(2).expand(B, T, R, C)
    index = ranges.reshape(B, T * R, 1).expand(B, T * R, C)
    lm_pruned = torch.gather(lm, 1, index).reshape(B, T, R, C)
    return am_pruned, lm_pruned


def _check_ranges(ranges: Tensor, B: int, T: int, R: int, S: int) -> None:
    """Shape, dtype and contents (one host sync): windows of consecutive
    positions inside [0, S]; anything else would make the scatter below write
    to the wrong cells (or out of bounds on the GPU)."""
    if ranges.shape != (B, T, R):
        raise ValueError(f"ranges must have shape (B, T, s_range) = ({B}, {T}, {R}), got {tuple(ranges.shape)}")
    if ranges.dtype != torch.int64:
        raise ValueError(f"ranges must be an int64 tensor, got {ranges.dtype}")
    if ranges.numel() == 0:
        return
    bad = (ranges[:, :, 0] < 0).any() | (ranges[:, :, -1] > S).any()
    if R > 1:
        bad = bad | (ranges.diff(dim=2) != 1).any()
    if bool(bad):
        raise ValueError(
            f"ranges must hold windows of consecutive symbol positions within [0, S={S}] "
            "(as produced by get_rnnt_prune_ranges)"
        )


def get_rnnt_logprobs_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
) -> tuple[Tensor, Tensor]:
    """Lattice log-probs from pruned joiner logits.

    Args:
      logits: (B, T, s_range, C); ``logits[b, t, j]`` is the joiner output for
        frame t and symbol position ``ranges[b, t, j]``.
      symbols: int64 (B, S).
      ranges: int64 (B, T, s_range) from :func:`get_rnnt_prune_ranges`.
      termination_symbol: blank id.
      boundary: optional (B, 4).
      rnnt_type: only ``"regular"``.

    Returns:
      ``(px (B, S, T+1), py (B, S+1, T))`` with ``-inf`` for cells outside the
      kept windows (those transitions are pruned away).
    """
    _check_rnnt_type(rnnt_type)
    if logits.ndim != 4:
        raise ValueError(f"logits must be (B, T, s_range, C), got shape {tuple(logits.shape)}")
    B, T, R, C = logits.shape
    if symbols.ndim != 2 or symbols.shape[0] != B:
        raise ValueError(f"symbols must have shape (B, S) with B={B}, got {tuple(symbols.shape)}")
    S = symbols.shape[1]
    _check_symbols(symbols, B, S)
    _check_termination_symbol(termination_symbol, C)
    _check_boundary(boundary, B)
    _check_ranges(ranges, B, T, R, S)
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {logits.dtype}")

    # The symbol emitted from position s is symbols[s]; position S only emits
    # blank, so give it the blank id (its px entry is dropped below).
    symbols_ext = torch.cat((symbols, symbols.new_full((B, 1), termination_symbol)), dim=1)
    pruned_symbols = torch.gather(symbols_ext.unsqueeze(1).expand(B, T, S + 1), 2, ranges)
    index = torch.stack((pruned_symbols, torch.full_like(pruned_symbols, termination_symbol)), dim=3)
    logprobs = _LogSoftmaxGather.apply(logits, index)  # (B, T, R, 2)
    px_kept, py_kept = logprobs[..., 0], logprobs[..., 1]

    # Scatter the kept (B, T, R) entries into -inf (B, T, S+1) lattices.
    px = px_kept.new_full((B, T, S + 1), _NEG_INF).scatter(2, ranges, px_kept)
    py = py_kept.new_full((B, T, S + 1), _NEG_INF).scatter(2, ranges, py_kept)
    px = _append_neg_inf_frame(px[:, :, :S].transpose(1, 2))
    return _fix_for_boundary(px, boundary), py.transpose(1, 2)


def rnnt_loss_pruned(
    logits: Tensor,
    symbols: Tensor,
    ranges: Tensor,
    termination_symbol: int,
    boundary: Tensor | None = None,
    rnnt_type: str = "regular",
    delay_penalty: float = 0.0,
    reduction: str | None = "mean",
    return_grad: bool = False,
) -> LossAndGrads:
    """RNN-T loss restricted to the pruned lattice.

    Args:
      logits: (B, T, s_range, C) joiner output on
        :func:`do_rnnt_pruning`'s (am_pruned, lm_pruned).
      symbols: int64 (B, S); ranges: int64 (B, T, s_range);
      termination_symbol, boundary, rnnt_type, delay_penalty, reduction,
      return_grad: as in :func:`rnnt_loss_simple`.

    Returns:
      ``loss`` or ``(loss, (px_grad, py_grad))``.  When every window covers all
      positions (``s_range >= S + 1``) this equals :func:`rnnt_loss`.
    """
    _check_reduction(reduction)
    px, py = get_rnnt_logprobs_pruned(logits, symbols, ranges, termination_symbol, boundary, rnnt_type)
    return _loss_from_logprobs(px, py, boundary, delay_penalty, reduction, return_grad)
