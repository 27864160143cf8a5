"""Decoding with Whisper's decoder head: its own search methods, attention rescoring of the
BPE heads' n-best lists, and zero-shot Whisper as a model of its own.

A model with a :class:`~dsr.models.whisper.dsr_modules.WhisperDecoderHead` decodes with
``whisper-greedy`` / ``whisper-beam-search`` (Whisper's tokenizer, text out) and rescores
the transducer or CTC n-best lists, whose BPE hypotheses are turned into Whisper ids
through their text (:func:`~dsr.models.whisper.pretrained.whisper_text`).  Zero-shot
Whisper is the pretrained model alone: the encoder on a 30 s window, as Whisper was
trained and as faster-whisper runs it, and the decoder with faster-whisper's token
suppression, so the two agree (tests/test_whisper_zero_shot.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from dsr.decoding.methods import check_method
from dsr.decoding.whisper_search import (
    ENCODER_FRAME_SECONDS,
    WhisperHypothesis,
    WhisperSearchOptions,
    whisper_beam_search,
    whisper_greedy_search,
)
from dsr.errors import DsrUserError, OptionError
from dsr.models.config import ModelConfig, build_model
from dsr.models.transducer import HybridTransducer
from dsr.models.whisper.pretrained import whisper_model_config, whisper_text


@dataclass
class WhisperDecoding:
    """What decoding with a Whisper head needs besides the model: its tokenizer and search settings.

    Attributes:
        tokenizer: a :class:`dsr.models.whisper.tokenizer.WhisperTokenizer`.
        search: prompt, end token, suppression and length guard (``beam_size`` is set per call).
    """

    tokenizer: Any
    search: WhisperSearchOptions

    def texts(self, hyps: list[WhisperHypothesis]) -> list[str]:
        return [self.tokenizer.decode(h.tokens) for h in hyps]

    def head_tokens(self, text: str) -> list[int]:
        """A hypothesis of another head (its text) -> the Whisper head's ids, as it was trained."""
        return self.tokenizer.encode(whisper_text(text))


def whisper_search_options(loaded: Any, tokenizer: Any, prompt: tuple[int, ...]) -> WhisperSearchOptions:
    """faster-whisper's defaults for a loaded Whisper: its ``suppress_tokens`` (the model's
    non-speech symbols and task tokens) and ``suppress_blank`` (blank and end token not
    first).  Like faster-whisper after ``<|notimestamps|>``, timestamp tokens are not
    suppressed (decoding drops them from the text)."""
    return WhisperSearchOptions(
        prompt=tuple(prompt),
        eot=tokenizer.eot,
        suppress_tokens=tuple(loaded.suppress_tokens),
        suppress_at_begin=tuple(loaded.suppress_blank),
        suppress_from=None,
    )


def decoding_from_checkpoint(ckpt: dict[str, Any], model: HybridTransducer) -> WhisperDecoding | None:
    """The :class:`WhisperDecoding` of a checkpoint whose model has a Whisper head, else None."""
    if not model.has_whisper_head:
        return None
    head = model.whisper_head()
    from dsr.models.whisper.tokenizer import WhisperTokenizer

    if "whisper_tokenizer" not in ckpt:
        raise DsrUserError(
            "this checkpoint has a Whisper decoder head but no whisper_tokenizer; it was written by an "
            "older dsr: retrain it"
        )
    tokenizer = WhisperTokenizer(ckpt["whisper_tokenizer"], bool(ckpt.get("whisper_multilingual", False)))
    settings = ckpt.get("whisper_search", {})
    search = WhisperSearchOptions(
        prompt=tuple(head.prompt),
        eot=head.eot,
        suppress_tokens=tuple(settings.get("suppress_tokens", ())),
        suppress_at_begin=tuple(settings.get("suppress_at_begin", ())),
        suppress_from=settings.get("suppress_from", head.eot + 1),
    )
    return WhisperDecoding(tokenizer, search)


def zero_shot_model(pretrained: str, language: str = "en") -> tuple[HybridTransducer, WhisperDecoding, str]:
    """Pretrained Whisper as a dsr model (encoder on a 30 s window + its decoder), eval mode,
    with its decoding settings and a tag for result files."""
    from dsr.models.whisper.load import load_whisper, resolve_pretrained
    from dsr.models.whisper.pretrained import load_whisper_weights

    loaded = load_whisper(resolve_pretrained(pretrained))
    if loaded.tokenizer_json is None:
        raise OptionError(
            f"{{pretrained}} {pretrained} has no tokenizer.json; convert it with "
            "dsr whisper convert SRC OUT --tokenizer tokenizer.json"
        )
    tokenizer = loaded.tokenizer()
    prompt = tuple(tokenizer.sot_sequence(language if loaded.multilingual else None))
    # No transducer or CTC head: Whisper's decoder decodes alone (vocab_size is a placeholder).
    base = ModelConfig(vocab_size=2, use_transducer=False, use_ctc=False)
    cfg = whisper_model_config(base, loaded.dims, prompt, tokenizer.eot, whisper_decoder=True, pad_to_30s=True)
    model = build_model(cfg)
    load_whisper_weights(model, loaded.state_dict)
    return (
        model.eval(),
        WhisperDecoding(tokenizer, whisper_search_options(loaded, tokenizer, prompt)),
        f"zero-shot {pretrained}",
    )


def whisper_nbest(
    model: HybridTransducer,
    decoding: WhisperDecoding,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    durations: list[float],
    method: str,
    beam_size: int,
) -> list[list[WhisperHypothesis]]:
    """N-best lists (one hypothesis for ``whisper-greedy``) of a Whisper method, best first.

    ``durations`` (seconds per utterance) set the length guard: the encoder output may
    be a padded 30 s window whose frame count says nothing about the speech.
    """
    # The option ``method`` names a Whisper method the model has the head of (OptionError otherwise);
    # the stages check it when the model is loaded, this is for direct callers.
    check_method(model, method)
    head = model.whisper_head()
    if method == "whisper-greedy":
        return [[h] for h in whisper_greedy_search(head, encoder_out, encoder_lens, durations, decoding.search)]
    if method == "whisper-beam-search":
        opts = replace(decoding.search, beam_size=beam_size)
        return whisper_beam_search(head, encoder_out, encoder_lens, durations, opts)
    raise ValueError(f"not a Whisper method: {method!r}")


def frames_to_seconds(encoder_lens: torch.Tensor) -> list[float]:
    """Durations of unpadded encoder outputs (20 ms per frame)."""
    return [n * ENCODER_FRAME_SECONDS for n in encoder_lens.tolist()]
