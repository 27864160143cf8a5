"""dsr's RNN-T loss backend agrees with fast_rnnt's on the same inputs.

Skipped unless fast_rnnt is importable (build it with tools/install_fast_rnnt.sh).
fast_rnnt requires S >= 1 for every sequence, so U=0 is covered only by
tests/test_rnnt_loss.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from dsr.losses import RNNT_BACKENDS, get_rnnt_backend

try:
    import fast_rnnt
except ImportError:
    pytest.skip("fast_rnnt not installed; run tools/install_fast_rnnt.sh", allow_module_level=True)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and fast_rnnt.with_cuda() else [])
BLANK = 0
B, T, S, V = 4, 30, 8, 12
# Ragged batch; one sequence as short in frames as it is in symbols.
S_B: list[int] = [8, 5, 1, 8]
T_B: list[int] = [30, 20, 7, 8]

DSR = get_rnnt_backend("dsr")
FT = get_rnnt_backend("fast_rnnt")


def _inputs(device: str, dtype: torch.dtype, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    am = torch.randn(B, T, V, generator=g, dtype=dtype).to(device)
    lm = torch.randn(B, S + 1, V, generator=g, dtype=dtype).to(device)
    symbols = torch.randint(1, V, (B, S), generator=g).to(device)
    return am, lm, symbols


def _boundary(ragged: bool, device: str) -> Tensor | None:
    if not ragged:
        return None
    return torch.tensor([[0, 0, s, t] for s, t in zip(S_B, T_B)], dtype=torch.int64, device=device)


def _close(a: Tensor, b: Tensor, rtol: float = 1e-9, atol: float = 1e-9) -> None:
    torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=atol)


def test_backend_registry() -> None:
    assert RNNT_BACKENDS == ("dsr", "fast_rnnt", "k2")
    assert FT.rnnt_loss_pruned is fast_rnnt.rnnt_loss_pruned
    with pytest.raises(ValueError, match="auto"):
        get_rnnt_backend("auto")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ragged", [False, True])
def test_simple_loss_and_occupations_agree(device: str, ragged: bool) -> None:
    am, lm, symbols = _inputs(device, torch.float64)
    boundary = _boundary(ragged, device)
    ours, (ox, oy) = DSR.rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none", return_grad=True)
    ref, (rx, ry) = FT.rnnt_loss_simple(lm, am, symbols, BLANK, boundary, reduction="none", return_grad=True)
    _close(ours, ref)
    _close(ox, rx)
    _close(oy, ry)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ragged", [False, True])
def test_smoothed_loss_with_delay_penalty_agrees(device: str, ragged: bool) -> None:
    # float32: fast_rnnt computes the ragged delay-penalty offsets in float32
    # even for float64 inputs, so float64 would only compare its rounding.
    am, lm, symbols = _inputs(device, torch.float32, seed=1)
    am.requires_grad_()
    lm.requires_grad_()
    boundary = _boundary(ragged, device)
    kwargs = dict(lm_only_scale=0.25, am_only_scale=0.1, boundary=boundary, delay_penalty=0.05, reduction="sum")
    ours = DSR.rnnt_loss_smoothed(lm, am, symbols, BLANK, **kwargs)
    ref = FT.rnnt_loss_smoothed(lm, am, symbols, BLANK, **kwargs)
    _close(ours, ref, rtol=1e-5, atol=1e-4)
    g_ours = torch.autograd.grad(ours, (am, lm))
    g_ref = torch.autograd.grad(ref, (am, lm))
    for a, b in zip(g_ours, g_ref):
        _close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("s_range", [2, 4, 5, S + 1])
@pytest.mark.filterwarnings("ignore:get_rnnt_prune_ranges")
def test_prune_ranges_and_pruned_loss_agree(device: str, ragged: bool, s_range: int) -> None:
    am, lm, symbols = _inputs(device, torch.float64, seed=2)
    boundary = _boundary(ragged, device)
    full_boundary = boundary if ragged else torch.tensor([[0, 0, S, T]] * B, device=device)
    _, (px_grad, py_grad) = FT.rnnt_loss_smoothed(
        lm, am, symbols, BLANK, 0.25, 0.0, boundary, reduction="sum", return_grad=True
    )
    # Same occupations in, same ranges out (including fast_rnnt's raising of
    # too-small s_range values for the short sequences).
    ours_r = DSR.get_rnnt_prune_ranges(px_grad, py_grad, full_boundary, s_range)
    ref_r = FT.get_rnnt_prune_ranges(px_grad, py_grad, full_boundary, s_range)
    assert torch.equal(ours_r, ref_r)

    am_p, lm_p = DSR.do_rnnt_pruning(am, lm, ours_r)
    ref_am_p, ref_lm_p = FT.do_rnnt_pruning(am, lm, ref_r)
    assert torch.equal(am_p, ref_am_p) and torch.equal(lm_p, ref_lm_p)

    logits = (torch.tanh(am_p + lm_p) * 3).requires_grad_()
    ours, (ox, oy) = DSR.rnnt_loss_pruned(logits, symbols, ours_r, BLANK, boundary, reduction="none", return_grad=True)
    ref, (rx, ry) = FT.rnnt_loss_pruned(logits, symbols, ref_r, BLANK, boundary, reduction="none", return_grad=True)
    _close(ours, ref)
    _close(ox, rx)
    _close(oy, ry)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    _close(g_ours, g_ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ragged", [False, True])
def test_full_loss_and_recursion_agree(device: str, ragged: bool) -> None:
    am, lm, symbols = _inputs(device, torch.float64, seed=3)
    boundary = _boundary(ragged, device)
    logits = (am.unsqueeze(2) * lm.unsqueeze(1)).requires_grad_()
    ours = DSR.rnnt_loss(logits, symbols, BLANK, boundary, reduction="none")
    ref = FT.rnnt_loss(logits, symbols, BLANK, boundary, reduction="none")
    _close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours.sum(), logits)
    (g_ref,) = torch.autograd.grad(ref.sum(), logits)
    _close(g_ours, g_ref)

    g = torch.Generator().manual_seed(4)
    px = torch.randn(B, S, T + 1, generator=g, dtype=torch.float64).to(device)
    py = torch.randn(B, S + 1, T, generator=g, dtype=torch.float64).to(device)
    begins = torch.tensor([[0, 0, 8, 30], [2, 3, 5, 20], [1, 1, 1, 7], [0, 5, 8, 8]], device=device)
    ours_mi, (ox, oy) = DSR.mutual_information_recursion(px, py, begins, return_grad=True)
    ref_mi, (rx, ry) = FT.mutual_information_recursion(px, py, begins, return_grad=True)
    _close(ours_mi, ref_mi)
    _close(ox, rx)
    _close(oy, ry)
