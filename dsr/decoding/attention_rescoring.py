"""Attention rescoring (WeNet): re-rank a first-pass n-best list with the attention decoder.

Each hypothesis gets ``attention_score = log p_att(y + eos | x)`` from the model's
attention decoder; the list is re-ordered by ``score + attention_scale *
attention_score``, where ``score`` is the first pass's ranking score (acoustic score
plus hotword bonus).  The sort is stable, so with ``attention_scale = 0`` the
first-pass order, and its 1-best, come back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from dsr.decoding.beam_search import Hypothesis
from dsr.models.attention_decoder import AttentionDecoder

if TYPE_CHECKING:
    from dsr.models.whisper.dsr_modules import WhisperDecoderHead


@torch.no_grad()
def attention_rescore(
    decoder: AttentionDecoder | WhisperDecoderHead,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    nbest: list[list[Hypothesis]],
    attention_scale: float = 1.0,
    head_tokens: Callable[[list[int]], list[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Add ``attention_score`` to every hypothesis and re-rank each list.

    Args:
        decoder: the attention decoder (in eval mode).
        encoder_out: (N, T, D) encoder output the n-best lists were searched on.
        encoder_lens: (N,) valid frames.
        nbest: N first-pass lists, best first.
        attention_scale: weight of the attention score (>= 0).
        head_tokens: maps a hypothesis's tokens to the decoder's vocabulary when it has its own
            (Whisper's decoder head); None when the decoder reads the first pass's tokens.

    Returns:
        N lists of the same hypotheses with ``attention_score`` set, sorted by
        ``score + attention_scale * attention_score`` (highest first, ties in first-pass order).
    """
    if attention_scale < 0:
        raise ValueError(f"attention_scale must be >= 0 (got {attention_scale})")
    if len(nbest) != encoder_out.size(0):
        raise ValueError(f"need one n-best list per utterance ({encoder_out.size(0)}), got {len(nbest)}")
    convert = head_tokens or (lambda tokens: tokens)
    scores = decoder.score(encoder_out, encoder_lens, [[convert(h.tokens) for h in hyps] for hyps in nbest])
    out = []
    for hyps, att in zip(nbest, scores):
        ranked = [(h.score + attention_scale * a, replace(h, attention_score=a)) for h, a in zip(hyps, att)]
        ranked.sort(key=lambda pair: pair[0], reverse=True)  # stable: ties keep the first-pass order
        out.append([h for _, h in ranked])
    return out
