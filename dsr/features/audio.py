"""Audio loading shared by feature extraction and ``dsr transcribe``.

Every path into the model goes through :func:`load_audio_mono` so that training
and decoding see the same downmix and resampling.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from dsr.errors import DsrUserError

if TYPE_CHECKING:
    from lhotse import Recording


def resample(samples: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of a 1-D float signal (anti-aliased, like sox's ``rate``)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return samples.astype(np.float32, copy=False)
    g = gcd(orig_sr, target_sr)
    return resample_poly(samples, target_sr // g, orig_sr // g).astype(np.float32)


def speed_perturb(samples: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Kaldi/sox-style speed perturbation: changes tempo and pitch together.

    Playing ``samples`` ``factor`` times faster is the same as resampling from
    ``sr * factor`` to ``sr``; factors are rounded to 1 % so the polyphase filter
    stays small (0.9 -> 90/100, 1.1 -> 110/100).
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    num = int(round(factor * 100))
    if num == 100:
        return samples
    g = gcd(num, 100)
    return resample_poly(samples, 100 // g, num // g).astype(np.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels of a (T,) or (T, C) / (C, T) array into (T,)."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise ValueError(f"expected 1-D or 2-D audio, got shape {samples.shape}")
    # soundfile returns (T, C); lhotse returns (C, T).  Channels are the short axis.
    axis = 1 if samples.shape[1] < samples.shape[0] else 0
    return samples.mean(axis=axis)


def load_recording_mono(rec: Recording, offset: float, duration: float, target_sr: int) -> np.ndarray:
    """``duration`` s of a lhotse recording from ``offset``: all channels downmixed, resampled to ``target_sr``.

    A segment covering the whole recording is read as a whole (no seek), so the same call
    serves cuts, supervisions and noise segments.
    """
    whole = offset == 0 and duration >= rec.duration
    try:
        audio = to_mono(rec.load_audio(offset=offset, duration=None if whole else duration))
    except Exception as e:  # lhotse wraps every backend's error in a multi-line AudioLoadingError
        raise DsrUserError(_unreadable_recording(rec, e)) from e
    return resample(np.asarray(audio, dtype=np.float32), rec.sampling_rate, target_sr)


def _unreadable_recording(rec: Recording, error: Exception) -> str:
    """One line naming the recording, its file and the fix."""
    source = rec.sources[0]
    where = f"recording {rec.id} ({source.source})"
    if source.type == "file" and not Path(source.source).is_file():
        return f"{where}: no such audio file; fix the path in the recordings manifest or re-run the prepare stage"
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return f"{where}: cannot read its audio ({first_line}); convert it to wav/flac and re-run the prepare stage"


def load_audio_mono(path: Path | str, target_sr: int = 16000) -> np.ndarray:
    """Read any soundfile-readable file, downmix to mono and resample to ``target_sr``.

    Raises :class:`DsrUserError` naming the file when it is missing or unreadable.
    """
    path = Path(path)
    if path.is_dir():
        raise DsrUserError(f"{path} is a directory, not an audio file; fix: pass its audio files (e.g. {path}/*.wav)")
    if not path.is_file():
        raise DsrUserError(f"audio file {path} does not exist; check the path")
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt files
        raise DsrUserError(f"cannot read audio file {path}: {e}; convert it to wav/flac") from e
    if samples.shape[0] == 0:
        raise DsrUserError(f"audio file {path} is empty")
    return resample(samples.mean(axis=1), sr, target_sr)
