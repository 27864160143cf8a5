"""Modified beam search for the transducer (icefall's ``modified_beam_search``).

At most one symbol per encoder frame, so every hypothesis advances one frame per
step and the whole batch can be searched in lock-step: each step runs the predictor
and joiner once on all live hypotheses of all utterances.  Hypotheses are keyed by
their token sequence; two paths that reach the same sequence are merged by adding
their probabilities (log-add), which is what makes the n-best list unique.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dsr.decoding.context_graph import ContextGraph, ContextState
from dsr.lm.ngram import NgramLm
from dsr.models.joiner import Joiner
from dsr.models.predictor import StatelessPredictor
from dsr.models.transducer import HybridTransducer


@dataclass
class Hypothesis:
    """One entry of an n-best list.

    Attributes:
        tokens: token ids, blanks removed.
        am_score: acoustic log-probability of the search (transducer methods: sum of the
            joiner log-probs along the path, log-added over merged paths; CTC methods:
            the CTC log-probability of the prefix).
        timestamps: encoder frame at which each token was emitted (same length as tokens).
        context_score: hotword bonus (0 without a context graph), already finalised.
        ctc_score: CTC log-likelihood of ``tokens``, when known (None otherwise).
        attention_score: attention-decoder log-probability of ``tokens`` + eos, set by
            attention rescoring (None otherwise).
        source: ``"search"``, or what added it after the search (``"lexicon"``:
            :mod:`dsr.decoding.lexicon_expand`).
        lm_score: the shallow-fusion LM's weighted log-probability of ``tokens`` + ``</s>``
            (``lm_scale`` times the n-gram's; 0 without fusion).
    """

    tokens: list[int]
    am_score: float
    timestamps: list[int]
    context_score: float = 0.0
    ctc_score: float | None = None
    attention_score: float | None = None
    source: str = "search"
    lm_score: float = 0.0

    @property
    def score(self) -> float:
        """The first-pass ranking score: acoustic score plus hotword bonus plus fused LM score."""
        return self.am_score + self.context_score + self.lm_score


@dataclass
class _Hyp:
    """Search state of one hypothesis (tokens as a tuple: it is the merge key)."""

    tokens: tuple[int, ...]
    am_score: float
    timestamps: list[int]
    context_score: float = 0.0
    context_state: ContextState | None = field(default=None, repr=False)
    lm_score: float = 0.0  # weighted, as context_score
    lm_state: tuple[int, ...] = ()

    @property
    def score(self) -> float:
        return self.am_score + self.context_score + self.lm_score


def log_add(a: float, b: float) -> float:
    """``log(exp(a) + exp(b))`` for Python floats (the searches' inner loops; no tensors)."""
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def _add_merged(beam: dict[tuple[int, ...], _Hyp], hyp: _Hyp) -> None:
    """Insert ``hyp``, log-adding into an existing hypothesis with the same tokens.

    The context and LM states and scores depend only on the tokens, so they agree; the
    timestamps of the more probable path are kept.
    """
    old = beam.get(hyp.tokens)
    if old is None:
        beam[hyp.tokens] = hyp
        return
    if hyp.am_score > old.am_score:
        old.timestamps = hyp.timestamps
    old.am_score = log_add(old.am_score, hyp.am_score)


def _finalize(
    beams: list[dict[tuple[int, ...], _Hyp]], nbest: int, graph: ContextGraph | None, fusion: ShallowFusion | None
) -> list[list[Hypothesis]]:
    """Cancel dangling hotword prefixes, end each sentence in the fused LM (``</s>``), sort
    best-first and keep ``nbest`` per utterance."""
    out: list[list[Hypothesis]] = []
    for beam in beams:
        hyps = []
        for h in beam.values():
            ctx = h.context_score
            if graph is not None and h.context_state is not None:
                ctx += graph.finalize(h.context_state)
            lm = h.lm_score + (fusion.end_score(h.lm_state) if fusion is not None else 0.0)
            hyps.append(Hypothesis(list(h.tokens), h.am_score, list(h.timestamps), ctx, lm_score=lm))
        hyps.sort(key=lambda h: h.score, reverse=True)
        out.append(hyps[:nbest])
    return out


def _bonus_row(
    graph: ContextGraph,
    state: ContextState | None,
    vocab: int,
    blank: int,
    cache: dict[ContextState, torch.Tensor],
    unk: int | None = None,
) -> torch.Tensor:
    """(V,) hotword score change of each next token from ``state`` (0 for blank, and ``unk``, which stay)."""
    assert state is not None  # every hypothesis has a state when a graph is given
    row = cache.get(state)
    if row is None:
        default, special = graph.token_deltas(state)
        row = torch.full((vocab,), default, dtype=torch.float64)
        for tok, delta in special.items():
            if tok >= vocab:
                raise ValueError(f"hotword token {tok} is outside the model's vocabulary of {vocab}")
            row[tok] = delta
        row[blank] = 0.0
        if unk is not None:
            row[unk] = 0.0
        cache[state] = row
    return row


@dataclass(frozen=True)
class ShallowFusion:
    """An external token LM added to the beam search's ranking: ``scale`` x its log-probability
    of every emitted token, and of ``</s>`` at the end (icefall's LM shallow fusion, with a
    token n-gram), plus ``token_bonus`` per emitted token.  The bonus is what keeps a large
    scale from deleting words: blank costs the LM nothing, every token costs it something.
    ValueError on a negative scale."""

    lm: NgramLm
    scale: float
    token_bonus: float = 0.0

    def __post_init__(self) -> None:
        if self.scale < 0:
            raise ValueError(f"LM scale must be >= 0, got {self.scale}")

    @property
    def label(self) -> str:
        """What fusion adds to a result's name: ``+ngram<scale>[-bonus<bonus>]``."""
        return f"+ngram{self.scale:g}" + (f"-bonus{self.token_bonus:g}" if self.token_bonus else "")

    def check_vocab(self, vocab: int) -> None:
        """ValueError when the LM's vocabulary is not the model's ``vocab`` (another lang dir)."""
        if self.lm.vocab_size != vocab:
            raise ValueError(f"the n-gram LM has {self.lm.vocab_size} tokens, the model {vocab}: another lang dir")

    def _weighted(self, log_prob: float) -> float:
        # At scale 0 the LM is off, even for tokens it cannot score (0 * -inf would be NaN).
        return self.scale * log_prob if self.scale else 0.0

    def sentence_score(self, tokens: list[int]) -> float:
        """The ``lm_score`` the search gives a hypothesis of ``tokens`` (``</s>`` included)."""
        return self._weighted(self.lm.score(tokens)) + self.token_bonus * len(tokens)

    def end_score(self, state: tuple[int, ...]) -> float:
        """What ending the sentence (``</s>``) after ``state`` adds to ``lm_score``."""
        return self._weighted(float(self.lm.row(state)[-1]))

    def token_row(
        self, state: tuple[int, ...], vocab: int, skip: list[int], cache: dict[tuple[int, ...], torch.Tensor]
    ) -> torch.Tensor:
        """(V,) float64: what emitting each next token after ``state`` adds to a hypothesis's
        ``lm_score`` (``scale`` x the LM's log-prob plus the bonus; 0 for ``skip``, blank and
        <unk>, which emit no token), cached in ``cache`` (one search's) by state: most states
        recur frame after frame."""
        row = cache.get(state)
        if row is None:
            if self.scale:
                row = self.lm.row(state)[:vocab] * self.scale + self.token_bonus
            else:
                row = torch.full((vocab,), self.token_bonus, dtype=torch.float64)
            row[skip] = 0.0
            cache[state] = row
        return row


def _projected_predictor(
    predictor: StatelessPredictor,
    joiner: Joiner,
    contexts: list[tuple[int, ...]],
    cache: dict[tuple[int, ...], torch.Tensor],
    device: torch.device,
) -> torch.Tensor:
    """(H, J) ``decoder_proj(predictor(context))`` of each context, run once per distinct
    context of a search (``cache``): the stateless predictor sees its last ``context_size``
    tokens alone, and most hypotheses keep theirs from one frame to the next (blank).  Kept
    for one search only: across the utterances of a bench run it saved nothing measurable,
    and int8's dynamic quantisation makes a row depend on the batch it was computed in."""
    new = list(dict.fromkeys(c for c in contexts if c not in cache))
    if new:
        ctx_t = torch.tensor(new, dtype=torch.long, device=device)  # (C, ctx)
        cache.update(zip(new, joiner.decoder_proj(predictor(ctx_t, need_pad=False)).squeeze(1)))
    return torch.stack([cache[c] for c in contexts])


def resolve_nbest(beam_size: int, nbest: int | None) -> int:
    """Validate a (beam_size, nbest) pair; ``nbest=None`` means the whole beam."""
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    nbest = beam_size if nbest is None else nbest
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be in [1, beam_size={beam_size}], got {nbest}")
    return nbest


@torch.no_grad()
def modified_beam_search(
    model: HybridTransducer,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    beam_size: int = 4,
    nbest: int | None = None,
    context_graph: ContextGraph | None = None,
    fusion: ShallowFusion | None = None,
) -> list[list[Hypothesis]]:
    """Batched modified beam search.

    Args:
        model: the transducer (uses ``predictor``, ``joiner`` and ``blank_id``).
        encoder_out: (N, T, D) encoder output.
        encoder_lens: (N,) valid frames per utterance.
        beam_size: hypotheses kept per utterance after each frame.  1 gives the same
            tokens as :func:`~dsr.decoding.greedy.transducer_greedy_search`.
        nbest: hypotheses returned per utterance (default ``beam_size``, at most ``beam_size``).
        context_graph: optional hotword graph; its bonus is part of the ranking score
            during the search and is finalised at the end.
        fusion: optional external LM whose weighted score of each token is part of the
            ranking score (``Hypothesis.lm_score``; ``am_score`` stays the transducer's).

    Returns:
        N lists of at most ``nbest`` :class:`Hypothesis`, best first, unique token sequences.
    """
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (N, T, D), got {tuple(encoder_out.shape)}")
    if encoder_lens.shape != (encoder_out.size(0),):
        raise ValueError(f"encoder_lens must be ({encoder_out.size(0)},), got {tuple(encoder_lens.shape)}")
    nbest = resolve_nbest(beam_size, nbest)
    n, t_max, _ = encoder_out.shape
    device = encoder_out.device
    blank = model.blank_id
    # <unk> (when the lang dir's id is set on the model) extends a hypothesis as blank does,
    # as in icefall's and sherpa-onnx's modified beam search.
    unk = model.unk_id
    predictor, joiner = model.transducer_heads()
    ctx_size = predictor.context_size
    vocab = joiner.vocab_size
    root = context_graph.root if context_graph is not None else None
    if fusion is not None:
        fusion.check_vocab(vocab)
    lm_start = fusion.lm.start() if fusion is not None else ()
    beams: list[dict[tuple[int, ...], _Hyp]] = [{(): _Hyp((), 0.0, [], 0.0, root, 0.0, lm_start)} for _ in range(n)]
    skip = [blank] + ([unk] if unk is not None else [])
    enc_proj = joiner.encoder_proj(encoder_out)  # (N, T, J)
    bonus_rows: dict[ContextState, torch.Tensor] = {}
    lm_rows: dict[tuple[int, ...], torch.Tensor] = {}
    dec_rows: dict[tuple[int, ...], torch.Tensor] = {}
    lens = encoder_lens.tolist()

    for t in range(t_max):
        active = [i for i in range(n) if lens[i] > t]
        if not active:
            break
        hyps = [list(beams[i].values()) for i in active]
        flat = [h for hs in hyps for h in hs]
        # The stateless predictor only needs the last ctx_size tokens; blank-padding on
        # the left matches greedy search's initial context (blank's embedding is zero).
        contexts = [((blank,) * ctx_size + h.tokens)[-ctx_size:] for h in flat]
        dec_proj = _projected_predictor(predictor, joiner, contexts, dec_rows, device)  # (H, J)
        if len(active) == 1:
            # One utterance (batch size 1, the embedded and streaming case): no scatter needed.
            logits = joiner(enc_proj[active[0], t].expand(len(flat), -1), dec_proj, project_input=False)  # (H, V)
        else:
            # Each hypothesis's batch row, utterance (index into active) and slot in its beam.
            rows, utt, slot = torch.tensor(
                [(a, j, s) for j, (a, hs) in enumerate(zip(active, hyps)) for s in range(len(hs))], device=device
            ).unbind(1)
            logits = joiner(enc_proj[rows, t], dec_proj, project_input=False)  # (H, V)
        # float64 from here: scores summed over thousands of frames must still rank exactly.
        log_probs = logits.float().log_softmax(dim=-1).double()  # (H, V)
        prev = torch.tensor([h.score for h in flat], dtype=torch.float64, device=device)  # (H,)
        cand = prev[:, None] + log_probs
        if context_graph is not None:
            # Rank each (hypothesis, token) pair with the hotword bonus that token earns
            # (or gives back): ranked on the hypothesis's old score, a token that breaks
            # a partial match would keep its pending bonus for the choice and push a
            # better hypothesis out of the beam, and one that extends a match would not
            # count its reward.
            cand = cand + torch.stack(
                [_bonus_row(context_graph, h.context_state, vocab, blank, bonus_rows, unk) for h in flat]
            ).to(device)
        if fusion is not None:
            cand = cand + torch.stack([fusion.token_row(h.lm_state, vocab, skip, lm_rows) for h in flat]).to(device)
        if len(active) == 1:
            # Flat index hypothesis * V + token, as in the padded layout below.
            top_score, top_idx = cand.reshape(1, -1).topk(min(beam_size, cand.numel()), dim=1)
            top_lp = log_probs.reshape(1, -1).gather(1, top_idx)
        else:
            # Scatter into (A, beam_size, V), -inf where an utterance has fewer hypotheses,
            # so that one topk over the flattened (hypothesis, token) pairs serves the batch.
            padded = torch.full((len(active), beam_size, vocab), -math.inf, dtype=torch.float64, device=device)
            padded[utt, slot] = cand
            padded_lp = torch.zeros_like(padded)
            padded_lp[utt, slot] = log_probs
            top_score, top_idx = padded.reshape(len(active), -1).topk(beam_size, dim=1)  # (A, beam)
            top_lp = padded_lp.reshape(len(active), -1).gather(1, top_idx)
        top_idx_l, top_lp_l, top_score_l = top_idx.tolist(), top_lp.tolist(), top_score.tolist()

        for j, i in enumerate(active):
            new_beam: dict[tuple[int, ...], _Hyp] = {}
            for flat_k, lp, total in zip(top_idx_l[j], top_lp_l[j], top_score_l[j]):
                if total == -math.inf:
                    continue  # padding: fewer (hypothesis, token) pairs than beam_size
                h_idx, tok = divmod(flat_k, vocab)
                h = hyps[j][h_idx]
                if tok == blank or tok == unk:
                    _add_merged(
                        new_beam,
                        _Hyp(
                            h.tokens,
                            h.am_score + lp,
                            h.timestamps,
                            h.context_score,
                            h.context_state,
                            h.lm_score,
                            h.lm_state,
                        ),
                    )
                    continue
                ctx_score, state = h.context_score, h.context_state
                if context_graph is not None and state is not None:
                    delta, state, _ = context_graph.forward_one_step(state, tok)
                    ctx_score += delta
                lm_score, lm_state = h.lm_score, h.lm_state
                if fusion is not None:
                    lm_score += float(lm_rows[lm_state][tok])
                    lm_state = fusion.lm.advance(lm_state, tok)
                _add_merged(
                    new_beam,
                    _Hyp(h.tokens + (tok,), h.am_score + lp, h.timestamps + [t], ctx_score, state, lm_score, lm_state),
                )
            beams[i] = new_beam
    return _finalize(beams, nbest, context_graph, fusion)
