"""Import a Kaldi data directory: ``wav.scp``, ``text``, optional ``segments`` and ``utt2spk``.

Own parser rather than ``lhotse.kaldi.load_kaldi_data_dir`` so that every
problem can be named precisely (file and line) and every bad utterance counted.

* ``wav.scp``: ``<rec-id> <path>``.  Only file paths are accepted; piped commands
  (``sox ... |``) and ark offsets are rejected with a :class:`DsrUserError`.
  Relative paths are tried against the current directory (Kaldi's convention),
  then against the data directory.
* ``text``: ``<utt-id> <transcript>``.
* ``segments`` (optional): ``<utt-id> <rec-id> <start> <end>``; ``end`` of -1 means
  the end of the recording.  Without it every utterance is a whole recording
  with ``utt-id == rec-id``.
* ``utt2spk`` (optional): ``<utt-id> <speaker>``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from lhotse import Recording, SupervisionSegment

from dsr.data.manifests import check_name, recording_from_info, supervision_for, write_manifests
from dsr.data.report import PrepareReport
from dsr.data.validate import (
    DEFAULT_MAX_CHARS_PER_SECOND,
    AudioInfo,
    SkipUtterance,
    check_audio,
    check_duration,
    check_max_duration_arg,
    check_transcript,
    require_file,
)
from dsr.errors import DsrUserError

logger = logging.getLogger("dsr")

# Segment ends may overshoot the file by rounding (Kaldi writes 2 decimals).
_END_TOLERANCE_S = 0.02
_ARK_RE = re.compile(r"\.ark:\d+$")


@dataclass(frozen=True)
class _Segment:
    rec_id: str
    start: float
    end: float  # -1: end of recording
    line_no: int


def _read_table(path: Path, min_fields: int, max_split: int) -> dict[str, tuple[int, list[str]]]:
    """Parse a Kaldi table: key -> (line number, remaining fields).  Layout errors raise."""
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DsrUserError(
            f"{path} is not UTF-8 ({exc.reason} at byte {exc.start}); fix: re-encode it as UTF-8"
        ) from None
    table: dict[str, tuple[int, list[str]]] = {}
    for line_no, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().split(maxsplit=max_split)
        if len(fields) < min_fields:
            raise DsrUserError(
                f"{path} line {line_no} has {len(fields)} fields, expected {min_fields}; fix: correct that line"
            )
        key = fields[0]
        if key in table:
            raise DsrUserError(
                f"{path} lines {table[key][0]} and {line_no} both define {key!r}; fix: remove the duplicate"
            )
        table[key] = (line_no, fields[1:])
    return table


def _wav_path(data_dir: Path, scp: Path, line_no: int, value: str) -> Path:
    """Resolve a ``wav.scp`` value to an existing file, rejecting pipes and ark offsets."""
    value = value.strip()
    if value.endswith("|"):
        raise DsrUserError(
            f"{scp} line {line_no} is a command ({value!r}); dsr needs file paths; "
            "fix: run the command once per line to write audio files and list their paths"
        )
    if _ARK_RE.search(value):
        raise DsrUserError(
            f"{scp} line {line_no} points into an archive ({value!r}); dsr needs file paths; "
            "fix: extract the audio to wav/flac files and list their paths"
        )
    path = Path(value)
    if path.is_file():
        return path
    if not path.is_absolute() and (data_dir / path).is_file():
        return data_dir / path
    tried = "" if path.is_absolute() else f" (nor does {data_dir / path})"
    raise DsrUserError(
        f"{path} does not exist{tried}, listed in {scp} line {line_no}; fix: correct the path or remove that line"
    )


def prepare_kaldi_dir(
    data_dir: Path,
    manifest_dir: Path,
    corpus: str,
    split: str,
    max_duration: float | None = None,
    *,
    language: str | None = None,
    max_chars_per_second: float = DEFAULT_MAX_CHARS_PER_SECOND,
) -> PrepareReport:
    """Write ``<corpus>_{recordings,supervisions}_<split>.jsonl.gz`` from a Kaldi data dir.

    Unusable utterances (unreadable recording, bad segment times, empty or
    over-long transcript, over ``max_duration``) are skipped, logged and listed in
    the report.  Missing files, pipes in ``wav.scp`` and references to unknown
    ids raise :class:`DsrUserError`.
    """
    data_dir, manifest_dir = Path(data_dir), Path(manifest_dir)
    check_name(corpus, "corpus")
    check_name(split, "split")
    check_max_duration_arg(max_duration)
    if not data_dir.is_dir():
        raise DsrUserError(f"Kaldi data dir {data_dir} does not exist; fix: pass a folder with wav.scp and text")
    scp_path, text_path = data_dir / "wav.scp", data_dir / "text"
    for required in (scp_path, text_path):
        require_file(required, f"Kaldi data dir {data_dir}", f"create {required.name} (see the Kaldi data-dir format)")
    wav_scp = _read_table(scp_path, 2, 1)
    texts = _read_table(text_path, 1, 1)
    if not texts:
        raise DsrUserError(f"{text_path} is empty; fix: add '<utt-id> <transcript>' lines")
    segments = _read_segments(data_dir / "segments")
    utt2spk = (
        {utt: fields[0] for utt, (_, fields) in _read_table(data_dir / "utt2spk", 2, 1).items()}
        if (data_dir / "utt2spk").is_file()
        else {}
    )

    # Every wav.scp entry must point at a real file: a broken path is a layout error
    # even if no utterance of the split uses it.
    paths = {rec_id: _wav_path(data_dir, scp_path, line_no, fields[0]) for rec_id, (line_no, fields) in wav_scp.items()}

    report = PrepareReport(corpus, split)
    infos: dict[str, AudioInfo | SkipUtterance] = {}
    used: dict[str, Recording] = {}
    supervisions: list[SupervisionSegment] = []
    for utt_id, (line_no, fields) in texts.items():
        text = fields[0] if fields else ""
        if segments is not None:
            if utt_id not in segments:
                raise DsrUserError(
                    f"{text_path} line {line_no}: {utt_id!r} is not in {data_dir / 'segments'}; fix: add its segment or remove the line"
                )
            seg = segments[utt_id]
        else:
            seg = _Segment(utt_id, 0.0, -1.0, line_no)
        if seg.rec_id not in paths:
            where = (
                f"{data_dir / 'segments'} line {seg.line_no}" if segments is not None else f"{text_path} line {line_no}"
            )
            raise DsrUserError(
                f"{where}: recording {seg.rec_id!r} is not in {scp_path}; fix: add it to wav.scp or remove the utterance"
            )
        if seg.rec_id not in infos:
            try:
                infos[seg.rec_id] = check_audio(paths[seg.rec_id])
            except SkipUtterance as exc:
                infos[seg.rec_id] = exc
        try:
            info = infos[seg.rec_id]
            if isinstance(info, SkipUtterance):
                raise info
            start, duration = _segment_bounds(seg, info.duration)
            check_duration(duration, max_duration)
            text = check_transcript(text, duration, max_chars_per_second)
        except SkipUtterance as exc:
            report.skip(utt_id, str(exc))
            logger.warning("%s/%s: skipping %s (recording %s): %s", corpus, split, utt_id, seg.rec_id, exc)
            continue
        if seg.rec_id not in used:
            used[seg.rec_id] = recording_from_info(seg.rec_id, info)
        recording = used[seg.rec_id]
        supervisions.append(
            supervision_for(
                recording,
                text,
                segment_id=utt_id,
                start=start,
                duration=duration,
                speaker=utt2spk.get(utt_id),
                language=language,
            )
        )
        report.kept += 1
        report.duration_s += duration

    if segments is not None:
        unused = sorted(set(segments) - set(texts))
        if unused:
            logger.warning(
                "%s/%s: %d segments have no line in %s and are ignored (e.g. %s)",
                corpus,
                split,
                len(unused),
                text_path,
                ", ".join(unused[:3]),
            )
    if report.kept == 0:
        raise DsrUserError(
            f"{data_dir}: every utterance was skipped ({report.summary()}); fix: check the files named in the log"
        )
    write_manifests(list(used.values()), supervisions, manifest_dir, corpus, split)
    logger.info("%s", report.summary())
    return report


def _read_segments(path: Path) -> dict[str, _Segment] | None:
    """Parse ``segments`` if present; malformed times are layout errors."""
    if not path.is_file():
        return None
    segments: dict[str, _Segment] = {}
    for utt_id, (line_no, fields) in _read_table(path, 4, 3).items():
        parts = " ".join(fields).split()
        if len(parts) != 3:
            raise DsrUserError(
                f"{path} line {line_no} must be '<utt-id> <rec-id> <start> <end>'; fix: correct that line"
            )
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise DsrUserError(
                f"{path} line {line_no}: start/end {parts[1]!r} {parts[2]!r} are not numbers; fix: correct that line"
            ) from None
        segments[utt_id] = _Segment(parts[0], start, end, line_no)
    return segments


def _segment_bounds(seg: _Segment, rec_duration: float) -> tuple[float, float]:
    """(start, duration) of a segment inside its recording, or :class:`SkipUtterance`."""
    end = rec_duration if seg.end == -1 else seg.end
    if seg.start < 0 or end <= seg.start:
        raise SkipUtterance(f"bad segment: start {seg.start:g} s, end {seg.end:g} s")
    if seg.start >= rec_duration or end > rec_duration + _END_TOLERANCE_S:
        raise SkipUtterance(f"bad segment: {seg.start:g}-{end:g} s is outside the {rec_duration:.2f} s recording")
    end = min(end, rec_duration)
    return seg.start, end - seg.start
