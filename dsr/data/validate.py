"""Checks shared by the importers: is this utterance usable, and if not, why.

Two kinds of failure are told apart on purpose:

* a *broken corpus layout* (a transcript line pointing at an audio file that does
  not exist) raises :class:`dsr.errors.DsrUserError` -- the user has to fix it and
  silently dropping half a corpus would hide the problem;
* a *bad utterance* (corrupt or silent audio, empty or impossible transcript, too
  long) raises :class:`SkipUtterance`; importers catch it, log the reason and count
  it in their :class:`~dsr.data.report.PrepareReport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from dsr.errors import DsrUserError

# Fast read-speech is ~15 letters/s; 40/s leaves room for clipped starts and
# short words while still catching transcripts glued to the wrong (short) file.
DEFAULT_MAX_CHARS_PER_SECOND = 40.0

# Files up to this long are decoded completely (a few ms for typical utterances);
# longer ones only at both ends, which still catches truncation.
FULL_READ_MAX_S = 120.0
_EDGE_READ_S = 1.0


class SkipUtterance(Exception):
    """This utterance is unusable; ``str(exc)`` is the reason ('kind: details')."""


@dataclass(frozen=True)
class AudioInfo:
    """What the importers need to know about a decodable audio file."""

    path: Path
    sampling_rate: int
    num_samples: int
    num_channels: int

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.num_samples / self.sampling_rate


def require_file(path: Path, listed_in: str, fix: str) -> Path:
    """Raise a one-line :class:`DsrUserError` if ``path`` is not an existing file.

    ``listed_in`` says where the reference came from (file and line), ``fix`` what
    the user should do.
    """
    if not path.is_file():
        raise DsrUserError(f"{path} does not exist (listed in {listed_in}); fix: {fix}")
    return path


def check_audio(path: Path, full_read_max_s: float = FULL_READ_MAX_S) -> AudioInfo:
    """Return the audio's format, or raise :class:`SkipUtterance` if it is unusable.

    The header alone is not enough: a truncated or corrupt FLAC has a perfectly
    good header.  So short files are decoded fully (also catching all-zero audio),
    long ones at both ends.
    """
    if full_read_max_s < 0:
        raise ValueError(f"full_read_max_s must be >= 0, got {full_read_max_s}")
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError, EOFError) as exc:
        raise SkipUtterance(f"unreadable audio: {_one_line(exc)}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise SkipUtterance(f"zero duration: {path.name} has no samples")
    frames = int(info.frames)
    try:
        with sf.SoundFile(str(path)) as f:
            if frames / info.samplerate <= full_read_max_s:
                data = f.read(dtype="float32", always_2d=True)
                decoded = data.shape[0]
                if decoded and not np.any(data):
                    raise SkipUtterance("silent audio: every sample is zero")
            else:
                edge = min(frames, int(_EDGE_READ_S * info.samplerate))
                f.read(edge, dtype="float32", always_2d=True)
                f.seek(frames - edge)
                decoded = frames - edge + f.read(dtype="float32", always_2d=True).shape[0]
    except (sf.SoundFileError, RuntimeError, EOFError) as exc:
        raise SkipUtterance(f"corrupt audio: {_one_line(exc)}") from None
    if decoded < frames:
        raise SkipUtterance(f"truncated audio: header says {frames} samples, decoded {decoded}")
    return AudioInfo(path=path, sampling_rate=int(info.samplerate), num_samples=frames, num_channels=int(info.channels))


def check_duration(duration: float, max_duration: float | None) -> None:
    """Raise :class:`SkipUtterance` if ``duration`` exceeds ``max_duration`` (``None``: no limit)."""
    if max_duration is not None and duration > max_duration:
        raise SkipUtterance(f"too long: {duration:.3f} s > max_duration {max_duration:g} s")


def check_transcript(text: str, duration: float, max_chars_per_second: float = DEFAULT_MAX_CHARS_PER_SECOND) -> str:
    """Return ``text`` stripped, or raise :class:`SkipUtterance` if it cannot match the audio.

    Only letters and digits are counted against the duration: punctuation and
    spaces take no time to say.
    """
    if max_chars_per_second <= 0:
        raise ValueError(f"max_chars_per_second must be > 0, got {max_chars_per_second}")
    stripped = text.strip()
    if not stripped:
        raise SkipUtterance("empty transcript")
    spoken = sum(ch.isalnum() for ch in stripped)
    if spoken == 0:
        raise SkipUtterance(f"empty transcript: no letters or digits in {stripped!r}")
    if spoken > max_chars_per_second * duration:
        raise SkipUtterance(
            f"transcript too long for audio: {spoken} characters in {duration:.2f} s"
            f" (> {max_chars_per_second:g}/s)"
        )
    return stripped


def check_max_duration_arg(max_duration: float | None) -> None:
    """``ValueError`` unless ``max_duration`` is ``None`` or positive."""
    if max_duration is not None and not max_duration > 0:
        raise ValueError(f"max_duration must be > 0 or None, got {max_duration}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
