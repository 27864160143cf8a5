"""Whisper-decoder greedy and beam search (dsr.decoding.whisper_search) on a tiny random Whisper.

The batched, KV-cached searches are checked against the same search run one utterance at a
time and against textbook searches that rerun the whole decoder at every step without a
cache.  A random tiny decoder rarely ends a hypothesis, so :class:`EotRampDecoder` adds
``slope * position + intercept`` to the ``eot`` logit: a deterministic function of the
absolute position, identical with or without a cache, that makes hypotheses end after a
content-dependent number of tokens.
"""

from __future__ import annotations

import math

import pytest
import torch

from dsr.decoding.whisper_search import (
    WhisperHypothesis,
    WhisperSearchOptions,
    length_normalized_score,
    whisper_beam_search,
    whisper_greedy_search,
    whisper_sequence_log_probs,
)
from dsr.models.whisper.model import DecoderCache, TextDecoder, Whisper, WhisperDims

torch.set_num_threads(1)

DIMS = WhisperDims(
    n_mels=80,
    n_audio_ctx=64,
    n_audio_state=32,
    n_audio_head=2,
    n_audio_layer=1,
    n_vocab=60,
    n_text_ctx=40,
    n_text_state=32,
    n_text_head=2,
    n_text_layer=2,
)
EOT, SOT, LANG, TRANSCRIBE, NO_TIMESTAMPS = 50, 51, 52, 53, 54
PROMPT = (SOT, LANG, TRANSCRIBE, NO_TIMESTAMPS)
MEL_FRAMES = [128, 90, 60, 40, 100, 75]  # encoder frames 64, 45, 30, 20, 50, 38


class EotRampDecoder(TextDecoder):
    """``TextDecoder`` whose ``eot`` logit gets ``slope * position + intercept`` (see the module
    docstring), and every logit an optional constant (V,) ``bias``."""

    def __init__(self, base: TextDecoder, slope: float, intercept: float, bias: torch.Tensor | None = None) -> None:
        super().__init__(DIMS.n_vocab, DIMS.n_text_ctx, DIMS.n_text_state, DIMS.n_text_head, DIMS.n_text_layer)
        self.load_state_dict(base.state_dict())
        self.slope, self.intercept, self.bias = slope, intercept, bias

    def forward(
        self,
        tokens: torch.Tensor,
        xa: torch.Tensor | None = None,
        xa_lens: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> torch.Tensor:
        offset = cache.length if cache is not None else 0
        logits = super().forward(tokens, xa, xa_lens, cache)
        position = torch.arange(offset, offset + tokens.size(1), dtype=logits.dtype, device=logits.device)
        logits[..., EOT] += self.slope * position + self.intercept
        return logits if self.bias is None else logits + self.bias.to(logits)


def tiny_whisper(seed: int = 0) -> Whisper:
    """A seeded random Whisper whose output depends on the audio and varies along a hypothesis.

    With the default initialisation the tied token embedding dominates the logits (the
    last token repeats forever) and every utterance decodes alike; smaller token
    embeddings, larger positional embeddings, a stronger cross-attention and a larger
    encoder output make the tokens differ between utterances and steps.
    """
    torch.manual_seed(seed)
    model = Whisper(DIMS).eval()
    with torch.no_grad():
        model.decoder.token_embedding.weight.mul_(0.15)
        model.decoder.positional_embedding.normal_(0.0, 1.0)
        model.encoder.ln_post.weight.mul_(3.0)
        for block in model.decoder.blocks:
            block.cross_attn.out.weight.mul_(4.0)
    return model


@pytest.fixture(scope="module")
def model() -> Whisper:
    return tiny_whisper()


@pytest.fixture(scope="module")
def ramp(model: Whisper) -> EotRampDecoder:
    return EotRampDecoder(model.decoder, slope=0.4, intercept=-3.5).eval()


@pytest.fixture(scope="module")
def encoded(model: Whisper) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Each utterance's unpadded encoder output (1, S_i, D), and the padded batch (N, S, D) with (N,) lengths.

    The batch's padding is loud noise: were it not masked, the batched searches would differ.
    """
    gen = torch.Generator().manual_seed(1)
    # A per-utterance spectral profile: random frames alone encode to nearly the same output.
    mels = [
        torch.randn(1, DIMS.n_mels, 1, generator=gen) * 3 + torch.randn(1, DIMS.n_mels, t, generator=gen)
        for t in MEL_FRAMES
    ]
    with torch.no_grad():
        alone = [model.encoder(mel) for mel in mels]
    lens = torch.tensor([a.size(1) for a in alone])
    batch = 5.0 * torch.randn(len(alone), int(lens.max()), DIMS.n_audio_state, generator=gen)
    for i, a in enumerate(alone):
        batch[i, : a.size(1)] = a[0]
    return alone, batch, lens


def options(**kw: object) -> WhisperSearchOptions:
    return WhisperSearchOptions(prompt=PROMPT, eot=EOT, **kw)  # type: ignore[arg-type]


def durations_of(lens: torch.Tensor) -> list[float]:
    return [0.02 * n for n in lens.tolist()]


def limit_of(opts: WhisperSearchOptions, duration: float) -> int:
    return min(opts.max_new_tokens, DIMS.n_text_ctx - len(opts.prompt), math.ceil(round(8.0 * duration, 6)) + 4)


# --------------------------------------------------------------------------------------------
# Textbook searches: the whole decoder rerun on the whole sequence at every step, no cache.


def suppressed_mask(opts: WhisperSearchOptions, first: bool) -> torch.Tensor:
    mask = torch.zeros(DIMS.n_vocab, dtype=torch.bool)
    ids = list(opts.suppress_tokens) + (list(opts.suppress_at_begin) if first else [])
    mask[ids] = True
    if opts.suppress_from is not None:
        mask[opts.suppress_from :] = True
    return mask


def step_log_probs(
    decoder: TextDecoder, xa: torch.Tensor, seqs: list[list[int]], opts: WhisperSearchOptions, first: bool
) -> torch.Tensor:
    """(R, V) log-probabilities of the token after each full sequence (prompt included), no cache."""
    with torch.no_grad():
        logits = decoder(torch.tensor(seqs), xa.expand(len(seqs), -1, -1))[:, -1].float()
    return logits.masked_fill(suppressed_mask(opts, first), float("-inf")).log_softmax(-1)


def reference_greedy(
    decoder: TextDecoder, xa: torch.Tensor, opts: WhisperSearchOptions, limit: int
) -> WhisperHypothesis:
    tokens: list[int] = []
    score = 0.0
    for step in range(limit):
        lp = step_log_probs(decoder, xa, [list(opts.prompt) + tokens], opts, step == 0)[0]
        tok = int(lp.argmax())
        score += float(lp[tok])
        if tok == opts.eot:
            return WhisperHypothesis(tokens, score, True)
        tokens.append(tok)
    return WhisperHypothesis(tokens, score, False)


def reference_beam(
    decoder: TextDecoder, xa: torch.Tensor, opts: WhisperSearchOptions, limit: int
) -> list[WhisperHypothesis]:
    """OpenAI's BeamSearchDecoder on one utterance, written plainly over dicts of sequences."""
    beam = opts.beam_size
    live: dict[tuple[int, ...], float] = {(): 0.0}
    finished: list[WhisperHypothesis] = []
    for step in range(limit):
        prefixes = list(live)
        lp = step_log_probs(decoder, xa, [list(opts.prompt) + list(p) for p in prefixes], opts, step == 0)
        values, ids = lp.topk(beam + 1, dim=-1)
        scores = {p + (int(t),): live[p] + float(v) for p, vs, ts in zip(prefixes, values, ids) for v, t in zip(vs, ts)}
        live = {}
        for seq in sorted(scores, key=lambda s: -scores[s]):
            if seq[-1] == opts.eot:
                if len(finished) < beam:
                    finished.append(WhisperHypothesis(list(seq[:-1]), scores[seq], True))
            else:
                live[seq] = scores[seq]
                if len(live) == beam:
                    break
        if len(finished) >= beam:
            break
    for seq, score in sorted(live.items(), key=lambda kv: -kv[1])[: beam - len(finished)]:
        finished.append(WhisperHypothesis(list(seq), score, False))
    return sorted(finished, key=lambda h: -h.normalized_score(opts.length_penalty))


def assert_same(got: WhisperHypothesis, want: WhisperHypothesis) -> None:
    assert got.tokens == want.tokens
    assert got.finished == want.finished
    assert got.score == pytest.approx(want.score, abs=1e-4)


# --------------------------------------------------------------------------------------------
# (a), (b): batched equals one by one


def test_batched_greedy_equals_one_by_one(ramp: EotRampDecoder, encoded) -> None:
    alone, batch, lens = encoded
    opts = options()
    got = whisper_greedy_search(ramp, batch, lens, None, opts)
    want = [whisper_greedy_search(ramp, a, None, None, opts)[0] for a in alone]
    assert len(got) == len(want) == len(alone)
    for g, w in zip(got, want):
        assert_same(g, w)
    # The case is not trivial: rows finish at different steps, by eot or by the guard.
    assert {h.finished for h in got} == {True, False}
    assert len({len(h.tokens) for h in got}) > 2
    assert len({tuple(h.tokens) for h in got}) == len(got)
    # ... and the padding noise would change results if encoder_lens were not applied.
    unmasked = whisper_greedy_search(ramp, batch, None, durations_of(lens), opts)
    assert [h.tokens for h in unmasked] != [h.tokens for h in got]


@pytest.mark.parametrize("beam_size", [2, 4])
def test_batched_beam_equals_one_by_one(ramp: EotRampDecoder, encoded, beam_size: int) -> None:
    alone, batch, lens = encoded
    opts = options(beam_size=beam_size)
    got = whisper_beam_search(ramp, batch, lens, None, opts)
    want = [whisper_beam_search(ramp, a, None, None, opts)[0] for a in alone]
    assert len(got) == len(alone)
    for g, w in zip(got, want):
        assert len(g) == len(w) == beam_size
        for gh, wh in zip(g, w):
            assert_same(gh, wh)
    # Utterances leave the batch at different steps; some n-best lists mix both kinds.
    flags = [h.finished for hyps in got for h in hyps]
    assert True in flags and False in flags


# --------------------------------------------------------------------------------------------
# (c), (d): the cache against full recomputation; beam 1 is greedy


@pytest.mark.parametrize("suppress", [False, True])
def test_greedy_equals_search_without_cache(ramp: EotRampDecoder, encoded, suppress: bool) -> None:
    alone, _, lens = encoded
    kw = dict(suppress_tokens=(14, 40), suppress_at_begin=(25, EOT), suppress_from=SOT) if suppress else {}
    opts = options(**kw)
    # Long enough (3 s) for the ramp to end most hypotheses.
    got = whisper_greedy_search(ramp, torch.cat([a[:, :20] for a in alone]), None, [3.0] * len(alone), opts)
    for g, a in zip(got, alone):
        assert_same(g, reference_greedy(ramp, a[:, :20], opts, limit_of(opts, 3.0)))
    assert any(h.finished for h in got) and max(len(h.tokens) for h in got) > 8


@pytest.mark.parametrize("beam_size", [2, 3])
@pytest.mark.parametrize("slope, intercept", [(0.4, -3.5), (1.0, -10.0)])
def test_beam_equals_search_without_cache(
    model: Whisper, encoded, beam_size: int, slope: float, intercept: float
) -> None:
    """The steep ramp ends several rows at the same step: more candidates end than the n-best list takes."""
    alone, batch, lens = encoded
    decoder = EotRampDecoder(model.decoder, slope, intercept).eval()
    opts = options(beam_size=beam_size, suppress_from=SOT)
    durations = [3.0] * len(alone)
    got = whisper_beam_search(decoder, batch, lens, durations, opts)
    for g, a in zip(got, alone):
        want = reference_beam(decoder, a, opts, limit_of(opts, 3.0))
        assert len(g) == len(want) == beam_size
        for gh, wh in zip(g, want):
            assert_same(gh, wh)


def test_beam_of_one_equals_greedy(ramp: EotRampDecoder, encoded) -> None:
    _, batch, lens = encoded
    for kw in ({}, {"suppress_at_begin": (EOT,), "suppress_from": SOT}):
        greedy = whisper_greedy_search(ramp, batch, lens, None, options(**kw))
        beam = whisper_beam_search(ramp, batch, lens, None, options(beam_size=1, **kw))
        for g, b in zip(greedy, beam):
            assert len(b) == 1
            assert_same(b[0], g)


# --------------------------------------------------------------------------------------------
# (e): the length guard


def test_length_guard_stops_a_model_that_never_ends(ramp: EotRampDecoder, encoded) -> None:
    _, batch, lens = encoded
    opts = options(suppress_tokens=(EOT,))
    limits = [limit_of(opts, d) for d in durations_of(lens)]
    assert len(set(limits)) > 2  # the duration part of the guard binds, differently per utterance
    for hyp, limit in zip(whisper_greedy_search(ramp, batch, lens, None, opts), limits):
        assert not hyp.finished and len(hyp.tokens) == limit
    beam_opts = options(suppress_tokens=(EOT,), beam_size=3)
    for hyps, limit in zip(whisper_beam_search(ramp, batch, lens, None, beam_opts), limits):
        assert len(hyps) == 3
        assert all(not h.finished and len(h.tokens) == limit for h in hyps)
    # Durations given explicitly, and the other two bounds of the guard.
    for kw, durations, want in (
        ({}, [0.5, 1.0, 30.0], [8, 12, 36]),  # 36: n_text_ctx 40 - prompt 4
        ({"max_new_tokens": 10}, [0.5, 1.0, 30.0], [8, 10, 10]),
        ({"max_tokens_per_second": 2.0}, [0.5, 1.0, 30.0], [5, 6, 36]),
    ):
        o = options(suppress_tokens=(EOT,), **kw)
        got = whisper_greedy_search(ramp, batch[:3], lens[:3], durations, o)
        assert [len(h.tokens) for h in got] == want
        assert [o.token_limit(d, DIMS.n_text_ctx) for d in durations] == want


def test_token_limit_rounds_frame_durations() -> None:
    opts = options()
    assert opts.token_limit(150 * 0.02, 448) == 28  # 8 * 3 s + 4
    # 10 tok/s * (35 frames * 0.02 s) is 7.000000000000001 in floating point: 7 + 4, not 8 + 4.
    assert WhisperSearchOptions(prompt=PROMPT, eot=EOT, max_tokens_per_second=10.0).token_limit(35 * 0.02, 448) == 11
    assert opts.token_limit(3.01, 448) == 29
    assert opts.token_limit(60.0, 448) == 224
    assert WhisperSearchOptions(prompt=(1,) * 440, eot=0).token_limit(60.0, 448) == 8
    with pytest.raises(ValueError):
        opts.token_limit(0.0, 448)
    with pytest.raises(ValueError):
        WhisperSearchOptions(prompt=(1,) * 448, eot=0).token_limit(1.0, 448)


# --------------------------------------------------------------------------------------------
# (f): suppression


def test_suppressed_tokens_never_appear(model: Whisper, encoded) -> None:
    _, batch, lens = encoded
    durations = [2.0] * len(lens)
    # Favour the specials after eot a little, so that they occur unless suppressed.
    bias = torch.zeros(DIMS.n_vocab)
    bias[SOT:] = 1.0
    ramp = EotRampDecoder(model.decoder, slope=0.4, intercept=-3.5, bias=bias).eval()
    free = whisper_greedy_search(ramp, batch, lens, durations, options())
    free_beam = whisper_beam_search(ramp, batch, lens, durations, options(beam_size=3))
    emitted = [t for h in free for t in h.tokens] + [t for hs in free_beam for h in hs for t in h.tokens]
    # The two most frequent text tokens and the specials >= SOT all occur without suppression.
    common = sorted(set(emitted) - {EOT}, key=lambda t: (-emitted.count(t), t))[:2]
    assert any(t >= SOT for t in emitted)
    firsts = {h.tokens[0] for h in free if h.tokens}
    suppressed_first = min(firsts)
    kw = dict(suppress_tokens=tuple(common), suppress_from=SOT, suppress_at_begin=(suppressed_first,))
    got = whisper_greedy_search(ramp, batch, lens, durations, options(**kw))
    got_beam = whisper_beam_search(ramp, batch, lens, durations, options(beam_size=3, **kw))
    for hyp in got + [h for hs in got_beam for h in hs]:
        assert not set(hyp.tokens) & set(common)
        assert all(t < SOT for t in hyp.tokens)
        assert not hyp.tokens or hyp.tokens[0] != suppressed_first
    # eot at the first step (faster-whisper's suppress_blank): never an empty hypothesis.
    early = EotRampDecoder(ramp, slope=0.0, intercept=30.0).eval()  # eot always wins when allowed
    assert all(h.tokens == [] and h.finished for h in whisper_greedy_search(early, batch, lens, None, options()))
    no_blank = whisper_greedy_search(early, batch, lens, None, options(suppress_at_begin=(EOT,)))
    assert all(len(h.tokens) == 1 and h.finished for h in no_blank)
    no_blank_beam = whisper_beam_search(early, batch, lens, None, options(beam_size=2, suppress_at_begin=(EOT,)))
    assert all(len(h.tokens) == 1 and h.finished for hs in no_blank_beam for h in hs)


def test_suppression_renormalises_the_scores(ramp: EotRampDecoder, encoded) -> None:
    """Scores are log-probabilities over the allowed tokens (OpenAI's and CTranslate2's logit filters)."""
    _, batch, lens = encoded
    opts = options(suppress_from=SOT)
    hyps = whisper_greedy_search(ramp, batch[:1], lens[:1], None, opts)
    with torch.no_grad():
        seq = list(PROMPT) + hyps[0].tokens
        logits = ramp(torch.tensor([seq]), batch[:1], lens[:1])[0, len(PROMPT) - 1 :].float()
    lp = logits.masked_fill(suppressed_mask(opts, False), float("-inf")).log_softmax(-1)
    targets = hyps[0].tokens + ([EOT] if hyps[0].finished else [])
    want = sum(float(lp[i, t]) for i, t in enumerate(targets))
    assert hyps[0].score == pytest.approx(want, abs=1e-4)


# --------------------------------------------------------------------------------------------
# (g): teacher-forced scores


def test_sequence_log_probs_equal_search_scores(ramp: EotRampDecoder, encoded) -> None:
    _, batch, lens = encoded
    durations = [3.0] * len(lens)
    greedy = whisper_greedy_search(ramp, batch, lens, durations, options())
    beam = whisper_beam_search(ramp, batch, lens, durations, options(beam_size=3))
    nbest = [[g.tokens] + [h.tokens for h in hs] for g, hs in zip(greedy, beam)]
    nbest[2] = []  # an utterance without hypotheses
    want = [[g.score] + [h.score for h in hs] for g, hs in zip(greedy, beam)]
    finished = [[g.finished] + [h.finished for h in hs] for g, hs in zip(greedy, beam)]
    assert sum(f for fs in finished for f in fs) > 10
    for budget in (1 << 26, 1):  # all rows in one batch, and one row at a time
        got = whisper_sequence_log_probs(ramp, batch, lens, PROMPT, EOT, nbest, max_logits_elements=budget)
        assert [len(g) for g in got] == [len(n) for n in nbest]
        for _u, (g_u, w_u, f_u) in enumerate(zip(got, want, finished)):
            for g, w, f in zip(g_u, w_u, f_u):
                if f:  # an unfinished hypothesis's score has no eot term
                    assert g == pytest.approx(w, abs=1e-4)
                else:
                    assert g < w
    # Garbage in the padding is masked: scoring each utterance alone gives the same.
    alone = whisper_sequence_log_probs(ramp, batch[:1, : int(lens[0])], None, PROMPT, EOT, nbest[:1])
    assert alone[0] == pytest.approx(got[0], abs=1e-4)
    assert whisper_sequence_log_probs(ramp, batch[:2], lens[:2], PROMPT, EOT, [[], []]) == [[], []]


# --------------------------------------------------------------------------------------------
# Ranking


def test_nbest_ranked_by_length_normalised_score(ramp: EotRampDecoder, encoded) -> None:
    _, batch, lens = encoded
    ranked = {}
    for penalty in (None, 0.0, 1.0, 2.0):
        nbest = whisper_beam_search(ramp, batch, lens, [3.0] * len(lens), options(beam_size=4, length_penalty=penalty))
        for hyps in nbest:
            keys = [length_normalized_score(h.score, len(h.tokens), penalty) for h in hyps]
            assert keys == sorted(keys, reverse=True)
        ranked[penalty] = [[tuple(h.tokens) for h in hyps] for hyps in nbest]
    assert ranked[None] == ranked[1.0]
    assert ranked[0.0] != ranked[2.0]  # the penalty reorders some list (the search itself is the same)
    assert sorted(map(sorted, ranked[0.0])) == sorted(map(sorted, ranked[2.0]))
    assert length_normalized_score(-6.0, 3) == -2.0
    assert length_normalized_score(-6.0, 0) == -6.0
    assert length_normalized_score(-8.0, 4, 0.5) == -4.0


# --------------------------------------------------------------------------------------------
# (h): bad arguments


@pytest.mark.parametrize(
    "kw",
    [
        {"prompt": ()},
        {"prompt": (SOT, -1)},
        {"prompt": "abc"},
        {"eot": -1},
        {"eot": 1.5},
        {"suppress_tokens": (-3,)},
        {"suppress_at_begin": (True,)},
        {"suppress_from": 0},
        {"suppress_from": EOT},  # eot is suppressed through suppress_tokens, deliberately
        {"beam_size": 0},
        {"beam_size": 2.0},
        {"length_penalty": -0.5},
        {"length_penalty": float("nan")},
        {"max_tokens_per_second": 0.0},
        {"max_tokens_per_second": float("inf")},
        {"max_new_tokens": 0},
    ],
)
def test_bad_options_raise(kw: dict) -> None:
    args = {"prompt": PROMPT, "eot": EOT, **kw}
    with pytest.raises(ValueError):
        WhisperSearchOptions(**args)


def test_options_accept_lists() -> None:
    opts = WhisperSearchOptions(prompt=[SOT, LANG], eot=EOT, suppress_tokens=[1, 2])  # type: ignore[arg-type]
    assert opts.prompt == (SOT, LANG) and opts.suppress_tokens == (1, 2)
    hash(opts)


def test_bad_search_arguments_raise(ramp: EotRampDecoder, encoded) -> None:
    _, batch, lens = encoded
    for search in (whisper_greedy_search, whisper_beam_search):
        with pytest.raises(ValueError):
            search(ramp, batch[0], None, None, options())  # not (N, S, D)
        with pytest.raises(ValueError):
            search(ramp, batch, lens[:2], None, options())
        with pytest.raises(ValueError):
            search(ramp, batch, torch.zeros_like(lens), None, options())
        with pytest.raises(ValueError):
            search(ramp, batch, lens, [1.0], options())
        with pytest.raises(ValueError):
            search(ramp, batch, lens, [0.0] * len(lens), options())
        with pytest.raises(ValueError):
            search(ramp, batch, lens, None, options(suppress_tokens=(DIMS.n_vocab,)))
        with pytest.raises(ValueError):
            search(ramp, batch, lens, None, WhisperSearchOptions(prompt=(SOT,) * DIMS.n_text_ctx, eot=EOT))
        # Nothing left to choose from at the first step.
        with pytest.raises(ValueError):
            search(
                ramp, batch, lens, None, options(suppress_tokens=tuple(range(1, DIMS.n_vocab)), suppress_at_begin=(0,))
            )
    with pytest.raises(ValueError):  # fewer than beam_size + 1 tokens allowed
        whisper_beam_search(
            ramp, batch, lens, None, options(beam_size=3, suppress_tokens=tuple(range(3, DIMS.n_vocab)))
        )
    # ... but enough for greedy, which ends by the guard (eot suppressed).
    greedy = whisper_greedy_search(ramp, batch, lens, None, options(suppress_tokens=tuple(range(1, DIMS.n_vocab))))
    assert all(set(h.tokens) == {0} and not h.finished for h in greedy)
    assert whisper_greedy_search(ramp, batch[:0], lens[:0], None, options()) == []
    assert whisper_beam_search(ramp, batch[:0], lens[:0], None, options(beam_size=2)) == []
    with pytest.raises(ValueError):
        whisper_sequence_log_probs(ramp, batch, lens, PROMPT, EOT, [[[1]]])
    with pytest.raises(ValueError):
        whisper_sequence_log_probs(ramp, batch[:1], lens[:1], PROMPT, EOT, [[[DIMS.n_vocab]]])
    with pytest.raises(ValueError):
        whisper_sequence_log_probs(ramp, batch[:1], lens[:1], PROMPT, EOT, [[[1] * DIMS.n_text_ctx]])
