"""Greedy and beam search with Whisper's text decoder, batched over utterances, KV-cached.

The decoder (:class:`dsr.models.whisper.model.TextDecoder`) starts from a caller-given
``prompt`` (``<|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>``, possibly
preceded by previous text) and emits one token per step until ``eot``.  The prompt is run
once for the whole batch; every later step feeds one token per row and appends its
self-attention keys/values to a :class:`~dsr.models.whisper.model.DecoderCache`, whose
cross-attention keys/values were computed once from the encoder output.

Token filtering (as OpenAI's ``SuppressTokens``/``SuppressBlank`` and CTranslate2's
``DisableTokens``, which faster-whisper uses): the suppressed ids get ``-inf`` *logits*
before the float32 log-softmax, so scores are log-probabilities of the renormalised
distribution over the allowed tokens, exactly what OpenAI and CTranslate2 accumulate
(faster-whisper's ``avg_logprob`` is derived from them).  ``suppress_tokens`` and every id
``>= suppress_from`` are always suppressed; ``suppress_at_begin`` only at the first new
token (faster-whisper's ``suppress_blank``: the blank-space token and ``eot``).

Greedy search (:func:`whisper_greedy_search`): argmax at every step (ties go to the lowest
id, so a batch gives what each utterance gives alone); a row that emits ``eot`` or reaches
its length limit leaves the batch (its cache rows are dropped).

Beam search (:func:`whisper_beam_search`) follows OpenAI's ``BeamSearchDecoder`` with
``patience = 1``: each of an utterance's ``beam_size`` live rows proposes its
``beam_size + 1`` best tokens; the candidates are ranked by cumulative log-probability;
walking down that ranking, a candidate ending in ``eot`` is a finished hypothesis (kept
while the utterance has fewer than ``beam_size``), any other becomes a live row, until
``beam_size`` live rows are found.  The first step expands only the prompt row (no
duplicate candidates).  An utterance stops when it has ``beam_size`` finished hypotheses
or reaches its length limit; then, as in OpenAI, its live rows (best first) fill the
n-best list up to ``beam_size`` as unfinished hypotheses.  CTranslate2 (faster-whisper)
differs only in which ``eot`` candidates it registers: those among the ``beam_size`` best
candidates, where OpenAI (and this module) takes every ``eot`` ranked above the last
live row chosen.

Ranking of the finished n-best list (:func:`length_normalized_score`): ``score /
length ** length_penalty`` with ``length`` the number of text tokens (``eot`` excluded,
its log-probability included in ``score``), as CTranslate2 does; faster-whisper's default
``length_penalty=1`` is this module's default ``None``, which is also OpenAI's default
ranking (``sum_logprobs / length``).  OpenAI's float ``length_penalty`` is instead GNMT's
``((5 + length) / 6) ** alpha``; it is not implemented.  An empty hypothesis counts as
length 1 (CTranslate2 would divide by 0 and rank it last; OpenAI raises).

Length guard: an utterance gets at most ``min(max_new_tokens, n_text_ctx - len(prompt),
ceil(max_tokens_per_second * duration_s) + 4)`` new tokens, ``eot`` included (OpenAI's
``sample_len`` counts the same way), so a hypothesis stopped by the guard has exactly that
many text tokens and ``finished=False``.  ``duration_s`` is given per utterance, or taken
as 0.02 s per valid encoder frame, which is only right for an unpadded encoder output:
for an encoder run on the 30 s padded input, pass the real durations.

:func:`whisper_sequence_log_probs` teacher-forces given token sequences (another head's
n-best list, for attention rescoring) and returns log p(tokens + eot | prompt, x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsr.models.whisper.model import AttentionCache, DecoderCache, TextDecoder

#: Seconds per encoder output frame (10 ms mel frames, halved by the encoder's second convolution).
ENCODER_FRAME_SECONDS = 0.02


@dataclass(frozen=True)
class WhisperSearchOptions:
    """What to decode and how; see the module docstring for the exact semantics.

    Attributes:
        prompt: the start sequence fed before the first new token (non-empty).
        eot: the end-of-text id.
        suppress_tokens: ids never emitted (``eot`` may be among them: then only the
            length guard ends a hypothesis).
        suppress_at_begin: ids not emitted as the first new token.
        suppress_from: every id ``>= suppress_from`` is suppressed (the specials and timestamps
            after ``eot``; it must be above ``eot``).
        beam_size: 1 for :func:`whisper_greedy_search`; the beam of :func:`whisper_beam_search`.
        length_penalty: exponent ``alpha`` of the length in the n-best ranking
            ``score / length ** alpha`` (None: 1, plain average log-probability).
        max_tokens_per_second: the duration-based part of the length guard.
        max_new_tokens: the absolute part of the length guard.
    """

    prompt: tuple[int, ...]
    eot: int
    suppress_tokens: tuple[int, ...] = ()
    suppress_at_begin: tuple[int, ...] = ()
    suppress_from: int | None = None
    beam_size: int = 1
    length_penalty: float | None = None
    max_tokens_per_second: float = 8.0
    max_new_tokens: int = 224

    def __post_init__(self) -> None:
        # Lists are accepted for convenience; stored as tuples so the options stay hashable.
        for name in ("prompt", "suppress_tokens", "suppress_at_begin"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError(f"WhisperSearchOptions.{name} must be a sequence of token ids (got {value!r})")
            ids = tuple(value)
            if any(not _is_int(i) or i < 0 for i in ids):
                raise ValueError(f"WhisperSearchOptions.{name} must hold non-negative ints (got {value!r})")
            object.__setattr__(self, name, tuple(int(i) for i in ids))
        if not self.prompt:
            raise ValueError("WhisperSearchOptions.prompt must not be empty (it holds at least <|startoftranscript|>)")
        if not _is_int(self.eot) or self.eot < 0:
            raise ValueError(f"WhisperSearchOptions.eot must be a non-negative int (got {self.eot!r})")
        if self.suppress_from is not None and (not _is_int(self.suppress_from) or self.suppress_from <= self.eot):
            # Whisper's specials and timestamps follow eot; suppressing eot itself is spelled out in suppress_tokens.
            raise ValueError(
                f"WhisperSearchOptions.suppress_from must be None or an int > eot {self.eot} "
                f"(got {self.suppress_from!r})"
            )
        if not _is_int(self.beam_size) or self.beam_size < 1:
            raise ValueError(f"WhisperSearchOptions.beam_size must be an int >= 1 (got {self.beam_size!r})")
        if self.length_penalty is not None and not (
            isinstance(self.length_penalty, (int, float))
            and math.isfinite(self.length_penalty)
            and self.length_penalty >= 0
        ):
            raise ValueError(
                f"WhisperSearchOptions.length_penalty must be None or a finite float >= 0 (got {self.length_penalty!r})"
            )
        if not (
            isinstance(self.max_tokens_per_second, (int, float))
            and math.isfinite(self.max_tokens_per_second)
            and self.max_tokens_per_second > 0
        ):
            raise ValueError(
                f"WhisperSearchOptions.max_tokens_per_second must be a finite number > 0 "
                f"(got {self.max_tokens_per_second!r})"
            )
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"WhisperSearchOptions.max_new_tokens must be an int >= 1 (got {self.max_new_tokens!r})")

    def token_limit(self, duration_s: float, n_text_ctx: int) -> int:
        """The length guard: new tokens (``eot`` included) allowed for ``duration_s`` seconds of audio."""
        if not math.isfinite(duration_s) or duration_s <= 0:
            raise ValueError(f"an utterance's duration must be a finite number > 0 (got {duration_s!r})")
        room = n_text_ctx - len(self.prompt)
        if room < 1:
            raise ValueError(f"a prompt of {len(self.prompt)} tokens leaves no room in Whisper's {n_text_ctx}")
        # Rounded first: 10 tok/s * (35 frames * 0.02 s) is 7.000000000000001 in floating point, and means 7.
        by_duration = math.ceil(round(self.max_tokens_per_second * duration_s, 6)) + 4
        return min(self.max_new_tokens, room, by_duration)


@dataclass
class WhisperHypothesis:
    """One decoded hypothesis.

    Attributes:
        tokens: the new text tokens (no prompt, no ``eot``).
        score: sum of their log-probabilities, plus that of ``eot`` when ``finished``.
        finished: False when the length guard stopped it before ``eot``.
    """

    tokens: list[int]
    score: float
    finished: bool

    def normalized_score(self, length_penalty: float | None = None) -> float:
        """The n-best ranking score, :func:`length_normalized_score` of this hypothesis."""
        return length_normalized_score(self.score, len(self.tokens), length_penalty)

    def length_norm(self, length_penalty: float | None = None) -> float:
        """What :meth:`normalized_score` divides the score by."""
        return length_norm(len(self.tokens), length_penalty)


def length_norm(length: int, length_penalty: float | None = None) -> float:
    """``max(length, 1) ** alpha`` with ``alpha = length_penalty`` (None: 1)."""
    alpha = 1.0 if length_penalty is None else length_penalty
    return float(max(length, 1)) ** alpha


def length_normalized_score(score: float, length: int, length_penalty: float | None = None) -> float:
    """``score / max(length, 1) ** alpha`` with ``alpha = length_penalty`` (None: 1).

    CTranslate2's ``length_penalty`` (faster-whisper's default 1 is the average
    log-probability per text token, also OpenAI's default ranking); 0 ranks by raw score.
    """
    return score / length_norm(length, length_penalty)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# --------------------------------------------------------------------------------------------
# Shared set-up


@dataclass
class _Batch:
    """Checked inputs of a search: per-row encoder lengths (or None) and per-utterance token limits."""

    xa_lens: torch.Tensor | None  # (N,) long on the encoder output's device
    limits: list[int]  # (N,) new tokens allowed, eot included


def _prepare(
    decoder: TextDecoder,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor | None,
    durations: list[float] | None,
    opts: WhisperSearchOptions,
) -> _Batch:
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (N, S, D), got shape {tuple(encoder_out.shape)}")
    n, s, _ = encoder_out.shape
    vocab = decoder.vocab_size
    for name, ids in (
        ("prompt", opts.prompt),
        ("suppress_tokens", opts.suppress_tokens),
        ("suppress_at_begin", opts.suppress_at_begin),
        ("eot", (opts.eot,)),
    ):
        if any(i >= vocab for i in ids):
            raise ValueError(f"{name} has ids outside the decoder's vocabulary of {vocab}: {ids}")
    xa_lens = None
    if encoder_lens is not None:
        if encoder_lens.shape != (n,):
            raise ValueError(f"encoder_lens must be ({n},), got shape {tuple(encoder_lens.shape)}")
        xa_lens = encoder_lens.to(device=encoder_out.device, dtype=torch.long)
        # A row with no valid frame would attend to nothing (NaN); longer than S is a caller error.
        if n and (int(xa_lens.min()) < 1 or int(xa_lens.max()) > s):
            raise ValueError(f"encoder_lens must be in [1, {s}], got {encoder_lens.tolist()}")
    if durations is None:
        frames = [s] * n if xa_lens is None else xa_lens.tolist()
        durations = [f * ENCODER_FRAME_SECONDS for f in frames]
    elif len(durations) != n:
        raise ValueError(f"need one duration per utterance ({n}), got {len(durations)}")
    limits = [opts.token_limit(float(d), decoder.n_ctx) for d in durations]
    return _Batch(xa_lens, limits)


def _suppression_masks(
    opts: WhisperSearchOptions, vocab: int, device: torch.device, needed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V,) bool masks, True where suppressed: at every step, and at the first new token.

    ``needed``: candidates taken per row (a ValueError if fewer tokens are allowed).
    """
    always = torch.zeros(vocab, dtype=torch.bool, device=device)
    if opts.suppress_tokens:
        always[list(opts.suppress_tokens)] = True
    if opts.suppress_from is not None:
        always[opts.suppress_from :] = True
    first = always.clone()
    if opts.suppress_at_begin:
        first[list(opts.suppress_at_begin)] = True
    # Fewer allowed tokens than candidates per row would let -inf candidates into a beam.
    if int((~first).sum()) < needed:
        raise ValueError(f"the suppression leaves fewer than {needed} tokens of {vocab} to choose from")
    return always, first


def _log_probs(logits: torch.Tensor, suppressed: torch.Tensor) -> torch.Tensor:
    """(R, V) logits -> float32 log-probabilities renormalised over the tokens not ``suppressed`` (V,)."""
    return logits.float().masked_fill(suppressed, float("-inf")).log_softmax(dim=-1)


def _start(
    decoder: TextDecoder, encoder_out: torch.Tensor, xa_lens: torch.Tensor | None, prompt: tuple[int, ...]
) -> tuple[DecoderCache, torch.Tensor]:
    """Run the prompt for every utterance: the cache and the (N, V) logits of the first new token."""
    cache = decoder.new_cache(encoder_out)
    tokens = torch.tensor(prompt, dtype=torch.long, device=encoder_out.device).expand(encoder_out.size(0), -1)
    logits = decoder(tokens, xa_lens=xa_lens, cache=cache)
    return cache, logits[:, -1]


def _reorder_self_attention(cache: DecoderCache, index: torch.Tensor) -> None:
    """Select rows ``index`` of the self-attention keys/values only.

    Beam search moves rows within an utterance's block, whose cross-attention keys/values
    are all equal: copying them each step (N * beam * S * D per layer) would be wasted.
    """
    for c in cache.self_attn:
        if c is not None:
            c.key, c.value = c.key.index_select(0, index), c.value.index_select(0, index)


# --------------------------------------------------------------------------------------------
# Greedy search


@torch.no_grad()
def whisper_greedy_search(
    decoder: TextDecoder,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor | None,
    durations: list[float] | None,
    opts: WhisperSearchOptions,
) -> list[WhisperHypothesis]:
    """Greedy search of N utterances at once.

    Args:
        decoder: Whisper's text decoder (in eval mode).
        encoder_out: (N, S, D) encoder output, right-padded.
        encoder_lens: (N,) valid frames of ``encoder_out`` (None: all S).
        durations: (N,) seconds of audio per utterance, for the length guard (None: 0.02 s
            per valid encoder frame).
        opts: the options; ``opts.beam_size`` is ignored.

    Returns:
        N hypotheses, in input order.
    """
    batch = _prepare(decoder, encoder_out, encoder_lens, durations, opts)
    n = encoder_out.size(0)
    if n == 0:
        return []
    always, first = _suppression_masks(opts, decoder.vocab_size, encoder_out.device, 1)
    cache, logits = _start(decoder, encoder_out, batch.xa_lens, opts.prompt)
    xa_lens = batch.xa_lens
    tokens: list[list[int]] = [[] for _ in range(n)]
    scores = [0.0] * n
    finished = [False] * n
    rows = list(range(n))  # the utterance of each row still in the batch
    step = 0
    while True:
        log_probs = _log_probs(logits, first if step == 0 else always)
        best = log_probs.argmax(dim=-1)  # the first maximum: ties go to the lowest id
        best_lp = log_probs.gather(1, best[:, None]).squeeze(1)
        keep: list[int] = []
        for i, (tok, lp) in enumerate(zip(best.tolist(), best_lp.double().tolist())):
            u = rows[i]
            scores[u] += lp
            if tok == opts.eot:
                finished[u] = True
                continue
            tokens[u].append(tok)
            if step + 1 < batch.limits[u]:
                keep.append(i)
        step += 1
        if not keep:
            break
        next_tokens = best
        if len(keep) < len(rows):
            index = torch.tensor(keep, dtype=torch.long, device=encoder_out.device)
            cache.reorder(index)
            xa_lens = None if xa_lens is None else xa_lens.index_select(0, index)
            next_tokens = best.index_select(0, index)
            rows = [rows[i] for i in keep]
        logits = decoder(next_tokens[:, None], xa_lens=xa_lens, cache=cache)[:, -1]
    return [WhisperHypothesis(tokens[u], scores[u], finished[u]) for u in range(n)]


# --------------------------------------------------------------------------------------------
# Beam search


@dataclass
class _Row:
    """A live beam row: its utterance, text tokens so far and their summed log-probability."""

    utt: int
    tokens: list[int]
    score: float


def _select(
    rows: list[_Row], top_lp: list[list[float]], top_ids: list[list[int]], beam: int, eot: int
) -> tuple[list[tuple[int, int, float]], list[tuple[int, float]]]:
    """One utterance's step (OpenAI's ``BeamSearchDecoder.update``).

    Args:
        rows: the utterance's live rows (1 at the first step, ``beam`` later).
        top_lp, top_ids: each row's ``beam + 1`` best log-probabilities and tokens.

    Returns:
        ``beam`` live candidates ``(row position, token, score)`` and the finished ones
        ``(row position, score)`` ranked above the last live one, both best first.
    """
    candidates = [(row.score + lp, r, tok) for r, row in enumerate(rows) for lp, tok in zip(top_lp[r], top_ids[r])]
    # Stable sort: equal scores keep the row-then-rank order, the same alone or batched.
    candidates.sort(key=lambda c: -c[0])
    live: list[tuple[int, int, float]] = []
    done: list[tuple[int, float]] = []
    for score, r, tok in candidates:
        if tok == eot:
            done.append((r, score))
        else:
            live.append((r, tok, score))
            if len(live) == beam:
                break
    return live, done


@torch.no_grad()
def whisper_beam_search(
    decoder: TextDecoder,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor | None,
    durations: list[float] | None,
    opts: WhisperSearchOptions,
) -> list[list[WhisperHypothesis]]:
    """Beam search of N utterances at once, ``opts.beam_size`` rows each in one cache.

    Args: as :func:`whisper_greedy_search`.

    Returns:
        N n-best lists of ``beam_size`` hypotheses, best first by
        :func:`length_normalized_score` with ``opts.length_penalty``.
    """
    batch = _prepare(decoder, encoder_out, encoder_lens, durations, opts)
    n, beam, device = encoder_out.size(0), opts.beam_size, encoder_out.device
    if n == 0:
        return []
    always, first = _suppression_masks(opts, decoder.vocab_size, device, beam + 1)
    cache, logits = _start(decoder, encoder_out, batch.xa_lens, opts.prompt)
    xa_lens = batch.xa_lens
    rows = [_Row(u, [], 0.0) for u in range(n)]  # the prompt row of each utterance
    nbest: list[list[WhisperHypothesis]] = [[] for _ in range(n)]
    step = 0
    while rows:
        log_probs = _log_probs(logits, first if step == 0 else always)
        top_lp, top_ids = log_probs.topk(beam + 1, dim=-1)
        top_lp_l, top_ids_l = top_lp.double().tolist(), top_ids.tolist()
        step += 1
        next_rows: list[_Row] = []
        sources: list[int] = []
        start = 0
        while start < len(rows):  # rows of one utterance are contiguous
            u = rows[start].utt
            end = start + 1
            while end < len(rows) and rows[end].utt == u:
                end += 1
            live, done = _select(rows[start:end], top_lp_l[start:end], top_ids_l[start:end], beam, opts.eot)
            for r, score in done:
                if len(nbest[u]) < beam:
                    nbest[u].append(WhisperHypothesis(list(rows[start + r].tokens), score, True))
            if len(nbest[u]) < beam and step >= batch.limits[u]:
                # The guard stops it: live rows, best first, complete the n-best list unfinished.
                for r, tok, score in live[: beam - len(nbest[u])]:
                    nbest[u].append(WhisperHypothesis(rows[start + r].tokens + [tok], score, False))
            if len(nbest[u]) < beam:
                for r, tok, score in live:
                    next_rows.append(_Row(u, rows[start + r].tokens + [tok], score))
                    sources.append(start + r)
            start = end
        if not next_rows:
            break
        index = torch.tensor(sources, dtype=torch.long, device=device)
        # Rows change utterance only when the prompt rows fan out or utterances leave.
        if step == 1 or len(next_rows) != len(rows):
            cache.reorder(index)
            xa_lens = None if xa_lens is None else xa_lens.index_select(0, index)
        else:
            _reorder_self_attention(cache, index)
        rows = next_rows
        next_tokens = torch.tensor([row.tokens[-1] for row in rows], dtype=torch.long, device=device)
        logits = decoder(next_tokens[:, None], xa_lens=xa_lens, cache=cache)[:, -1]
    for hyps in nbest:
        hyps.sort(key=lambda h: -h.normalized_score(opts.length_penalty))  # stable: ties keep search order
    return nbest


# --------------------------------------------------------------------------------------------
# Teacher-forced scoring


def _select_rows(cache: DecoderCache, index: torch.Tensor) -> DecoderCache:
    """A new cache with the cross-attention keys/values of utterances ``index`` (R,) and no self-attention."""
    cross = [
        None if c is None else AttentionCache(c.key.index_select(0, index), c.value.index_select(0, index))
        for c in cache.cross_attn
    ]
    return DecoderCache(self_attn=[None] * len(cross), cross_attn=cross)


@torch.no_grad()
def whisper_sequence_log_probs(
    decoder: TextDecoder,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor | None,
    prompt: list[int] | tuple[int, ...],
    eot: int,
    hyps: list[list[list[int]]],
    max_logits_elements: int = 1 << 26,
) -> list[list[float]]:
    """Teacher-forced ``log p(tokens + [eot] | prompt, x)`` of every hypothesis.

    No token is suppressed, so for a search run without suppression this equals the
    search's ``score`` of a finished hypothesis (up to float32 rounding of the logits).

    Args:
        decoder: Whisper's text decoder (in eval mode).
        encoder_out: (N, S, D) encoder output, right-padded.
        encoder_lens: (N,) valid frames (None: all S).
        prompt: the start sequence the tokens follow.
        eot: the end-of-text id, scored after each hypothesis.
        hyps: per utterance, its hypotheses' text tokens (no prompt, no eot).
        max_logits_elements: rows x positions x vocabulary of logits computed at once;
            the hypotheses are scored in as few batches as fit (all of them in one, usually).

    Returns:
        Per utterance, one float64 log-probability per hypothesis.
    """
    if encoder_out.dim() != 3:
        raise ValueError(f"encoder_out must be (N, S, D), got shape {tuple(encoder_out.shape)}")
    n, s, _ = encoder_out.shape
    if len(hyps) != n:
        raise ValueError(f"need one hypothesis list per utterance ({n}), got {len(hyps)}")
    if not prompt:
        raise ValueError("prompt must not be empty")
    if max_logits_elements < 1:
        raise ValueError(f"max_logits_elements must be >= 1 (got {max_logits_elements})")
    vocab, device = decoder.vocab_size, encoder_out.device
    prompt = [int(t) for t in prompt]
    seqs = [prompt + list(h) + [eot] for hs in hyps for h in hs]
    utts = [u for u, hs in enumerate(hyps) for _ in hs]
    for seq in seqs:
        if any(not 0 <= t < vocab for t in seq):
            raise ValueError(f"token ids must be in [0, {vocab}): {seq}")
        if len(seq) - 1 > decoder.n_ctx:
            raise ValueError(f"a sequence of {len(seq) - 1} input tokens exceeds Whisper's {decoder.n_ctx}")
    xa_lens = None
    if encoder_lens is not None:
        if encoder_lens.shape != (n,):
            raise ValueError(f"encoder_lens must be ({n},), got shape {tuple(encoder_lens.shape)}")
        xa_lens = encoder_lens.to(device=device, dtype=torch.long)
        if n and (int(xa_lens.min()) < 1 or int(xa_lens.max()) > s):
            raise ValueError(f"encoder_lens must be in [1, {s}], got {encoder_lens.tolist()}")
    out: list[float] = []
    if seqs:
        # Cross-attention keys/values once per utterance, then copied to its hypotheses' rows.
        base = decoder.new_cache(encoder_out)
        width = max(len(seq) for seq in seqs) - 1
        chunk = max(1, max_logits_elements // (width * vocab))
        for lo in range(0, len(seqs), chunk):
            out.extend(
                _score_rows(
                    decoder, base, xa_lens, seqs[lo : lo + chunk], utts[lo : lo + chunk], len(prompt), eot, device
                )
            )
    result: list[list[float]] = []
    pos = 0
    for hs in hyps:
        result.append(out[pos : pos + len(hs)])
        pos += len(hs)
    return result


def _score_rows(
    decoder: TextDecoder,
    base: DecoderCache,
    xa_lens: torch.Tensor | None,
    seqs: list[list[int]],
    utts: list[int],
    prompt_len: int,
    eot: int,
    device: torch.device,
) -> list[float]:
    """Sum of the log-probabilities of ``seqs[i][prompt_len:]`` given what precedes, row by row."""
    width = max(len(seq) for seq in seqs)
    # Right padding: the causal mask keeps the real positions from seeing it; its targets are ignored.
    padded = torch.full((len(seqs), width), eot, dtype=torch.long)
    valid = torch.zeros(len(seqs), width - 1, dtype=torch.bool)
    for i, seq in enumerate(seqs):
        padded[i, : len(seq)] = torch.tensor(seq)
        valid[i, prompt_len - 1 : len(seq) - 1] = True
    padded, valid = padded.to(device), valid.to(device)
    index = torch.tensor(utts, dtype=torch.long, device=device)
    cache = _select_rows(base, index)
    lens = None if xa_lens is None else xa_lens.index_select(0, index)
    logits = decoder(padded[:, :-1], xa_lens=lens, cache=cache).float()  # (R, W-1, V)
    targets = padded[:, 1:]
    token_lp = logits.gather(-1, targets[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)
    return token_lp.double().masked_fill(~valid, 0.0).sum(dim=1).tolist()
