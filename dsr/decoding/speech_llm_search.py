"""Greedy and beam search with a speech-LLM (:class:`dsr.models.speech_llm.SpeechLLM`), batched, KV-cached.

The prompt with the speech embeddings spliced in is run once for the whole (left-padded)
batch; every later step feeds one token per row and extends the LLM's KV cache.  Position
ids and the attention mask follow each row's own tokens, so an utterance decodes to the
same hypothesis alone or in a batch.

Greedy search: argmax at every step.  A row that emits EOS is finished; a row that keeps
writing stops at its length guard (``finished=False``) -- a model that never emits EOS
cannot loop forever.  Finished rows stay in the batch, fed EOS, until every row is done.

Beam search: ``beam_size`` rows per utterance (the prompt's cache is repeated, not
recomputed).  Each step ranks the ``beam_size * V`` continuations of the live rows by
cumulative log-probability; walking down the ranking, a candidate ending in EOS is a
finished hypothesis (kept while the utterance has fewer than ``beam_size``), any other
becomes a live row, until ``beam_size`` live rows are found (OpenAI Whisper's
``BeamSearchDecoder`` with patience 1).  An utterance stops with ``beam_size`` finished
hypotheses or at its length guard, where its live rows, best first, fill the n-best list
as unfinished hypotheses.  The n-best list is ranked by total log-probability (EOS included),
finished hypotheses first.

Length guard: at most ``min(max_new_tokens, ceil(max_tokens_per_second * duration) + 4)``
transcript tokens (EOS not counted), ``duration`` in seconds per utterance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsr.models.speech_llm import SpeechLLM


@dataclass(frozen=True)
class SpeechLLMSearchOptions:
    """Search settings; see the module docstring.

    Attributes:
        beam_size: the beam (1 for greedy search).
        max_tokens_per_second: the duration-based part of the length guard.
        max_new_tokens: its absolute part.
    """

    beam_size: int = 1
    max_tokens_per_second: float = 8.0
    max_new_tokens: int = 200

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1 (got {self.beam_size})")
        if not self.max_tokens_per_second > 0:
            raise ValueError(f"max_tokens_per_second must be > 0 (got {self.max_tokens_per_second})")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (got {self.max_new_tokens})")

    def limit(self, duration: float) -> int:
        """Most transcript tokens for an utterance of ``duration`` seconds."""
        return min(self.max_new_tokens, math.ceil(self.max_tokens_per_second * max(duration, 0.0)) + 4)


@dataclass
class SpeechLLMHypothesis:
    """LLM token ids (no EOS), total log-probability (EOS included when finished), and
    whether it ended with EOS (False: stopped by the length guard)."""

    tokens: list[int]
    score: float
    finished: bool


def _prompt_pass(model: SpeechLLM, encoder_out: torch.Tensor, encoder_lens: torch.Tensor):
    """Run the prompt: (N, V) log-probabilities of the first token, the cache, mask (N, L), last positions (N,)."""
    if encoder_out.size(0) != encoder_lens.size(0):
        raise ValueError(f"encoder_out has {encoder_out.size(0)} rows, encoder_lens {encoder_lens.size(0)}")
    speech, speech_lens = model.speech_embeddings(encoder_out, encoder_lens)
    inputs = model.make_inputs(speech, speech_lens)
    out = model.base_llm()(
        inputs_embeds=inputs.embeds,
        attention_mask=inputs.mask,
        position_ids=inputs.positions,
        use_cache=True,
        logits_to_keep=1,
    )
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.cache, inputs.mask, inputs.positions[:, -1]


# transformers 5 names the KV cache argument and output ``cache`` (``past_key_values`` is deprecated).
def _step(model: SpeechLLM, tokens: torch.Tensor, cache, mask: torch.Tensor, positions: torch.Tensor):
    """Feed (R,) tokens at (R,) positions; returns (R, V) log-probabilities and the extended mask."""
    mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], dim=1)
    out = model.base_llm()(
        input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None], cache=cache, use_cache=True
    )
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), mask


def _check(durations: list[float], n: int) -> None:
    if len(durations) != n:
        raise ValueError(f"got {len(durations)} durations for a batch of {n}")


@torch.no_grad()
def speech_llm_greedy_search(
    model: SpeechLLM,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    durations: list[float],
    opts: SpeechLLMSearchOptions = SpeechLLMSearchOptions(),
) -> list[SpeechLLMHypothesis]:
    """Greedy search; (N, T, D) encoder output, (N,) lengths, N durations (s) -> N hypotheses."""
    n = encoder_out.size(0)
    _check(durations, n)
    logp, cache, mask, positions = _prompt_pass(model, encoder_out, encoder_lens)
    limits = [opts.limit(d) for d in durations]
    hyps = [SpeechLLMHypothesis([], 0.0, False) for _ in range(n)]
    done = [False] * n
    eos = model.eos_id
    while True:
        best = logp.argmax(-1)
        best_lp = logp.gather(1, best[:, None])[:, 0]
        for i, (tok, lp) in enumerate(zip(best.tolist(), best_lp.tolist())):
            if done[i]:
                continue
            if tok == eos:
                hyps[i].score += lp
                hyps[i].finished = done[i] = True
            elif len(hyps[i].tokens) >= limits[i]:
                done[i] = True  # length guard: the would-be token is not taken
            else:
                hyps[i].tokens.append(tok)
                hyps[i].score += lp
        if all(done):
            return hyps
        feed = torch.where(torch.tensor(done, device=best.device), torch.full_like(best, eos), best)
        positions = positions + 1
        logp, mask = _step(model, feed, cache, mask, positions)


@torch.no_grad()
def speech_llm_beam_search(
    model: SpeechLLM,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    durations: list[float],
    opts: SpeechLLMSearchOptions = SpeechLLMSearchOptions(beam_size=4),
) -> list[list[SpeechLLMHypothesis]]:
    """Beam search; N n-best lists of up to ``beam_size`` hypotheses, best first."""
    n, beam = encoder_out.size(0), opts.beam_size
    _check(durations, n)
    logp, cache, mask, positions = _prompt_pass(model, encoder_out, encoder_lens)
    vocab = logp.size(-1)
    # Every utterance's prompt cache is repeated for its beam rows: row r = utterance r // beam.
    cache.batch_repeat_interleave(beam)
    mask = mask.repeat_interleave(beam, dim=0)
    positions = positions.repeat_interleave(beam, dim=0)
    logp = logp.repeat_interleave(beam, dim=0)
    scores = torch.full((n, beam), -math.inf, device=logp.device)
    scores[:, 0] = 0.0  # the first step expands the prompt once, not beam times
    tokens: list[list[int]] = [[] for _ in range(n * beam)]
    finished: list[list[SpeechLLMHypothesis]] = [[] for _ in range(n)]
    done = [False] * n
    limits = [opts.limit(d) for d in durations]
    eos = model.eos_id
    step = 0
    while True:
        cand = (scores[:, :, None] + logp.view(n, beam, vocab)).view(n, beam * vocab)
        top_val, top_idx = cand.topk(min(2 * beam + 1, beam * vocab), dim=-1)
        src = list(range(n * beam))
        feed = [eos] * (n * beam)
        new_scores = torch.full((n, beam), -math.inf)
        new_tokens: list[list[int]] = [[] for _ in range(n * beam)]
        for i in range(n):
            if done[i]:
                continue
            live: list[tuple[int, int, float]] = []
            at_limit = step >= limits[i]
            for val, idx in zip(top_val[i].tolist(), top_idx[i].tolist()):
                if val == -math.inf:
                    break
                b, tok = divmod(idx, vocab)
                if tok == eos:
                    if len(finished[i]) < beam:
                        finished[i].append(SpeechLLMHypothesis(list(tokens[i * beam + b]), val, True))
                elif not at_limit:
                    live.append((b, tok, val))
                    if len(live) == beam:
                        break
            if len(finished[i]) >= beam or at_limit or not live:
                done[i] = True
                # The live rows, best first, fill the n-best list (unfinished: the guard stopped them).
                rows = sorted(range(beam), key=lambda b: -float(scores[i, b]))
                for b in rows:
                    if len(finished[i]) >= beam or scores[i, b] == -math.inf:
                        break
                    finished[i].append(SpeechLLMHypothesis(list(tokens[i * beam + b]), float(scores[i, b]), False))
                continue
            for j, (b, tok, val) in enumerate(live):
                r = i * beam + j
                src[r] = i * beam + b
                feed[r] = tok
                new_scores[i, j] = val
                new_tokens[r] = tokens[i * beam + b] + [tok]
        if all(done):
            break
        step += 1
        scores = new_scores.to(logp.device)
        tokens = new_tokens
        cache.reorder_cache(torch.tensor(src, device=logp.device))
        positions = positions + 1
        logp, mask = _step(model, torch.tensor(feed, device=logp.device), cache, mask, positions)
    return [sorted(hs, key=lambda h: (not h.finished, -h.score)) for hs in finished]
