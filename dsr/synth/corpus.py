"""The embedded default corpus: voice-assistant sentences spoken by offline TTS voices.

``prepare_synth`` writes ``<corpus_dir>/<split>/<utt-id>.wav`` (16 kHz mono,
16-bit) plus ``<corpus_dir>/<split>/transcripts.tsv`` and the ``synth`` manifests.

Held-out design, so that dev/test measure generalisation and not memorisation:

* sentences: test, dev and train sentence sets are disjoint (test is drawn first,
  so it stays the same when ``num_train`` changes);
* voices: :class:`VoiceSplit` patterns assign every available voice to exactly
  one split; by default test has espeak-ng variants and a flite and a festival
  speaker never heard in train, and dev has its own held-out voices.

Deterministic for a seed: utterance ``i`` of a split draws its voice, rate and
pitch from an RNG seeded by ``(seed, split, i)``.  Idempotent: the utterance id
ends in a digest of everything that determines the audio (voice, text, rate,
pitch), and a wav that already exists under that id is reused, so an
interrupted run resumes and a changed option never reuses stale audio.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import random
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from dsr.data.folder import prepare_folder
from dsr.data.manifests import check_name
from dsr.data.report import PrepareReport
from dsr.data.text_corpus import split_file_sentences
from dsr.errors import DsrUserError, OptionError
from dsr.synth.sentences import generate_digit_strings, generate_sentences, vocabulary
from dsr.synth.tts import (
    ENGINES,
    INSTALL_HINT,
    SAMPLE_RATE,
    SynthesisError,
    SynthParams,
    Voice,
    finish_audio,
    require_voices,
    synthesize_festival_batch,
    synthesize_raw,
)
from dsr.utils import write_text_atomic

logger = logging.getLogger("dsr")

CORPUS = "synth"
SPLITS = ("train", "dev", "test")
TEXT_SOURCES = ("sentences", "digits", "file")
SAMPLE_RATES = (8000, SAMPLE_RATE)


@dataclass(frozen=True)
class VoiceSplit:
    """Which voices are held out: ``fnmatch`` patterns over :attr:`Voice.key`.

    A voice matching a ``test`` pattern belongs to test, else one matching a
    ``dev`` pattern to dev, else to train.  Examples: ``espeak-ng/*+m7`` (variant
    m7 with every base voice), ``espeak-ng/en-029*`` (a whole accent),
    ``flite/rms``, ``festival/ked_diphone``.
    """

    test: tuple[str, ...]
    dev: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("test", "dev"):
            patterns = getattr(self, name)
            # A bare string would silently be iterated as one-character patterns.
            if isinstance(patterns, str) or not all(isinstance(p, str) and p for p in patterns):
                raise ValueError(f"VoiceSplit.{name} must be a tuple of non-empty patterns, got {patterns!r}")

    def split_of(self, voice: Voice) -> str:
        """``'test'``, ``'dev'`` or ``'train'`` for ``voice``."""
        for split, patterns in (("test", self.test), ("dev", self.dev)):
            if any(fnmatchcase(voice.key, p) for p in patterns):
                return split
        return "train"

    def assign(self, voices: Iterable[Voice]) -> dict[str, list[Voice]]:
        """Partition ``voices`` into ``{'train': [...], 'dev': [...], 'test': [...]}``.

        Raises ``ValueError`` if voices of one recorded speaker (see
        :data:`SAME_SPEAKER`) would land in different splits: that would leak a
        held-out speaker into train.
        """
        out: dict[str, list[Voice]] = {s: [] for s in SPLITS}
        speaker_split: dict[str, tuple[str, str]] = {}
        for voice in voices:
            split = self.split_of(voice)
            speaker = SAME_SPEAKER.get(voice.key)
            if speaker is not None:
                other = speaker_split.setdefault(speaker, (split, voice.key))
                if other[0] != split:
                    raise ValueError(
                        f"{voice.key} ({split}) and {other[1]} ({other[0]}) are the same speaker {speaker!r}; "
                        "put them in the same split"
                    )
            out[split].append(voice)
        return out


# Voices built from the same person's recordings, across engines.
SAME_SPEAKER: Mapping[str, str] = {
    "flite/kal": "kal", "flite/kal16": "kal", "festival/kal_diphone": "kal",
    "flite/slt": "slt", "festival/cmu_us_slt_arctic_hts": "slt",
    "flite/awb": "awb", "flite/rms": "rms", "festival/ked_diphone": "ked",
}  # fmt: skip


# Held-out voices: test gets six espeak-ng variants (with every base accent) and one
# recorded speaker that no train voice is built from (festival ked); dev gets four
# other variants.  The four other recorded speakers (kal, slt, awb, rms) all train:
# Debian main has only five, and a model that has heard two people does not
# generalise to a third (with kal and slt alone in train, held-out rms and ked
# scored 66 % and 46 % WER while held-out espeak variants scored ~7 %).
DEFAULT_VOICE_SPLIT = VoiceSplit(
    test=(
        "espeak-ng/*+m7", "espeak-ng/*+f4", "espeak-ng/*+klatt4",
        "espeak-ng/*+belinda", "espeak-ng/*+Andy", "espeak-ng/*+iven3",
        "festival/ked_diphone",
    ),
    dev=("espeak-ng/*+m6", "espeak-ng/*+f3", "espeak-ng/*+klatt3", "espeak-ng/*+Annie"),
)  # fmt: skip

# How often each engine speaks (among the engines that have voices in a split).
# espeak-ng has ~800 voice/variant pairs but is the least natural; flite and
# festival add real-speech-derived voices.
DEFAULT_ENGINE_WEIGHTS: Mapping[str, float] = {"espeak-ng": 0.6, "flite": 0.25, "festival": 0.15}

# Per-utterance variation around each voice's default.
RATE_RANGE = (0.85, 1.2)
PITCH_RANGE = (0.88, 1.12)

_FESTIVAL_BATCH = 40  # utterances per festival process: amortises start-up, still parallel


@dataclass(frozen=True)
class SynthUtterance:
    """One planned utterance: what to say, with which voice and settings, and where."""

    utt_id: str
    text: str
    voice: Voice
    params: SynthParams
    path: Path
    sample_rate: int = SAMPLE_RATE


def _derive_seed(seed: int, *parts: object) -> int:
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def split_sentences(num_train: int, num_dev: int, num_test: int, seed: int) -> dict[str, list[str]]:
    """Disjoint sentence lists per split; test first so it does not depend on the other sizes."""
    test = generate_sentences(num_test, _derive_seed(seed, "test"))
    dev = generate_sentences(num_dev, _derive_seed(seed, "dev"), exclude=set(test))
    train = generate_sentences(num_train, _derive_seed(seed, "train"), exclude=set(test) | set(dev))
    return {"train": train, "dev": dev, "test": test}


def split_digit_strings(
    num_train: int, num_dev: int, num_test: int, seed: int, max_digits: int
) -> dict[str, list[str]]:
    """Digit prompts per split.  Ten words cannot give disjoint texts: dev and test are held
    out by voice only."""
    sizes = {"train": num_train, "dev": num_dev, "test": num_test}
    return {
        split: generate_digit_strings(n, _derive_seed(seed, "digits", split), max_digits) for split, n in sizes.items()
    }


def isolated_words(n: int, seed: int) -> list[str]:
    """``n`` single-word prompts: the vocabulary in a seeded order, repeated as needed."""
    words = sorted(vocabulary())
    random.Random(_derive_seed(seed, "words")).shuffle(words)
    return [words[i % len(words)] for i in range(n)]


def plan_split(
    split: str,
    sentences: Sequence[str],
    voices: Sequence[Voice],
    out_dir: Path,
    seed: int,
    engine_weights: Mapping[str, float],
    sample_rate: int = SAMPLE_RATE,
) -> list[SynthUtterance]:
    """Choose voice, rate and pitch for each sentence of a split (engine first, then voice)."""
    by_engine = {e: sorted(v for v in voices if v.engine == e) for e in ENGINES}
    engines = [e for e in ENGINES if by_engine[e] and engine_weights.get(e, 0.0) > 0]
    if not engines:
        raise DsrUserError(
            f"synth/{split}: no voice with a non-zero engine weight; fix: {INSTALL_HINT} or change the voice split"
        )
    weights = [engine_weights[e] for e in engines]
    plan: list[SynthUtterance] = []
    for index, text in enumerate(sentences):
        rng = random.Random(_derive_seed(seed, split, index))
        voice = rng.choice(by_engine[rng.choices(engines, weights)[0]])
        params = SynthParams(rate=round(rng.uniform(*RATE_RANGE), 3), pitch=round(rng.uniform(*PITCH_RANGE), 3))
        # The rate joins the digest only when not the default, so 16 kHz ids stay what they were.
        rate_key = f"|{sample_rate}" if sample_rate != SAMPLE_RATE else ""
        digest = hashlib.sha1(f"{voice.key}|{text}|{params.rate}|{params.pitch}{rate_key}".encode()).hexdigest()[:8]
        utt_id = f"{voice.id}-{split}{index:05d}-{digest}"
        plan.append(SynthUtterance(utt_id, text, voice, params, out_dir / f"{utt_id}.wav", sample_rate))
    return plan


def _synth_one(utt: SynthUtterance, work_dir: Path) -> list[tuple[SynthUtterance, str | None]]:
    raw = work_dir / f"{utt.utt_id}.raw.wav"
    try:
        # Engines get lower case: some read short all-caps words as abbreviations.
        synthesize_raw(utt.voice, utt.text.lower(), utt.params, raw)
        finish_audio(raw, utt.path, utt.sample_rate)
        return [(utt, None)]
    except (SynthesisError, OSError, subprocess.SubprocessError) as exc:
        return [(utt, f"synthesis failed: {exc}")]
    finally:
        raw.unlink(missing_ok=True)


def _synth_festival(batch: Sequence[SynthUtterance], work_dir: Path) -> list[tuple[SynthUtterance, str | None]]:
    raws = [work_dir / f"{u.utt_id}.raw.wav" for u in batch]
    results: list[tuple[SynthUtterance, str | None]] = []
    try:
        synthesize_festival_batch(
            batch[0].voice, [(u.text.lower(), u.params, r) for u, r in zip(batch, raws)], work_dir
        )
        for utt, raw in zip(batch, raws):
            if not raw.is_file():
                results.append((utt, f"synthesis failed: festival {utt.voice.name} wrote no audio"))
                continue
            try:
                finish_audio(raw, utt.path, utt.sample_rate)
                results.append((utt, None))
            except SynthesisError as exc:
                results.append((utt, f"synthesis failed: {exc}"))
    except (OSError, subprocess.SubprocessError) as exc:
        done = {u.utt_id for u, _ in results}
        results += [(u, f"synthesis failed: {exc}") for u in batch if u.utt_id not in done]
    finally:
        for raw in raws:
            raw.unlink(missing_ok=True)
    return results


def synthesize_all(utts: Sequence[SynthUtterance], num_jobs: int, progress: bool | None = None) -> dict[str, str]:
    """Synthesise every utterance whose wav is missing; return ``{utt_id: failure reason}``.

    ``num_jobs`` engine processes run at once.  They are driven from threads, not
    worker processes: the work happens in the engine subprocesses, and the Python
    side (resampling a few seconds of audio) takes milliseconds.
    """
    todo = [u for u in utts if not u.path.is_file()]
    if len(todo) < len(utts):
        logger.info("synth: reusing %d already synthesised files", len(utts) - len(todo))
    if not todo:
        return {}
    festival = [u for u in todo if u.voice.engine == "festival"]
    by_voice: dict[Voice, list[SynthUtterance]] = {}
    for u in festival:
        by_voice.setdefault(u.voice, []).append(u)
    batches = [
        group[i : i + _FESTIVAL_BATCH] for group in by_voice.values() for i in range(0, len(group), _FESTIVAL_BATCH)
    ]
    singles = [u for u in todo if u.voice.engine != "festival"]
    if progress is None:
        progress = sys.stderr.isatty()
    failures: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="dsr-synth-") as tmp, _Progress(progress, len(todo)) as advance:
        work_dir = Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=num_jobs) as pool:
            # Festival batches are the longest jobs: start them first for better balance.
            futures = [pool.submit(_synth_festival, b, work_dir) for b in batches]
            futures += [pool.submit(_synth_one, u, work_dir) for u in singles]
            for future in concurrent.futures.as_completed(futures):
                results = future.result()
                for utt, reason in results:
                    if reason is not None:
                        failures[utt.utt_id] = reason
                        logger.warning("synth: skipping %s (%s, %r): %s", utt.utt_id, utt.voice.key, utt.text, reason)
                advance(len(results))
    return failures


class _Progress:
    """Context manager yielding ``advance(n)``: a rich progress bar (n/total) on stderr, or a no-op."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._progress: Any = None  # a rich Progress once entered; rich is imported only when enabled

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(
            TextColumn("synthesising"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self._progress = progress
        progress.__enter__()
        task = progress.add_task("synth", total=self.total)
        return lambda n: progress.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)


def prepare_synth(
    corpus_dir: Path,
    manifest_dir: Path,
    num_train: int = 4000,
    num_dev: int = 200,
    num_test: int = 300,
    seed: int = 0,
    num_jobs: int = 2,
    voice_split: VoiceSplit | None = None,
    *,
    engine_weights: Mapping[str, float] | None = None,
    progress: bool | None = None,
    num_train_words: int = 0,
    text_source: str = "sentences",
    max_digits: int = 1,
    sample_rate: int = SAMPLE_RATE,
    text_file: Path | None = None,
    exclude_texts: Sequence[str] = (),
) -> list[PrepareReport]:
    """Build (or resume) the synthetic corpus and write its ``synth_*`` manifests.

    Splits with a size of 0 are not built.  ``voice_split`` defaults to
    :data:`DEFAULT_VOICE_SPLIT`, ``engine_weights`` to
    :data:`DEFAULT_ENGINE_WEIGHTS`.  ``progress`` shows a progress bar on stderr
    (default: when stderr is a terminal).  Returns one report per built split
    (train, dev, test order); utterances whose synthesis failed are listed as
    skipped.

    ``num_train_words`` adds that many isolated-word utterances to train (the
    grammar's vocabulary, cycled in a seeded order).  Like FSDD's digits, they let
    a model learn what each word sounds like before it has to align whole
    sentences; with a short-first curriculum (``dsr train --sortagrad-epochs``)
    they are what training sees first.

    ``text_source`` ``"digits"`` speaks strings of 1..``max_digits`` digit words instead
    of sentences (pretraining for a digit corpus such as FSDD: many voices saying the ten
    words); ``sample_rate`` 8000 writes 8 kHz audio, band-limited like such a corpus.
    ``"file"`` speaks sentences of the plain-text ``text_file``
    (:mod:`dsr.data.text_corpus`: open vocabulary, for read-speech pretraining), leaving
    out any sentence near one of ``exclude_texts``.
    """
    sizes = {"train": num_train, "dev": num_dev, "test": num_test}
    for split, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"num_{split} must be a non-negative int, got {n!r}")
    if not any(sizes.values()):
        raise ValueError("at least one of num_train, num_dev, num_test must be > 0")
    if not isinstance(num_jobs, int) or num_jobs < 1:
        raise ValueError(f"num_jobs must be a positive int, got {num_jobs!r}")
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {sample_rate!r}")
    weights = dict(DEFAULT_ENGINE_WEIGHTS if engine_weights is None else engine_weights)
    if any(w < 0 for w in weights.values()) or set(weights) - set(ENGINES):
        raise ValueError(f"engine_weights must map {ENGINES} to non-negative weights, got {weights}")
    voice_split = voice_split or DEFAULT_VOICE_SPLIT
    corpus_dir, manifest_dir = Path(corpus_dir), Path(manifest_dir)

    voices_by_split = voice_split.assign(require_voices())
    if not isinstance(num_train_words, int) or num_train_words < 0:
        raise ValueError(f"num_train_words must be a non-negative int, got {num_train_words!r}")
    if text_source == "sentences":
        sentences = split_sentences(num_train, num_dev, num_test, seed)
        sentences["train"] = sentences["train"] + isolated_words(num_train_words, seed)
    elif text_source == "digits":
        if num_train_words:
            raise ValueError("num_train_words drills the sentence vocabulary; with text_source='digits' use num_train")
        sentences = split_digit_strings(num_train, num_dev, num_test, seed, max_digits)
    elif text_source == "file":
        if text_file is None:
            raise ValueError("text_source='file' needs text_file")
        if not Path(text_file).is_file():
            raise OptionError(
                f"{{text_file}} {text_file}: no such text file; write one with tools/public_domain_text.py"
            )
        if num_train_words:
            raise ValueError("num_train_words drills the grammar's vocabulary; it does not apply to text_source='file'")
        sentences = split_file_sentences(Path(text_file), sizes, seed, exclude_texts)
    else:
        raise ValueError(f"text_source must be one of {TEXT_SOURCES}, got {text_source!r}")
    plans: dict[str, list[SynthUtterance]] = {}
    for split in SPLITS:
        if sizes[split] == 0:
            continue
        if not voices_by_split[split]:
            raise DsrUserError(
                f"synth/{split}: no installed voice belongs to this split under {voice_split}; "
                f"fix: {INSTALL_HINT} or pass a voice split whose patterns match installed voices"
            )
        plans[split] = plan_split(
            split,
            sentences[split],
            voices_by_split[split],
            corpus_dir / check_name(split, "split"),
            seed,
            weights,
            sample_rate,
        )
        engines = Counter(u.voice.engine for u in plans[split])
        logger.info(
            "synth/%s: %d utterances, %d voices available (%s); engines used: %s",
            split, len(plans[split]), len(voices_by_split[split]), _describe(voices_by_split[split]), dict(engines),
        )  # fmt: skip

    failures = synthesize_all([u for plan in plans.values() for u in plan], num_jobs, progress)

    return [
        _write_manifests(plan, failures, corpus_dir / split, manifest_dir, CORPUS, split)
        for split, plan in plans.items()
    ]


def _write_manifests(
    plan: Sequence[SynthUtterance],
    failures: Mapping[str, str],
    split_dir: Path,
    manifest_dir: Path,
    corpus: str,
    split: str,
) -> PrepareReport:
    """``transcripts.tsv`` of the synthesised utterances and the ``<corpus>_*_<split>`` manifests."""
    good = [u for u in plan if u.utt_id not in failures]
    if not good:
        raise DsrUserError(
            f"{corpus}/{split}: synthesis failed for every utterance (see log); fix: check the TTS install ({INSTALL_HINT})"
        )
    transcripts = split_dir / "transcripts.tsv"
    write_text_atomic(transcripts, "".join(f"{u.utt_id}\t{u.text}\n" for u in good))
    speakers = {u.utt_id: u.voice.id for u in good}
    report = prepare_folder(
        split_dir, transcripts, manifest_dir, corpus, split, speaker_of=speakers.get, language="English"
    )
    if len(good) < len(plan):
        report.skipped[:0] = [(u.utt_id, failures[u.utt_id]) for u in plan if u.utt_id in failures]
        logger.info("%s", report.summary())
    return report


def prepare_synth_sentences(
    sentences: Sequence[str],
    corpus_dir: Path,
    manifest_dir: Path,
    corpus: str,
    split: str = "test",
    seed: int = 0,
    num_jobs: int = 2,
    voices_of: str = "test",
    voice_split: VoiceSplit | None = None,
    *,
    engine_weights: Mapping[str, float] | None = None,
    progress: bool | None = None,
) -> PrepareReport:
    """Speak given ``sentences`` with the voices of one split of the synthetic corpus.

    For extra evaluation sets (e.g. a hotword set with names absent from train):
    ``voices_of`` picks the voices (by default the held-out test voices of
    ``voice_split``, :data:`DEFAULT_VOICE_SPLIT`), and voice, rate and pitch are drawn
    as :func:`prepare_synth` draws them.  Writes ``<corpus_dir>/<split>/*.wav``,
    ``transcripts.tsv`` and the ``<corpus>_{recordings,supervisions}_<split>``
    manifests; resumable like :func:`prepare_synth`.
    """
    check_name(corpus, "corpus")
    check_name(split, "split")
    if voices_of not in SPLITS:
        raise ValueError(f"voices_of must be one of {SPLITS}, got {voices_of!r}")
    if not sentences:
        raise ValueError("sentences must not be empty")
    if not isinstance(num_jobs, int) or num_jobs < 1:
        raise ValueError(f"num_jobs must be a positive int, got {num_jobs!r}")
    voice_split = voice_split or DEFAULT_VOICE_SPLIT
    voices = voice_split.assign(require_voices())[voices_of]
    if not voices:
        raise DsrUserError(
            f"{corpus}/{split}: no installed voice belongs to {voices_of} under {voice_split}; fix: {INSTALL_HINT}"
        )
    weights = dict(DEFAULT_ENGINE_WEIGHTS if engine_weights is None else engine_weights)
    split_dir = Path(corpus_dir) / split
    plan = plan_split(split, list(sentences), voices, split_dir, seed, weights)
    failures = synthesize_all(plan, num_jobs, progress)
    return _write_manifests(plan, failures, split_dir, Path(manifest_dir), corpus, split)


def _describe(voices: Sequence[Voice]) -> str:
    """Short summary of a voice list for logs."""
    espeak = [v for v in voices if v.engine == "espeak-ng"]
    others = [v.key for v in voices if v.engine != "espeak-ng"]
    variants = sorted({v.variant or "(plain)" for v in espeak})
    parts = (
        [f"espeak-ng x{len(espeak)} (variants: {', '.join(variants[:8])}{', ...' if len(variants) > 8 else ''})"]
        if espeak
        else []
    )
    return "; ".join(parts + others)
