"""CTC prefix beam search (log space) and the CTC log-likelihood of given token sequences."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dsr.decoding.beam_search import Hypothesis, log_add, resolve_nbest
from dsr.decoding.context_graph import ContextGraph, ContextState

NEG_INF = -math.inf


@dataclass
class _Prefix:
    """A prefix's probability of ending in blank (``pb``) or in its last token (``pnb``).

    ``best`` is the largest single contribution to it in the current frame, which
    decides whose timestamps the prefix keeps (entries are rebuilt every frame).
    """

    pb: float = NEG_INF
    pnb: float = NEG_INF
    timestamps: list[int] = field(default_factory=list)
    best: float | None = None  # None until the first contribution
    context_score: float = 0.0
    context_state: ContextState | None = None

    @property
    def total(self) -> float:
        return log_add(self.pb, self.pnb)

    def add(self, blank_end: bool, logp: float, timestamps: list[int]) -> None:
        if blank_end:
            self.pb = log_add(self.pb, logp)
        else:
            self.pnb = log_add(self.pnb, logp)
        if self.best is None or logp > self.best:
            self.best, self.timestamps = logp, timestamps


Beam = dict[tuple[int, ...], _Prefix]


def _entry(nxt: Beam, beam: Beam, graph: ContextGraph | None, prefix: tuple[int, ...], parent: _Prefix) -> _Prefix:
    """The next-frame entry of ``prefix``, created on first use.  The hotword score only
    depends on the tokens: a prefix already in the beam keeps its own, a new one extends
    its parent's by the last token."""
    e = nxt.get(prefix)
    if e is not None:
        return e
    old = beam.get(prefix)
    if old is not None:
        e = _Prefix(context_score=old.context_score, context_state=old.context_state)
    else:
        e = _Prefix(context_score=parent.context_score, context_state=parent.context_state)
        if graph is not None and parent.context_state is not None:
            delta, e.context_state, _ = graph.forward_one_step(parent.context_state, prefix[-1])
            e.context_score += delta
    nxt[prefix] = e
    return e


def _search_one(
    log_probs: list[list[float]],
    top_tokens: list[list[int]],
    blank: int,
    beam_size: int,
    graph: ContextGraph | None,
) -> Beam:
    """Prefix beam search over one utterance's (T, V) posteriors and (T, K) candidate tokens."""
    beam: Beam = {(): _Prefix(pb=0.0, context_state=graph.root if graph is not None else None)}
    for t, (frame, cands) in enumerate(zip(log_probs, top_tokens)):
        nxt: Beam = {}
        for prefix, p in beam.items():
            for c in cands:
                lp = frame[c]
                if c == blank:
                    # Blank keeps the prefix; it can follow either ending.
                    _entry(nxt, beam, graph, prefix, p).add(True, p.total + lp, p.timestamps)
                elif prefix and c == prefix[-1]:
                    # A repeat without a blank in between collapses into the same token...
                    _entry(nxt, beam, graph, prefix, p).add(False, p.pnb + lp, p.timestamps)
                    # ...and after a blank it is a new token.
                    _entry(nxt, beam, graph, prefix + (c,), p).add(False, p.pb + lp, p.timestamps + [t])
                else:
                    _entry(nxt, beam, graph, prefix + (c,), p).add(False, p.total + lp, p.timestamps + [t])
        ranked = sorted(nxt.items(), key=lambda kv: kv[1].total + kv[1].context_score, reverse=True)
        beam = dict(ranked[:beam_size])
    return beam


@torch.no_grad()
def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lens: torch.Tensor,
    beam_size: int = 4,
    nbest: int | None = None,
    blank: int = 0,
    context_graph: ContextGraph | None = None,
) -> list[list[Hypothesis]]:
    """CTC prefix beam search.

    Each frame only extends prefixes with that frame's ``beam_size`` most probable
    tokens (WeNet's pruning), so with ``beam_size >= V`` and a beam large enough to
    hold every prefix the scores are the exact CTC probabilities.

    Args:
        log_probs: (N, T, V) CTC log-posteriors.
        lens: (N,) valid frames per utterance.
        beam_size: prefixes kept after each frame.
        nbest: hypotheses returned per utterance (default ``beam_size``, at most ``beam_size``).
        blank: the blank id.
        context_graph: optional hotword graph; its bonus is part of the ranking score.

    Returns:
        N lists of :class:`Hypothesis`, best first, with ``am_score == ctc_score`` = the
        prefix's CTC log-probability (summed over the alignments the beam kept), and
        ``timestamps`` the frame where each token starts on the best contribution.
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    if lens.shape != (log_probs.size(0),):
        raise ValueError(f"lens must be ({log_probs.size(0)},), got {tuple(lens.shape)}")
    if not 0 <= blank < log_probs.size(2):
        raise ValueError(f"blank must be in [0, {log_probs.size(2)}), got {blank}")
    nbest = resolve_nbest(beam_size, nbest)
    lp = log_probs.detach().double().cpu()
    top = lp.topk(min(beam_size, lp.size(2)), dim=2).indices  # (N, T, K)
    out: list[list[Hypothesis]] = []
    for i, n in enumerate(lens.tolist()):
        beam = _search_one(lp[i, :n].tolist(), top[i, :n].tolist(), blank, beam_size, context_graph)
        hyps = []
        for prefix, p in beam.items():
            ctx = p.context_score
            if context_graph is not None and p.context_state is not None:
                ctx += context_graph.finalize(p.context_state)
            score = p.total
            hyps.append(Hypothesis(list(prefix), score, list(p.timestamps), ctx, ctc_score=score))
        hyps.sort(key=lambda h: h.score, reverse=True)
        out.append(hyps[:nbest])
    return out


@torch.no_grad()
def ctc_log_likelihood(
    log_probs: torch.Tensor, lens: torch.Tensor, hyps: list[list[list[int]]], blank: int = 0
) -> list[list[float]]:
    """Exact CTC log-likelihood of each hypothesis (e.g. a transducer n-best list).

    Args:
        log_probs: (N, T, V) CTC log-posteriors.
        lens: (N,) valid frames.
        hyps: N lists of token sequences (any number per utterance).

    Returns:
        The same nesting of floats; ``-inf`` for a sequence that does not fit in its
        frames (torch's ``zero_infinity`` is off on purpose: 0 would read as certain).
    """
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got {tuple(log_probs.shape)}")
    if len(hyps) != log_probs.size(0) or lens.shape != (log_probs.size(0),):
        raise ValueError(f"need one hypothesis list and one length per utterance ({log_probs.size(0)})")
    rows = [i for i, hs in enumerate(hyps) for _ in hs]
    if not rows:
        return [[] for _ in hyps]
    seqs = [list(s) for hs in hyps for s in hs]
    if any(tok == blank or not 0 <= tok < log_probs.size(2) for s in seqs for tok in s):
        raise ValueError(f"hypotheses must hold token ids in [0, {log_probs.size(2)}) other than blank={blank}")
    idx = torch.tensor(rows, device=log_probs.device)
    # Replicate each utterance's posteriors once per hypothesis: one batched ctc_loss call.
    lp = log_probs.float()[idx].transpose(0, 1)  # (T, H, V)
    targets = torch.tensor([tok for s in seqs for tok in s], dtype=torch.long, device=log_probs.device)
    nll = F.ctc_loss(
        lp,
        targets,
        lens.to(log_probs.device)[idx].long(),
        torch.tensor([len(s) for s in seqs], dtype=torch.long, device=log_probs.device),
        blank=blank,
        reduction="none",
        zero_infinity=False,
    )
    flat = (-nll).tolist()
    out, k = [], 0
    for hs in hyps:
        out.append(flat[k : k + len(hs)])
        k += len(hs)
    return out
