"""The RNN-T lattice recursion ("mutual information recursion") in pure PyTorch.

Same function, arguments and results as ``k2.mutual_information_recursion`` /
``fast_rnnt.mutual_information_recursion`` for the regular (standard) RNN-T
topology::

    p[b, s_begin, t_begin] = 0
    p[b, s, t] = logaddexp(p[b, s-1, t] + px[b, s-1, t],
                           p[b, s, t-1] + py[b, s, t-1])
    score[b]   = p[b, s_end, t_end]

with terms of negative index treated as ``-inf``; ``boundary[b]`` is
``[s_begin, t_begin, s_end, t_end]`` (default ``[0, 0, S, T]``).

How it is computed
------------------
Every cell on the anti-diagonal ``k = s + t`` depends only on cells of
diagonal ``k - 1``, so the forward (alpha) pass is a loop over the ``S + T``
diagonals with the whole ``(B, S+1)`` diagonal updated by two tensor ops per
step; the backward (beta) pass is the same loop in reverse.  We deliberately
do not solve the per-frame recurrence with ``cumsum``/``logcumsumexp``: that
needs ``logcumsumexp(q - cumsum(px)) + cumsum(px)``, which cancels
catastrophically in float32 and breaks on the ``-inf`` entries the pruned loss
is full of.  The diagonal loop performs exactly the same sequence of
``logaddexp`` operations as k2's kernels, so it is as accurate and treats
``-inf`` (impossible transitions) exactly.

The lattice is stored "skewed": ``alpha[k, b, 1 + s] = p[b, s, k - s]``, with
one ``-inf`` pad column on each side so that both neighbours of a cell are
plain slices of the previous diagonal.  Skewing and unskewing are
``as_strided`` views, never Python loops over cells.

Gradients are occupation probabilities: ``d score / d px[b,s,t]`` is the
posterior probability that the best-path-sum uses the x-transition out of
``(s, t)``, i.e. ``exp(alpha[s,t] + px[s,t] + beta[s+1,t] - score)``.  The
forward of the autograd function computes them when a gradient (or
``return_grad``) is wanted, so only these two small tensors are kept for the
backward.  They are exactly the ``(px_grad, py_grad)`` that
``get_rnnt_prune_ranges`` consumes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["mutual_information_recursion"]

_NEG_INF = float("-inf")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (fp16, bf16, fp32) runs in fp32.

    Half-precision log-probabilities summed over hundreds of lattice steps
    would lose several digits, so the recursion never runs below fp32.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def _validate(px: Tensor, py: Tensor, boundary: Tensor | None) -> tuple[int, int, int]:
    """Check shapes/dtypes and return ``(B, S, T)``."""
    if px.ndim != 3 or py.ndim != 3:
        raise ValueError(f"px and py must be 3-D, got px.shape={tuple(px.shape)}, py.shape={tuple(py.shape)}")
    if not px.is_floating_point() or px.dtype != py.dtype:
        raise ValueError(f"px and py must have the same floating-point dtype, got {px.dtype} and {py.dtype}")
    if px.device != py.device:
        raise ValueError(f"px and py must be on the same device, got {px.device} and {py.device}")
    B, S, T1 = px.shape
    T = py.shape[2]
    if py.shape != (B, S + 1, T):
        raise ValueError(
            f"py must have shape (B, S+1, T) = ({B}, {S + 1}, T) given px.shape={tuple(px.shape)}, "
            f"got {tuple(py.shape)}"
        )
    if T1 != T + 1:
        raise ValueError(
            f"px must have shape (B, S, T+1) = ({B}, {S}, {T + 1}) given py.shape={tuple(py.shape)}, "
            f"got {tuple(px.shape)}; the 'modified' RNN-T topology (px of shape (B, S, T)) "
            "is not supported"
        )
    if boundary is not None:
        if boundary.shape != (B, 4):
            raise ValueError(f"boundary must have shape (B, 4) = ({B}, 4), got {tuple(boundary.shape)}")
        if boundary.dtype.is_floating_point or boundary.dtype == torch.bool:
            raise ValueError(f"boundary must be an integer (int64) tensor, got {boundary.dtype}")
    return B, S, T


def _boundary_rows(boundary: Tensor | None, B: int, S: int, T: int) -> list[list[int]]:
    """Boundary as host integers (one device sync), validated."""
    if boundary is None:
        return [[0, 0, S, T]] * B
    rows = boundary.tolist()
    for b, (s_begin, t_begin, s_end, t_end) in enumerate(rows):
        if not (0 <= s_begin <= s_end <= S and 0 <= t_begin <= t_end <= T):
            raise ValueError(
                f"boundary[{b}] = {[s_begin, t_begin, s_end, t_end]} is invalid: need "
                f"0 <= s_begin <= s_end <= S={S} and 0 <= t_begin <= t_end <= T={T}"
            )
    return rows


def _group_by_diagonal(cells: list[tuple[int, int]], device: torch.device) -> dict[int, tuple[Tensor, Tensor]]:
    """Map diagonal ``k = s + t`` -> (batch indices, padded column indices) of the
    given per-sequence cells, so the recursion can set them to 0 (log 1) when it
    reaches that diagonal."""
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for b, (s, t) in enumerate(cells):
        bs, cs = groups.setdefault(s + t, ([], []))
        bs.append(b)
        cs.append(s + 1)
    return {k: (torch.tensor(bs, device=device), torch.tensor(cs, device=device)) for k, (bs, cs) in groups.items()}


def _skew_edges(px: Tensor, py: Tensor, num_diags: int) -> Tensor:
    """Edge weights leaving each cell, laid out by diagonal.

    Returns ``E`` of shape (K, 2, B, S+3) with ``E[s+t, 0, b, 1+s] = py[b,s,t]``
    (the t-transition out of cell (s,t)) and ``E[s+t, 1, b, 1+s] = px[b,s,t]``
    (the s-transition); every other entry (pads, transitions that leave the
    lattice) is ``-inf``.
    """
    B, S, T1 = px.shape
    T = T1 - 1
    W = S + 3
    edges = px.new_full((num_diags, 2, B, W), _NEG_INF)
    # Address of E[k, c, b, 1 + s] with k = s + t is
    #   k*2BW + c*BW + b*W + 1 + s = (1 + c*BW) + b*W + s*(2BW + 1) + t*2BW.
    row, diag = 2 * B * W, 2 * B * W + 1
    edges.as_strided((B, S + 1, T), (W, diag, row), 1).copy_(py)
    edges.as_strided((B, S, T1), (W, diag, row), 1 + B * W).copy_(px)
    return edges


def _lattice_view(buf: Tensor, S: int, T: int, s_offset: int = 0, t_offset: int = 0) -> Tensor:
    """View of a skewed (K, B, S+3) lattice buffer as ``x[b, s, t] = lattice[b, s +
    s_offset, t + t_offset]``, of shape (B, S+1-s_offset, T+1-t_offset)."""
    K, B, W = buf.shape
    return buf.as_strided(
        (B, S + 1 - s_offset, T + 1 - t_offset),
        (W, B * W + 1, B * W),
        (s_offset + t_offset) * B * W + 1 + s_offset,
    )


def _alpha(edges: Tensor, begins: dict[int, tuple[Tensor, Tensor]], k_first: int, k_last: int) -> Tensor:
    """Forward pass over diagonals ``k_first..k_last``.

    Returns ``alpha`` of shape (K, B, S+3) with ``alpha[k, b, 1+s] = p[b, s, k-s]``.
    """
    K, _, B, W = edges.shape
    alpha = edges.new_full((K, B, W), _NEG_INF)
    rows = alpha.unbind(0)
    targets = alpha[:, :, 1 : W - 1].unbind(0)
    edge_rows = edges.unbind(0)
    tmp = edges.new_empty((2, B, W))
    # Preallocated scratch + `out=` so each step is exactly two kernels and no
    # allocation: tmp = alpha[k-1] + edges[k-1]; then cell 1+s of diagonal k
    # is logaddexp(t-transition from (s, .) , s-transition from (s-1, .)).
    from_t = tmp[0, :, 1 : W - 1]
    from_s = tmp[1, :, 0 : W - 2]
    for k in range(k_first, k_last + 1):
        if k > 0:
            torch.add(rows[k - 1], edge_rows[k - 1], out=tmp)
            torch.logaddexp(from_t, from_s, out=targets[k])
        start = begins.get(k)
        if start is not None:
            rows[k][start] = 0.0
    return alpha


def _beta(edges: Tensor, ends: dict[int, tuple[Tensor, Tensor]], k_first: int, k_last: int) -> Tensor:
    """Backward pass over diagonals ``k_last..k_first``.

    Returns ``beta`` of shape (K, B, S+3) with ``beta[k, b, 1+s]`` the log-sum of
    all paths from (s, k-s) to the end cell.
    """
    K, _, B, W = edges.shape
    beta = edges.new_full((K, B, W), _NEG_INF)
    rows = beta.unbind(0)
    targets = beta[:, :, 1 : W - 1].unbind(0)
    # window[k][0, b, c] = beta[k, b, c] and window[k][1, b, c] = beta[k, b, c+1]:
    # the t- and s-successors of cell c on diagonal k-1.
    windows = beta.as_strided((K, 2, B, W - 1), (B * W, 1, W, 1)).unbind(0)
    edge_rows = edges[:, :, :, : W - 1].unbind(0)
    tmp = edges.new_empty((2, B, W - 1))
    via_t = tmp[0, :, 1:]
    via_s = tmp[1, :, 1:]
    for k in range(k_last, k_first - 1, -1):
        if k < K - 1:
            torch.add(windows[k + 1], edge_rows[k], out=tmp)
            torch.logaddexp(via_t, via_s, out=targets[k])
        end = ends.get(k)
        if end is not None:
            rows[k][end] = 0.0
    return beta


def _scores_and_occupation(
    px: Tensor, py: Tensor, boundary: Tensor | None, need_grad: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Core computation in the compute dtype (no autograd).

    Returns ``(scores (B,), px_occ (B, S, T+1) or None, py_occ (B, S+1, T) or None)``.
    """
    B, S, T = py.shape[0], px.shape[1], py.shape[2]
    rows = _boundary_rows(boundary, B, S, T)
    device = px.device
    num_diags = S + T + 1
    k_first = min(r[0] + r[1] for r in rows) if rows else 0
    k_last = max(r[2] + r[3] for r in rows) if rows else 0

    edges = _skew_edges(px, py, num_diags)
    begins = _group_by_diagonal([(r[0], r[1]) for r in rows], device)
    alpha = _alpha(edges, begins, k_first, k_last)

    W = S + 3
    if boundary is None:
        ends_k = torch.full((B,), S + T, device=device)
        ends_c = torch.full((B,), S + 1, device=device)
    else:
        bnd = boundary.to(device=device, dtype=torch.int64)
        ends_k = bnd[:, 2] + bnd[:, 3]
        ends_c = bnd[:, 2] + 1
    flat_index = ends_k * (B * W) + torch.arange(B, device=device) * W + ends_c
    scores = alpha.reshape(-1).gather(0, flat_index)
    if not need_grad:
        return scores, None, None

    ends = _group_by_diagonal([(r[2], r[3]) for r in rows], device)
    beta = _beta(edges, ends, k_first, k_last)
    del edges
    # A sequence with no valid path has score -inf; every alpha+edge+beta is
    # then -inf too, and subtracting 0 instead of -inf keeps its occupation
    # exactly 0 instead of NaN.
    norm = torch.where(torch.isneginf(scores), torch.zeros_like(scores), scores).reshape(B, 1, 1)
    alpha_st = _lattice_view(alpha, S, T)  # (B, S+1, T+1): p[b, s, t]
    # `out=` into contiguous tensors: left to itself, TensorIterator would
    # give the results the diagonal-major layout of the strided views, which
    # makes every later consumer (e.g. get_rnnt_prune_ranges) slow.
    px_occ = torch.add(px, alpha_st[:, :S, :], out=torch.empty_like(px, memory_format=torch.contiguous_format))
    px_occ += _lattice_view(beta, S, T, s_offset=1)  # beta[b, s+1, t]
    px_occ -= norm
    px_occ.exp_()
    py_occ = torch.add(py, alpha_st[:, :, :T], out=torch.empty_like(py, memory_format=torch.contiguous_format))
    py_occ += _lattice_view(beta, S, T, t_offset=1)  # beta[b, s, t+1]
    py_occ -= norm
    py_occ.exp_()
    return scores, px_occ, py_occ


class _MutualInformation(torch.autograd.Function):
    """Autograd wrapper: forward returns (scores, px_occ, py_occ)."""

    @staticmethod
    def forward(
        # Any: torch's FunctionCtx declares neither saved_tensors, needs_input_grad nor our own in_dtype.
        ctx: Any,
        px: Tensor,
        py: Tensor,
        boundary: Tensor | None,
        need_grad: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        dtype = _compute_dtype(px.dtype)
        scores, px_occ, py_occ = _scores_and_occupation(
            px.to(dtype).contiguous(), py.to(dtype).contiguous(), boundary, need_grad
        )
        ctx.in_dtype = px.dtype
        if need_grad:
            assert px_occ is not None and py_occ is not None  # computed whenever need_grad
            ctx.save_for_backward(px_occ, py_occ)
            ctx.mark_non_differentiable(px_occ, py_occ)
        return scores, px_occ, py_occ

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_scores: Tensor, _g1: Tensor | None, _g2: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        px_occ, py_occ = ctx.saved_tensors
        g = grad_scores.to(px_occ.dtype).reshape(-1, 1, 1)
        grad_px = (px_occ * g).to(ctx.in_dtype) if ctx.needs_input_grad[0] else None
        grad_py = (py_occ * g).to(ctx.in_dtype) if ctx.needs_input_grad[1] else None
        return grad_px, grad_py, None, None


def mutual_information_recursion(
    px: Tensor,
    py: Tensor,
    boundary: Tensor | None = None,
    return_grad: bool = False,
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """Total log-score of all monotonic paths through the RNN-T lattice.

    Args:
      px: (B, S, T+1) log-score of the s-transition (emit symbol ``s``) out of
        cell (s, t).  For RNN-T, ``px[:, :, T]`` (and ``px[b, :, t_end]``) is
        ``-inf``: no symbol can be emitted after the last frame.
      py: (B, S+1, T) log-score of the t-transition (emit blank) out of (s, t).
      boundary: optional int64 (B, 4) ``[s_begin, t_begin, s_end, t_end]`` per
        sequence, ``0 <= s_begin <= s_end <= S``, ``0 <= t_begin <= t_end <= T``;
        default ``[0, 0, S, T]``.  Entries of px/py outside a sequence's
        rectangle get zero gradient.
      return_grad: also return the occupation probabilities ``(px_grad,
        py_grad)``, i.e. ``d scores.sum() / d (px, py)``, of shapes (B, S, T+1)
        and (B, S+1, T); the input to ``get_rnnt_prune_ranges``.

    Returns:
      ``scores`` of shape (B,) (``p[b, s_end, t_end]``, a log-likelihood, so the
      RNN-T loss is ``-scores``), or ``(scores, (px_grad, py_grad))`` if
      ``return_grad``.  fp16/bf16 inputs are computed in fp32, and ``scores``
      and the occupations are returned in that compute dtype (fp32/fp64): a
      total log-likelihood of a few hundred nats has no useful precision left
      in fp16.  Gradients flowing back to px/py have px's dtype.
    """
    _validate(px, py, boundary)
    need_grad = return_grad or (torch.is_grad_enabled() and (px.requires_grad or py.requires_grad))
    scores, px_grad, py_grad = _MutualInformation.apply(px, py, boundary, need_grad)
    if return_grad:
        return scores, (px_grad, py_grad)
    return scores
