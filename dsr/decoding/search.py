"""One call per decoding method on a batch of encoder output: the search dispatch.

:func:`nbest_search` runs the n-best methods, :func:`best_tokens` any BPE method's 1-best,
:func:`best_with_timestamps` the same with the encoder frame of each token.  Which method
exists and which heads it needs is :mod:`dsr.decoding.methods`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dsr.decoding.attention_rescoring import attention_rescore
from dsr.decoding.beam_search import Hypothesis, ShallowFusion, modified_beam_search
from dsr.decoding.context_graph import ContextGraph, load_context_graph
from dsr.decoding.ctc_prefix import ctc_log_likelihood, ctc_prefix_beam_search
from dsr.decoding.greedy import (
    ctc_greedy_search,
    ctc_greedy_search_with_timestamps,
    transducer_greedy_search,
    transducer_greedy_search_with_timestamps,
)
from dsr.decoding.methods import NBEST_METHODS, RESCORING_FIRST_PASS, get_method
from dsr.decoding.options import SearchFields
from dsr.decoding.whisper_decode import WhisperDecoding
from dsr.lang.bpe import Tokenizer
from dsr.lm.ngram import NgramLm
from dsr.models.transducer import HybridTransducer

logger = logging.getLogger("dsr")


@dataclass
class SearchOptions:
    """Options of the n-best methods (ignored by the greedy ones); ValueError on a bad value.

    ``nbest`` defaults to ``beam_size``; ``context_graph`` biases towards hotwords;
    ``attention_scale`` weighs the attention score in the attention-rescoring methods;
    ``fusion`` adds an external token LM to the transducer's beam search.
    """

    beam_size: int = 4
    nbest: int | None = None
    context_graph: ContextGraph | None = None
    attention_scale: float = 1.0
    # BPE token ids -> the attention head's ids, when the head has its own vocabulary (Whisper's).
    attention_tokens: Callable[[list[int]], list[int]] | None = None
    fusion: ShallowFusion | None = None

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1 (got {self.beam_size})")
        if self.nbest is not None and not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"nbest must be in [1, beam_size={self.beam_size}] (got {self.nbest})")
        if self.attention_scale < 0:
            raise ValueError(f"attention_scale must be >= 0 (got {self.attention_scale})")


def search_options(fields: SearchFields, tokenizer: Tokenizer | None, nbest: int | None = None) -> SearchOptions:
    """:class:`SearchOptions` of a decode's or transcribe's search ``fields``, with the hotwords of
    ``hotwords_file`` and the token n-gram ``ngram_lm`` (shallow fusion at ``ngram_scale``) loaded
    for ``tokenizer``'s lang dir; ``nbest`` hypotheses per utterance (None: the whole beam)."""
    ngram_lm, hotwords_file, hotword_score = fields.ngram_lm, fields.hotwords_file, fields.hotword_score
    fusion = None
    if ngram_lm is not None:
        if tokenizer is None:
            raise ValueError("an n-gram LM needs the BPE tokenizer of the model's lang dir")
        fusion = ShallowFusion(NgramLm(ngram_lm, tokenizer), fields.ngram_scale, fields.ngram_token_bonus)
        logger.info(
            "shallow fusion: token %d-gram %s, scale %g, token bonus %g",
            fusion.lm.order,
            ngram_lm,
            fusion.scale,
            fusion.token_bonus,
        )
    graph = None
    if hotwords_file is not None:
        if tokenizer is None:
            raise ValueError("hotwords need the BPE tokenizer of the model's lang dir")
        graph = load_context_graph(Path(hotwords_file), tokenizer.encode, default_score=hotword_score)
        logger.info(
            "hotwords: %d phrases from %s (default bonus %.2f per token)", len(graph), hotwords_file, hotword_score
        )
    return SearchOptions(fields.beam_size, nbest, graph, fields.attention_scale, fusion=fusion)


def with_whisper_rescoring(
    opts: SearchOptions, whisper: WhisperDecoding | None, tokenizer: Tokenizer | None
) -> SearchOptions:
    """``opts`` with the conversion Whisper's decoder head needs to rescore the BPE heads'
    hypotheses: their text, in the head's own tokens.  Unchanged without such a head."""
    if whisper is None or tokenizer is None:
        return opts
    return replace(opts, attention_tokens=lambda tokens: whisper.head_tokens(tokenizer.decode(tokens)))


def nbest_search(
    model: HybridTransducer, encoder_out: torch.Tensor, encoder_lens: torch.Tensor, method: str, opts: SearchOptions
) -> list[list[Hypothesis]]:
    """N-best lists of an n-best method for (N, T, D) encoder output and (N,) lengths.

    Transducer hypotheses also get their ``ctc_score`` when the model has a CTC head,
    so that an n-best file can be rescored with it later.  The attention-rescoring
    methods run their first pass, then :func:`attention_rescore` (whose order they return).
    """
    if method in RESCORING_FIRST_PASS:
        if model.attention_decoder is None:
            raise ValueError(f"method {method} needs an attention decoder; this model has none")
        first = nbest_search(model, encoder_out, encoder_lens, RESCORING_FIRST_PASS[method], opts)
        return attention_rescore(
            model.attention_decoder, encoder_out, encoder_lens, first, opts.attention_scale, opts.attention_tokens
        )
    if method == "modified-beam-search":
        nbest = modified_beam_search(
            model, encoder_out, encoder_lens, opts.beam_size, opts.nbest, opts.context_graph, opts.fusion
        )
        if model.ctc_output is not None:
            tokens = [[h.tokens for h in hyps] for hyps in nbest]
            scores = ctc_log_likelihood(model.ctc_log_probs(encoder_out), encoder_lens, tokens, blank=model.blank_id)
            nbest = [[replace(h, ctc_score=c) for h, c in zip(hs, cs)] for hs, cs in zip(nbest, scores)]
        return nbest
    if method == "ctc-prefix-beam-search":
        return ctc_prefix_beam_search(
            model.ctc_log_probs(encoder_out),
            encoder_lens,
            opts.beam_size,
            opts.nbest,
            blank=model.blank_id,
            context_graph=opts.context_graph,
        )
    raise ValueError(f"method {method!r} has no n-best list in BPE tokens; choose from {', '.join(NBEST_METHODS)}")


def best_with_timestamps(
    model: HybridTransducer,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    method: str,
    opts: SearchOptions | None = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """1-best BPE token ids per utterance with any BPE method, and the encoder frame of each token."""
    m = get_method(method)
    if method == "greedy":
        return transducer_greedy_search_with_timestamps(model, encoder_out, encoder_lens)
    if method == "ctc-greedy":
        return ctc_greedy_search_with_timestamps(model.ctc_log_probs(encoder_out), encoder_lens, blank=model.blank_id)
    if m.nbest and m.tokens == "bpe":
        nbest = nbest_search(model, encoder_out, encoder_lens, method, opts or SearchOptions())
        return [hyps[0].tokens for hyps in nbest], [hyps[0].timestamps for hyps in nbest]
    raise ValueError(f"method {method} does not decode to BPE tokens")


def best_tokens(
    model: HybridTransducer,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    method: str,
    opts: SearchOptions | None = None,
) -> list[list[int]]:
    """1-best token ids per utterance with any BPE method."""
    if method == "greedy":
        return transducer_greedy_search(model, encoder_out, encoder_lens)
    if method == "ctc-greedy":
        return ctc_greedy_search(model.ctc_log_probs(encoder_out), encoder_lens, blank=model.blank_id)
    return best_with_timestamps(model, encoder_out, encoder_lens, method, opts)[0]
