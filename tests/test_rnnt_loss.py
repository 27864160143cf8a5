"""Tests of dsr's pure-PyTorch RNN-T losses (dsr.losses.rnnt / mutual_information).

The references are independent of the code under test: a naive double loop
over (t, u) in the textbook RNN-T formulation, torch.autograd through that
loop, and torch.autograd.gradcheck's finite differences.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from dsr.losses import (
    do_rnnt_pruning,
    get_rnnt_logprobs,
    get_rnnt_prune_ranges,
    mutual_information_recursion,
    rnnt_loss,
    rnnt_loss_pruned,
    rnnt_loss_simple,
    rnnt_loss_smoothed,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64
BLANK = 0


def _boundary(S_b: list[int], T_b: list[int], device: str = "cpu") -> Tensor:
    return torch.tensor([[0, 0, s, t] for s, t in zip(S_b, T_b)], dtype=torch.int64, device=device)


def _symbols(B: int, S: int, V: int, seed: int, device: str) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, V, (B, S), generator=g).to(device)  # never blank


def _randn(*shape: int, seed: int, device: str, dtype: torch.dtype = F64, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=dtype) * scale).to(device)


def _joiner(am: Tensor, lm: Tensor) -> Tensor:
    """A nonlinear stand-in for the joiner network: (..., C) x (..., C) -> (..., C)."""
    return torch.tanh(am + lm) * 2.0 + 0.5 * am * lm


def _naive_rnnt_nll(logits: Tensor, labels: list[int], blank: int) -> Tensor:
    """Textbook RNN-T negative log-likelihood, one (t, u) cell at a time.

    logits: (T, U+1, V) for one utterance with U = len(labels) and T >= 1.
    alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + y_u(t, u-1))
    loss = -(alpha(T-1, U) + blank(T-1, U)).
    """
    T, U1, _ = logits.shape
    logp = logits.log_softmax(dim=-1)
    alpha: list[list[Tensor | None]] = [[None] * U1 for _ in range(T)]
    for t in range(T):
        for u in range(U1):
            terms = []
            if t == 0 and u == 0:
                terms.append(logits.new_zeros(()))
            if t > 0:
                terms.append(alpha[t - 1][u] + logp[t - 1, u, blank])
            if u > 0:
                terms.append(alpha[t][u - 1] + logp[t, u - 1, labels[u - 1]])
            alpha[t][u] = torch.logsumexp(torch.stack(terms), dim=0)
    return -(alpha[T - 1][U1 - 1] + logp[T - 1, U1 - 1, blank])


def _naive_mi(px: Tensor, py: Tensor, boundary: Tensor) -> Tensor:
    """The recursion of mutual_information_recursion, one cell at a time."""
    scores = []
    for b, (s0, t0, s1, t1) in enumerate(boundary.tolist()):
        p = {(s0, t0): px.new_zeros(())}
        for s in range(s0, s1 + 1):
            for t in range(t0, t1 + 1):
                if (s, t) == (s0, t0):
                    continue
                terms = []
                if s > s0:
                    terms.append(p[s - 1, t] + px[b, s - 1, t])
                if t > t0:
                    terms.append(p[s, t - 1] + py[b, s, t - 1])
                p[s, t] = torch.logsumexp(torch.stack(terms), dim=0)
        scores.append(p[s1, t1])
    return torch.stack(scores)


def _assert_close(actual: Tensor, expected: Tensor, rtol: float = 1e-5, atol: float = 1e-8) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------
# (2) full loss vs a brute-force reference
# ----------------------------------------------------------------------------

_FULL_CASES = [
    # (B, T, S, V, S_b, T_b): ragged batches, U=0 and T=1 included.
    (3, 5, 3, 6, [3, 1, 0], [5, 2, 4]),
    (2, 1, 2, 5, [2, 0], [1, 1]),
    (2, 4, 0, 4, [0, 0], [4, 3]),
    (1, 1, 0, 3, [0], [1]),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B,T,S,V,S_b,T_b", _FULL_CASES)
def test_full_loss_matches_brute_force(
    device: str, B: int, T: int, S: int, V: int, S_b: list[int], T_b: list[int]
) -> None:
    logits = _randn(B, T, S + 1, V, seed=1, device=device, scale=2.0).requires_grad_()
    symbols = _symbols(B, S, V, seed=2, device=device)
    boundary = _boundary(S_b, T_b, device)

    loss = rnnt_loss(logits, symbols, BLANK, boundary=boundary, reduction="none")
    expected = torch.stack(
        [_naive_rnnt_nll(logits[b, : T_b[b], : S_b[b] + 1], symbols[b, : S_b[b]].tolist(), BLANK) for b in range(B)]
    )
    _assert_close(loss, expected)

    (grad,) = torch.autograd.grad(loss.sum(), logits)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    _assert_close(grad, expected_grad)
    # Padding (t >= T_b or s > S_b) gets exactly zero gradient.
    for b in range(B):
        assert (grad[b, T_b[b] :] == 0).all()
        assert (grad[b, :, S_b[b] + 1 :] == 0).all()


def test_full_loss_default_boundary_is_full_length() -> None:
    logits = _randn(2, 4, 3, 5, seed=3, device="cpu")
    symbols = _symbols(2, 2, 5, seed=4, device="cpu")
    _assert_close(
        rnnt_loss(logits, symbols, BLANK, reduction="none"),
        rnnt_loss(logits, symbols, BLANK, boundary=_boundary([2, 2], [4, 4]), reduction="none"),
    )


# ----------------------------------------------------------------------------
# (3) the recursion itself: naive loop, gradcheck, occupation probabilities
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_mutual_information_matches_naive_with_general_boundaries(device: str) -> None:
    B, S, T = 4, 3, 5
    px = _randn(B, S, T + 1, seed=5, device=device)
    py = _randn(B, S + 1, T, seed=6, device=device)
    # Non-zero begins, an empty sequence, and a full-size one.
    boundary = torch.tensor([[0, 0, 3, 5], [1, 2, 3, 4], [2, 1, 2, 1], [0, 3, 1, 5]], device=device)
    _assert_close(mutual_information_recursion(px, py, boundary), _naive_mi(px, py, boundary))


@pytest.mark.parametrize(
    "B,S,T,boundary",
    [
        (2, 3, 4, None),
        (3, 3, 4, [[0, 0, 3, 4], [0, 0, 1, 2], [1, 1, 2, 3]]),
        (2, 0, 3, None),
        (2, 2, 1, None),
    ],
)
def test_mutual_information_gradcheck(B: int, S: int, T: int, boundary: list[list[int]] | None) -> None:
    px = _randn(B, S, T + 1, seed=7, device="cpu").requires_grad_()
    py = _randn(B, S + 1, T, seed=8, device="cpu").requires_grad_()
    bnd = None if boundary is None else torch.tensor(boundary)
    assert torch.autograd.gradcheck(lambda x, y: mutual_information_recursion(x, y, bnd), (px, py))


@pytest.mark.parametrize("device", DEVICES)
def test_return_grad_is_occupation_and_equals_autograd(device: str) -> None:
    B, S, T = 3, 4, 6
    px = _randn(B, S, T + 1, seed=9, device=device).requires_grad_()
    py = _randn(B, S + 1, T, seed=10, device=device).requires_grad_()
    boundary = _boundary([4, 2, 0], [6, 3, 2], device)
    scores, (px_grad, py_grad) = mutual_information_recursion(px, py, boundary, return_grad=True)
    g_px, g_py = torch.autograd.grad(scores.sum(), (px, py))
    _assert_close(px_grad, g_px)
    _assert_close(py_grad, g_py)
    # Every path leaves each frame t < T_b through exactly one blank, so the
    # blank occupation summed over s is 1 on real frames and 0 on padding.
    per_frame = py_grad.sum(dim=1)
    for b, t_end in enumerate([6, 3, 2]):
        _assert_close(per_frame[b, :t_end], torch.ones(t_end, dtype=F64, device=device))
        assert (per_frame[b, t_end:] == 0).all()


def test_neg_inf_transitions_get_zero_gradient_and_no_nan() -> None:
    B, S, T = 2, 3, 4
    px = _randn(B, S, T + 1, seed=11, device="cpu")
    py = _randn(B, S + 1, T, seed=12, device="cpu")
    px[:, 1, 0] = float("-inf")
    py[0, 2, :] = float("-inf")
    px.requires_grad_()
    py.requires_grad_()
    scores = mutual_information_recursion(px, py)
    g_px, g_py = torch.autograd.grad(scores.sum(), (px, py))
    _assert_close(scores, _naive_mi(px, py, _boundary([S, S], [T, T])))
    assert torch.isfinite(g_px).all() and torch.isfinite(g_py).all()
    assert (g_px[:, 1, 0] == 0).all() and (g_py[0, 2, :] == 0).all()


def test_impossible_sequence_gives_inf_loss_and_zero_grad() -> None:
    # All blanks of row s=0 forbidden and px[:, :, :] forbidden: no path at all.
    px = torch.full((1, 1, 3), float("-inf"), dtype=F64, requires_grad=True)
    py = torch.zeros(1, 2, 2, dtype=F64, requires_grad=True)
    scores = mutual_information_recursion(px, py)
    assert torch.isneginf(scores).all()
    g_px, g_py = torch.autograd.grad(scores.sum(), (px, py))
    assert (g_px == 0).all() and (g_py == 0).all()


def test_half_precision_inputs_are_computed_in_float32() -> None:
    B, S, T = 2, 5, 40
    px = _randn(B, S, T + 1, seed=13, device="cpu", dtype=torch.float32).log_softmax(dim=1)
    py = _randn(B, S + 1, T, seed=14, device="cpu", dtype=torch.float32).log_softmax(dim=1)
    ref = mutual_information_recursion(px, py)
    px16 = px.half().requires_grad_()
    out = mutual_information_recursion(px16, py.half())
    assert out.dtype == torch.float32
    _assert_close(out, mutual_information_recursion(px.half().float(), py.half().float()))
    _assert_close(out, ref, rtol=1e-3, atol=0.0)
    (g,) = torch.autograd.grad(out.sum(), px16)
    assert g.dtype == torch.float16


def test_half_precision_logits_give_float32_loss_and_half_grads() -> None:
    B, T, S, V = 2, 6, 3, 9
    logits = _randn(B, T, S + 1, V, seed=40, device="cpu", dtype=torch.float32, scale=3.0).half()
    symbols = _symbols(B, S, V, seed=41, device="cpu")
    ranges = torch.arange(S + 1).expand(B, T, S + 1).contiguous()
    ref = rnnt_loss(logits.float(), symbols, BLANK, reduction="none")
    for loss_fn in (
        lambda x: rnnt_loss(x, symbols, BLANK, reduction="none"),
        lambda x: rnnt_loss_pruned(x, symbols, ranges, BLANK, reduction="none"),
    ):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x)
        assert loss.dtype == torch.float32
        _assert_close(loss, ref)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        assert grad.dtype == torch.float16 and torch.isfinite(grad).all()


# ----------------------------------------------------------------------------
# (1) pruned loss == full loss when nothing is pruned
# ----------------------------------------------------------------------------

_PRUNE_CASES = [
    # (B, T, S, V, S_b, T_b)
    (3, 7, 4, 6, [4, 2, 0], [7, 5, 3]),
    (2, 1, 3, 5, [3, 1], [1, 1]),
    (2, 5, 0, 4, [0, 0], [5, 2]),
    (1, 1, 0, 3, [0], [1]),
]


def _pruned_and_full(
    am: Tensor, lm: Tensor, symbols: Tensor, boundary: Tensor, s_range: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(pruned loss, full loss, ranges) for the same joiner, reduction="none"."""
    _, (px_grad, py_grad) = rnnt_loss_simple(
        lm.detach(), am.detach(), symbols, BLANK, boundary=boundary, reduction="none", return_grad=True
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    am_pruned, lm_pruned = do_rnnt_pruning(am, lm, ranges)
    pruned = rnnt_loss_pruned(_joiner(am_pruned, lm_pruned), symbols, ranges, BLANK, boundary, reduction="none")
    full = rnnt_loss(_joiner(am.unsqueeze(2), lm.unsqueeze(1)), symbols, BLANK, boundary, reduction="none")
    return pruned, full, ranges


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B,T,S,V,S_b,T_b", _PRUNE_CASES)
@pytest.mark.parametrize("extra", [0, 3])
def test_pruned_equals_full_when_nothing_is_pruned(
    device: str, B: int, T: int, S: int, V: int, S_b: list[int], T_b: list[int], extra: int
) -> None:
    am = _randn(B, T, V, seed=15, device=device).requires_grad_()
    lm = _randn(B, S + 1, V, seed=16, device=device).requires_grad_()
    symbols = _symbols(B, S, V, seed=17, device=device)
    boundary = _boundary(S_b, T_b, device)

    pruned, full, ranges = _pruned_and_full(am, lm, symbols, boundary, s_range=S + 1 + extra)
    # s_range >= S + 1 keeps every symbol position on every frame.
    assert torch.equal(ranges, torch.arange(S + 1, device=device).expand(B, T, S + 1))
    _assert_close(pruned, full)
    weights = torch.arange(1, B + 1, dtype=F64, device=device)  # distinct per-sequence grads
    g_pruned = torch.autograd.grad((pruned * weights).sum(), (am, lm))
    g_full = torch.autograd.grad((full * weights).sum(), (am, lm))
    for a, b in zip(g_pruned, g_full):
        _assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_pruned_loss_is_an_upper_bound_of_full_loss(device: str) -> None:
    B, T, S, V = 3, 12, 6, 7
    am = _randn(B, T, V, seed=18, device=device)
    lm = _randn(B, S + 1, V, seed=19, device=device)
    symbols = _symbols(B, S, V, seed=20, device=device)
    boundary = _boundary([6, 4, 6], [12, 9, 6], device)
    pruned, full, _ = _pruned_and_full(am, lm, symbols, boundary, s_range=3)
    # The pruned lattice keeps a subset of the paths with the same probabilities.
    assert torch.isfinite(pruned).all()
    assert (pruned >= full - 1e-10).all()
    assert (pruned > full + 1e-6).any()


def test_prune_ranges_are_valid_windows() -> None:
    B, T, S, V, s_range = 4, 20, 9, 8, 4
    am = _randn(B, T, V, seed=21, device="cpu")
    lm = _randn(B, S + 1, V, seed=22, device="cpu")
    symbols = _symbols(B, S, V, seed=23, device="cpu")
    S_b, T_b = [9, 5, 0, 9], [20, 11, 6, 4]
    boundary = _boundary(S_b, T_b)
    _, (px_grad, py_grad) = rnnt_loss_smoothed(
        lm, am, symbols, BLANK, 0.25, 0.0, boundary, reduction="sum", return_grad=True
    )
    ranges = get_rnnt_prune_ranges(px_grad, py_grad, boundary, s_range)
    assert ranges.shape == (B, T, s_range) and ranges.dtype == torch.int64
    assert torch.equal(ranges - ranges[:, :, :1], torch.arange(s_range).expand(B, T, s_range))
    start = ranges[:, :, 0]
    assert (start[:, 0] == 0).all()
    steps = start[:, 1:] - start[:, :-1]
    assert (steps >= 0).all() and (steps <= s_range - 1).all()
    for b in range(B):
        # The last real frame's window contains end_symbol.
        assert start[b, T_b[b] - 1] <= S_b[b] <= ranges[b, T_b[b] - 1, -1]


def test_prune_ranges_raise_too_small_s_range_with_warning() -> None:
    # 6 symbols in 2 frames need windows of at least (6-1)//2 + 2 = 4.
    px_grad = torch.zeros(1, 6, 3)
    py_grad = torch.zeros(1, 7, 2)
    with pytest.warns(UserWarning, match="s_range"):
        ranges = get_rnnt_prune_ranges(px_grad, py_grad, _boundary([6], [2]), 2)
    assert ranges.shape == (1, 2, 4)


# ----------------------------------------------------------------------------
# (4) simple / smoothed loss == full loss of the additive ("linear") joiner
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_simple_and_unsmoothed_losses_equal_full_loss_of_linear_joiner(device: str) -> None:
    B, T, S, V = 3, 6, 4, 7
    am = _randn(B, T, V, seed=24, device=device, scale=3.0).requires_grad_()
    lm = _randn(B, S + 1, V, seed=25, device=device, scale=3.0).requires_grad_()
    symbols = _symbols(B, S, V, seed=26, device=device)
    boundary = _boundary([4, 0, 2], [6, 3, 1], device)

    full, (fx, fy) = rnnt_loss(
        am.unsqueeze(2) + lm.unsqueeze(1), symbols, BLANK, boundary, reduction="none", return_grad=True
    )
    simple, (sx, sy) = rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none", return_grad=True)
    smoothed = rnnt_loss_smoothed(lm, am, symbols, BLANK, 0.0, 0.0, boundary, reduction="none")
    _assert_close(simple, full)
    _assert_close(smoothed, full)
    _assert_close(sx, fx)
    _assert_close(sy, fy)
    g_full = torch.autograd.grad(full.sum(), (am, lm))
    g_simple = torch.autograd.grad(simple.sum(), (am, lm))
    for a, b in zip(g_simple, g_full):
        _assert_close(a, b)


def test_smoothing_changes_the_loss_and_stays_finite() -> None:
    B, T, S, V = 2, 6, 3, 5
    am = _randn(B, T, V, seed=27, device="cpu")
    lm = _randn(B, S + 1, V, seed=28, device="cpu")
    symbols = _symbols(B, S, V, seed=29, device="cpu")
    plain = rnnt_loss_simple(lm, am, symbols, BLANK, reduction="none")
    for lm_scale, am_scale in [(0.25, 0.0), (0.0, 0.25), (0.1, 0.1)]:
        smoothed = rnnt_loss_smoothed(lm, am, symbols, BLANK, lm_scale, am_scale, reduction="none")
        assert torch.isfinite(smoothed).all()
        assert not torch.allclose(smoothed, plain)


def test_get_rnnt_logprobs_blank_and_symbol_probs_are_normalised() -> None:
    # exp(py) + sum over all symbols of exp(symbol logprob) = 1 per cell; with
    # a vocabulary of {blank, one symbol} that is exp(px) + exp(py) = 1.
    B, T, S = 2, 4, 3
    am = _randn(B, T, 2, seed=30, device="cpu")
    lm = _randn(B, S + 1, 2, seed=31, device="cpu")
    symbols = torch.ones(B, S, dtype=torch.int64)
    px, py = get_rnnt_logprobs(lm, am, symbols, BLANK)
    assert px.shape == (B, S, T + 1) and py.shape == (B, S + 1, T)
    assert torch.isneginf(px[:, :, T]).all()
    _assert_close(px[:, :, :T].exp() + py[:, :S].exp(), torch.ones(B, S, T, dtype=F64))


# ----------------------------------------------------------------------------
# (5) reductions
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda lm, am, sym, r: rnnt_loss_simple(lm, am, sym, BLANK, reduction=r),
        lambda lm, am, sym, r: rnnt_loss_smoothed(lm, am, sym, BLANK, 0.2, 0.1, reduction=r),
        lambda lm, am, sym, r: rnnt_loss(am.unsqueeze(2) + lm.unsqueeze(1), sym, BLANK, reduction=r),
    ],
    ids=["simple", "smoothed", "full"],
)
def test_reductions(loss_fn: Callable[..., Tensor]) -> None:
    B, T, S, V = 3, 5, 2, 4
    am = _randn(B, T, V, seed=32, device="cpu")
    lm = _randn(B, S + 1, V, seed=33, device="cpu")
    symbols = _symbols(B, S, V, seed=34, device="cpu")
    per_seq = loss_fn(lm, am, symbols, "none")
    assert per_seq.shape == (B,) and (per_seq > 0).all()
    _assert_close(loss_fn(lm, am, symbols, "sum"), per_seq.sum())
    _assert_close(loss_fn(lm, am, symbols, "mean"), per_seq.mean())
    with pytest.raises(ValueError, match="reduction"):
        loss_fn(lm, am, symbols, "batchmean")


def test_pruned_reductions_and_return_grad() -> None:
    B, T, S, V = 2, 5, 3, 4
    logits = _randn(B, T, S + 1, V, seed=35, device="cpu")
    symbols = _symbols(B, S, V, seed=36, device="cpu")
    ranges = torch.arange(S + 1).expand(B, T, S + 1).contiguous()
    per_seq, (px_grad, py_grad) = rnnt_loss_pruned(logits, symbols, ranges, BLANK, reduction="none", return_grad=True)
    _assert_close(per_seq, rnnt_loss(logits, symbols, BLANK, reduction="none"))
    _assert_close(rnnt_loss_pruned(logits, symbols, ranges, BLANK, reduction="sum"), per_seq.sum())
    _assert_close(rnnt_loss_pruned(logits, symbols, ranges, BLANK), per_seq.mean())
    assert px_grad.shape == (B, S, T + 1) and py_grad.shape == (B, S + 1, T)


# ----------------------------------------------------------------------------
# (6) argument checking
# ----------------------------------------------------------------------------


def test_bad_arguments_raise_value_error() -> None:
    B, T, S, V = 2, 4, 3, 5
    am = torch.randn(B, T, V)
    lm = torch.randn(B, S + 1, V)
    sym = torch.randint(1, V, (B, S))
    with pytest.raises(ValueError, match="lm"):
        rnnt_loss_simple(lm[0], am, sym, BLANK)
    with pytest.raises(ValueError, match="agree"):
        rnnt_loss_simple(lm[:, :, :-1], am, sym, BLANK)
    with pytest.raises(ValueError, match="symbols"):
        rnnt_loss_simple(lm, am, sym[:, :-1], BLANK)
    with pytest.raises(ValueError, match="int64"):
        rnnt_loss_simple(lm, am, sym.int(), BLANK)
    with pytest.raises(ValueError, match="termination_symbol"):
        rnnt_loss_simple(lm, am, sym, V)
    with pytest.raises(ValueError, match="boundary"):
        rnnt_loss_simple(lm, am, sym, BLANK, boundary=torch.zeros(B, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="boundary"):
        rnnt_loss_simple(lm, am, sym, BLANK, boundary=_boundary([S + 1, S], [T, T]))
    with pytest.raises(ValueError, match="rnnt_type"):
        rnnt_loss_simple(lm, am, sym, BLANK, rnnt_type="modified")
    with pytest.raises(ValueError, match="logits"):
        rnnt_loss(torch.randn(B, T, V), sym, BLANK)
    with pytest.raises(ValueError, match="symbols"):
        rnnt_loss(torch.randn(B, T, S, V), sym, BLANK)
    with pytest.raises(ValueError, match="modified"):
        mutual_information_recursion(torch.randn(B, S, T), torch.randn(B, S + 1, T))
    with pytest.raises(ValueError, match="py"):
        mutual_information_recursion(torch.randn(B, S, T + 1), torch.randn(B, S, T))
    with pytest.raises(ValueError, match="dtype"):
        mutual_information_recursion(torch.randn(B, S, T + 1), torch.randn(B, S + 1, T, dtype=F64))

    ranges = torch.arange(3).expand(B, T, 3).contiguous()
    with pytest.raises(ValueError, match="ranges"):
        rnnt_loss_pruned(torch.randn(B, T, 2, V), sym, ranges, BLANK)
    with pytest.raises(ValueError, match="ranges"):
        rnnt_loss_pruned(torch.randn(B, T, 3, V), sym, ranges + 2, BLANK)  # beyond S
    with pytest.raises(ValueError, match="ranges"):
        rnnt_loss_pruned(torch.randn(B, T, 3, V), sym, ranges * 2, BLANK)  # not consecutive
    with pytest.raises(ValueError, match="s_range"):
        get_rnnt_prune_ranges(torch.zeros(B, S, T + 1), torch.zeros(B, S + 1, T), None, 0)
    with pytest.raises(ValueError, match="px_grad"):
        get_rnnt_prune_ranges(torch.zeros(B, S, T), torch.zeros(B, S + 1, T), None, 2)
    with pytest.raises(ValueError, match="disagree"):
        do_rnnt_pruning(torch.randn(B, T + 1, V), lm, ranges)
