"""The decoding methods: one registry of what each needs and yields, checked in one place.

Every consumer (``dsr decode``, ``dsr transcribe``, :class:`dsr.Recognizer`, pseudo-labelling,
the benches) asks this registry whether a method exists, which heads of the model it needs,
whether it yields an n-best list and whether it streams, instead of keeping tuples of names
of its own.  The tuples below (``METHODS``, ``NBEST_METHODS``, ...) are derived from it.

Heads (:data:`HEADS`): ``transducer`` (predictor + joiner), ``ctc`` (the CTC head),
``attention`` (an attention decoder that rescores n-best lists: dsr's own, or Whisper's
decoder head through its own tokens) and ``whisper`` (Whisper's decoder head, which decodes
by itself) and ``speech_llm`` (a speech-LLM checkpoint of ``dsr train --speech-llm``, decoded by
:mod:`dsr.decoding.speech_llm_decode`).  Errors are :class:`~dsr.errors.OptionError` on the ``method`` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dsr.errors import OptionError

HEADS = ("transducer", "ctc", "attention", "whisper", "speech_llm")


@dataclass(frozen=True)
class DecodingMethod:
    """One decoding method.

    Attributes:
        name: what ``-m`` / ``method`` calls it.
        heads: the model heads it needs (:data:`HEADS`).
        nbest: it yields an n-best list (written to ``nbest.jsonl``; ``beam_size`` applies).
        tokens: ``"bpe"`` (hypotheses in the lang dir's BPE tokens: hotwords, ``nbest`` and lexicon
            expansion apply), ``"whisper"`` (Whisper's own tokens) or ``"text"`` (text only).
        streaming: it can consume the encoder output chunk by chunk (``streaming``).
        first_pass: the method whose n-best list it rescores (the attention-rescoring ones).
        zero_shot: it runs on zero-shot pretrained Whisper (``pretrained``).
        reference: a reference row computed outside dsr's model (needs ``pretrained``; gives no scores).
        expandable: lexicon expansion (:mod:`dsr.decoding.lexicon_expand`) can rescore its variants.
        fusable: its search (or first pass) is the transducer's beam search, which an external
            token LM can join (shallow fusion, ``ngram_lm``).
    """

    name: str
    heads: frozenset[str]
    nbest: bool = False
    tokens: str = "bpe"
    streaming: bool = False
    first_pass: str | None = None
    zero_shot: bool = False
    reference: bool = False
    expandable: bool = False
    fusable: bool = False


def _m(name: str, heads: tuple[str, ...], **kw: Any) -> DecodingMethod:
    return DecodingMethod(name, frozenset(heads), **kw)


#: name -> method, in the order ``dsr decode --help`` lists them.
REGISTRY: dict[str, DecodingMethod] = {
    m.name: m
    for m in (
        _m("greedy", ("transducer",), streaming=True),
        _m("ctc-greedy", ("ctc",)),
        _m("modified-beam-search", ("transducer",), nbest=True, expandable=True, fusable=True),
        _m("ctc-prefix-beam-search", ("ctc",), nbest=True, expandable=True),
        _m("ctc-attention-rescoring", ("ctc", "attention"), nbest=True, first_pass="ctc-prefix-beam-search"),
        _m(
            "transducer-attention-rescoring",
            ("transducer", "attention"),
            nbest=True,
            first_pass="modified-beam-search",
            fusable=True,
        ),
        _m("whisper-greedy", ("whisper",), tokens="whisper", zero_shot=True),
        _m("whisper-beam-search", ("whisper",), nbest=True, tokens="whisper", zero_shot=True),
        # faster-whisper's own greedy transcription of the cuts' audio, with --pretrained: the reference row.
        _m("faster-whisper", (), tokens="text", zero_shot=True, reference=True),
        # A speech-LLM checkpoint (dsr train --speech-llm): the LLM decodes, or reranks another method's n-best.
        _m("speech-llm-greedy", ("speech_llm",), tokens="text"),
        _m("speech-llm-beam-search", ("speech_llm",), nbest=True, tokens="text"),
        _m("speech-llm-rescoring", ("speech_llm",), tokens="text"),
    )
}

ALL_METHODS = tuple(REGISTRY)
#: The methods of dsr's hybrid model (and zero-shot Whisper); the speech-LLM's are SPEECH_LLM_METHODS.
METHODS = tuple(n for n, m in REGISTRY.items() if "speech_llm" not in m.heads)
#: The n-best methods in BPE tokens (hotwords, ``nbest``, n-best rescoring with an LLM).
NBEST_METHODS = tuple(n for n, m in REGISTRY.items() if m.nbest and m.tokens == "bpe")
CTC_METHODS = tuple(n for n, m in REGISTRY.items() if "ctc" in m.heads)
TRANSDUCER_METHODS = tuple(n for n, m in REGISTRY.items() if "transducer" in m.heads)
ATTENTION_METHODS = tuple(n for n, m in REGISTRY.items() if "attention" in m.heads)
WHISPER_METHODS = tuple(n for n, m in REGISTRY.items() if "whisper" in m.heads)
REFERENCE_METHODS = tuple(n for n, m in REGISTRY.items() if m.reference)
ZERO_SHOT_METHODS = tuple(n for n, m in REGISTRY.items() if m.zero_shot)
STREAMING_METHODS = tuple(n for n, m in REGISTRY.items() if m.streaming)
EXPANDABLE_METHODS = tuple(n for n, m in REGISTRY.items() if m.expandable)
FUSABLE_METHODS = tuple(n for n, m in REGISTRY.items() if m.fusable)
SPEECH_LLM_METHODS = tuple(n for n, m in REGISTRY.items() if "speech_llm" in m.heads)
#: Attention-rescoring method -> the first pass whose n-best list it rescores.
RESCORING_FIRST_PASS = {n: m.first_pass for n, m in REGISTRY.items() if m.first_pass is not None}


def get_method(name: str, field: str = "method") -> DecodingMethod:
    """The registered method ``name``; :class:`OptionError` on ``field`` for an unknown one."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise OptionError(field, f"{name!r} is unknown; choose from {', '.join(ALL_METHODS)}") from None


def model_heads(model: Any) -> frozenset[str]:
    """The heads (:data:`HEADS`) a :class:`~dsr.models.transducer.HybridTransducer` has."""
    heads = set()
    if model.has_transducer:
        heads.add("transducer")
    if model.ctc_output is not None:
        heads.add("ctc")
    if model.attention_decoder is not None:
        heads.add("attention")
    if model.has_whisper_head:
        heads.add("whisper")
    return frozenset(heads)


# Why a head is missing and what to do instead, for the error message.
_MISSING = {
    "ctc": "a CTC head, but this model was trained without one (use_ctc false)",
    "transducer": "a transducer, but this model was trained without one (use_transducer false); "
    "use ctc-greedy or ctc-prefix-beam-search",
    "attention": "an attention decoder, but this model was trained without one (attention_decoder_layers 0)",
    "whisper": "Whisper's decoder head: train with dsr train --pretrained whisper-... (keeping its decoder), "
    "or decode zero-shot Whisper (`pretrained` NAME)",
}


def check_method(model: Any, method: str, field: str = "method") -> DecodingMethod:
    """The method ``method`` if ``model`` has every head it needs; else :class:`OptionError`
    on ``field`` naming the missing head."""
    m = get_method(method, field)
    have = model_heads(model)
    for head in HEADS:  # a fixed order, so the message does not depend on set iteration
        if head in m.heads and head not in have:
            raise OptionError(field, f"{method} needs {_MISSING[head]}")
    return m
