"""Import a folder of audio files plus a ``utt-id<TAB>text`` transcripts file.

Layout::

    audio_dir/**/<utt-id>.<wav|flac|ogg|...>    any sample rate, mono or multi-channel
    transcripts                                 one ``utt-id<TAB>text`` per line

Audio files are found by stem anywhere under ``audio_dir``; two files with the
same stem are an error (which one would be meant?).

Recordings are kept exactly as they are (rate, channels); downmixing and
resampling happen at feature time.  Text is kept as written, only stripped.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from dsr.data.manifests import check_name, recording_from_info, supervision_for, write_manifests
from dsr.data.report import PrepareReport
from dsr.data.splits import (  # re-exported: the split policies belong to folder imports
    arctic_prompt_of,
    arctic_split,
    fsdd_speaker_of,
    fsdd_split,
    split_by_hash,
    split_by_key,
)
from dsr.data.validate import (
    DEFAULT_MAX_CHARS_PER_SECOND,
    SkipUtterance,
    audio_warning,
    check_audio,
    check_duration,
    check_max_duration_arg,
    check_transcript,
)
from dsr.errors import DsrUserError

__all__ = [
    "AUDIO_SUFFIXES",
    "arctic_prompt_of",
    "arctic_split",
    "fsdd_speaker_of",
    "fsdd_split",
    "prepare_folder",
    "prepare_folder_splits",
    "read_transcripts",
    "split_by_hash",
    "split_by_key",
]

logger = logging.getLogger("dsr")

# Extensions libsndfile can decode; matched case-insensitively.
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".sph", ".w64", ".caf"}
)

# Reports come back in this order, then any other split alphabetically.
_SPLIT_ORDER = {"train": 0, "dev": 1, "test": 2}


@dataclass(frozen=True)
class TranscriptLine:
    """One line of a transcripts file."""

    line_no: int
    utt_id: str
    text: str


def read_transcripts(path: Path) -> list[TranscriptLine]:
    """Parse ``utt-id<TAB>text`` lines; blank lines are ignored.

    A line holding only an id (no TAB) has an empty transcript and is later
    skipped as such.  Layout errors (unreadable file, id with spaces because the
    TAB is missing, duplicate ids) raise :class:`DsrUserError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DsrUserError(f"transcripts file {path} does not exist; fix: pass a utt-id<TAB>text file")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DsrUserError(
            f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}); fix: re-encode it as UTF-8"
        ) from None
    lines: list[TranscriptLine] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        utt_id, sep, text = line.partition("\t")
        utt_id = utt_id.strip()
        if not sep and len(utt_id.split()) > 1:
            raise DsrUserError(f"{path} line {line_no} has no TAB after the utterance id; fix: write 'utt-id<TAB>text'")
        if not utt_id:
            raise DsrUserError(f"{path} line {line_no}: empty utterance id; fix: write 'utt-id<TAB>text'")
        if len(utt_id.split()) > 1:
            # The id is the audio file's name, so the file has to be renamed too.
            fixed = "_".join(utt_id.split())
            raise DsrUserError(
                f"{path} line {line_no}: utterance id {utt_id!r} has a space (ids are audio file names without "
                f"spaces); fix: rename the audio file to {fixed!r} (same suffix) and the id on that line to {fixed!r}"
            )
        if utt_id in seen:
            raise DsrUserError(
                f"{path} lines {seen[utt_id]} and {line_no} both define {utt_id!r}; fix: remove the duplicate"
            )
        seen[utt_id] = line_no
        lines.append(TranscriptLine(line_no, utt_id, text))
    return lines


def _index_audio(audio_dir: Path) -> dict[str, list[Path]]:
    """Map file stem -> audio files under ``audio_dir`` (recursively, sorted).

    Hidden files are ignored: they include the temporary files of interrupted
    atomic writes (``.name.XXXX.wav``).
    """
    if not audio_dir.is_dir():
        raise DsrUserError(
            f"audio folder {audio_dir} does not exist; fix: pass the folder holding <utt-id>.wav/.flac files"
        )
    index: dict[str, list[Path]] = defaultdict(list)
    for root, dirs, files in os.walk(audio_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if not name.startswith(".") and path.suffix.lower() in AUDIO_SUFFIXES:
                index[path.stem].append(path)
    return index


def prepare_folder(
    audio_dir: Path,
    transcripts: Path,
    manifest_dir: Path,
    corpus: str,
    split: str,
    max_duration: float | None = None,
    *,
    speaker_of: Callable[[str], str | None] | None = None,
    language: str | None = None,
    max_chars_per_second: float = DEFAULT_MAX_CHARS_PER_SECOND,
) -> PrepareReport:
    """Import every utterance of the folder into one split; see :func:`prepare_folder_splits`."""
    check_name(split, "split")
    (report,) = prepare_folder_splits(
        audio_dir,
        transcripts,
        manifest_dir,
        corpus,
        lambda _utt_id: split,
        max_duration,
        speaker_of=speaker_of,
        language=language,
        max_chars_per_second=max_chars_per_second,
    )
    return report


def prepare_folder_splits(
    audio_dir: Path,
    transcripts: Path,
    manifest_dir: Path,
    corpus: str,
    split_of: Callable[[str], str],
    max_duration: float | None = None,
    *,
    speaker_of: Callable[[str], str | None] | None = None,
    language: str | None = None,
    max_chars_per_second: float = DEFAULT_MAX_CHARS_PER_SECOND,
) -> list[PrepareReport]:
    """Import the folder, route each utterance to ``split_of(utt_id)``, write one manifest pair per split.

    ``speaker_of`` fills the supervisions' speaker field (e.g.
    :func:`fsdd_speaker_of`).  Unusable utterances are skipped, logged and listed
    in the reports; a missing audio file or a split left with nothing raises
    :class:`DsrUserError`.  Nothing is written unless every split is usable.
    Returns the reports in train, dev, test, then alphabetical order.
    """
    audio_dir, transcripts, manifest_dir = Path(audio_dir), Path(transcripts), Path(manifest_dir)
    check_name(corpus, "corpus")
    check_max_duration_arg(max_duration)
    lines = read_transcripts(transcripts)
    if not lines:
        raise DsrUserError(f"{transcripts} has no transcript lines; fix: add utt-id<TAB>text lines")
    index = _index_audio(audio_dir)

    reports: dict[str, PrepareReport] = {}
    recordings: dict[str, list[Recording]] = defaultdict(list)
    supervisions: dict[str, list[SupervisionSegment]] = defaultdict(list)
    for entry in lines:
        split = check_name(_call_policy(split_of, entry, transcripts, "split"), f"split_of({entry.utt_id!r})")
        report = reports.setdefault(split, PrepareReport(corpus, split))
        path = _find_audio(index, audio_dir, entry, transcripts)
        try:
            info = check_audio(path)
            check_duration(info.duration, max_duration)
            text = check_transcript(entry.text, info.duration, max_chars_per_second)
        except SkipUtterance as exc:
            report.skip(entry.utt_id, str(exc))
            logger.warning("%s/%s: skipping %s (%s): %s", corpus, split, entry.utt_id, path, exc)
            continue
        warning = audio_warning(info)
        if warning is not None:
            report.warned.append((entry.utt_id, warning))
            logger.warning("%s/%s: keeping %s (%s) with a warning: %s", corpus, split, entry.utt_id, path, warning)
        speaker = _call_policy(speaker_of, entry, transcripts, "speaker") if speaker_of else None
        recording = recording_from_info(entry.utt_id, info)
        recordings[split].append(recording)
        supervisions[split].append(supervision_for(recording, text, speaker=speaker, language=language))
        report.kept += 1
        report.duration_s += info.duration

    listed = {entry.utt_id for entry in lines}
    orphans = sorted(stem for stem in index if stem not in listed)
    if orphans:
        logger.warning(
            "%s: %d audio files in %s have no line in %s and are ignored (e.g. %s)",
            corpus,
            len(orphans),
            audio_dir,
            transcripts,
            ", ".join(orphans[:3]),
        )

    for split, report in reports.items():
        if report.kept == 0:
            raise DsrUserError(
                f"{transcripts}: every utterance of split {split!r} was skipped ({report.summary()}); "
                "fix: check the audio files and transcripts named in the log"
            )
    ordered = sorted(reports.values(), key=lambda r: (_SPLIT_ORDER.get(r.split, len(_SPLIT_ORDER)), r.split))
    for report in ordered:
        write_manifests(recordings[report.split], supervisions[report.split], manifest_dir, corpus, report.split)
        logger.info("%s", report.summary())
    return ordered


def _find_audio(index: dict[str, list[Path]], audio_dir: Path, entry: TranscriptLine, transcripts: Path) -> Path:
    """The single audio file named ``<utt-id>.<ext>``; a missing or ambiguous one is a layout error."""
    candidates = index.get(entry.utt_id, [])
    if len(candidates) > 1:
        names = ", ".join(sorted(p.name for p in candidates))
        raise DsrUserError(f"{audio_dir} has several files for {entry.utt_id!r} ({names}); fix: keep only one")
    if not candidates:
        raise DsrUserError(
            f"{audio_dir / entry.utt_id}.* does not exist (no audio file for {entry.utt_id!r}, listed in "
            f"{transcripts} line {entry.line_no}); fix: add the audio file or remove that line"
        )
    return candidates[0]


def _call_policy(func: Callable[[str], str | None], entry: TranscriptLine, transcripts: Path, what: str) -> str | None:
    """Run a user policy; an id it does not understand is a user error, not a crash."""
    try:
        return func(entry.utt_id)
    except ValueError as exc:
        raise DsrUserError(
            f"{transcripts} line {entry.line_no}: cannot find the {what} of {entry.utt_id!r} ({exc}); "
            f"fix: use a {what} policy that matches these ids"
        ) from None
