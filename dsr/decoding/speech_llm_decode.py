"""``dsr decode -m speech-llm-greedy / speech-llm-beam-search``: decode a cuts manifest with a
speech-LLM checkpoint (``dsr train --speech-llm``) and score it, writing the same files as
:func:`dsr.decoding.decode.decode` (``recogs.txt``, ``errs.txt``, ``wer.txt``, ``cer.txt``,
``wer_by_speaker.txt``, ``result.json``; ``nbest.jsonl`` for the beam search and the rescoring).

``speech-llm-rescoring`` is the fourth way of using the LLM: another system's n-best list
(``--nbest-file``, e.g. the transducer's) reranked by the speech-LLM's likelihood of each
hypothesis given the audio (:func:`rerank_nbest`).

The checkpoint names its LLM, which is loaded from its own files and checked
(:func:`dsr.models.speech_llm.check_llm`).  Hotwords (``--hotwords-file``) are told to
the LLM in the prompt's instruction ("Words that may occur: ..."), not added to a graph.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsr.data.batches import DecodeBatches
from dsr.data.cuts import load_cuts
from dsr.decoding.speech_llm_search import (
    SpeechLLMHypothesis,
    SpeechLLMSearchOptions,
    speech_llm_beam_search,
    speech_llm_greedy_search,
)
from dsr.errors import DsrUserError, OptionError
from dsr.evaluation.latency import synced_clock
from dsr.evaluation.memory import PeakProcessMemory
from dsr.evaluation.wer import score
from dsr.features.frontend import check_cuts_frontend, frontend_from_dict, frontend_to_dict
from dsr.models.checkpoint import resolve_model_checkpoint
from dsr.models.speech_llm import SpeechLLM, llm_target, speech_llm_from_checkpoint

logger = logging.getLogger("dsr")

SPEECH_LLM_METHODS = ("speech-llm-greedy", "speech-llm-beam-search", "speech-llm-rescoring")


def read_hotword_phrases(path: Path) -> tuple[str, ...]:
    """Phrases of a hotwords file (one per line, optionally ``PHRASE<TAB>SCORE``: the score is
    the transducer's bonus and is not used here); DsrUserError when unreadable."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise OptionError(f"{{hotwords_file}} {path}: cannot read it ({e.strerror})") from e
    return tuple(p for p in (line.split("\t")[0].strip() for line in lines) if p)


@dataclass
class LoadedSpeechLLM:
    """A speech-LLM ready to decode: the model (eval mode), its LLM tokenizer, a tag such as
    ``epoch-3-avg-1``, its front end (:func:`frontend_to_dict` form) and what its training cost
    (``trainable_parameters``, ``train_seconds``; None when the checkpoint does not say)."""

    model: SpeechLLM
    tokenizer: Any
    tag: str
    frontend: dict[str, Any]
    trainable_parameters: int | None
    train_seconds: float | None


def load_speech_llm(
    exp_dir: Path, epoch: int = 0, avg: int = 1, device: torch.device | str = "cpu", hotwords: tuple[str, ...] = ()
) -> LoadedSpeechLLM:
    """The speech-LLM of ``exp_dir``'s checkpoint (newest epoch, or ``epoch`` averaged over ``avg``) on ``device``."""
    ckpt, tag = resolve_model_checkpoint(Path(exp_dir), epoch, avg, use_averaged_model=False)
    model, tokenizer, _ = speech_llm_from_checkpoint(ckpt, f"the checkpoint {tag} in {exp_dir}", hotwords)
    frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
    return LoadedSpeechLLM(
        model.to(device).eval(), tokenizer, tag, frontend, ckpt.get("trainable_parameters"), ckpt.get("train_seconds")
    )


def speech_llm_nbest(
    model: SpeechLLM,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    durations: list[float],
    method: str,
    beam_size: int,
) -> list[list[SpeechLLMHypothesis]]:
    """N-best lists of a speech-LLM method (one hypothesis for greedy search), best first."""
    if method == "speech-llm-greedy":
        return [[h] for h in speech_llm_greedy_search(model, encoder_out, encoder_lens, durations)]
    if method == "speech-llm-beam-search":
        return speech_llm_beam_search(
            model, encoder_out, encoder_lens, durations, SpeechLLMSearchOptions(beam_size=beam_size)
        )
    raise ValueError(f"not a speech-LLM method: {method!r}")


def read_nbest_file(path: Path) -> dict[str, list[dict[str, Any]]]:
    """utt_id -> hypotheses (``{"text", "am_score", ...}``, best first) of a ``dsr decode`` ``nbest.jsonl``."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return {r["utt_id"]: list(r["hyps"]) for r in records}
    except OSError as e:
        raise OptionError(
            f"{{nbest_file}} {path}: cannot read it ({e.strerror}); give the nbest.jsonl that dsr decode "
            "-m modified-beam-search wrote"
        ) from e
    except (ValueError, KeyError, TypeError) as e:
        raise OptionError(f"{{nbest_file}} {path}: not a dsr nbest.jsonl ({type(e).__name__}: {e})") from e


def rerank_nbest(
    model: SpeechLLM,
    tokenizer: Any,
    encoder_out: torch.Tensor,
    encoder_lens: torch.Tensor,
    nbest: list[list[dict[str, Any]]],
    scale: float = 1.0,
) -> list[list[dict[str, Any]]]:
    """Another system's n-best lists reranked by ``(first-pass total + scale * speech_llm_score)
    / rank_norm``, the first-pass total and ``rank_norm`` being what ``dsr rescore`` ranks by
    (:class:`dsr.lm.nbest.Hyp`: ``am_score + context_score + lm_score``; absent fields 0, and 1).

    ``speech_llm_score`` is the speech-LLM's log p(text + EOS | prompt, speech) of each
    hypothesis's text in the form it was trained on (:func:`llm_target`: sentence case for
    upper-case hypotheses); a null ``am_score`` (impossible) counts as -inf.  (N, T, D)
    encoder output and (N,) lengths of the same utterances; the hypotheses come back as
    copies with ``speech_llm_score`` and ``total_score`` added, best first.
    """
    token_lists = [[tokenizer.encode(llm_target(h["text"]), add_special_tokens=False) for h in hs] for hs in nbest]
    scores = model.score(encoder_out, encoder_lens, token_lists)
    out = []
    for hs, ss in zip(nbest, scores):
        ranked = []
        for h, s in zip(hs, ss):
            am = h.get("am_score")
            first = float("-inf") if am is None else float(am) + h.get("context_score", 0.0) + h.get("lm_score", 0.0)
            total = (first + scale * s) / h.get("rank_norm", 1.0)
            ranked.append({**h, "speech_llm_score": s, "total_score": total})
        out.append(sorted(ranked, key=lambda h: -h["total_score"]))
    return out


def decode_speech_llm(
    exp_dir: Path,
    cuts_file: Path,
    methods: tuple[str, ...],
    epoch: int = 0,
    avg: int = 1,
    max_duration: float = 300.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    beam_size: int = 4,
    hotwords_file: Path | None = None,
    nbest_file: Path | None = None,
    speech_llm_scale: float = 1.0,
) -> list:
    """Decode ``cuts_file`` with each speech-LLM method and score it; :class:`DecodeResult` rows.

    ``speech-llm-rescoring`` reranks the n-best lists of ``nbest_file`` (another method's
    ``nbest.jsonl`` on the same cuts, e.g. the transducer's modified beam search) by
    :func:`rerank_nbest` with ``speech_llm_scale``.
    """
    from rich.progress import Progress

    from dsr.decoding.decode import split_name, write_scored

    bad = [m for m in methods if m not in SPEECH_LLM_METHODS]
    if bad:
        raise OptionError(
            "methods",
            f"{bad[0]} cannot be decoded with a speech-LLM checkpoint in the same run; give "
            f"{' or '.join(SPEECH_LLM_METHODS)} only",
        )
    if beam_size < 1:
        raise OptionError("beam_size", f"must be >= 1 (got {beam_size})")
    nbests: dict[str, list[dict[str, Any]]] = {}
    if "speech-llm-rescoring" in methods:
        if nbest_file is None:
            raise OptionError(
                "{methods} speech-llm-rescoring reranks another method's n-best list: give {nbest_file} "
                "EXP/decode/modified-beam-search/SPLIT/nbest.jsonl"
            )
        nbests = read_nbest_file(nbest_file)
    if speech_llm_scale < 0:
        raise OptionError("speech_llm_scale", f"must be >= 0 (got {speech_llm_scale})")
    hotwords = read_hotword_phrases(hotwords_file) if hotwords_file is not None else ()
    cuts = load_cuts(cuts_file)
    if nbests and not any(c.id in nbests for c in cuts):  # another split's list: say so before loading the model
        raise OptionError(
            f"{{nbest_file}} {nbest_file} has none of the utterances of {cuts_file}: give the n-best list of "
            "the same cuts (one per {cuts}, in the same order)"
        )
    dev = torch.device(device)
    loaded = load_speech_llm(exp_dir, epoch, avg, dev, hotwords)
    model, tokenizer, tag, frontend = loaded.model, loaded.tokenizer, loaded.tag, loaded.frontend
    if hotwords:
        logger.info("hotwords: %d phrases from %s, in the prompt: %r", len(hotwords), hotwords_file, model.prompt.text)
    check_cuts_frontend(cuts, frontend, str(cuts_file), f"the model in {exp_dir}", expected_verb="was trained on")
    split = split_name(cuts_file)
    batches = DecodeBatches(cuts, max_duration, dev, frontend_from_dict(frontend))
    speaker_of = {c.id: (c.supervisions[0].speaker or "-") for c in cuts if c.supervisions}
    results = []
    for method in methods:
        triples: list[tuple[str, str, str]] = []
        records: list[dict[str, Any]] = []
        latency: list[float] = []
        audio_seconds = 0.0
        start = time.perf_counter()
        with (
            Progress(disable=not progress, transient=True) as bar,
            torch.inference_mode(),
            PeakProcessMemory(dev) as memory,
        ):
            task = bar.add_task(f"{method} {split}", total=len(cuts))
            for feats, lens, cut_list in batches:
                audio_seconds += sum(c.duration for c in cut_list)
                t0 = synced_clock(dev)
                enc, enc_lens = model.encode(feats, lens)
                if method == "speech-llm-rescoring":
                    missing = [c.id for c in cut_list if not nbests.get(c.id)]
                    if missing:
                        raise OptionError(
                            f"{{nbest_file}} {nbest_file} has no hypotheses for {missing[0]} of "
                            f"{cuts_file}: give the n-best list of the same cuts"
                        )
                    reranked = rerank_nbest(
                        model, tokenizer, enc, enc_lens, [nbests[c.id] for c in cut_list], speech_llm_scale
                    )
                    latency += [synced_clock(dev) - t0] * len(cut_list)
                    for cut, hs in zip(cut_list, reranked):
                        ref = cut.supervisions[0].text or ""
                        triples.append((cut.id, ref, hs[0]["text"]))
                        # JSON has no -inf: an impossible score is null, as in the other nbest.jsonl files.
                        records.append(
                            {
                                "utt_id": cut.id,
                                "ref": ref,
                                "hyps": [
                                    {
                                        k: None if isinstance(v, float) and not math.isfinite(v) else v
                                        for k, v in h.items()
                                    }
                                    for h in hs
                                ],
                            }
                        )
                    bar.advance(task, len(cut_list))
                    continue
                nbest = speech_llm_nbest(model, enc, enc_lens, [c.duration for c in cut_list], method, beam_size)
                latency += [synced_clock(dev) - t0] * len(cut_list)
                for cut, hyps in zip(cut_list, nbest):
                    ref = cut.supervisions[0].text or ""
                    triples.append((cut.id, ref, tokenizer.decode(hyps[0].tokens, skip_special_tokens=True).strip()))
                    if method == "speech-llm-beam-search":
                        records.append(
                            {
                                "utt_id": cut.id,
                                "ref": ref,
                                "hyps": [
                                    {
                                        "text": tokenizer.decode(h.tokens, skip_special_tokens=True).strip(),
                                        "tokens": h.tokens,
                                        "am_score": h.score,
                                        # the fields every nbest.jsonl has (dsr.lm.nbest), so dsr rescore reads it
                                        "ctc_score": None,
                                        "context_score": 0.0,
                                        "timestamps": [],
                                        "source": "search" if h.finished else "search-unfinished",
                                    }
                                    for h in hyps
                                ],
                            }
                        )
                bar.advance(task, len(cut_list))
        elapsed = time.perf_counter() - start
        if not triples:
            raise DsrUserError(
                f"none of the cuts of {cuts_file} could be decoded"
                + (
                    f" (first: {batches.unreadable[0].source}: {batches.unreadable[0].error})"
                    if batches.unreadable
                    else ""
                )
            )
        stats, char_stats = score(triples), score(triples, char_level=True)
        out = Path(exp_dir) / "decode" / method / split
        settings = {
            "trainable_parameters": loaded.trainable_parameters,
            "train_seconds": loaded.train_seconds,
            "beam_size": beam_size if method == "speech-llm-beam-search" else None,
            "hotwords_file": str(hotwords_file) if hotwords_file is not None else None,
            "nbest_file": str(nbest_file) if method == "speech-llm-rescoring" else None,
            "speech_llm_scale": speech_llm_scale if method == "speech-llm-rescoring" else None,
            "prompt": model.prompt.text,
        }
        res = write_scored(
            out, method, split, tag, triples, stats, char_stats, speaker_of, records or None, audio_seconds,
            elapsed, dev, latency, memory, batches.unreadable, None, settings,
        )  # fmt: skip
        results.append(res)
    return results
