"""Manifest file names and the atomic writer shared by every importer."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from lhotse import AudioSource, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.qa import validate, validate_recordings_and_supervisions

from dsr.data.validate import AudioInfo
from dsr.utils import atomic_path

logger = logging.getLogger("dsr")

# Corpus and split names become parts of file names (and of synthetic utterance
# ids), so keep them to characters that are safe in both.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a usable corpus/split name, else raise ``ValueError``."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"{what} must match {_NAME_RE.pattern!r}, got {value!r}")
    return value


def recordings_path(manifest_dir: Path, corpus: str, split: str) -> Path:
    """``<manifest_dir>/<corpus>_recordings_<split>.jsonl.gz``."""
    return Path(manifest_dir) / f"{check_name(corpus, 'corpus')}_recordings_{check_name(split, 'split')}.jsonl.gz"


def supervisions_path(manifest_dir: Path, corpus: str, split: str) -> Path:
    """``<manifest_dir>/<corpus>_supervisions_<split>.jsonl.gz``."""
    return Path(manifest_dir) / f"{check_name(corpus, 'corpus')}_supervisions_{check_name(split, 'split')}.jsonl.gz"


def write_manifests(
    recordings: Sequence[Recording],
    supervisions: Sequence[SupervisionSegment],
    manifest_dir: Path,
    corpus: str,
    split: str,
) -> tuple[Path, Path]:
    """Validate and atomically write one split's recording and supervision manifests.

    Returns the two paths written.  Raises ``ValueError`` when there is nothing to
    write: an empty manifest only moves the failure to a confusing later stage.
    """
    if not recordings or not supervisions:
        raise ValueError(f"{corpus}/{split}: refusing to write empty manifests")
    rec_set = RecordingSet.from_recordings(recordings)
    sup_set = SupervisionSet.from_segments(supervisions)
    # Cheap consistency check (ids, bounds, durations) on metadata only.
    validate_recordings_and_supervisions(rec_set, sup_set, read_data=False)
    rec_path = recordings_path(manifest_dir, corpus, split)
    sup_path = supervisions_path(manifest_dir, corpus, split)
    with atomic_path(rec_path) as tmp:
        rec_set.to_file(tmp)
    with atomic_path(sup_path) as tmp:
        sup_set.to_file(tmp)
    logger.info("wrote %s and %s", rec_path, sup_path)
    return rec_path, sup_path


def write_recordings(recordings: Sequence[Recording], manifest_dir: Path, corpus: str, split: str) -> Path:
    """Validate and atomically write a recordings-only manifest (noise or music for augmentation).

    Returns the path written; ``ValueError`` when there is nothing to write.
    """
    if not recordings:
        raise ValueError(f"{corpus}/{split}: refusing to write an empty recordings manifest")
    rec_set = RecordingSet.from_recordings(recordings)
    validate(rec_set, read_data=False)
    rec_path = recordings_path(manifest_dir, corpus, split)
    with atomic_path(rec_path) as tmp:
        rec_set.to_file(tmp)
    logger.info("wrote %s", rec_path)
    return rec_path


def recording_from_info(recording_id: str, info: AudioInfo) -> Recording:
    """A lhotse ``Recording`` of the whole file, all channels, at its own sample rate.

    Built from the already-probed header instead of ``Recording.from_file`` so the
    file is not opened a second time.  The path is stored absolute so later stages
    can run from any directory.  Downmixing and resampling happen at
    feature-extraction time, not here.
    """
    channels = list(range(info.num_channels))
    return Recording(
        id=recording_id,
        sources=[AudioSource(type="file", channels=channels, source=str(info.path.absolute()))],
        sampling_rate=info.sampling_rate,
        num_samples=info.num_samples,
        duration=info.duration,
        channel_ids=channels,
    )


def supervision_for(
    recording: Recording,
    text: str,
    *,
    segment_id: str | None = None,
    start: float = 0.0,
    duration: float | None = None,
    speaker: str | None = None,
    language: str | None = None,
) -> SupervisionSegment:
    """A supervision over ``recording`` (whole file unless ``start``/``duration`` say otherwise).

    The speech is taken to be on every channel: a mono recording gets channel 0,
    a multi-channel one the list of all its channels.
    """
    channel: int | list[int] = 0 if recording.num_channels == 1 else list(recording.channel_ids)
    return SupervisionSegment(
        id=segment_id or recording.id,
        recording_id=recording.id,
        start=start,
        duration=recording.duration - start if duration is None else duration,
        channel=channel,
        text=text,
        speaker=speaker,
        language=language,
    )
