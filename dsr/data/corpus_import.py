"""Shared by the published-corpus importers (LibriSpeech, AISHELL, MUSAN).

Each importer only knows its corpus layout: it lists :class:`Entry` objects
(utterance id, audio file, text, speaker).  Everything else
is here, once: probing every audio file in parallel with
:func:`dsr.data.validate.check_audio`, skipping and counting bad ones, writing
dsr's manifest names, and turning a failed download into a one-line error.

Why not lhotse's ``prepare_*`` functions themselves: one undecodable file
raises ``AudioLoadingError`` and aborts the whole part, missing or untranscribed
files are dropped with only a log line, and only headers are read (a truncated
FLAC passes).  dsr's contract is "bad input is skipped, counted and named", so
the importers read the layout the way those recipes do (``tests/
test_data_corpora.py`` checks they agree on the same fixture) and reuse lhotse's
part lists, text normalisation and download functions unchanged.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import tarfile
import urllib.error
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from lhotse import Recording, SupervisionSegment

from dsr.data.manifests import check_name, recording_from_info, supervision_for, write_manifests, write_recordings
from dsr.data.report import PrepareReport
from dsr.data.validate import AudioInfo, SkipUtterance, check_audio, check_transcript
from dsr.errors import DsrUserError, OptionError
from dsr.utils import die_with_parent

logger = logging.getLogger("dsr")

# lhotse's default; a mirror (e.g. https://us.openslr.org/resources) has the same paths below it.
OPENSLR_URL = "http://www.openslr.org/resources"

# Most files per worker task: enough that process start-up and pickling are
# noise, small enough that the work spreads over the jobs.
_PROBE_CHUNK = 64

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One utterance (or, for recordings-only corpora, one file) found in a corpus layout."""

    utt_id: str
    audio: Path
    text: str | None = None
    speaker: str | None = None


def require_dir(path: Path, what: str, fix: str) -> Path:
    """Raise a one-line :class:`~dsr.errors.OptionError` unless ``path`` is a directory (``fix``
    may name arguments as ``{corpus_dir}``, which the CLI shows as its flags)."""
    if not Path(path).is_dir():
        raise OptionError(f"{what} {path} does not exist; fix: {fix}")
    return Path(path)


def _probe(path: Path) -> AudioInfo | str:
    """``check_audio`` for a worker process: the reason string instead of the exception."""
    try:
        return check_audio(path)
    except SkipUtterance as exc:
        return str(exc)


def _probe_chunk(paths: list[Path]) -> list[AudioInfo | str]:
    return [_probe(p) for p in paths]


def probe_audio(paths: Sequence[Path], num_jobs: int = 1) -> list[AudioInfo | str]:
    """Decode-check every file (in ``num_jobs`` processes); each result is its info or a skip reason."""
    if num_jobs < 1:
        raise ValueError(f"num_jobs must be >= 1, got {num_jobs}")
    size = max(1, min(_PROBE_CHUNK, -(-len(paths) // num_jobs)))  # small inputs still spread over the jobs
    chunks = [list(paths[i : i + size]) for i in range(0, len(paths), size)]
    if num_jobs == 1 or len(chunks) <= 1:
        return [r for chunk in chunks for r in _probe_chunk(chunk)]
    with ProcessPoolExecutor(num_jobs, initializer=die_with_parent, initargs=(os.getpid(),)) as ex:
        return [r for results in ex.map(_probe_chunk, chunks) for r in results]


def import_utterances(
    entries: Sequence[Entry],
    manifest_dir: Path,
    corpus: str,
    split: str,
    *,
    num_jobs: int = 1,
    language: str | None = None,
    normalize: Callable[[str], str] = str.strip,
    report: PrepareReport | None = None,
) -> PrepareReport:
    """Probe, validate and write one split of whole-file utterances.

    ``normalize`` turns the corpus's transcript into the manifest text.  Bad
    audio and empty or impossible transcripts are skipped and listed in the
    report (pass ``report`` to add to skips the layout reader already counted).
    A split left with nothing raises :class:`DsrUserError`.
    """
    check_name(corpus, "corpus")
    check_name(split, "split")
    _check_unique_ids(entries)
    report = report or PrepareReport(corpus, split)
    recordings: list[Recording] = []
    supervisions: list[SupervisionSegment] = []
    for entry, info in zip(entries, probe_audio([e.audio for e in entries], num_jobs)):
        try:
            if isinstance(info, str):
                raise SkipUtterance(info)
            if entry.text is None:
                raise ValueError(f"{entry.utt_id} has no text; use import_recordings for recordings-only corpora")
            text = check_transcript(normalize(entry.text), info.duration)
        except SkipUtterance as exc:
            _skip(report, entry, str(exc))
            continue
        recording = recording_from_info(entry.utt_id, info)
        recordings.append(recording)
        supervisions.append(supervision_for(recording, text, speaker=entry.speaker, language=language))
        report.kept += 1
        report.duration_s += info.duration
    _require_some(report, entries)
    write_manifests(recordings, supervisions, manifest_dir, corpus, split)
    logger.info("%s", report.summary())
    return report


def import_recordings(
    entries: Sequence[Entry], manifest_dir: Path, corpus: str, split: str, *, num_jobs: int = 1
) -> PrepareReport:
    """Probe and write a recordings-only manifest (noise, music); bad files are skipped and listed."""
    check_name(corpus, "corpus")
    check_name(split, "split")
    _check_unique_ids(entries)
    report = PrepareReport(corpus, split)
    recordings: list[Recording] = []
    for entry, info in zip(entries, probe_audio([e.audio for e in entries], num_jobs)):
        if isinstance(info, str):
            _skip(report, entry, info)
            continue
        recordings.append(recording_from_info(entry.utt_id, info))
        report.kept += 1
        report.duration_s += info.duration
    _require_some(report, entries)
    write_recordings(recordings, manifest_dir, corpus, split)
    logger.info("%s", report.summary())
    return report


def _skip(report: PrepareReport, entry: Entry, reason: str) -> None:
    report.skip(entry.utt_id, reason)
    logger.warning("%s/%s: skipping %s (%s): %s", report.corpus, report.split, entry.utt_id, entry.audio, reason)


def _require_some(report: PrepareReport, entries: Sequence[Entry]) -> None:
    if report.kept == 0:
        where = entries[0].audio.parent if entries else "the corpus"
        raise DsrUserError(
            f"{report.corpus}/{report.split}: nothing usable under {where} ({report.summary()}); "
            "fix: check the files named in the log"
        )


def _check_unique_ids(entries: Sequence[Entry]) -> None:
    """Two files with one id would silently overwrite each other in the manifest."""
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.utt_id in seen:
            raise DsrUserError(f"{seen[e.utt_id].audio} and {e.audio} both have id {e.utt_id!r}; fix: remove one")
        seen[e.utt_id] = e


# What a failed fetch raises inside lhotse's resumable_download + tarfile: no
# network, DNS failure, HTTP error, a connection cut mid-file, a broken archive.
_NETWORK_ERRORS = (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, http.client.HTTPException)


def run_download(download: Callable[..., T], url: str, download_dir: Path, /, **kwargs: object) -> T:
    """Call one of lhotse's ``download_*`` functions; a network or archive failure is a one-line error.

    ``url`` is only used in the message (the function builds its own from ``kwargs``); it is
    positional-only because lhotse's ``download_musan`` itself takes a ``url`` keyword.
    """
    try:
        return download(target_dir=download_dir, **kwargs)
    except _NETWORK_ERRORS as exc:
        reason = " ".join(str(getattr(exc, "reason", exc)).split()) or type(exc).__name__
        raise OptionError(
            f"cannot download {url} ({reason}); fix: go online or use {{base_url}} for a mirror, "
            "or fetch it elsewhere and give it as {corpus_dir}"
        ) from None
    except (tarfile.TarError, EOFError) as exc:
        raise DsrUserError(
            f"the archive downloaded from {url} into {download_dir} is broken ({exc}); "
            "fix: delete it there and run again"
        ) from None
