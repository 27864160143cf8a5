"""The options of ``dsr decode`` and ``dsr transcribe``: one dataclass per stage that validates itself.

Errors are :class:`~dsr.errors.OptionError` (a ``ValueError`` and a ``DsrUserError``) in the
options' own terms: the field, with other fields in backticks.  The CLI generates a flag per
field (``metadata["help"]``; ``metadata["flag"]`` where the flag is not the field's name) and
names the flags in the message instead (:mod:`dsr.cli.options`).  What needs the model (its
heads, its streaming chunking) is checked once the model is loaded
(:func:`dsr.decoding.methods.check_method`, :func:`dsr.decoding.streaming.streaming_options`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsr.decoding.methods import (
    EXPANDABLE_METHODS,
    FUSABLE_METHODS,
    NBEST_METHODS,
    REFERENCE_METHODS,
    SPEECH_LLM_METHODS,
    STREAMING_METHODS,
    ZERO_SHOT_METHODS,
    get_method,
)
from dsr.errors import OptionError
from dsr.options import opt

logger = logging.getLogger("dsr")


_METHODS_HELP = (
    "greedy, modified-beam-search (transducer), ctc-greedy, ctc-prefix-beam-search, or the attention "
    "decoder's rescoring of an n-best list: ctc-attention-rescoring, transducer-attention-rescoring; with "
    "Whisper's decoder head (dsr train --pretrained, or zero-shot --pretrained): whisper-greedy, whisper-beam-search; "
    "with --pretrained also faster-whisper (the reference implementation, on the cuts' audio); with a "
    "speech-LLM checkpoint (dsr train --speech-llm; no --lang-dir needed): speech-llm-greedy, "
    "speech-llm-beam-search (--hotwords-file phrases go into its prompt), speech-llm-rescoring (--nbest-file)"
)


@dataclass(frozen=True)
class ExpandOptions:
    """How far lexicon expansion (:mod:`dsr.decoding.lexicon_expand`) goes; OptionError on a bad value.

    Attributes:
        max_edits: character edits from an out-of-lexicon word to a candidate; words of
            up to ``short_word`` letters get one edit fewer (short words have many neighbours).
        per_word: candidates kept per out-of-lexicon word, best acoustic score first.
        max_am_drop: candidates whose acoustic log-likelihood is more than this below
            their parent's are dropped (the audio does not support them).
        max_hyps: at most this many hypotheses are added per expanded hypothesis.
        short_word: see ``max_edits``.
        parents: how many of the search's best hypotheses are expanded (``max_hyps`` each).
    """

    max_edits: int = opt(
        2,
        "With --expand-lexicon: character edits to a lexicon word (one fewer for words of up "
        "to --expand-short-word letters).",
    )
    per_word: int = opt(4, "With --expand-lexicon: candidates kept per word, best acoustic score first.")
    max_am_drop: float = opt(
        8.0, "With --expand-lexicon: drop variants whose acoustic log-likelihood is this far below the 1-best's."
    )
    max_hyps: int = opt(32, "With --expand-lexicon: hypotheses added per utterance at most.")
    short_word: int = opt(4, "With --expand-lexicon: words of up to this many letters get one edit fewer.")
    parents: int = opt(3, "With --expand-lexicon: expand the non-words of this many of the best hypotheses.")

    def __post_init__(self) -> None:
        if self.max_edits < 1:
            raise OptionError("max_edits", f"must be >= 1 (got {self.max_edits})")
        for name in ("per_word", "max_hyps", "parents"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"must be >= 1 (got {getattr(self, name)})")
        if self.max_am_drop <= 0:
            raise OptionError("max_am_drop", f"must be > 0 (got {self.max_am_drop})")

    def edits_for(self, word: str) -> int:
        return self.max_edits - 1 if len(word) <= self.short_word else self.max_edits


@dataclass
class ModelOptions:
    """Which model to decode with, and where it runs."""

    exp_dir: Path | None = opt(None, "Experiment directory with checkpoints.")
    lang_dir: Path | None = opt(None, "Directory with bpe.model (not needed with --pretrained).")
    checkpoint: Path | None = opt(None, "One checkpoint file to decode instead of EXP_DIR's epochs (--epoch/--avg).")
    pretrained: str | None = opt(
        None,
        "Decode zero-shot Whisper (whisper-tiny.en, whisper-base, or a Whisper dir/file) instead of a dsr "
        "checkpoint, with -m whisper-greedy / whisper-beam-search. The cuts need whisper-fbank features.",
    )
    whisper_language: str = opt("en", "With --pretrained multilingual Whisper: the language token of the prompt.")
    epoch: int = opt(0, "Decode epoch-E.pt (0 = the newest checkpoint).")
    avg: int = opt(1, "Average the model over the last AVG epochs ending at --epoch.")
    use_averaged_model: bool = opt(
        True,
        "Average every model the trainer sampled during the last AVG epochs (needs epoch-(E-AVG).pt) "
        "instead of only the AVG epoch-end checkpoints.",
    )
    device: str = opt("auto", "cpu, cuda or auto.")
    int8: bool = opt(
        False,
        "Quantise the Linear layers to int8 (dynamic, CPU only): ~2x faster encoder for large models, "
        "slightly different scores; results go to <method>-int8.",
    )

    def _check_model(self, need_lang_dir: bool) -> None:
        if self.epoch < 0:
            raise OptionError("epoch", f"must be >= 0 (0 = the newest checkpoint), got {self.epoch}")
        if self.avg < 1:
            raise OptionError("avg", f"must be >= 1, got {self.avg}")
        if self.pretrained and self.checkpoint is not None:
            raise OptionError("checkpoint", "give a dsr checkpoint or `pretrained` Whisper, not both")
        if self.exp_dir is None and self.checkpoint is None and not self.pretrained:
            raise OptionError(
                "exp_dir",
                "is required: the experiment directory with the checkpoints to decode "
                "(or give `checkpoint` FILE, or `pretrained` NAME for zero-shot Whisper)",
            )
        if need_lang_dir and self.lang_dir is None:
            raise OptionError("lang_dir", "is required (the BPE model the checkpoint was trained with)")
        for name in ("lang_dir", "exp_dir", "checkpoint"):  # accept str paths from Python callers
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                setattr(self, name, Path(value))


@dataclass
class SearchFields:
    """The beam searches' options shared by decode and transcribe."""

    beam_size: int = opt(4, "Beam of the beam-search methods.")
    hotwords_file: Path | None = opt(
        None, "Phrases to bias the beam searches towards: one per line, optionally PHRASE<TAB>SCORE."
    )
    hotword_score: float = opt(
        1.0,
        "Bonus per matched hotword token, for phrases without their own score "
        "(0.5-1 suited the transducer of the embedded recipe, ~2 its CTC head: bench/hotwords.py).",
    )
    attention_scale: float = opt(
        1.0, "Attention-rescoring methods: rank by first-pass score + SCALE * attention-decoder score."
    )
    ngram_lm: Path | None = opt(
        None,
        "Token n-gram LM (ARPA over the lang dir's BPE pieces, e.g. from dsr lm ngram) joined to the "
        "transducer's beam search by shallow fusion (modified-beam-search, transducer-attention-rescoring); "
        "results go to <method>+ngramSCALE.",
    )
    ngram_scale: float = opt(0.3, "With --ngram-lm: weight of its log-probabilities in the ranking (tune on dev).")
    ngram_token_bonus: float = opt(
        0.0,
        "With --ngram-lm: added per emitted token, against the deletions a large --ngram-scale causes "
        "(tune on dev; results go to <method>+ngramSCALE-bonusB).",
    )

    def _check_search(self, methods: tuple[str, ...], pretrained: str | None) -> None:
        if self.beam_size < 1:
            raise OptionError("beam_size", f"must be >= 1, got {self.beam_size}")
        if self.attention_scale < 0:
            raise OptionError("attention_scale", f"must be >= 0, got {self.attention_scale}")
        if self.hotwords_file is not None and pretrained:
            raise OptionError("hotwords_file", "needs the BPE heads' lang dir (not zero-shot Whisper)")
        if self.ngram_scale < 0:
            raise OptionError("ngram_scale", f"must be >= 0, got {self.ngram_scale}")
        if self.ngram_lm is not None:
            if not isinstance(self.ngram_lm, Path):
                self.ngram_lm = Path(self.ngram_lm)
            if pretrained:
                raise OptionError("ngram_lm", "needs the BPE heads' lang dir (not zero-shot Whisper)")
            if not set(methods) & set(FUSABLE_METHODS):
                raise OptionError(
                    "ngram_lm", f"joins the beam search of {' or '.join(FUSABLE_METHODS)}; give one of them"
                )
            if not self.ngram_lm.is_file():
                raise OptionError("ngram_lm", f"{self.ngram_lm} does not exist; build one with dsr lm ngram")


@dataclass
class DecodeOptions(SearchFields, ModelOptions):
    """Everything ``dsr decode`` needs besides the cuts (see :func:`dsr.decoding.decode.decode`)."""

    methods: tuple[str, ...] = opt(("greedy",), f"{_METHODS_HELP}; repeatable.", flag="--method", short="-m")
    max_duration: float = opt(300.0, "Seconds of audio per batch.")
    num_threads: int = opt(0, "torch CPU threads (0 = default).")
    nbest: int = opt(0, "Hypotheses per utterance in nbest.jsonl (0 = --beam-size).")
    streaming: bool = opt(
        False, "Decode chunk by chunk with cached encoder state, as live audio (greedy only; needs a --causal model)."
    )
    chunk_ms: float = opt(0.0, "With --streaming: audio per chunk in ms, a multiple of 40 (one encoder frame).")
    left_context_chunks: int | None = opt(
        None, "With --streaming: chunks of attention left context, -1 = all (default: the model's own)."
    )
    expand_lexicon: Path | None = opt(
        None,
        "Word list (one word per line, e.g. /usr/share/dict/american-english): add respellings, splits and "
        "joins of the 1-best's out-of-lexicon words, scored by the model, to the n-best list for LLM rescoring "
        "(modified-beam-search, ctc-prefix-beam-search; results go to <method>+lexicon).",
    )
    # Nested: its fields become --expand-<field> flags (dsr.cli.options).
    expand: ExpandOptions = opt(
        ExpandOptions(), "How far lexicon expansion goes.", nested=ExpandOptions, prefix="expand_"
    )
    nbest_file: tuple[Path, ...] = opt(
        (),
        "With -m speech-llm-rescoring: the nbest.jsonl of another method on the same cuts "
        "(e.g. EXP/decode/modified-beam-search/SPLIT/nbest.jsonl) to rerank by the speech-LLM's likelihood; "
        "repeatable: one per --cuts, in the same order.",
    )
    speech_llm_scale: float = opt(
        1.0, "With -m speech-llm-rescoring: rank by am_score + SCALE * speech-LLM log-likelihood."
    )

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = (self.methods,)
        self.methods = tuple(self.methods)
        if self.nbest is None:  # the library's old spelling of "the whole beam"
            self.nbest = 0
        if not self.methods:
            raise OptionError("methods", "give at least one decoding method")
        for m in self.methods:
            get_method(m, "methods")
        if self.exp_dir is None:
            raise OptionError("exp_dir", "is required: the results go to `exp_dir`/decode/")
        speech_llm = set(self.methods) & set(SPEECH_LLM_METHODS)
        if speech_llm and not set(self.methods) <= set(SPEECH_LLM_METHODS):
            raise OptionError(
                "methods",
                f"{', '.join(sorted(speech_llm))} decode a speech-LLM checkpoint: "
                "decode the other methods in another run",
            )
        self._check_model(need_lang_dir=not self.pretrained and not speech_llm)
        if speech_llm and (self.streaming or self.int8 or self.expand_lexicon is not None):
            raise OptionError(
                "methods",
                "speech-llm-* decode whole utterances in float32: drop `streaming`, `int8` and `expand_lexicon`",
            )
        # One path (the library's spelling before the flag was repeatable) or several, as Paths.
        if self.nbest_file is None or isinstance(self.nbest_file, (str, Path)):
            self.nbest_file = () if self.nbest_file is None else (self.nbest_file,)
        self.nbest_file = tuple(Path(p) for p in self.nbest_file)
        if "speech-llm-rescoring" in self.methods and not self.nbest_file:
            raise OptionError("nbest_file", "is required by speech-llm-rescoring: the n-best list to rerank")
        if self.speech_llm_scale < 0:
            raise OptionError("speech_llm_scale", f"must be >= 0, got {self.speech_llm_scale}")
        self._check_search(self.methods, self.pretrained)
        if self.max_duration <= 0:
            raise OptionError("max_duration", f"must be > 0 seconds, got {self.max_duration}")
        if self.num_threads < 0:
            raise OptionError("num_threads", f"must be >= 0 (0 = torch's default), got {self.num_threads}")
        if self.nbest < 0 or self.nbest > self.beam_size:
            raise OptionError(
                "nbest", f"must be between 1 and `beam_size`={self.beam_size} (or 0 = `beam_size`), got {self.nbest}"
            )
        if self.streaming and not set(self.methods) <= set(STREAMING_METHODS):
            raise OptionError(
                "streaming", f"decodes {' and '.join(STREAMING_METHODS)} only (got {', '.join(self.methods)})"
            )
        if not self.streaming and (self.chunk_ms or self.left_context_chunks is not None):
            raise OptionError("chunk_ms", "and `left_context_chunks` only apply with `streaming`")
        if self.pretrained and not set(self.methods) <= set(ZERO_SHOT_METHODS):
            raise OptionError(
                "pretrained", f"decodes zero-shot Whisper: use `methods` {' or '.join(ZERO_SHOT_METHODS)}"
            )
        if not self.pretrained and set(self.methods) & set(REFERENCE_METHODS):
            raise OptionError(
                "methods",
                f"{', '.join(REFERENCE_METHODS)} transcribes with a pretrained Whisper: give `pretrained` NAME",
            )
        if self.expand_lexicon is not None and not set(self.methods) <= set(EXPANDABLE_METHODS):
            raise OptionError(
                "expand_lexicon",
                f"needs n-best methods {' or '.join(EXPANDABLE_METHODS)} only (got {', '.join(self.methods)})",
            )
        if self.expand is None:
            self.expand = ExpandOptions()
        if self.hotwords_file is not None and not set(self.methods) & set(NBEST_METHODS):
            logger.warning("hotwords only affect %s; ignored", " and ".join(NBEST_METHODS))

    def nbest_files_for(self, cuts: Sequence[Path | str]) -> list[Path | None]:
        """The ``nbest_file`` that belongs to each of ``cuts`` (the manifests decoded in one run):
        with speech-llm-rescoring one per manifest, in the same order; None for each otherwise.
        OptionError when the counts differ."""
        if "speech-llm-rescoring" not in self.methods:
            return [None] * len(cuts)
        if len(self.nbest_file) != len(cuts):
            raise OptionError(
                "nbest_file",
                f"{len(self.nbest_file)} given for {len(cuts)} `cuts` manifests; give one n-best list per "
                "`cuts`, in the same order",
            )
        return list(self.nbest_file)


@dataclass
class TranscribeOptions(SearchFields, ModelOptions):
    """Everything ``dsr transcribe`` and :class:`dsr.Recognizer` need besides the audio."""

    method: str = opt("greedy", f"{_METHODS_HELP}.", short="-m")
    max_duration: float = opt(0.0, "Seconds of audio per batch (0 = one file at a time).")

    def __post_init__(self) -> None:
        m = get_method(self.method, "method")
        if m.reference:
            raise OptionError(
                "method",
                f"{self.method} is a reference row of dsr decode with `pretrained`; "
                "transcription decodes a dsr model or Whisper's own head",
            )
        self._check_model(need_lang_dir=not self.pretrained)
        self._check_search((self.method,), self.pretrained)
        if self.pretrained and not m.zero_shot:
            raise OptionError(
                "pretrained",
                f"decodes zero-shot Whisper: use `method` "
                f"{' or '.join(n for n in ZERO_SHOT_METHODS if n not in REFERENCE_METHODS)}",
            )
        if self.hotwords_file is not None and self.method not in NBEST_METHODS:
            raise OptionError("hotwords_file", f"needs method {' or '.join(NBEST_METHODS)} (got {self.method})")
        if self.max_duration < 0:
            raise OptionError("max_duration", f"must be >= 0 seconds (0 = one file at a time), got {self.max_duration}")
