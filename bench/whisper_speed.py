"""dsr vs faster-whisper on one CPU thread: end-to-end decoding time per utterance, WER, and
the speed ratio (faster-whisper seconds / dsr seconds), fp32 vs fp32 and int8 vs int8.

Usage:
    # the ARCTIC recipe's Whisper-based transducer vs faster-whisper tiny.en, fp32 and int8:
    python bench/whisper_speed.py --exp-dir egs/arctic/exp/whisper-tiny.en --lang-dir egs/arctic/data/lang_bpe_128 \\
        --recordings egs/arctic/data/manifests/arctic_recordings_test.jsonl.gz \\
        --supervisions egs/arctic/data/manifests/arctic_supervisions_test.jsonl.gz \\
        --json bench-out/whisper_speed.json
    # beam search with Whisper-head rescoring too, beam 4, fp32 only, first 20 utterances:
    python bench/whisper_speed.py --exp-dir egs/arctic/exp/whisper-tiny.en --lang-dir egs/arctic/data/lang_bpe_128 \\
        --recordings egs/arctic/data/manifests/arctic_recordings_test.jsonl.gz \\
        --supervisions egs/arctic/data/manifests/arctic_supervisions_test.jsonl.gz \\
        --methods greedy,modified-beam-search,transducer-attention-rescoring --beam-size 4 --precision fp32 --limit 20
    # beam search with a token n-gram fused in (dsr decode --ngram-lm; its load is not timed):
    python bench/whisper_speed.py --exp-dir egs/arctic/exp/whisper-tiny.en-tts --lang-dir egs/arctic/data/lang_bpe_128 \\
        --recordings egs/arctic/data/manifests/arctic_recordings_test.jsonl.gz \\
        --supervisions egs/arctic/data/manifests/arctic_supervisions_test.jsonl.gz --methods modified-beam-search \\
        --ngram-lm egs/arctic/data/lm_ngram5_lang_bpe_128/lm.arpa --ngram-scale 0.5 --ngram-token-bonus 2
    # a folder + utt-id<TAB>text transcripts instead of manifests (all of arctic_cathy, training prompts too: speed only):
    python bench/whisper_speed.py --exp-dir egs/arctic/exp/whisper-tiny.en --lang-dir egs/arctic/data/lang_bpe_128 \\
        --audio-dir ../shared/data/arctic_cathy/audio --transcripts ../shared/data/arctic_cathy/transcripts.tsv --limit 50

The goal it checks (issue): dsr's transducer (greedy, or beam with rescoring) at or below
zero-shot Whisper tiny.en's WER while decoding at least 10x faster than faster-whisper
tiny.en greedy on one CPU thread, same precision on both sides, feature extraction included.

What is timed, per utterance, from 16 kHz samples already in memory to text (audio files
are read and resampled once, before any timing; model loading is not timed):

* dsr: features (dsr.features.frontend.compute_frontend with the checkpoint's front end,
  unpadded), model.encode, the search of --methods, and the BPE (or Whisper-head) text;
  one utterance at a time (batch size 1), under torch.inference_mode.  fp32 is the
  checkpoint as trained; int8 is dsr decode --int8 (dynamic int8 Linear layers).
* faster-whisper (--pretrained): WhisperModel.transcribe on the samples -- its own log-mel
  features (on the utterance padded to 30 s, as it always does), the 30 s encoder window
  and greedy decoding without timestamps, previous text or VAD
  (dsr.decoding.faster_whisper_ref, what dsr decode -m faster-whisper runs);
  compute_type float32 for fp32 and int8 for int8.

One thread everywhere: torch.set_num_threads(1) and interop threads 1, faster-whisper
cpu_threads=1, and OMP/OpenBLAS/MKL pinned to 1 thread before numpy loads (faster-whisper
computes its features with numpy, whose OpenBLAS would otherwise use every core).

Order (--schedule): ``interleaved`` (default) runs every system on utterance 1, then on
utterance 2, ..., reversing the systems' order on every other utterance.  On a machine
whose load changes over the run (other jobs, frequency scaling), each system then sees the
same conditions, so the ratio stays fair even when the absolute times drift; the reversal
cancels any advantage of going first or second (caches warmed by the other system).
``blocks`` runs each system over all utterances in turn (each keeps its caches warm, as a
server running one model would), fair only on a quiet machine.  Each precision is one
block of its own (dsr fp32 and int8 are different models).  The first --warmup utterances
go through every system once, untimed, before the timed pass over all --limit utterances
(one-off costs: allocator growth, CTranslate2's first call, lazy initialisation).

Columns: audio s and compute s are the totals over the utterances; RTF = compute / audio;
latency is the per-utterance compute time (mean, p50, p90 in ms); WER is dsr's scorer
(dsr.evaluation.wer.score: upper case, no punctuation, numerals spelled out) on the same
references for every row.  "ratio" is faster-whisper's compute seconds over dsr's for the
same precision and utterances (>= 10 and WER <= faster-whisper's meets the goal).
--json writes the same numbers, plus every utterance's text and time and dsr's split of
time between features, encoder and search.  Timings on a busy machine are not meaningful:
only the ratio of an interleaved run is somewhat robust to it.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # One-thread BLAS/OpenMP pools must be requested before numpy and torch create them.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Protocol

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsr.data.folder import AUDIO_SUFFIXES, read_transcripts  # noqa: E402
from dsr.decoding.beam_search import ShallowFusion  # noqa: E402
from dsr.decoding.loading import load_decoding_model  # noqa: E402
from dsr.decoding.methods import METHODS, REFERENCE_METHODS, WHISPER_METHODS, check_method, get_method  # noqa: E402
from dsr.decoding.search import SearchOptions, best_tokens, with_whisper_rescoring  # noqa: E402
from dsr.decoding.whisper_decode import WhisperDecoding, whisper_nbest  # noqa: E402
from dsr.errors import DsrUserError  # noqa: E402
from dsr.evaluation.latency import latency_stats  # noqa: E402
from dsr.evaluation.wer import score  # noqa: E402
from dsr.features.audio import load_audio_mono, load_recording_mono  # noqa: E402
from dsr.features.frontend import FrontendConfig, compute_frontend, describe_frontend, frontend_from_dict  # noqa: E402
from dsr.lang.bpe import Tokenizer  # noqa: E402
from dsr.lm.ngram import NgramLm  # noqa: E402
from dsr.models.transducer import HybridTransducer  # noqa: E402
from dsr.utils import write_json_atomic  # noqa: E402

SAMPLE_RATE = 16000
PRECISIONS = ("fp32", "int8")
#: faster-whisper's (CTranslate2's) compute_type for each precision.
CT2_COMPUTE_TYPE = {"fp32": "float32", "int8": "int8"}
#: dsr methods this bench can time: every decode method but the faster-whisper reference itself.
DSR_METHODS = tuple(m for m in METHODS if m not in REFERENCE_METHODS)
GOAL_RATIO = 10.0
REFERENCE = "faster-whisper"


@dataclass
class Utterance:
    """One test utterance, its audio in memory (16 kHz mono float32)."""

    id: str
    text: str
    samples: np.ndarray

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


class System(Protocol):
    """Something that turns samples into text; ``transcribe`` is what gets timed."""

    system: str
    method: str
    precision: str
    detail: str  # the model and how it computes, for the report

    def transcribe(self, samples: np.ndarray) -> tuple[str, dict[str, float]]:
        """Text of ``samples`` and seconds per stage (empty when the system has no stages to report)."""
        ...


@dataclass
class Measured:
    """A system's timed pass: its text, seconds and stage seconds, by utterance id."""

    system: System
    texts: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# Audio
# ------------------------------------------------------------------------------------------


def load_manifest_utterances(recordings: Path, supervisions: Path, limit: int) -> list[Utterance]:
    """The first ``limit`` (0: all) supervisions of a lhotse manifest pair, in manifest order."""
    from lhotse import RecordingSet, SupervisionSet

    recs = {r.id: r for r in RecordingSet.from_file(recordings)}  # lhotse opens .jsonl.gz lazily: no lookup by id
    utts: list[Utterance] = []
    for sup in SupervisionSet.from_file(supervisions):
        if limit and len(utts) >= limit:
            break
        if sup.recording_id not in recs:
            raise DsrUserError(f"supervision {sup.id} names recording {sup.recording_id}, absent from {recordings}")
        audio = load_recording_mono(recs[sup.recording_id], sup.start, sup.duration, SAMPLE_RATE)
        utts.append(Utterance(sup.id, sup.text or "", audio))
    return utts


def load_folder_utterances(audio_dir: Path, transcripts: Path, limit: int) -> list[Utterance]:
    """The first ``limit`` (0: all) lines of an ``utt-id<TAB>text`` file, audio found by stem under ``audio_dir``."""
    if not audio_dir.is_dir():
        raise DsrUserError(f"--audio-dir {audio_dir} is not a folder")
    files = {p.stem: p for p in sorted(audio_dir.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES}
    lines = read_transcripts(transcripts)
    utts: list[Utterance] = []
    for line in lines[:limit] if limit else lines:
        if line.utt_id not in files:
            raise DsrUserError(f"{transcripts} line {line.line_no}: no audio file {line.utt_id}.* under {audio_dir}")
        utts.append(Utterance(line.utt_id, line.text, load_audio_mono(files[line.utt_id], SAMPLE_RATE)))
    return utts


# ------------------------------------------------------------------------------------------
# Systems
# ------------------------------------------------------------------------------------------


@dataclass
class DsrSystem:
    """A dsr checkpoint decoding with one method: features -> encoder -> search -> text."""

    model: HybridTransducer
    frontend: FrontendConfig
    method: str
    precision: str
    text_of: Callable[[torch.Tensor, torch.Tensor, float], str]
    detail: str
    system: str = "dsr"

    def transcribe(self, samples: np.ndarray) -> tuple[str, dict[str, float]]:
        t0 = time.perf_counter()
        feats = torch.from_numpy(compute_frontend(samples, self.frontend)).unsqueeze(0)
        lens = torch.tensor([feats.size(1)])
        t1 = time.perf_counter()
        enc, enc_lens = self.model.encode(feats, lens)
        t2 = time.perf_counter()
        text = self.text_of(enc, enc_lens, len(samples) / SAMPLE_RATE)
        t3 = time.perf_counter()
        return text, {"features": t1 - t0, "encoder": t2 - t1, "search": t3 - t2}


def dsr_text_fn(
    model: HybridTransducer,
    method: str,
    tokenizer: Tokenizer,
    whisper: WhisperDecoding | None,
    beam_size: int,
    fusion: ShallowFusion | None = None,
) -> Callable[[torch.Tensor, torch.Tensor, float], str]:
    """(encoder output, lengths, duration s) -> 1-best text, as dsr decode computes it for ``method``."""
    if method in WHISPER_METHODS:
        assert whisper is not None  # check_method demands the head

        def whisper_text(enc: torch.Tensor, enc_lens: torch.Tensor, duration: float) -> str:
            hyps = whisper_nbest(model, whisper, enc, enc_lens, [duration], method, beam_size)
            return whisper.texts(hyps[0][:1])[0]

        return whisper_text
    opts = SearchOptions(beam_size=beam_size, fusion=fusion)
    opts = with_whisper_rescoring(opts, whisper, tokenizer)

    def bpe_text(enc: torch.Tensor, enc_lens: torch.Tensor, duration: float) -> str:
        return tokenizer.decode(best_tokens(model, enc, enc_lens, method, opts)[0])

    return bpe_text


def load_dsr_systems(args: argparse.Namespace, precision: str, tokenizer: Tokenizer) -> list[DsrSystem]:
    """One :class:`DsrSystem` per method, sharing the checkpoint loaded at ``precision``."""
    loaded = load_decoding_model(
        args.exp_dir, args.epoch, args.avg, "cpu", not args.no_averaged_model, int8=precision == "int8"
    )
    frontend = frontend_from_dict(loaded.frontend)
    # Whisper's encoder can run on a 30 s window like faster-whisper's (zero-shot), or on the utterance alone.
    padded = getattr(loaded.model.encoder, "pad_to_30s", False)
    arithmetic = f"torch dynamic int8 Linear ({torch.backends.quantized.engine})" if precision == "int8" else "float32"
    detail = (
        f"{args.exp_dir} {loaded.tag}, {describe_frontend(loaded.frontend)}, encoder input "
        f"{'padded to 30 s' if padded else 'unpadded'}, {arithmetic}"
    )
    fusion = None
    if args.ngram_lm is not None:
        fusion = ShallowFusion(NgramLm(args.ngram_lm, tokenizer), args.ngram_scale, args.ngram_token_bonus)
    systems = []
    for method in args.methods:
        check_method(loaded.model, method)
        fused = fusion if get_method(method).fusable else None
        text_of = dsr_text_fn(loaded.model, method, tokenizer, loaded.whisper, args.beam_size, fused)
        name = method if fused is None else method + fused.label  # as dsr decode names its result
        systems.append(DsrSystem(loaded.model, frontend, name, precision, text_of, detail))
    return systems


@dataclass
class FasterWhisperSystem:
    """faster-whisper's greedy transcription (dsr.decoding.faster_whisper_ref), one CPU thread."""

    reference: Any
    precision: str
    detail: str
    system: str = REFERENCE
    method: str = "greedy"

    def transcribe(self, samples: np.ndarray) -> tuple[str, dict[str, float]]:
        return self.reference.transcribe(samples), {}


def load_reference(pretrained: str, precision: str, language: str) -> FasterWhisperSystem:
    from dsr.decoding.faster_whisper_ref import FasterWhisperReference

    ref = FasterWhisperReference(pretrained, 1, CT2_COMPUTE_TYPE[precision], language)
    # The type CTranslate2 really runs (it resolves "int8" to int8_float32 on a CPU).
    detail = f"{pretrained}, CTranslate2 {ref.model.model.compute_type}, input padded to 30 s"
    return FasterWhisperSystem(ref, precision, detail)


# ------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------


def measure(system: System, utt: Utterance, into: Measured) -> None:
    start = time.perf_counter()
    text, stages = system.transcribe(utt.samples)
    into.seconds[utt.id] = time.perf_counter() - start
    into.texts[utt.id] = text
    into.stages[utt.id] = stages


def run_systems(systems: list[System], utts: list[Utterance], warmup: int, schedule: str) -> list[Measured]:
    """Warm every system up on the first ``warmup`` utterances, then time each on every utterance."""
    with torch.inference_mode():
        for utt in utts[:warmup]:
            for s in systems:
                s.transcribe(utt.samples)
        gc.collect()  # the warm-up's garbage, not collected inside a timed call
        results = [Measured(s) for s in systems]
        if schedule == "interleaved":
            for i, utt in enumerate(utts):
                pairs = list(zip(systems, results))
                for s, m in pairs if i % 2 == 0 else reversed(pairs):
                    measure(s, utt, m)
        else:
            for s, m in zip(systems, results):
                for utt in utts:
                    measure(s, utt, m)
    return results


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def summarise(m: Measured, utts: list[Utterance]) -> dict[str, Any]:
    """A result row: totals, RTF, latency, WER and per-utterance detail (JSON-ready)."""
    triples = [(u.id, u.text, m.texts[u.id]) for u in utts]
    stats = score(triples)
    audio_s = sum(u.duration for u in utts)
    compute_s = sum(m.seconds[u.id] for u in utts)
    stage_names = list(dict.fromkeys(k for u in utts for k in m.stages[u.id]))  # in pipeline order
    return {
        "system": m.system.system,
        "method": m.system.method,
        "precision": m.system.precision,
        "detail": m.system.detail,
        "num_utts": len(utts),
        "audio_s": audio_s,
        "compute_s": compute_s,
        "rtf": compute_s / max(audio_s, 1e-9),
        "latency_ms": latency_stats([m.seconds[u.id] for u in utts]),
        "wer": stats.wer,
        "errors": stats.errors,
        "ref_words": stats.ref_words,
        # dsr only: where its time goes (features / encoder / search + text), summed over utterances.
        "stage_s": {k: sum(m.stages[u.id].get(k, 0.0) for u in utts) for k in stage_names} or None,
        "utterances": [
            {"id": u.id, "duration_s": u.duration, "seconds": m.seconds[u.id], "ref": u.text, "hyp": m.texts[u.id]}
            for u in utts
        ],
    }


def speed_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """faster-whisper compute seconds / dsr compute seconds, per precision and dsr method."""
    refs = {r["precision"]: r for r in rows if r["system"] == REFERENCE}
    out = []
    for r in rows:
        ref = refs.get(r["precision"])
        if r["system"] == REFERENCE or ref is None:
            continue
        ratio = ref["compute_s"] / max(r["compute_s"], 1e-12)
        out.append(
            {
                "precision": r["precision"],
                "method": r["method"],
                "reference_s": ref["compute_s"],
                "dsr_s": r["compute_s"],
                "speed_ratio": ratio,
                "dsr_wer": r["wer"],
                "reference_wer": ref["wer"],
                "goal_met": ratio >= GOAL_RATIO and r["wer"] <= ref["wer"],
            }
        )
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"torch": torch.__version__, "numpy": np.__version__}
    for name in ("ctranslate2", "faster_whisper"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def print_table(rows: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    print(
        f"{'system':<15} {'method':<31} {'prec':<5} {'utts':>5} {'audio s':>8} {'compute s':>10} {'RTF':>8} "
        f"{'mean ms':>8} {'p50 ms':>8} {'p90 ms':>8} {'WER %':>7}"
    )
    for r in rows:
        lat = r["latency_ms"] or {"mean": 0.0, "p50": 0.0, "p90": 0.0}
        print(
            f"{r['system']:<15} {r['method']:<31} {r['precision']:<5} {r['num_utts']:>5} {r['audio_s']:8.2f} "
            f"{r['compute_s']:10.3f} {r['rtf']:8.4f} {lat['mean']:8.1f} {lat['p50']:8.1f} {lat['p90']:8.1f} "
            f"{r['wer']:7.2f}"
        )
    for r in rows:
        if r["stage_s"]:
            parts = ", ".join(f"{k} {100 * v / max(r['compute_s'], 1e-12):.0f} %" for k, v in r["stage_s"].items())
            print(f"dsr {r['method']} {r['precision']}: {parts} of its time")
    if ratios:
        print(
            f"speed ratio = {REFERENCE} compute s / dsr compute s (same utterances, same precision); "
            f"goal: >= {GOAL_RATIO:g} with WER <= {REFERENCE}'s"
        )
    for q in ratios:
        print(
            f"  {q['precision']:<5} {q['method']:<31} {q['speed_ratio']:7.2f}x   WER {q['dsr_wer']:.2f} % vs "
            f"{q['reference_wer']:.2f} %   goal {'met' if q['goal_met'] else 'not met'}"
        )


# ------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------


def comma_list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{value!r}: choose a comma-separated list of {', '.join(choices)}")
        return list(dict.fromkeys(items))  # no duplicates, order kept

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--exp-dir", type=Path, required=True, help="dsr model (a dsr train exp dir).")
    p.add_argument("--epoch", type=int, default=0, help="Checkpoint epoch (0: the newest), as dsr decode.")
    p.add_argument("--avg", type=int, default=1)
    p.add_argument(
        "--no-averaged-model", action="store_true", help="Average epoch checkpoints, not the running average."
    )
    p.add_argument("--lang-dir", type=Path, required=True, help="The model's BPE lang dir (bpe.model).")
    p.add_argument("--recordings", type=Path, help="lhotse recordings manifest (with --supervisions).")
    p.add_argument("--supervisions", type=Path, help="lhotse supervisions manifest: the utterances and references.")
    p.add_argument("--audio-dir", type=Path, help="Audio folder, files named <utt-id>.<ext> (with --transcripts).")
    p.add_argument("--transcripts", type=Path, help="utt-id<TAB>text file.")
    p.add_argument("--pretrained", default="whisper-tiny.en", help="faster-whisper reference model (name or CT2 dir).")
    p.add_argument("--language", default="en", help="faster-whisper's language (no detection).")
    p.add_argument("--no-reference", action="store_true", help="Time dsr alone (no faster-whisper rows, no ratio).")
    p.add_argument(
        "--methods",
        type=comma_list(DSR_METHODS),
        default=["greedy", "modified-beam-search"],
        help="dsr decode methods to time, comma-separated (default: greedy,modified-beam-search).",
    )
    p.add_argument("--beam-size", type=int, default=4, help="Beam of the n-best methods.")
    p.add_argument("--ngram-lm", type=Path, help="Token n-gram fused into the beam search (dsr decode --ngram-lm).")
    p.add_argument("--ngram-scale", type=float, default=0.3, help="With --ngram-lm: its weight.")
    p.add_argument("--ngram-token-bonus", type=float, default=0.0, help="With --ngram-lm: bonus per emitted token.")
    p.add_argument(
        "--precision",
        type=comma_list(PRECISIONS),
        default=list(PRECISIONS),
        help="fp32,int8 (default both): dsr --int8 vs faster-whisper compute_type int8.",
    )
    p.add_argument("--limit", type=int, default=0, help="First N utterances (0: all).")
    p.add_argument("--warmup", type=int, default=3, help="Utterances decoded by every system, untimed, first.")
    p.add_argument(
        "--schedule",
        choices=("interleaved", "blocks"),
        default="interleaved",
        help="Utterance by utterance across systems, or one system after the other (see above).",
    )
    p.add_argument("--json", type=Path, help="Also write the results here.")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if (
        bool(args.recordings) != bool(args.supervisions)
        or bool(args.audio_dir) != bool(args.transcripts)
        or bool(args.recordings) == bool(args.audio_dir)
    ):
        p.error("give either --recordings and --supervisions, or --audio-dir and --transcripts")
    if args.beam_size < 1 or args.limit < 0 or args.warmup < 0:
        p.error("--beam-size must be >= 1, --limit and --warmup >= 0")
    return args


def set_one_thread() -> None:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work already ran in this process (e.g. under pytest): intra-op is what counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    set_one_thread()
    tokenizer = Tokenizer(args.lang_dir)
    if args.recordings:
        utts = load_manifest_utterances(args.recordings, args.supervisions, args.limit)
    else:
        utts = load_folder_utterances(args.audio_dir, args.transcripts, args.limit)
    if not utts:
        raise DsrUserError("no utterances to decode")
    audio_s = sum(u.duration for u in utts)
    print(
        f"{len(utts)} utterances, {audio_s:.1f} s of audio (mean {audio_s / len(utts):.2f} s), warm-up "
        f"{min(args.warmup, len(utts))}, schedule {args.schedule}; 1 thread; {cpu_name()}; "
        + ", ".join(f"{k} {v}" for k, v in versions().items() if v),
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for precision in args.precision:
        systems: list[System] = (
            [load_reference(args.pretrained, precision, args.language)] if not args.no_reference else []
        )
        systems += load_dsr_systems(args, precision, tokenizer)
        for detail in dict.fromkeys(f"{s.system}: {s.detail}" for s in systems):
            print(f"{precision}  {detail}", flush=True)
        rows += [summarise(m, utts) for m in run_systems(systems, utts, args.warmup, args.schedule)]
    ratios = speed_ratios(rows)
    print_table(rows, ratios)
    result = {
        "command": " ".join(["python bench/whisper_speed.py", *args.argv]),
        "exp_dir": str(args.exp_dir),
        "epoch": args.epoch,
        "avg": args.avg,
        "lang_dir": str(args.lang_dir),
        "pretrained": None if args.no_reference else args.pretrained,
        "methods": args.methods,
        "beam_size": args.beam_size,
        "precisions": args.precision,
        "num_utts": len(utts),
        "audio_s": audio_s,
        "warmup": min(args.warmup, len(utts)),
        "schedule": args.schedule,
        "num_threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "versions": versions(),
        "goal_ratio": GOAL_RATIO,
        "rows": rows,
        "ratios": ratios,
    }
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        return run(args)
    except DsrUserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
