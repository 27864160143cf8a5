"""Stage ``dsr decode``: decode a cuts manifest with one or more methods and score it.

Writes, per method and split, under ``<exp_dir>/decode/<method>/<split>/``:
``recogs.txt`` (ref/hyp pairs), ``errs.txt`` (alignments), ``wer.txt`` (one line),
``wer_by_speaker.txt`` (speaker, utts, words, errors, WER %; worst first),
``cer.txt`` (character error rate of the same normalised text, spaces ignored),
``result.json``, and for the n-best methods ``nbest.jsonl`` (one line per utterance:
``{"utt_id", "ref", "hyps": [{"text", "tokens", "am_score", "ctc_score",
"attention_score", "context_score", "timestamps"}, ...]}``, best first; non-finite or
unknown scores are null).  ``am_score`` is always the first pass's score.
Returns :class:`DecodeResult` rows for the summary table.

``result.json`` also measures the run: RTF (decode wall time, feature loading included,
over the audio decoded), per-utterance latency (``latency_ms``: mean/p50/p90/max) and
peak memory (``peak_rss_delta_mb``: the process's peak resident size during this
method's decode minus its size before; ``cuda_peak_mb``: CUDA's peak tensor memory, null
on the CPU).  Offline, an utterance's latency is the wall time from its batch's
features being in memory to the batch's hypotheses (the whole batch waits for its
longest utterance).  Streaming, it is the time after the utterance's last chunk: the
compute of that chunk, after which its hypothesis is final; ``chunk_compute_ms`` has
the compute time of every chunk (encoder + search, for the lockstep batch).

Cuts whose features or audio cannot be read are skipped, every other cut is decoded,
and the skipped ones are listed in ``result.json`` (``unreadable``) with a warning.

The attention-rescoring methods name their first pass: ``ctc-attention-rescoring``
rescores the ``ctc-prefix-beam-search`` n-best list (WeNet's "attention rescoring"),
``transducer-attention-rescoring`` the ``modified-beam-search`` one; see
:mod:`dsr.decoding.attention_rescoring`.

With ``streaming`` the encoder runs chunk by chunk with cached state (``chunk_ms`` of
audio per chunk) and greedy search consumes each chunk as it arrives; results go to
``<exp_dir>/decode/greedy-streaming-<chunk_ms>ms/<split>/`` with the algorithmic latency
in ``result.json``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from dsr.decoding.attention_rescoring import attention_rescore
from dsr.decoding.batches import DecodeBatches, Unreadable
from dsr.decoding.beam_search import Hypothesis, modified_beam_search
from dsr.decoding.context_graph import ContextGraph, load_context_graph
from dsr.decoding.ctc_prefix import ctc_log_likelihood, ctc_prefix_beam_search
from dsr.decoding.greedy import ctc_greedy_search, transducer_greedy_search
from dsr.decoding.lexicon_expand import EXPANDABLE_METHODS, ExpandOptions, Lexicon, expand_nbest
from dsr.decoding.whisper_decode import (
    WHISPER_METHODS,
    WhisperDecoding,
    decoding_from_checkpoint,
    whisper_nbest,
    zero_shot_model,
)
from dsr.decoding.speech_llm_decode import SPEECH_LLM_METHODS, decode_speech_llm
from dsr.decoding.streaming import (
    StreamingOptions,
    final_chunk_latency,
    streaming_greedy_search,
    streaming_options,
)
from dsr.errors import DsrUserError
from dsr.evaluation.latency import latency_stats, synced_clock
from dsr.evaluation.memory import PeakProcessMemory
from dsr.evaluation.wer import score, score_by_group, write_errs, write_recogs, write_wer_by_group
from dsr.features.frontend import check_cuts_frontend, frontend_from_dict, frontend_to_dict
from dsr.features.whisper_fbank import WhisperFbankConfig
from dsr.lang.bpe import Tokenizer
from dsr.models.config import ModelConfig, build_model
from dsr.models.transducer import HybridTransducer
from dsr.decoding.quantize import quantize_int8
from dsr.training.checkpoint import resolve_model_checkpoint
from dsr.training.datamodule import load_cuts
from dsr.training.trainer import resolve_device
from dsr.utils import write_json_atomic, write_text_atomic

logger = logging.getLogger("dsr")

# Attention-rescoring method -> the first pass whose n-best list it rescores.
RESCORING_FIRST_PASS = {
    "ctc-attention-rescoring": "ctc-prefix-beam-search",
    "transducer-attention-rescoring": "modified-beam-search",
}
#: faster-whisper's own greedy transcription of the cuts' audio, with --pretrained: the reference row.
REFERENCE_METHODS = ("faster-whisper",)
METHODS = ("greedy", "ctc-greedy", "modified-beam-search", "ctc-prefix-beam-search", *RESCORING_FIRST_PASS,
           *WHISPER_METHODS, *REFERENCE_METHODS)
NBEST_METHODS = ("modified-beam-search", "ctc-prefix-beam-search", *RESCORING_FIRST_PASS)
CTC_METHODS = ("ctc-greedy", "ctc-prefix-beam-search", "ctc-attention-rescoring")
TRANSDUCER_METHODS = ("greedy", "modified-beam-search", "transducer-attention-rescoring")
ATTENTION_METHODS = tuple(RESCORING_FIRST_PASS)


@dataclass
class SearchOptions:
    """Options of the n-best methods (ignored by the greedy ones).

    ``nbest`` defaults to ``beam_size``; ``context_graph`` biases towards hotwords;
    ``attention_scale`` weighs the attention score in the attention-rescoring methods.
    """

    beam_size: int = 4
    nbest: int | None = None
    context_graph: ContextGraph | None = None
    attention_scale: float = 1.0
    # BPE token ids -> the attention head's ids, when the head has its own vocabulary (Whisper's).
    attention_tokens: Callable[[list[int]], list[int]] | None = None

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1 (got {self.beam_size})")
        if self.nbest is not None and not 1 <= self.nbest <= self.beam_size:
            raise ValueError(f"nbest must be in [1, beam_size={self.beam_size}] (got {self.nbest})")
        if self.attention_scale < 0:
            raise ValueError(f"attention_scale must be >= 0 (got {self.attention_scale})")


@dataclass
class DecodeResult:
    method: str
    split: str
    wer: float
    errors: int
    ref_words: int
    num_utts: int
    rtf: float
    out_dir: Path
    latency_ms: float | None = None  # algorithmic latency of a streaming decode
    cer: float | None = None
    num_unreadable: int = 0

    def summary(self) -> str:
        latency = f", algorithmic latency {self.latency_ms:g} ms" if self.latency_ms is not None else ""
        cer = f", CER {self.cer:.2f}%" if self.cer is not None else ""
        skipped = f", {self.num_unreadable} unreadable skipped" if self.num_unreadable else ""
        return (
            f"{self.method} on {self.split}: WER {self.wer:.2f}% ({self.errors}/{self.ref_words} words, "
            f"{self.num_utts} utts{skipped}){cer}, RTF {self.rtf:.4f}{latency} -> {self.out_dir}"
        )


def load_model(
    exp_dir: Path,
    epoch: int = 0,
    avg: int = 1,
    device: torch.device | str = "cpu",
    use_averaged_model: bool = True,
    int8: bool = False,
) -> tuple[HybridTransducer, str]:
    """Build the model stored in ``exp_dir``'s checkpoint (averaged if asked); eval mode.

    See :func:`dsr.training.checkpoint.resolve_model_checkpoint` for ``epoch``, ``avg``
    and ``use_averaged_model``; ``int8`` quantises its Linear layers (:mod:`dsr.decoding.quantize`).
    """
    loaded = load_decoding_model(exp_dir, epoch, avg, device, use_averaged_model, int8)
    return loaded.model, loaded.tag


@dataclass
class DecodingModel:
    """A model ready to decode, what its result files call it, the Whisper head's decoding
    settings (None without one) and the front end it reads (:func:`frontend_to_dict` form)."""

    model: HybridTransducer
    tag: str
    whisper: WhisperDecoding | None
    frontend: dict[str, Any]


def load_decoding_model(
    exp_dir: Path,
    epoch: int = 0,
    avg: int = 1,
    device: torch.device | str = "cpu",
    use_averaged_model: bool = True,
    int8: bool = False,
    pretrained: str | None = None,
    whisper_language: str = "en",
) -> DecodingModel:
    """:func:`load_model` with the checkpoint's Whisper decoding settings and front end;
    with ``pretrained`` (e.g. ``whisper-tiny.en``) zero-shot Whisper instead of a checkpoint."""
    if pretrained:
        model, whisper, tag = zero_shot_model(pretrained, whisper_language)
        frontend = frontend_to_dict(WhisperFbankConfig(num_mel_bins=model.encoder.input_dim))
    else:
        ckpt, tag = resolve_model_checkpoint(exp_dir, epoch, avg, use_averaged_model)
        if "speech_llm_config" in ckpt:
            raise DsrUserError(f"{exp_dir} holds a speech-LLM: decode it with -m speech-llm-greedy or "
                               "-m speech-llm-beam-search")
        model = build_model(ModelConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
        whisper = decoding_from_checkpoint(ckpt, model)
        # Checkpoints from before front ends were recorded were all trained on default FBANK.
        frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    model.to(device).eval()
    if int8:
        model = quantize_int8(model, torch.device(device))
        tag += "-int8"
    return DecodingModel(model, tag, whisper, frontend)


def split_name(cuts_file: Path) -> str:
    """``data/fbank/synth_cuts_test.jsonl.gz`` -> ``synth_test``."""
    name = Path(cuts_file).name.split(".")[0]
    return name.replace("_cuts_", "_").replace("_cuts", "")


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
            raise DsrUserError(f"--method {method} needs an attention decoder; this model has none")
        first = nbest_search(model, encoder_out, encoder_lens, RESCORING_FIRST_PASS[method], opts)
        return attention_rescore(model.attention_decoder, encoder_out, encoder_lens, first, opts.attention_scale,
                                 opts.attention_tokens)
    if method == "modified-beam-search":
        nbest = modified_beam_search(model, encoder_out, encoder_lens, opts.beam_size, opts.nbest, opts.context_graph)
        if model.ctc_output is not None:
            tokens = [[h.tokens for h in hyps] for hyps in nbest]
            scores = ctc_log_likelihood(model.ctc_log_probs(encoder_out), encoder_lens, tokens, blank=model.blank_id)
            nbest = [[replace(h, ctc_score=c) for h, c in zip(hs, cs)] for hs, cs in zip(nbest, scores)]
        return nbest
    if method == "ctc-prefix-beam-search":
        return ctc_prefix_beam_search(model.ctc_log_probs(encoder_out), encoder_lens, opts.beam_size, opts.nbest,
                                      blank=model.blank_id, context_graph=opts.context_graph)
    raise DsrUserError(f"--method {method!r} has no n-best list; choose from {', '.join(NBEST_METHODS)}")


def best_tokens(
    model: HybridTransducer,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    method: str,
    opts: SearchOptions | None = None,
) -> list[list[int]]:
    """1-best token ids per utterance with any method."""
    if method == "greedy":
        return transducer_greedy_search(model, encoder_out, encoder_lens)
    if method == "ctc-greedy":
        return ctc_greedy_search(model.ctc_log_probs(encoder_out), encoder_lens, blank=model.blank_id)
    if method in NBEST_METHODS:
        nbest = nbest_search(model, encoder_out, encoder_lens, method, opts or SearchOptions())
        return [hyps[0].tokens for hyps in nbest]
    raise DsrUserError(f"--method {method!r} is unknown; choose from {', '.join(METHODS)}")


def check_method(model: HybridTransducer, method: str) -> None:
    """DsrUserError for an unknown method, or one that needs a head the model lacks."""
    if method not in METHODS:
        raise DsrUserError(f"--method {method!r} is unknown; choose from {', '.join(METHODS)}")
    if method in CTC_METHODS and model.ctc_output is None:
        raise DsrUserError(f"--method {method} needs a CTC head, but this model was trained with use_ctc false")
    if method in TRANSDUCER_METHODS and not model.has_transducer:
        raise DsrUserError(
            f"--method {method} needs a transducer, but this model was trained with --no-use-transducer; "
            "use ctc-greedy or ctc-prefix-beam-search"
        )
    if method in ATTENTION_METHODS and model.attention_decoder is None:
        raise DsrUserError(
            f"--method {method} needs an attention decoder, but this model was trained without one "
            "(--attention-decoder-layers 0)"
        )
    if method in WHISPER_METHODS and not model.has_whisper_head:
        raise DsrUserError(
            f"--method {method} needs Whisper's decoder head: train with --pretrained whisper-... (and not "
            "--no-whisper-decoder), or decode zero-shot Whisper with dsr decode --pretrained NAME"
        )


def with_whisper_rescoring(
    opts: SearchOptions, whisper: WhisperDecoding | None, tokenizer: Tokenizer | None
) -> SearchOptions:
    """``opts`` with the conversion Whisper's decoder head needs to rescore the BPE heads'
    hypotheses: their text, in the head's own tokens.  Unchanged without such a head."""
    if whisper is None or tokenizer is None:
        return opts
    return replace(opts, attention_tokens=lambda tokens: whisper.head_tokens(tokenizer.decode(tokens)))


def make_search_options(
    beam_size: int,
    nbest: int | None,
    hotwords_file: Path | None,
    hotword_score: float,
    tokenizer: Tokenizer | None,
    attention_scale: float = 1.0,
) -> SearchOptions:
    """Validate the n-best options (as user errors naming the flag) and load the hotwords."""
    if beam_size < 1:
        raise DsrUserError(f"--beam-size must be >= 1 (got {beam_size})")
    if nbest is not None and not 1 <= nbest <= beam_size:
        raise DsrUserError(f"--nbest must be between 1 and --beam-size={beam_size} (got {nbest})")
    if attention_scale < 0:
        raise DsrUserError(f"--attention-scale must be >= 0 (got {attention_scale})")
    graph = None
    if hotwords_file is not None:
        if tokenizer is None:
            raise DsrUserError("--hotwords-file needs the BPE heads' lang dir (not zero-shot Whisper)")
        graph = load_context_graph(Path(hotwords_file), tokenizer.encode, default_score=hotword_score)
        logger.info("hotwords: %d phrases from %s (default bonus %.2f per token)", len(graph), hotwords_file,
                    hotword_score)
    return SearchOptions(beam_size, nbest, graph, attention_scale)


def _finite(x: float | None) -> float | None:
    # JSON has no -inf; null marks an impossible (or absent) score.
    return x if x is not None and math.isfinite(x) else None


def nbest_record(utt_id: str, ref: str, hyps: list[Hypothesis], tokenizer: Tokenizer) -> dict[str, Any]:
    """One line of ``nbest.jsonl``."""
    return {
        "utt_id": utt_id,
        "ref": ref,
        "hyps": [
            {
                "text": tokenizer.decode(h.tokens),
                "tokens": h.tokens,
                "am_score": _finite(h.am_score),
                "ctc_score": _finite(h.ctc_score),
                "attention_score": _finite(h.attention_score),
                "context_score": h.context_score,
                "timestamps": h.timestamps,
                "source": h.source,
            }
            for h in hyps
        ],
    }


def reference_texts(reference: Any, cuts: list, unreadable: list[Unreadable]) -> tuple[list[str], list]:
    """faster-whisper's text of each cut whose audio can be read; the others go to ``unreadable``."""
    from dsr.decoding.faster_whisper_ref import cut_audio

    texts, kept = [], []
    for cut in cuts:
        try:
            audio = cut_audio(cut)
        except Exception as e:  # a bad file is reported with the unreadable cuts, never fatal
            unreadable.append(Unreadable(cut.id, str((cut.custom or {}).get("source", "")), str(e)))
            continue
        texts.append(reference.transcribe(audio))
        kept.append(cut)
    return texts, kept


def whisper_nbest_record(utt_id: str, ref: str, hyps: list, whisper: WhisperDecoding) -> dict[str, Any]:
    """One line of ``nbest.jsonl`` for a Whisper-decoder n-best list (Whisper token ids;
    ``am_score`` is the decoder's log-probability, end token included)."""
    return {
        "utt_id": utt_id,
        "ref": ref,
        "hyps": [
            {"text": whisper.tokenizer.decode(h.tokens), "tokens": h.tokens, "am_score": _finite(h.score),
             "ctc_score": None, "attention_score": None, "context_score": 0.0, "timestamps": [],
             "source": "search" if h.finished else "search-unfinished"}
            for h in hyps
        ],
    }


def decode(
    exp_dir: Path,
    cuts_file: Path,
    lang_dir: Path | None,
    methods: tuple[str, ...] = ("greedy",),
    epoch: int = 0,
    avg: int = 1,
    max_duration: float = 300.0,
    device: str = "auto",
    num_threads: int = 0,
    progress: bool = True,
    beam_size: int = 4,
    nbest: int | None = None,
    hotwords_file: Path | None = None,
    hotword_score: float = 1.0,
    use_averaged_model: bool = True,
    attention_scale: float = 1.0,
    streaming: bool = False,
    chunk_ms: float = 0.0,
    left_context_chunks: int | None = None,
    int8: bool = False,
    expand_lexicon: Path | None = None,
    expand_options: ExpandOptions | None = None,
    pretrained: str | None = None,
    whisper_language: str = "en",
    nbest_file: Path | None = None,
    speech_llm_scale: float = 1.0,
) -> list[DecodeResult]:
    """Decode ``cuts_file`` with each method and score it (see the module docstring).

    ``beam_size``, ``nbest`` (default: ``beam_size``), ``hotwords_file`` (one phrase per
    line, optionally ``<TAB>score``) and ``hotword_score`` (default bonus per hotword
    token) apply to the n-best methods only; ``attention_scale`` to the attention-rescoring
    methods (their ranking score is ``first-pass score + attention_scale * attention score``).
    ``streaming`` (greedy only) decodes in chunks of ``chunk_ms`` with ``left_context_chunks``
    of attention context (default: the model's), see :func:`dsr.decoding.streaming.streaming_options`.
    ``int8`` decodes with int8 Linear layers (CPU; results under ``<method>-int8``).
    ``expand_lexicon`` (a word list) adds variants of the best hypotheses' out-of-lexicon
    words to the n-best lists (:mod:`dsr.decoding.lexicon_expand`, ``expand_options``);
    results under ``<method>+lexicon``, whose 1-best and WER are the plain search's.
    ``pretrained`` (e.g. ``whisper-tiny.en``) decodes zero-shot Whisper instead of ``exp_dir``'s
    checkpoint (``whisper-*`` methods only; results still go under ``exp_dir``; no ``lang_dir`` needed).
    The ``speech-llm-*`` methods decode a speech-LLM checkpoint (:mod:`dsr.decoding.speech_llm_decode`;
    ``speech-llm-rescoring`` reranks ``nbest_file`` with weight ``speech_llm_scale``).
    Features are checked against the front end the model was trained on (one-line error on a
    mismatch); cuts that have only recordings get features from that front end.
    """
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    if set(methods) & set(SPEECH_LLM_METHODS):  # speech-LLM hook: dsr/decoding/speech_llm_decode.py
        if streaming or int8 or expand_lexicon is not None:
            raise DsrUserError("-m speech-llm-* decodes whole utterances in float32: drop --streaming, --int8 and "
                               "--expand-lexicon")
        return decode_speech_llm(Path(exp_dir), cuts_file, tuple(methods), epoch, avg, max_duration,
                                 resolve_device(device), progress, beam_size, hotwords_file, nbest_file,
                                 speech_llm_scale)
    for m in methods:
        if m not in METHODS:
            raise DsrUserError(f"--method {m!r} is unknown; choose from {', '.join(METHODS + SPEECH_LLM_METHODS)}")
    if streaming and set(methods) != {"greedy"}:
        raise DsrUserError(f"--streaming supports -m greedy only (got {', '.join(methods)})")
    if not streaming and (chunk_ms or left_context_chunks is not None):
        raise DsrUserError("--chunk-ms and --left-context-chunks only apply with --streaming")
    if hotwords_file is not None and not set(methods) & set(NBEST_METHODS):
        logger.warning("--hotwords-file only affects %s; ignored", " and ".join(NBEST_METHODS))
    lexicon = None
    if expand_lexicon is not None:
        if not set(methods) <= set(EXPANDABLE_METHODS):
            raise DsrUserError(f"--expand-lexicon needs n-best methods {' or '.join(EXPANDABLE_METHODS)} only "
                               f"(got {', '.join(methods)})")
        lexicon = Lexicon.from_file(expand_lexicon)
        logger.info("n-best expansion: %d words from %s", len(lexicon), expand_lexicon)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    dev = resolve_device(device)
    zero_shot = (*WHISPER_METHODS, *REFERENCE_METHODS)
    if pretrained and not set(methods) <= set(zero_shot):
        raise DsrUserError(f"--pretrained decodes zero-shot Whisper: use -m {' or -m '.join(zero_shot)}")
    if not pretrained and set(methods) & set(REFERENCE_METHODS):
        raise DsrUserError("-m faster-whisper transcribes with a pretrained Whisper: give --pretrained NAME")
    reference = None
    if "faster-whisper" in methods:
        from dsr.decoding.faster_whisper_ref import FasterWhisperReference

        reference = FasterWhisperReference(str(pretrained), num_threads, language=whisper_language)
    tokenizer = Tokenizer(lang_dir) if not pretrained else None
    loaded = load_decoding_model(Path(exp_dir), epoch, avg, dev, use_averaged_model, int8, pretrained,
                                 whisper_language)
    model, tag, whisper = loaded.model, loaded.tag, loaded.whisper
    opts = with_whisper_rescoring(
        make_search_options(beam_size, nbest, hotwords_file, hotword_score, tokenizer, attention_scale),
        whisper, tokenizer,
    )
    for m in methods:
        check_method(model, m)
    cuts = load_cuts(cuts_file)
    check_cuts_frontend(cuts, loaded.frontend, str(cuts_file),
                        f"zero-shot {pretrained}" if pretrained else f"the model in {exp_dir}",
                        expected_verb="reads" if pretrained else "was trained on")
    frontend = frontend_from_dict(loaded.frontend)
    stream: StreamingOptions | None = None
    if streaming:
        first = next(iter(cuts), None)
        frame_shift_ms = 1000 * (first.frame_shift if first is not None and first.frame_shift else frontend.frame_shift)
        stream = streaming_options(model, chunk_ms, left_context_chunks, frame_shift_ms)
    split = split_name(cuts_file)
    batches = DecodeBatches(cuts, max_duration, dev, frontend)
    from rich.progress import Progress

    # Per-speaker WER shows whether errors concentrate on a few (e.g. unseen) voices.
    speaker_of = {c.id: (c.supervisions[0].speaker or "-") for c in cuts if c.supervisions}
    results: list[DecodeResult] = []
    for method in methods:
        label = f"{method}-streaming-{stream.chunk_ms:g}ms" if stream is not None else method
        label += "-int8" if int8 else ""
        label += "+lexicon" if lexicon is not None else ""
        triples: list[tuple[str, str, str]] = []
        records: list[dict[str, Any]] = []
        utt_latency: list[float] = []  # seconds, one per decoded utterance
        chunk_times: list[tuple[float, torch.Tensor]] = []  # one batch's (seconds, encoder frames) per chunk
        chunk_seconds: list[float] = []
        audio_seconds = 0.0
        start = time.perf_counter()
        with Progress(disable=not progress, transient=True) as bar, torch.inference_mode(), \
                PeakProcessMemory(dev) as memory:
            task = bar.add_task(f"{label} {split}", total=len(cuts))
            for feats, lens, cut_list in batches:
                audio_seconds += sum(c.duration for c in cut_list)
                batch_start = synced_clock(dev)
                nbests: list[list[Hypothesis]] = []
                hyps: list[list[int]] | None = None  # BPE token ids; the Whisper methods give texts
                texts: list[str] = []
                if stream is not None:
                    del chunk_times[:]
                    hyps = streaming_greedy_search(model, feats, lens, stream, chunk_times)
                    utt_latency += final_chunk_latency(chunk_times)
                    chunk_seconds += [t for t, _ in chunk_times]
                elif method in REFERENCE_METHODS:
                    assert reference is not None
                    texts, cut_list = reference_texts(reference, cut_list, batches.unreadable)
                    utt_latency += [synced_clock(dev) - batch_start] * len(cut_list)
                else:
                    enc, enc_lens = model.encode(feats, lens)
                    if method in WHISPER_METHODS:
                        assert whisper is not None
                        wnbest = whisper_nbest(model, whisper, enc, enc_lens, [c.duration for c in cut_list],
                                               method, opts.beam_size)
                        texts = [whisper.texts(hs[:1])[0] for hs in wnbest]
                        if method != "whisper-greedy":
                            records += [whisper_nbest_record(c.id, c.supervisions[0].text or "", hs, whisper)
                                        for c, hs in zip(cut_list, wnbest)]
                    elif method in NBEST_METHODS:
                        nbests = nbest_search(model, enc, enc_lens, method, opts)
                        hyps = [hs[0].tokens for hs in nbests]
                        if lexicon is not None:
                            nbests = expand_nbest(model, enc, enc_lens, nbests, tokenizer, lexicon, method,
                                                  expand_options or ExpandOptions())
                    else:
                        hyps = best_tokens(model, enc, enc_lens, method)
                    utt_latency += [synced_clock(dev) - batch_start] * len(cut_list)
                for cut, hs in zip(cut_list, nbests):
                    records.append(nbest_record(cut.id, cut.supervisions[0].text or "", hs, tokenizer))
                if hyps is not None:
                    assert tokenizer is not None
                    texts = [tokenizer.decode(hyp) for hyp in hyps]
                for cut, text in zip(cut_list, texts):
                    triples.append((cut.id, cut.supervisions[0].text or "", text))
                bar.advance(task, len(texts))
        elapsed = time.perf_counter() - start
        if not triples and batches.unreadable:
            first = batches.unreadable[0]
            raise DsrUserError(f"none of the {len(batches.unreadable)} cuts of {cuts_file} could be read "
                               f"(first: {first.source}: {first.error}); check the manifest's paths")
        stats, char_stats = score(triples), score(triples, char_level=True)
        out = Path(exp_dir) / "decode" / label / split
        if batches.unreadable:
            logger.warning("%s %s: %d unreadable cut(s) skipped (listed in %s): %s", label, split,
                           len(batches.unreadable), out / "result.json",
                           "; ".join(f"{u.cut_id} ({u.source})" for u in batches.unreadable[:3])
                           + (", ..." if len(batches.unreadable) > 3 else ""))
        write_recogs(out / "recogs.txt", triples)
        write_errs(out / "errs.txt", stats)
        write_text_atomic(out / "wer.txt", f"{tag}\t{stats.summary()}\n")
        write_text_atomic(out / "cer.txt", f"{tag}\t{char_stats.summary('CER')}\n")
        write_wer_by_group(out / "wer_by_speaker.txt", score_by_group(stats, speaker_of))
        is_nbest = method in NBEST_METHODS or method == "whisper-beam-search"
        if is_nbest:
            records.sort(key=lambda r: r["utt_id"])
            write_text_atomic(out / "nbest.jsonl",
                              "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records))
        res = DecodeResult(label, split, stats.wer, stats.errors, stats.ref_words, stats.num_sents,
                           elapsed / max(audio_seconds, 1e-9), out, stream.latency_ms if stream is not None else None,
                           char_stats.wer, len(batches.unreadable))
        mib = 1024.0**2
        write_json_atomic(out / "result.json", {
            "method": label, "split": split, "checkpoint": tag, "wer": res.wer, "errors": res.errors,
            "ref_words": res.ref_words, "num_utts": res.num_utts, "rtf": res.rtf,
            "cer": char_stats.wer, "char_errors": char_stats.errors, "ref_chars": char_stats.ref_words,
            "audio_seconds": audio_seconds, "decode_seconds": elapsed,
            "device": str(dev), "num_threads": torch.get_num_threads() if dev.type == "cpu" else None,
            # Per-utterance latency (see the module docstring for its definition) and peak memory.
            "latency_ms": latency_stats(utt_latency),
            "chunk_compute_ms": latency_stats(chunk_seconds) if stream is not None else None,
            "peak_rss_delta_mb": memory.rss_delta_bytes / mib if memory.rss_delta_bytes is not None else None,
            "peak_rss_reset": memory.rss_reset,
            "cuda_peak_mb": memory.cuda_peak_bytes / mib if memory.cuda_peak_bytes is not None else None,
            "num_unreadable": len(batches.unreadable),
            "unreadable": [u.to_dict() for u in batches.unreadable],
            # Search settings, null for the greedy methods that do not use them.
            "beam_size": opts.beam_size if is_nbest else None,
            "nbest": (opts.nbest or opts.beam_size) if is_nbest else None,
            "hotwords_file": str(hotwords_file) if is_nbest and hotwords_file is not None else None,
            "hotword_score": hotword_score if is_nbest and hotwords_file is not None else None,
            "attention_scale": opts.attention_scale if method in ATTENTION_METHODS else None,
            # n-best expansion (null without --expand-lexicon)
            "expand_lexicon": str(expand_lexicon) if lexicon is not None else None,
            "expand_options": asdict(expand_options or ExpandOptions()) if lexicon is not None else None,
            # Streaming settings, null for offline decoding.
            "streaming": stream is not None,
            "chunk_ms": stream.chunk_ms if stream is not None else None,
            "chunk_frames": stream.chunk_size if stream is not None else None,
            "left_context_chunks": stream.left_context_chunks if stream is not None else None,
            "algorithmic_latency_ms": stream.latency_ms if stream is not None else None,
        })
        logger.info(res.summary())
        results.append(res)
    return results
