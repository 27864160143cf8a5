"""CTC prefix beam search and CTC likelihoods against brute-force enumeration of alignments."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dsr.decoding.context_graph import ContextGraph
from dsr.decoding.ctc_prefix import ctc_log_likelihood, ctc_prefix_beam_search
from dsr.decoding.greedy import ctc_greedy_search

torch.set_num_threads(1)


def brute_force(log_probs: torch.Tensor, blank: int) -> dict[tuple[int, ...], float]:
    """log P(labels) for every label sequence: log-sum over all (T,) alignments collapsing to it."""
    t_len, vocab = log_probs.shape
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=t_len):
        labels = tuple(s for i, s in enumerate(path) if s != blank and (i == 0 or s != path[i - 1]))
        lp = sum(float(log_probs[i, s]) for i, s in enumerate(path))
        prev = totals.get(labels, -math.inf)
        m = max(prev, lp)
        totals[labels] = m + math.log(math.exp(prev - m) + math.exp(lp - m))
    return totals


def random_posteriors(n: int, t: int, v: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(n, t, v, generator=g, dtype=torch.float64)).log_softmax(-1)


@pytest.mark.parametrize("t,v,blank,seed", [(1, 2, 0, 0), (2, 3, 0, 1), (3, 3, 1, 2), (4, 3, 0, 3), (4, 2, 1, 4)])
def test_unpruned_nbest_equals_brute_force(t: int, v: int, blank: int, seed: int) -> None:
    lp = random_posteriors(1, t, v, seed)
    exact = brute_force(lp[0], blank)
    # A beam larger than the number of label sequences prunes nothing: scores are exact.
    beam = len(exact) + 1
    (hyps,) = ctc_prefix_beam_search(lp, torch.tensor([t]), beam_size=beam, nbest=len(exact), blank=blank)
    assert {tuple(h.tokens) for h in hyps} == {k for k, p in exact.items() if p > -math.inf}
    for h in hyps:
        assert h.am_score == pytest.approx(exact[tuple(h.tokens)], abs=1e-9)
        assert h.ctc_score == h.am_score and h.context_score == 0.0
        assert len(h.timestamps) == len(h.tokens) and all(0 <= s < t for s in h.timestamps)
        assert h.timestamps == sorted(h.timestamps)
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)


def test_small_beam_nbest_is_sorted_unique_and_respects_lengths() -> None:
    lp = random_posteriors(3, 12, 5, seed=7).float()
    lens = torch.tensor([12, 7, 0])
    out = ctc_prefix_beam_search(lp, lens, beam_size=3, nbest=2)
    assert [len(h) for h in out] == [2, 2, 1]
    assert out[2][0].tokens == [] and out[2][0].am_score == 0.0  # zero frames: the empty prefix, prob 1
    for hyps, n in zip(out[:2], (12, 7)):
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
        assert hyps[0].score >= hyps[1].score
        assert all(s < n for h in hyps for s in h.timestamps)
    # Only the first `len` frames count: decoding the truncated posteriors gives the same.
    (alone,) = ctc_prefix_beam_search(lp[1:2, :7], torch.tensor([7]), beam_size=3, nbest=2)
    assert [h.tokens for h in alone] == [h.tokens for h in out[1]]


def test_beam_one_on_peaked_posteriors_equals_greedy() -> None:
    # With one dominant token per frame, the best path and the best prefix coincide.
    ids = torch.tensor([[0, 3, 3, 0, 3, 1, 1, 0, 2, 0]])
    lp = torch.nn.functional.one_hot(ids, 4).float().mul(8).log_softmax(-1)
    (hyps,) = ctc_prefix_beam_search(lp, torch.tensor([10]), beam_size=1)
    assert hyps[0].tokens == ctc_greedy_search(lp, torch.tensor([10]))[0] == [3, 3, 1, 2]
    assert hyps[0].timestamps == [1, 4, 5, 8]


def test_hotword_promotes_a_competing_prefix() -> None:
    # Frame posteriors favour token 1 over token 2 at the middle frame.
    probs = torch.tensor([[[0.9, 0.05, 0.05], [0.1, 0.6, 0.3], [0.9, 0.05, 0.05]]])
    lp = probs.log()
    # A beam that holds every prefix: the bonus changes the ranking, not the CTC scores.
    (plain,) = ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=16)
    assert plain[0].tokens == [1]
    graph = ContextGraph([[2]], default_score=1.0)
    (biased,) = ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=16, context_graph=graph)
    assert biased[0].tokens == [2] and biased[0].context_score == 1.0
    assert biased[0].am_score == pytest.approx(next(h.am_score for h in plain if h.tokens == [2]))
    assert all(h.context_score == 0.0 for h in biased if 2 not in h.tokens)


def test_ctc_log_likelihood_matches_brute_force() -> None:
    lp = random_posteriors(2, 4, 3, seed=11).float()
    exact = [brute_force(lp[0].double(), 0), brute_force(lp[1, :3].double(), 0)]
    hyps = [[[1], [2, 1], [1, 1], []], [[2, 2], [1, 2, 1, 2]]]  # the last cannot fit in 3 frames
    got = ctc_log_likelihood(lp, torch.tensor([4, 3]), hyps)
    assert got[0] == pytest.approx([exact[0][tuple(h)] for h in hyps[0]], abs=1e-4)
    assert got[1][0] == pytest.approx(exact[1][(2, 2)], abs=1e-4) and got[1][1] == -math.inf
    assert ctc_log_likelihood(lp, torch.tensor([4, 3]), [[], []]) == [[], []]


def test_bad_arguments_raise() -> None:
    lp = random_posteriors(1, 3, 3, seed=0)
    with pytest.raises(ValueError, match="beam_size"):
        ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=0)
    with pytest.raises(ValueError, match="nbest"):
        ctc_prefix_beam_search(lp, torch.tensor([3]), beam_size=2, nbest=3)
    with pytest.raises(ValueError, match=r"\(N, T, V\)"):
        ctc_prefix_beam_search(lp[0], torch.tensor([3]))
    with pytest.raises(ValueError, match="other than blank"):
        ctc_log_likelihood(lp, torch.tensor([3]), [[[0, 1]]])
