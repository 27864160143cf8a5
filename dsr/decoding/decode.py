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

The stage in icefall's shape: :class:`~dsr.decoding.options.DecodeOptions` (validated on
construction), :func:`prepare` (model, tokenizer, search settings: once per run),
:func:`decode_one_batch`, :func:`decode_dataset` (one method over a manifest) and
:func:`write_results`; :func:`decode_manifest` chains them and :func:`decode` is the
keyword-argument form.  The methods and the heads they need are :mod:`dsr.decoding.methods`.

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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from lhotse.cut import Cut

from dsr.data.batches import DecodeBatches, Unreadable
from dsr.data.cuts import load_cuts
from dsr.decoding.beam_search import Hypothesis
from dsr.decoding.lexicon_expand import Lexicon, expand_nbest
from dsr.decoding.loading import DecodingModel, load_decoding_model
from dsr.decoding.methods import SPEECH_LLM_METHODS, DecodingMethod, check_method, get_method
from dsr.decoding.options import DecodeOptions, ExpandOptions
from dsr.decoding.search import SearchOptions, best_tokens, nbest_search, search_options, with_whisper_rescoring
from dsr.decoding.streaming import (
    StreamingOptions,
    final_chunk_latency,
    streaming_greedy_search,
    streaming_options,
)
from dsr.decoding.whisper_decode import WhisperDecoding, whisper_nbest
from dsr.device import resolve_device
from dsr.errors import DsrUserError
from dsr.evaluation.latency import latency_stats, synced_clock
from dsr.evaluation.memory import PeakProcessMemory
from dsr.evaluation.wer import ErrorStats, score, score_by_group, write_errs, write_recogs, write_wer_by_group
from dsr.features.frontend import FrontendConfig, check_cuts_frontend, frontend_from_dict
from dsr.lang.bpe import Tokenizer
from dsr.utils import write_json_atomic, write_text_atomic

logger = logging.getLogger("dsr")


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


def split_name(cuts_file: Path) -> str:
    """``data/fbank/synth_cuts_test.jsonl.gz`` -> ``synth_test``."""
    name = Path(cuts_file).name.split(".")[0]
    return name.replace("_cuts_", "_").replace("_cuts", "")


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
                "lm_score": h.lm_score,
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


def _score_variant(hyp: Hypothesis, opts: SearchOptions, fusable: bool) -> Hypothesis:
    """A lexicon variant with the hotword bonus and fused LM score the search would have
    given it, so that rescoring ranks it against the search's hypotheses on one scale."""
    if hyp.source == "search":
        return hyp
    graph, fusion = opts.context_graph, opts.fusion if fusable else None
    return replace(
        hyp,
        context_score=graph.sentence_score(hyp.tokens) if graph is not None else 0.0,
        lm_score=fusion.sentence_score(hyp.tokens) if fusion is not None else 0.0,
    )


def whisper_nbest_record(utt_id: str, ref: str, hyps: list, whisper: WhisperDecoding) -> dict[str, Any]:
    """One line of ``nbest.jsonl`` for a Whisper-decoder n-best list (Whisper token ids;
    ``am_score`` is the decoder's log-probability, end token included; ``rank_norm`` the
    length normalisation the search ranked by, so rescoring ranks as it did)."""
    return {
        "utt_id": utt_id,
        "ref": ref,
        "hyps": [
            {
                "text": whisper.tokenizer.decode(h.tokens),
                "tokens": h.tokens,
                "am_score": _finite(h.score),
                "ctc_score": None,
                "attention_score": None,
                "context_score": 0.0,
                "timestamps": [],
                "rank_norm": h.length_norm(whisper.search.length_penalty),
                "source": "search" if h.finished else "search-unfinished",
            }
            for h in hyps
        ],
    }


@dataclass
class Decoder:
    """What every batch of a decode run shares: built once by :func:`prepare`."""

    options: DecodeOptions
    loaded: DecodingModel
    device: torch.device
    tokenizer: Tokenizer | None
    search: SearchOptions
    frontend: FrontendConfig
    stream: StreamingOptions | None = None
    lexicon: Lexicon | None = None
    reference: Any = None  # faster-whisper, for the reference row

    @property
    def model(self) -> Any:
        return self.loaded.model

    @property
    def whisper(self) -> WhisperDecoding | None:
        return self.loaded.whisper

    def check_cuts(self, cuts: Any, name: str) -> None:
        """One-line error when the features of ``cuts`` are not the front end the model reads."""
        o = self.options
        check_cuts_frontend(
            cuts,
            self.loaded.frontend,
            name,
            f"zero-shot {o.pretrained}" if o.pretrained else f"the model in {o.exp_dir}",
            expected_verb="reads" if o.pretrained else "was trained on",
        )

    def label(self, method: str) -> str:
        """The result directory's name of ``method``: its name and what changes its output."""
        label = f"{method}-streaming-{self.stream.chunk_ms:g}ms" if self.stream is not None else method
        label += "-int8" if self.options.int8 else ""
        if self.search.fusion is not None and get_method(method).fusable:
            label += self.search.fusion.label
        return label + ("+lexicon" if self.lexicon is not None else "")


def prepare(options: DecodeOptions, cuts: Any = None, cuts_name: str = "") -> Decoder:
    """Load the model (and the lexicon, the reference, the tokenizer) once for a run of ``options``.

    With ``cuts`` (a CutSet) their features are checked against the model's front end, and the
    streaming chunking is read from their frame shift.
    """
    o = options
    lexicon = None
    if o.expand_lexicon is not None:
        lexicon = Lexicon.from_file(o.expand_lexicon)
        logger.info("n-best expansion: %d words from %s", len(lexicon), o.expand_lexicon)
    if o.num_threads > 0:
        torch.set_num_threads(o.num_threads)
    dev = resolve_device(o.device)
    reference = None
    if any(get_method(m).reference for m in o.methods):
        from dsr.decoding.faster_whisper_ref import FasterWhisperReference

        reference = FasterWhisperReference(str(o.pretrained), o.num_threads, language=o.whisper_language)
    lang_dir = None if o.pretrained else o.lang_dir
    # DecodeOptions requires lang_dir without pretrained (speech-LLM runs, which need none, never get here).
    assert o.pretrained or lang_dir is not None
    tokenizer = Tokenizer(lang_dir) if lang_dir is not None else None
    loaded = load_decoding_model(
        o.exp_dir, o.epoch, o.avg, dev, o.use_averaged_model, o.int8, o.pretrained, o.whisper_language, o.checkpoint
    )
    if tokenizer is not None and lang_dir is not None:
        loaded.check_lang_dir(lang_dir, tokenizer, o.checkpoint or o.exp_dir)
    search = with_whisper_rescoring(
        search_options(o, tokenizer, o.nbest or None),
        loaded.whisper,
        tokenizer,
    )
    for m in o.methods:
        check_method(loaded.model, m, "methods")
    frontend = frontend_from_dict(loaded.frontend)
    decoder = Decoder(o, loaded, dev, tokenizer, search, frontend, None, lexicon, reference)
    if cuts is not None:
        decoder.check_cuts(cuts, cuts_name)
        if o.streaming:
            first = next(iter(cuts), None)
            frame_shift_ms = 1000 * (
                first.frame_shift if first is not None and first.frame_shift else frontend.frame_shift
            )
            decoder.stream = streaming_options(loaded.model, o.chunk_ms, o.left_context_chunks, frame_shift_ms)
    return decoder


@dataclass
class BatchResult:
    """One batch decoded with one method: the cuts decoded (the reference row drops those whose audio
    it cannot read), their 1-best texts, their ``nbest.jsonl`` lines (n-best methods), the per-utterance
    latency and, streaming, the compute seconds of every chunk."""

    cuts: list[Cut]
    texts: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    chunk_seconds: list[float] = field(default_factory=list)


def _ref(cut: Cut) -> str:
    return cut.supervisions[0].text or ""


def decode_one_batch(
    decoder: Decoder,
    method: DecodingMethod,
    feats: torch.Tensor,
    lens: torch.Tensor,
    cuts: list[Cut],
    unreadable: list[Unreadable],
) -> BatchResult:
    """Decode (N, T, F) features with (N,) lengths of ``cuts`` with ``method``; cuts whose audio the
    reference row cannot read are appended to ``unreadable``."""
    model, whisper, tokenizer, opts, dev = (
        decoder.model,
        decoder.whisper,
        decoder.tokenizer,
        decoder.search,
        decoder.device,
    )
    batch_start = synced_clock(dev)
    nbests: list[list[Hypothesis]] = []
    hyps: list[list[int]] | None = None  # BPE token ids; the Whisper methods and the reference give texts
    texts: list[str] = []
    out = BatchResult(cuts, texts)
    if decoder.stream is not None:
        chunk_times: list[tuple[float, torch.Tensor]] = []  # (seconds, encoder frames) per chunk
        hyps = streaming_greedy_search(model, feats, lens, decoder.stream, chunk_times)
        out.latency = final_chunk_latency(chunk_times)
        out.chunk_seconds = [t for t, _ in chunk_times]
    elif method.reference:
        assert decoder.reference is not None
        texts, out.cuts = reference_texts(decoder.reference, cuts, unreadable)
        out.latency = [synced_clock(dev) - batch_start] * len(out.cuts)
    else:
        enc, enc_lens = model.encode(feats, lens)
        if method.tokens == "whisper":
            assert whisper is not None  # check_method: the model has Whisper's decoder head
            wnbest = whisper_nbest(
                model, whisper, enc, enc_lens, [c.duration for c in cuts], method.name, opts.beam_size
            )
            texts = [whisper.texts(hs[:1])[0] for hs in wnbest]
            if method.nbest:
                out.records = [whisper_nbest_record(c.id, _ref(c), hs, whisper) for c, hs in zip(cuts, wnbest)]
        elif method.nbest:
            nbests = nbest_search(model, enc, enc_lens, method.name, opts)
            hyps = [hs[0].tokens for hs in nbests]
            if decoder.lexicon is not None:
                # expand_lexicon takes n-best methods of a dsr model, which has a lang_dir (zero-shot Whisper has neither)
                assert tokenizer is not None
                nbests = expand_nbest(
                    model, enc, enc_lens, nbests, tokenizer, decoder.lexicon, method.name, decoder.options.expand
                )
                nbests = [[_score_variant(h, opts, method.fusable) for h in hs] for hs in nbests]
        else:
            hyps = best_tokens(model, enc, enc_lens, method.name)
        out.latency = [synced_clock(dev) - batch_start] * len(cuts)
    if nbests:
        assert tokenizer is not None
        out.records = [nbest_record(c.id, _ref(c), hs, tokenizer) for c, hs in zip(cuts, nbests)]
    if hyps is not None:
        assert tokenizer is not None
        texts = [tokenizer.decode(hyp) for hyp in hyps]
    out.texts = texts
    return out


@dataclass
class DatasetResult:
    """One method over a manifest: ``(cut id, reference, hypothesis)`` per decoded cut, the n-best
    lines, latencies, the audio and wall seconds, the memory measured and the unreadable cuts."""

    triples: list[tuple[str, str, str]]
    records: list[dict[str, Any]]
    latency: list[float]
    chunk_seconds: list[float]
    audio_seconds: float
    elapsed: float
    memory: PeakProcessMemory
    unreadable: list[Unreadable]


def decode_dataset(
    decoder: Decoder, method: DecodingMethod, batches: DecodeBatches, description: str = "", progress: bool = False
) -> DatasetResult:
    """Decode every batch of ``batches`` with ``method`` (a rich progress bar with ``progress``)."""
    from rich.progress import Progress

    triples: list[tuple[str, str, str]] = []
    records: list[dict[str, Any]] = []
    latency: list[float] = []
    chunk_seconds: list[float] = []
    audio_seconds = 0.0
    start = time.perf_counter()
    total = len(batches.cuts) if hasattr(batches.cuts, "__len__") else None
    with (
        Progress(disable=not progress, transient=True) as bar,
        torch.inference_mode(),
        PeakProcessMemory(decoder.device) as memory,
    ):
        task = bar.add_task(description, total=total)
        for feats, lens, cut_list in batches:
            audio_seconds += sum(c.duration for c in cut_list)
            res = decode_one_batch(decoder, method, feats, lens, cut_list, batches.unreadable)
            records += res.records
            latency += res.latency
            chunk_seconds += res.chunk_seconds
            triples += [(c.id, _ref(c), text) for c, text in zip(res.cuts, res.texts)]
            bar.advance(task, len(res.texts))
    return DatasetResult(
        triples,
        records,
        latency,
        chunk_seconds,
        audio_seconds,
        time.perf_counter() - start,
        memory,
        list(batches.unreadable),
    )


def write_results(
    decoder: Decoder,
    method: DecodingMethod,
    data: DatasetResult,
    out: Path,
    split: str,
    speaker_of: dict[str, str],
    cuts_file: Path | str = "",
) -> DecodeResult:
    """Score ``data`` and write the result files of one method and split under ``out`` (module docstring)."""
    o, stream, label = decoder.options, decoder.stream, decoder.label(method.name)
    if not data.triples and data.unreadable:
        first = data.unreadable[0]
        raise DsrUserError(
            f"none of the {len(data.unreadable)} cuts of {cuts_file} could be read "
            f"(first: {first.source}: {first.error}); check the manifest's paths"
        )
    stats, char_stats = score(data.triples), score(data.triples, char_level=True)
    if data.unreadable:
        logger.warning(
            "%s %s: %d unreadable cut(s) skipped (listed in %s): %s",
            label,
            split,
            len(data.unreadable),
            out / "result.json",
            "; ".join(f"{u.cut_id} ({u.source})" for u in data.unreadable[:3])
            + (", ..." if len(data.unreadable) > 3 else ""),
        )
    hotwords = method.nbest and o.hotwords_file is not None
    opts = decoder.search
    fusion = opts.fusion if method.fusable else None
    settings = {
        "chunk_compute_ms": latency_stats(data.chunk_seconds) if stream is not None else None,
        # Search settings, null for the greedy methods that do not use them.
        "beam_size": opts.beam_size if method.nbest else None,
        "nbest": (opts.nbest or opts.beam_size) if method.nbest else None,
        "hotwords_file": str(o.hotwords_file) if hotwords else None,
        "hotword_score": o.hotword_score if hotwords else None,
        "attention_scale": opts.attention_scale if "attention" in method.heads else None,
        # shallow fusion (null without --ngram-lm, and for methods it does not join)
        "ngram_lm": str(fusion.lm.path) if fusion is not None else None,
        "ngram_scale": fusion.scale if fusion is not None else None,
        "ngram_token_bonus": fusion.token_bonus if fusion is not None else None,
        # n-best expansion (null without --expand-lexicon)
        "expand_lexicon": str(o.expand_lexicon) if decoder.lexicon is not None else None,
        "expand_options": asdict(o.expand) if decoder.lexicon is not None else None,
        # Streaming settings, null for offline decoding.
        "streaming": stream is not None,
        "chunk_ms": stream.chunk_ms if stream is not None else None,
        "chunk_frames": stream.chunk_size if stream is not None else None,
        "left_context_chunks": stream.left_context_chunks if stream is not None else None,
        "algorithmic_latency_ms": stream.latency_ms if stream is not None else None,
    }
    return write_scored(
        out, label, split, decoder.loaded.tag, data.triples, stats, char_stats, speaker_of,
        data.records if method.nbest else None, data.audio_seconds, data.elapsed, decoder.device, data.latency,
        data.memory, data.unreadable, stream.latency_ms if stream is not None else None, settings,
    )  # fmt: skip


def write_scored(
    out: Path,
    label: str,
    split: str,
    tag: str,
    triples: list[tuple[str, str, str]],
    stats: ErrorStats,
    char_stats: ErrorStats,
    speaker_of: dict[str, str],
    nbest_records: list[dict[str, Any]] | None,
    audio_seconds: float,
    elapsed: float,
    device: torch.device,
    latency: list[float],
    memory: Any,
    unreadable: list[Unreadable],
    algorithmic_latency_ms: float | None,
    settings: dict[str, Any],
) -> DecodeResult:
    """The files of one decoded split under ``out`` (recogs, errs, WER/CER, WER by speaker,
    ``nbest.jsonl`` when ``nbest_records`` is given, ``result.json``: the scores, what the run
    cost, then the method's own ``settings``); shared by every decoder (hybrid, speech-LLM)."""
    write_recogs(out / "recogs.txt", triples)
    write_errs(out / "errs.txt", stats)
    write_text_atomic(out / "wer.txt", f"{tag}\t{stats.summary()}\n")
    write_text_atomic(out / "cer.txt", f"{tag}\t{char_stats.summary('CER')}\n")
    write_wer_by_group(out / "wer_by_speaker.txt", score_by_group(stats, speaker_of))
    if nbest_records is not None:
        records = sorted(nbest_records, key=lambda r: r["utt_id"])
        write_text_atomic(
            out / "nbest.jsonl", "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
        )
    res = DecodeResult(
        label,
        split,
        stats.wer,
        stats.errors,
        stats.ref_words,
        stats.num_sents,
        elapsed / max(audio_seconds, 1e-9),
        out,
        algorithmic_latency_ms,
        char_stats.wer,
        len(unreadable),
    )
    mib = 1024.0**2
    write_json_atomic(
        out / "result.json",
        {
            "method": label,
            "split": split,
            "checkpoint": tag,
            "wer": res.wer,
            "errors": res.errors,
            "ref_words": res.ref_words,
            "num_utts": res.num_utts,
            "rtf": res.rtf,
            "cer": char_stats.wer,
            "char_errors": char_stats.errors,
            "ref_chars": char_stats.ref_words,
            "audio_seconds": audio_seconds,
            "decode_seconds": elapsed,
            "device": str(device),
            "num_threads": torch.get_num_threads() if device.type == "cpu" else None,
            # Per-utterance latency (see the module docstring for its definition) and peak memory.
            "latency_ms": latency_stats(latency),
            "peak_rss_delta_mb": memory.rss_delta_bytes / mib if memory.rss_delta_bytes is not None else None,
            "peak_rss_reset": memory.rss_reset,
            "cuda_peak_mb": memory.cuda_peak_bytes / mib if memory.cuda_peak_bytes is not None else None,
            "num_unreadable": len(unreadable),
            "unreadable": [u.to_dict() for u in unreadable],
            **settings,
        },
    )
    logger.info(res.summary())
    return res


def decode_manifest(
    options: DecodeOptions,
    cuts_file: Path | str,
    progress: bool = True,
    decoder: Decoder | None = None,
    nbest_file: Path | None = None,
) -> list[DecodeResult]:
    """Decode ``cuts_file`` with each of ``options.methods``, score it and write the results under
    ``<exp_dir>/decode/<label>/<split>/`` (see the module docstring).

    Features are checked against the front end the model was trained on (one-line error on a
    mismatch); cuts that have only recordings get features from that front end.  A ``decoder``
    from :func:`prepare` (with the first manifest's cuts) is reused: its model is not loaded again.
    ``nbest_file`` is this manifest's n-best list for speech-llm-rescoring (of several manifests
    decoded with one options object: :meth:`DecodeOptions.nbest_files_for`); by default
    ``options.nbest_file``, which must then be one file.
    """
    if set(options.methods) <= set(SPEECH_LLM_METHODS):  # a speech-LLM checkpoint: its own loader and search
        from dsr.decoding.speech_llm_decode import decode_speech_llm

        if options.num_threads > 0:
            torch.set_num_threads(options.num_threads)
        if nbest_file is None:
            nbest_file = options.nbest_files_for([cuts_file])[0]
        assert options.exp_dir is not None  # DecodeOptions requires it
        return decode_speech_llm(
            Path(options.exp_dir),
            Path(cuts_file),
            options.methods,
            options.epoch,
            options.avg,
            options.max_duration,
            resolve_device(options.device),
            progress,
            options.beam_size,
            options.hotwords_file,
            nbest_file,
            options.speech_llm_scale,
        )
    cuts = load_cuts(cuts_file)
    if decoder is None:
        decoder = prepare(options, cuts, str(cuts_file))
    else:
        decoder.check_cuts(cuts, str(cuts_file))
    split = split_name(Path(cuts_file))
    batches = DecodeBatches(cuts, options.max_duration, decoder.device, decoder.frontend)
    # Per-speaker WER shows whether errors concentrate on a few (e.g. unseen) voices.
    speaker_of = {c.id: (c.supervisions[0].speaker or "-") for c in cuts if c.supervisions}
    assert options.exp_dir is not None  # DecodeOptions requires it
    out_root = Path(options.exp_dir)
    results = []
    for name in options.methods:
        method = get_method(name)
        label = decoder.label(name)
        data = decode_dataset(decoder, method, batches, f"{label} {split}", progress)
        results.append(
            write_results(decoder, method, data, out_root / "decode" / label / split, split, speaker_of, cuts_file)
        )
    return results


def decode(
    exp_dir: Path | str | None,
    cuts_file: Path | str,
    lang_dir: Path | str | None,
    progress: bool = True,
    expand_options: ExpandOptions | None = None,
    **options: Any,
) -> list[DecodeResult]:
    """:func:`decode_manifest` with the :class:`DecodeOptions` given as keyword arguments
    (``methods``, ``beam_size``, ``streaming``, ...; ``expand_options`` is its ``expand``)."""
    if expand_options is not None:
        options["expand"] = expand_options
    # Paths as DecodeOptions types them (it also accepts str, converting exactly so).
    options["exp_dir"] = Path(exp_dir) if exp_dir is not None else None
    options["lang_dir"] = Path(lang_dir) if lang_dir is not None else None
    return decode_manifest(DecodeOptions(**options), cuts_file, progress)
