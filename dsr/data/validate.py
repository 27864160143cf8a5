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

# Below this RMS level a file holds no audible speech: dither (about -90 dBFS) or an
# unplugged microphone, while quiet but real speech stays above -50 dBFS.
NEAR_SILENT_DBFS = -60.0

# The container each audio suffix promises, as soundfile names it (``sf.info(...).format``).
_CONTAINER_OF_SUFFIX = {
    ".wav": {"WAV", "WAVEX", "RF64"}, ".flac": {"FLAC"}, ".ogg": {"OGG"}, ".oga": {"OGG"}, ".opus": {"OGG"},
    ".mp3": {"MP3"}, ".aif": {"AIFF"}, ".aiff": {"AIFF"}, ".au": {"AU"}, ".sph": {"NIST"}, ".w64": {"W64"},
    ".caf": {"CAF"},
}  # fmt: skip

# Containers whose header sample count is only an estimate (MP3 without a Xing/LAME
# frame: size / first-frame bitrate); the decoded count is the truth there.
_ESTIMATED_LENGTH = {"MP3"}


class SkipUtterance(Exception):
    """This utterance is unusable; ``str(exc)`` is the reason ('kind: details')."""


@dataclass(frozen=True)
class AudioInfo:
    """What the importers need to know about a decodable audio file."""

    path: Path
    sampling_rate: int
    num_samples: int
    num_channels: int
    # RMS level of the decoded audio in dBFS (None when only the edges were read).
    rms_dbfs: float | None = None

    @property
    def near_silent(self) -> bool:
        """True when the audio is too quiet to hold speech (see ``NEAR_SILENT_DBFS``)."""
        return self.rms_dbfs is not None and self.rms_dbfs < NEAR_SILENT_DBFS

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
    container = str(info.format)
    expected = _CONTAINER_OF_SUFFIX.get(path.suffix.lower())
    if expected is not None and container not in expected:
        # libsndfile opens by content, so an MP3 named .wav decodes -- but to a length its
        # name does not promise, which used to be reported as "truncated".
        raise SkipUtterance(
            f"wrong container: {path.name} holds {container} data, not {path.suffix.lower().lstrip('.').upper()}; "
            f"fix: rename it to the right suffix or convert it (e.g. sox/ffmpeg to .wav)"
        )
    frames = int(info.frames)
    declared = (
        _wav_declared_frames(path, str(info.subtype), int(info.channels)) if container in ("WAV", "WAVEX") else None
    )
    rms_dbfs = None
    try:
        with sf.SoundFile(str(path)) as f:
            if frames / info.samplerate <= full_read_max_s:
                data = f.read(dtype="float32", always_2d=True)
                decoded = data.shape[0]
                if decoded and not np.any(data):
                    raise SkipUtterance("silent audio: every sample is zero")
                if decoded:
                    rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
                    rms_dbfs = 20.0 * float(np.log10(max(rms, 1e-12)))
            else:
                edge = min(frames, int(_EDGE_READ_S * info.samplerate))
                f.read(edge, dtype="float32", always_2d=True)
                f.seek(frames - edge)
                decoded = frames - edge + f.read(dtype="float32", always_2d=True).shape[0]
    except (sf.SoundFileError, RuntimeError, EOFError) as exc:
        raise SkipUtterance(f"corrupt audio: {_one_line(exc)}") from None
    if container in _ESTIMATED_LENGTH and frames / info.samplerate <= full_read_max_s:
        frames = decoded  # the header's count was an estimate; what decodes is the audio
    if declared is not None and declared > frames:
        # libsndfile shortens a truncated WAV's frame count to what the file holds, so the
        # decoded-vs-header test below cannot see it: compare with the data chunk's size.
        raise SkipUtterance(
            f"truncated audio: WAV header says {declared} samples, the file holds {frames}; "
            "fix: re-export or re-copy the file"
        )
    if decoded < frames:
        raise SkipUtterance(f"truncated audio: header says {frames} samples, decoded {decoded}")
    return AudioInfo(
        path=path,
        sampling_rate=int(info.samplerate),
        num_samples=frames,
        num_channels=int(info.channels),
        rms_dbfs=rms_dbfs,
    )


def _wav_declared_frames(path: Path, subtype: str, channels: int) -> int | None:
    """Samples per channel that a RIFF/WAVE file's ``data`` chunk header declares (None: unknown).

    Streaming writers leave the size 0 or 0xFFFFFFFF ("until the end"); those are unknown,
    not truncated.
    """
    bits = {"PCM_U8": 8, "PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64,
            "ULAW": 8, "ALAW": 8}.get(subtype)  # fmt: skip
    if bits is None:
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"data":
                    if size in (0, 0xFFFFFFFF):
                        return None
                    return size // (bits // 8 * max(channels, 1))
                f.seek(size + (size & 1), 1)  # chunks are word-aligned
    except OSError:
        return None


def audio_warning(info: AudioInfo) -> str | None:
    """Why a decodable file is still suspicious (kept, but worth a look), or None.

    Near-silent audio (dither, a muted input) is kept -- a quiet corpus may mean it --
    but its transcript cannot be heard in it, so the user is told.
    """
    if info.near_silent:
        return (
            f"near-silent audio: RMS {info.rms_dbfs:.0f} dBFS (< {NEAR_SILENT_DBFS:g}); "
            "fix: check the recording level, or remove the file if it holds no speech"
        )
    return None


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
            f"transcript too long for audio: {spoken} characters in {duration:.2f} s (> {max_chars_per_second:g}/s)"
        )
    return stripped


def check_max_duration_arg(max_duration: float | None) -> None:
    """``ValueError`` unless ``max_duration`` is ``None`` or positive."""
    if max_duration is not None and not max_duration > 0:
        raise ValueError(f"max_duration must be > 0 or None, got {max_duration}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
