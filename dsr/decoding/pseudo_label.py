"""Pseudo-labelling: transcribe cuts with a teacher model, keep the confident hypotheses as training labels.

:func:`pseudo_label` decodes a cuts manifest (transcribed or not: existing texts are only
used to measure the labels) with any dsr model -- a checkpoint with any decoding method,
or zero-shot Whisper (``pretrained``) with ``whisper-greedy`` / ``whisper-beam-search`` --
gives every utterance a confidence in [0, 1], and writes the cuts whose hypothesis is
confident enough as a new cuts manifest that ``dsr train --train-cuts a.jsonl.gz,OUT``
reads like any other.  Each written cut keeps its features (or recording), its
supervision's text becomes the hypothesis in the form dsr scores and trains on
(:func:`~dsr.data.normalize.normalize_for_scoring`: upper case, no punctuation, numerals
spelled out -- what ``recogs.txt`` of ``dsr decode`` shows), and the supervision's
``custom["pseudo_label"]`` records ``{"confidence", "method", "model"}`` (plus
``"raw_text"``, the decoder's own text, when normalisation changed it).

Confidence, per method (every one is cheap: a by-product of the search itself):

* ``whisper-greedy``, ``whisper-beam-search``: ``exp(mean log-probability per token)`` of
  the 1-best, ``eot`` included -- faster-whisper's ``avg_logprob`` exponentiated, so its
  usual thresholds carry over (its ``log_prob_threshold=-1`` is a confidence of 0.37).
* ``greedy`` (transducer): ``exp(mean joiner log-probability of the emitted tokens)``
  along the greedy path.  Blank decisions are left out: most frames are confidently
  blank even on audio the model cannot transcribe, and would pull every utterance to ~1.
* ``ctc-greedy``: ``exp(mean log max-posterior over the frames whose best label is not
  blank)``, the same geometric mean over the frames that produce the tokens, for the same reason.
* The n-best methods (``modified-beam-search``, ``ctc-prefix-beam-search`` and the
  attention-rescoring ones): the posterior of the 1-best within its n-best list, the
  softmax of the list's ranking scores (the first pass's score, plus ``attention_scale``
  times the attention score for the rescoring methods).  It measures how much the beam
  agrees; it ignores the probability mass outside the list, so it overestimates, and it
  needs a beam of at least 2.  Their per-token scores are no alternative: the transducer's
  path score is mostly blanks and CTC's prefix score sums over alignments.

The greedy and per-token confidences of an empty hypothesis are 0 (nothing was emitted).

A cut is dropped, the first reason that applies counted in the report, when it is
``unreadable`` (its features or audio cannot be read), ``unfinished`` (the length guard
stopped it: Whisper's search hit ``max_tokens_per_second`` before ``eot``, or a
transducer/CTC hypothesis has as many tokens as that guard allows, counted the same way),
``empty`` (no word after normalisation), or ``low_confidence`` (below ``min_confidence``).
A threshold that keeps nothing is a user error (lhotse reads an empty manifest back as
None, which training would trip over): the report is written, the manifest is not, and the
report's table of WER by confidence shows which threshold would keep what.  A threshold
above 1 is refused upfront (:class:`PseudoLabelOptions`).

With reference texts in the input cuts, the report has the WER of the kept labels and
of every decoded cut (:func:`dsr.evaluation.wer.score`), and per confidence bin the WER
of the bin and that of the labels a threshold at the bin's lower edge would keep.  It is
written as JSON beside the manifest (``<out>.report.json``).

A teacher and a student with different front ends (zero-shot Whisper reads whisper-fbank
features, a dsr conformer kaldi-fbank ones) decode one manifest and label another:
``onto_cuts`` names cuts of the same audio with the same cut ids (``dsr features`` with
the other ``--feature-type``), whose cuts are written with the labels instead.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet, SupervisionSegment
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from dsr.data.batches import DecodeBatches, Unreadable
from dsr.data.cuts import load_cuts
from dsr.data.normalize import normalize_for_scoring
from dsr.decoding.beam_search import Hypothesis
from dsr.decoding.greedy import TransducerGreedySearch, ctc_greedy_search
from dsr.decoding.loading import DecodingModel, load_decoding_model
from dsr.decoding.methods import (
    ATTENTION_METHODS,
    METHODS,
    NBEST_METHODS,
    REFERENCE_METHODS,
    WHISPER_METHODS,
    check_method,
)
from dsr.decoding.search import SearchOptions, nbest_search, with_whisper_rescoring
from dsr.decoding.whisper_decode import WhisperDecoding, whisper_nbest
from dsr.decoding.whisper_search import WhisperHypothesis
from dsr.device import resolve_device
from dsr.errors import DsrUserError, OptionError
from dsr.evaluation.wer import score, score_by_group
from dsr.features.frontend import check_cuts_frontend, frontend_from_dict
from dsr.lang.bpe import Tokenizer
from dsr.utils import atomic_path, write_json_atomic

logger = logging.getLogger("dsr")

#: Every decoding method but faster-whisper's reference transcription, which has no scores.
PSEUDO_LABEL_METHODS = tuple(m for m in METHODS if m not in REFERENCE_METHODS)
#: Why a cut gets no label, in the order they are checked.
DROP_REASONS = ("unreadable", "unfinished", "empty", "low_confidence")
_MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl")


@dataclass(frozen=True)
class PseudoLabelOptions:
    """What to decode with and which hypotheses to keep (:class:`~dsr.errors.OptionError`, a
    ``ValueError``, naming the field of a bad value).

    Attributes:
        method: a decoding method of :data:`PSEUDO_LABEL_METHODS`.
        min_confidence: keep hypotheses whose confidence (module docstring) is at least this, in [0, 1].
        beam_size: beam of the beam-search methods; the n-best methods' confidence needs >= 2.
        attention_scale: weight of the attention score in the attention-rescoring methods.
        max_tokens_per_second: the length guard, ``ceil(rate * seconds) + 4`` tokens with the end
            token; None: the Whisper decoding settings' (8 for zero-shot Whisper), and no guard
            for the transducer and CTC methods.
        confidence_bins: equal-width confidence bins of the report's WER table.
    """

    method: str
    min_confidence: float
    beam_size: int = 4
    attention_scale: float = 1.0
    max_tokens_per_second: float | None = None
    confidence_bins: int = 10

    def __post_init__(self) -> None:
        if self.method not in PSEUDO_LABEL_METHODS:
            why = " (it gives no scores to measure confidence with)" if self.method in REFERENCE_METHODS else ""
            raise OptionError(
                "method", f"{self.method!r} cannot pseudo-label{why}; choose from {', '.join(PSEUDO_LABEL_METHODS)}"
            )
        if not (_is_number(self.min_confidence) and 0.0 <= self.min_confidence <= 1.0):
            # A confidence is a probability: above 1 nothing is ever kept (a percentage typed by mistake?).
            raise OptionError("min_confidence", f"must be a probability in [0, 1] (got {self.min_confidence!r})")
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise OptionError("beam_size", f"must be an int >= 1 (got {self.beam_size!r})")
        if self.method in NBEST_METHODS and self.beam_size < 2:
            raise OptionError(
                f"{{method}} {self.method} measures confidence within its n-best list, which needs "
                f"{{beam_size}} >= 2 (got {self.beam_size}); use greedy or ctc-greedy for a beam of 1"
            )
        if not (_is_number(self.attention_scale) and self.attention_scale >= 0):
            raise OptionError("attention_scale", f"must be a number >= 0 (got {self.attention_scale!r})")
        if self.max_tokens_per_second is not None and not (
            _is_number(self.max_tokens_per_second) and self.max_tokens_per_second > 0
        ):
            raise OptionError(
                "max_tokens_per_second", f"must be None or a number > 0 (got {self.max_tokens_per_second!r})"
            )
        if not isinstance(self.confidence_bins, int) or self.confidence_bins < 1:
            raise OptionError("confidence_bins", f"must be an int >= 1 (got {self.confidence_bins!r})")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class Label:
    """One utterance's 1-best: the decoder's text, its token count, confidence and whether it ended by itself."""

    text: str
    num_tokens: int
    confidence: float
    finished: bool = True


# ------------------------------------------------------------------------------------------ confidences


def exp_mean(total_log_prob: float, count: int) -> float:
    """``exp(total / count)``: the geometric mean probability of ``count`` decisions (0 for none)."""
    if count <= 0:
        return 0.0
    return min(1.0, math.exp(total_log_prob / count))


def whisper_confidence(hyp: WhisperHypothesis) -> float:
    """exp(mean log-probability per token), ``eot`` included when the hypothesis has one
    (faster-whisper's ``avg_logprob = cum_logprob / (len(tokens) + 1)``)."""
    return exp_mean(hyp.score, len(hyp.tokens) + (1 if hyp.finished else 0))


def nbest_posterior(scores: Sequence[float]) -> float:
    """Softmax of an n-best list's ranking scores, at its first (1-best) entry; 0 if it is impossible."""
    finite = [s for s in scores if s > -math.inf]
    if not scores or scores[0] == -math.inf or not finite:
        return 0.0
    top = max(finite)  # shifted by the maximum: scores are sums of thousands of log-probabilities
    return math.exp(scores[0] - top) / sum(math.exp(s - top) for s in finite)


def ranking_score(hyp: Hypothesis, method: str, attention_scale: float) -> float:
    """The score an n-best method ranks its list by (see :mod:`dsr.decoding.attention_rescoring`)."""
    if method in ATTENTION_METHODS:
        att = hyp.attention_score if hyp.attention_score is not None else -math.inf
        return hyp.score + attention_scale * att
    return hyp.score


def ctc_greedy_confidences(log_probs: torch.Tensor, lens: torch.Tensor, blank: int) -> list[float]:
    """exp(mean log max-posterior) over each utterance's frames whose best label is not blank."""
    best_lp, best = log_probs.max(dim=-1)
    out = []
    for i, n in enumerate(lens.tolist()):
        emitting = best[i, :n] != blank
        out.append(exp_mean(float(best_lp[i, :n][emitting].double().sum()), int(emitting.sum())))
    return out


def guard_limit(duration: float, max_tokens_per_second: float) -> int:
    """Tokens, end token included, the length guard allows for ``duration`` seconds (Whisper's count)."""
    # Rounded first, as the Whisper search does: 10 tok/s * 0.7 s is 7.000000000000001 and means 7.
    return math.ceil(round(max_tokens_per_second * duration, 6)) + 4


# ------------------------------------------------------------------------------------------ the teacher


@dataclass
class Teacher:
    """A loaded model with what labelling needs: the BPE tokenizer (None for Whisper methods),
    the Whisper decoding settings with the length guard applied, and the search options."""

    loaded: DecodingModel
    name: str
    options: PseudoLabelOptions
    tokenizer: Tokenizer | None
    whisper: WhisperDecoding | None
    search: SearchOptions

    @torch.inference_mode()
    def label(self, feats: torch.Tensor, lens: torch.Tensor, durations: list[float]) -> list[Label]:
        """Labels of one (N, T, F) batch, in batch order."""
        model, method = self.loaded.model, self.options.method
        enc, enc_lens = model.encode(feats, lens)
        if method in WHISPER_METHODS:
            assert self.whisper is not None
            nbest = whisper_nbest(model, self.whisper, enc, enc_lens, durations, method, self.options.beam_size)
            return [
                Label(
                    self.whisper.tokenizer.decode(hs[0].tokens),
                    len(hs[0].tokens),
                    whisper_confidence(hs[0]),
                    hs[0].finished,
                )
                for hs in nbest
            ]
        if method in NBEST_METHODS:
            lists = nbest_search(model, enc, enc_lens, method, self.search)
            tokens = [hs[0].tokens for hs in lists]
            confidences = [
                nbest_posterior([ranking_score(h, method, self.search.attention_scale) for h in hs]) for hs in lists
            ]
        elif method == "greedy":
            search = TransducerGreedySearch(model, enc.size(0), enc.device)
            search.advance(enc, enc_lens)
            tokens = search.hyps
            confidences = [exp_mean(sum(lps), len(lps)) for lps in search.token_log_probs]
        elif method == "ctc-greedy":
            log_probs = model.ctc_log_probs(enc)
            tokens = ctc_greedy_search(log_probs, enc_lens, blank=model.blank_id)
            confidences = ctc_greedy_confidences(log_probs, enc_lens, model.blank_id)
        else:  # PseudoLabelOptions only lets the methods above through
            raise AssertionError(method)
        assert self.tokenizer is not None
        rate = self.options.max_tokens_per_second
        return [
            Label(self.tokenizer.decode(t), len(t), c, finished=rate is None or len(t) + 1 <= guard_limit(d, rate))
            for t, c, d in zip(tokens, confidences, durations)
        ]


def load_teacher(
    options: PseudoLabelOptions,
    exp_dir: Path | None,
    pretrained: str | None,
    lang_dir: Path | None,
    device: torch.device,
    epoch: int = 0,
    avg: int = 1,
    use_averaged_model: bool = True,
    whisper_language: str = "en",
) -> Teacher:
    """The model of ``exp_dir``'s checkpoint, or zero-shot Whisper ``pretrained`` (exactly one),
    checked to support ``options.method``."""
    method = options.method
    if (exp_dir is None) == (not pretrained):
        raise OptionError(
            "give the teacher as {exp_dir} DIR (a dsr checkpoint, with {lang_dir}) or {pretrained} "
            "NAME (zero-shot Whisper), exactly one of them"
        )
    if pretrained and method not in WHISPER_METHODS:
        raise OptionError(
            f"{{pretrained}} {pretrained} is zero-shot Whisper: use {{method}} {' or {method} '.join(WHISPER_METHODS)} "
            f"(got {{method}} {method})"
        )
    if exp_dir is not None and not Path(exp_dir).is_dir():
        raise OptionError(f"{{exp_dir}} {exp_dir} does not exist; give the directory of a trained model")
    if method not in WHISPER_METHODS and lang_dir is None:
        raise OptionError(f"{{method}} {method} needs {{lang_dir}} (the BPE model {exp_dir} was trained with)")
    loaded = load_decoding_model(
        Path(exp_dir or "."),
        epoch,
        avg,
        device,
        use_averaged_model,
        pretrained=pretrained,
        whisper_language=whisper_language,
    )
    check_method(loaded.model, method)
    tokenizer = Tokenizer(lang_dir) if lang_dir is not None and method not in WHISPER_METHODS else None
    search = SearchOptions(beam_size=options.beam_size, attention_scale=options.attention_scale)
    whisper = loaded.whisper
    search = with_whisper_rescoring(search, whisper, tokenizer)
    if whisper is not None and options.max_tokens_per_second is not None:
        whisper = WhisperDecoding(
            whisper.tokenizer, replace(whisper.search, max_tokens_per_second=options.max_tokens_per_second)
        )
    name = pretrained if pretrained else f"{exp_dir} ({loaded.tag})"
    return Teacher(loaded, str(name), options, tokenizer, whisper, search)


# ------------------------------------------------------------------------------------------ the report


@dataclass
class ConfidenceBin:
    """Cuts whose confidence is in ``[low, high)`` (the last bin includes 1), and the labels a
    threshold of ``low`` would keep: their count and WER (None without reference texts)."""

    low: float
    high: float
    utts: int
    wer: float | None
    kept_at_threshold: int
    kept_wer_at_threshold: float | None


@dataclass
class PseudoLabelReport:
    """What :func:`pseudo_label` did; ``to_dict`` is the JSON written beside the manifest.

    ``dropped`` counts each of :data:`DROP_REASONS`; the mean confidences are over the kept
    labels and over every decoded cut (None when there are none); ``wer_kept`` / ``wer_all``
    (``{"wer", "errors", "ref_words", "utts"}``) are over the cuts with a reference text.
    """

    method: str
    model: str
    min_confidence: float
    cuts_file: str
    out_file: str
    report_file: str
    num_cuts: int
    num_kept: int
    dropped: dict[str, int]
    kept_seconds: float
    mean_confidence_kept: float | None
    mean_confidence_decoded: float | None
    num_references: int
    wer_kept: dict[str, Any] | None
    wer_all: dict[str, Any] | None
    confidence_bins: list[ConfidenceBin]
    decode_seconds: float
    options: dict[str, Any]
    onto_cuts: str | None = None
    unreadable: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.dropped.items() if n) or "none"
        mean = f"mean confidence {self.mean_confidence_kept:.3f}; " if self.mean_confidence_kept is not None else ""
        wer = ""
        if self.wer_all is not None:
            kept = f"{self.wer_kept['wer']:.2f}%" if self.wer_kept is not None else "n/a"
            wer = f"; WER kept {kept}, all {self.wer_all['wer']:.2f}% ({self.num_references} refs)"
        return (
            f"{self.method} ({self.model}) kept {self.num_kept}/{self.num_cuts} cuts "
            f"({self.kept_seconds / 3600:.2f} h) with confidence >= {self.min_confidence:g} ({mean}dropped: "
            f"{dropped}){wer} -> {self.out_file}"
        )


def report_path(out_file: Path) -> Path:
    """``dir/x.jsonl.gz`` -> ``dir/x.report.json``."""
    name = out_file.name
    for suffix in _MANIFEST_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out_file.with_name(name + ".report.json")


def utterance_errors(labels: dict[str, Label], refs: dict[str, str]) -> dict[str, tuple[int, int]]:
    """``(errors, reference words)`` of each labelled cut with a reference, aligned once
    (:func:`dsr.evaluation.wer.score`) for every WER of the report."""
    triples = [(u, ref, labels[u].text) for u, ref in refs.items() if u in labels]
    per_utt = score_by_group(score(triples), {u: u for u, _, _ in triples})
    return {u: (stats.errors, stats.ref_words) for u, stats in per_utt}


def wer_of(ids: list[str], errors: dict[str, tuple[int, int]]) -> dict[str, Any] | None:
    """``{"wer", "errors", "ref_words", "utts"}`` of the cuts ``ids`` that have a reference (None if none)."""
    counts = [errors[u] for u in ids if u in errors]
    if not counts:
        return None
    errs, words = sum(e for e, _ in counts), sum(w for _, w in counts)
    return {"wer": 100.0 * errs / max(words, 1), "errors": errs, "ref_words": words, "utts": len(counts)}


def confidence_bins(
    labels: dict[str, Label], usable: dict[str, bool], errors: dict[str, tuple[int, int]], num_bins: int
) -> list[ConfidenceBin]:
    """The WER table: per equal-width bin, its cuts' WER and the WER a threshold at its lower edge keeps.

    ``usable`` says which labels a low enough threshold keeps (finished and non-empty).
    """
    out = []
    for b in range(num_bins):
        low, high = b / num_bins, (b + 1) / num_bins
        last = b == num_bins - 1
        in_bin = [u for u, lab in labels.items() if low <= lab.confidence and (lab.confidence < high or last)]
        above = [u for u, lab in labels.items() if usable[u] and lab.confidence >= low]
        bin_wer, kept_wer = wer_of(in_bin, errors), wer_of(above, errors)
        out.append(
            ConfidenceBin(
                round(low, 6),
                round(high, 6),
                len(in_bin),
                bin_wer["wer"] if bin_wer else None,
                len(above),
                kept_wer["wer"] if kept_wer else None,
            )
        )
    return out


def format_bins(bins: list[ConfidenceBin]) -> str:
    """The WER table as text lines (for the log)."""
    lines = ["confidence   utts   WER%  | threshold at low edge: kept  WER%"]
    for b in bins:
        wer = f"{b.wer:6.2f}" if b.wer is not None else "     -"
        kept_wer = f"{b.kept_wer_at_threshold:6.2f}" if b.kept_wer_at_threshold is not None else "     -"
        lines.append(f"[{b.low:.2f}, {b.high:.2f}) {b.utts:6d} {wer}  | {b.kept_at_threshold:27d} {kept_wer}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ labelling


def drop_reason(label: Label, min_confidence: float) -> str | None:
    """Why ``label`` is not kept (one of :data:`DROP_REASONS`), None to keep it."""
    if not label.finished:
        return "unfinished"
    if not normalize_for_scoring(label.text):
        return "empty"
    if label.confidence < min_confidence:
        return "low_confidence"
    return None


def labelled_cut(cut: Cut, label: Label, method: str, model: str) -> Cut:
    """``cut`` with its supervision's text replaced by the label's (normalised) and
    ``custom["pseudo_label"] = {"confidence", "method", "model"[, "raw_text"]}``.

    A cut with exactly one supervision keeps it (speaker, language, ...); otherwise one
    supervision spanning the cut replaces them, since the hypothesis covers the whole cut.
    """
    text = normalize_for_scoring(label.text)
    info: dict[str, Any] = {"confidence": round(label.confidence, 6), "method": method, "model": model}
    if text != label.text:
        info["raw_text"] = label.text  # e.g. Whisper's cased, punctuated text, for inspection
    if len(cut.supervisions) == 1:
        sup = cut.supervisions[0]
        new = fastcopy(sup, text=text, custom={**(sup.custom or {}), "pseudo_label": info})
    else:
        new = SupervisionSegment(
            id=cut.id,
            recording_id=cut.recording_id,
            start=0.0,
            duration=cut.duration,
            channel=cut.channel if isinstance(cut.channel, int) else 0,
            text=text,
            custom={"pseudo_label": info},
        )
    return fastcopy(cut, supervisions=[new])


def _reference(cut: Cut) -> str | None:
    text = cut.supervisions[0].text if cut.supervisions else None
    return text if text and normalize_for_scoring(text) else None


def _check_paths(cuts_file: Path, out_file: Path, onto_cuts: Path | None) -> None:
    if not out_file.name.endswith(_MANIFEST_SUFFIXES):
        raise OptionError(f"{{out_file}} {out_file} must be a cuts manifest named *.jsonl.gz (or *.jsonl)")
    if out_file.resolve() in {cuts_file.resolve(), *([onto_cuts.resolve()] if onto_cuts else [])}:
        raise OptionError(f"{{out_file}} {out_file} would overwrite an input manifest; give a new file")


def _targets(cuts: CutSet, onto_cuts: Path | None) -> dict[str, Cut]:
    """The cut to write each decoded cut's label onto: itself, or ``onto_cuts``' cut of the same id."""
    if onto_cuts is None:
        return {c.id: c for c in cuts}
    onto = {c.id: c for c in load_cuts(onto_cuts)}
    missing = [c.id for c in cuts if c.id not in onto]
    if missing:
        raise OptionError(
            f"{{onto_cuts}} {onto_cuts} lacks {len(missing)} of the decoded cut ids (first: {missing[0]}); "
            "it must have features of the same audio, from dsr features on the same data"
        )
    return onto


def decode_labels(
    teacher: Teacher, cuts: CutSet, max_duration: float, device: torch.device, progress: bool = False
) -> tuple[dict[str, Label], list[Unreadable]]:
    """Every readable cut's :class:`Label`, and the unreadable cuts."""
    batches = DecodeBatches(cuts, max_duration, device, frontend_from_dict(teacher.loaded.frontend))
    labels: dict[str, Label] = {}
    from rich.progress import Progress

    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"pseudo-label {teacher.options.method}", total=len(cuts))
        for feats, lens, cut_list in batches:
            for cut, label in zip(cut_list, teacher.label(feats, lens, [c.duration for c in cut_list])):
                labels[cut.id] = label
            bar.advance(task, len(cut_list))
    return labels, batches.unreadable


def pseudo_label(
    cuts_file: Path,
    out_file: Path,
    options: PseudoLabelOptions,
    exp_dir: Path | None = None,
    pretrained: str | None = None,
    lang_dir: Path | None = None,
    epoch: int = 0,
    avg: int = 1,
    use_averaged_model: bool = True,
    device: str = "auto",
    num_threads: int = 0,
    max_duration: float = 300.0,
    whisper_language: str = "en",
    onto_cuts: Path | None = None,
    progress: bool = False,
) -> PseudoLabelReport:
    """Label ``cuts_file`` with the teacher (``exp_dir`` + ``lang_dir``, or ``pretrained``) and write
    the kept cuts to ``out_file`` and the report to :func:`report_path` (module docstring).

    ``epoch``, ``avg`` and ``use_averaged_model`` choose the checkpoint as in ``dsr decode``;
    ``max_duration`` is seconds of audio per batch; ``onto_cuts`` are the cuts written with
    the labels (default: the decoded ones).  Raises DsrUserError for bad inputs, when no
    cut could be read, and when no cut is kept (after writing the report); an
    :class:`~dsr.errors.OptionError`, naming these arguments, when it is about one of them.
    """
    cuts_file, out_file = Path(cuts_file), Path(out_file)
    onto_cuts = Path(onto_cuts) if onto_cuts is not None else None
    _check_paths(cuts_file, out_file, onto_cuts)
    cuts = load_cuts(cuts_file)
    targets = _targets(cuts, onto_cuts)
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    dev = resolve_device(device)
    teacher = load_teacher(
        options,
        Path(exp_dir) if exp_dir is not None else None,
        pretrained,
        Path(lang_dir) if lang_dir is not None else None,
        dev,
        epoch,
        avg,
        use_averaged_model,
        whisper_language,
    )
    check_cuts_frontend(
        cuts,
        teacher.loaded.frontend,
        str(cuts_file),
        f"zero-shot {pretrained}" if pretrained else f"the model in {exp_dir}",
        expected_verb="reads" if pretrained else "was trained on",
    )
    start = time.perf_counter()
    labels, unreadable = decode_labels(teacher, cuts, max_duration, dev, progress)
    elapsed = time.perf_counter() - start
    if not labels and unreadable:
        raise DsrUserError(
            f"none of the {len(unreadable)} cuts of {cuts_file} could be read (first: "
            f"{unreadable[0].source}: {unreadable[0].error}); check the manifest's paths"
        )

    reasons = {u: drop_reason(lab, options.min_confidence) for u, lab in labels.items()}
    kept_cuts = [
        labelled_cut(targets[c.id], labels[c.id], options.method, teacher.name)
        for c in cuts
        if c.id in labels and reasons[c.id] is None
    ]  # input order, not the batches'
    if kept_cuts:
        with atomic_path(out_file) as tmp:
            CutSet.from_cuts(kept_cuts).to_file(tmp)
    else:
        # lhotse reads an empty manifest back as None, which training would trip over: write none, and
        # leave none of an earlier run that would pass for this run's.
        out_file.unlink(missing_ok=True)
    refs = {c.id: ref for c in cuts if (ref := _reference(c)) is not None}
    report = PseudoLabelReport(
        method=options.method,
        model=teacher.name,
        min_confidence=options.min_confidence,
        cuts_file=str(cuts_file),
        out_file=str(out_file),
        report_file=str(report_path(out_file)),
        num_cuts=len(cuts),
        num_kept=len(kept_cuts),
        dropped={
            r: (len(unreadable) if r == "unreadable" else sum(x == r for x in reasons.values())) for r in DROP_REASONS
        },
        kept_seconds=sum(c.duration for c in kept_cuts),
        mean_confidence_kept=_mean([labels[c.id].confidence for c in kept_cuts]),
        mean_confidence_decoded=_mean([lab.confidence for lab in labels.values()]),
        num_references=sum(u in labels for u in refs),
        decode_seconds=elapsed,
        options=asdict(options),
        onto_cuts=str(onto_cuts) if onto_cuts is not None else None,
        unreadable=[u.to_dict() for u in unreadable],
        **_measure(labels, reasons, refs, [c.id for c in kept_cuts], options.confidence_bins),
    )
    write_json_atomic(report.report_file, report.to_dict())
    _log(report)
    if not kept_cuts:
        usable = [lab.confidence for u, lab in labels.items() if reasons[u] in (None, "low_confidence")]
        best = (
            f"the most confident non-empty finished hypothesis has {max(usable):.3f}"
            if usable
            else "no hypothesis is non-empty and finished"
        )
        raise OptionError(
            f"no cut of {cuts_file} reached {{min_confidence}} {options.min_confidence:g} ({best}); "
            f"nothing written to {out_file}: choose a threshold from the WER-by-confidence table "
            f"in {report.report_file}"
        )
    return report


def _measure(
    labels: dict[str, Label], reasons: dict[str, str | None], refs: dict[str, str], kept: list[str], num_bins: int
) -> dict[str, Any]:
    """The report's WERs against the references: of the kept labels, of all, and by confidence."""
    errors = utterance_errors(labels, refs)
    usable = {u: r in (None, "low_confidence") for u, r in reasons.items()}
    return {
        "wer_kept": wer_of(kept, errors),
        "wer_all": wer_of(list(labels), errors),
        "confidence_bins": confidence_bins(labels, usable, errors, num_bins),
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _log(report: PseudoLabelReport) -> None:
    """A warning for the unreadable cuts, and the WER table."""
    if report.unreadable:
        logger.warning(
            "%d unreadable cut(s) skipped (listed in %s): %s",
            len(report.unreadable),
            report.report_file,
            "; ".join(f"{u['cut_id']} ({u['source']})" for u in report.unreadable[:3])
            + (", ..." if len(report.unreadable) > 3 else ""),
        )
    if report.num_references:
        logger.info(
            "WER by confidence (%d cuts with references):\n%s",
            report.num_references,
            format_bins(report.confidence_bins),
        )
