"""Whisper's log-mel front end, without Whisper's 30 s padding.

Whisper (openai-whisper, faster-whisper, transformers) computes::

    STFT (hann window of n_fft = 400, hop 160, centred, reflect padding)
    -> power spectrum, last frame dropped
    -> Slaney-style mel filterbank (librosa ``mel(htk=False, norm="slaney")``)
    -> log10(max(x, 1e-10)) -> max(x, global max - 8) -> (x + 4) / 4

on audio with 30 s of zeros appended (openai-whisper's ``log_mel_spectrogram(audio,
padding=N_SAMPLES)``, faster-whisper's ``FeatureExtractor()(audio, padding=480000)``;
faster-whisper 1.2's default ``padding=160`` appends one hop only).  Two things of that
depend on the padding: the frames at the end of the utterance see the appended zeros
instead of a reflection of the audio, and the clamp uses the max over all frames.
:func:`compute_whisper_fbank` appends ``n_fft`` zeros instead of 30 s: that is enough
for every frame whose window touches the audio to see zeros (never a reflection) past
the end, and every further frame of the padded version is all zeros (log10 floor -10),
which cannot raise the max.  So the unpadded output equals the first frames of the 30 s
padded one (max abs difference 1e-5 on 153 ARCTIC files, 80 and 128 bins: the
reference's float32 rounding; tests/test_whisper_frontend.py), and an utterance's
features do not depend on how much silence follows it.

Frame count: ``(num_samples + hop // 2) // hop``, i.e. round(duration / 10 ms).
Whisper's own unpadded STFT would give ``num_samples // hop`` (one frame per hop after
dropping the last); we keep lhotse's rounding (``compute_num_frames``), which is also
what the kaldi-fbank front end (snip_edges=False) gives, so a cut's ``num_frames``
(computed by lhotse from its duration) equals the stored frames and lhotse never
duplicates a last frame.  The extra frame, when there is one, is exactly the padded
reference's frame at that index.

Why not lhotse's ``WhisperFbank`` (lhotse 1.33): constructing it imports librosa for
the filterbank, which dsr does not depend on (ImportError here).  Its
``log_mel_spectrogram``, measured with faster-whisper's filters on 153 ARCTIC files,
equals faster-whisper to 4e-5 except at the end of the utterance, where it is off by up
to 1.03: its STFT runs on the bare utterance, so the last frames see a reflection of the
audio instead of zeros (and the clamp max includes them), and a frame missing to
lhotse's frame count is padded with 0.0 (a power of 1e-4, not silence).  See
docs/DEPENDENCIES.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass(frozen=True)
class WhisperFbankConfig:
    """Options of Whisper's log-mel front end (fixed by the pretrained Whisper models).

    ``num_mel_bins`` is 80 (Whisper up to large-v2) or 128 (large-v3).
    """

    sampling_rate: int = 16000
    num_mel_bins: int = 80
    n_fft: int = 400  # 25 ms window
    hop_length: int = 160  # 10 ms shift

    def __post_init__(self) -> None:
        if self.num_mel_bins not in (80, 128):
            raise ValueError(f"whisper-fbank num_mel_bins must be 80 or 128 (got {self.num_mel_bins})")
        if self.sampling_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0:
            raise ValueError(f"sampling_rate, n_fft and hop_length must be positive (got {self})")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def frame_shift(self) -> float:
        """Seconds between frames (0.01)."""
        return self.hop_length / self.sampling_rate


def hz_to_mel_slaney(f: np.ndarray | float) -> np.ndarray:
    """Slaney's Auditory Toolbox mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)


def mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_centre_frequencies(num_mel_bins: int, sampling_rate: int = 16000) -> np.ndarray:
    """(num_mel_bins + 2,) Hz: band edges and centres, equally spaced on the Slaney mel scale in [0, sr/2]."""
    mels = np.linspace(hz_to_mel_slaney(0.0), hz_to_mel_slaney(sampling_rate / 2), num_mel_bins + 2)
    return mel_to_hz_slaney(mels)


@lru_cache(maxsize=8)
def _mel_filters_cached(sampling_rate: int, n_fft: int, num_mel_bins: int) -> np.ndarray:
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sampling_rate)
    mel_f = mel_centre_frequencies(num_mel_bins, sampling_rate)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)  # (num_mel_bins + 2, n_fft // 2 + 1)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    # Slaney normalisation: each triangle has unit area in Hz, so wide high bands are not louder.
    enorm = 2.0 / (mel_f[2 : num_mel_bins + 2] - mel_f[:num_mel_bins])
    weights *= enorm[:, None]
    weights.setflags(write=False)
    return weights


def mel_filters(sampling_rate: int = 16000, n_fft: int = 400, num_mel_bins: int = 80) -> np.ndarray:
    """Slaney-style mel filterbank, as librosa's ``mel(sr, n_fft, n_mels, htk=False, norm="slaney")``.

    Returns:
        (num_mel_bins, n_fft // 2 + 1) float64 array (read-only; librosa returns float32).
    """
    if num_mel_bins <= 0 or n_fft <= 0 or sampling_rate <= 0:
        raise ValueError(
            f"sampling_rate, n_fft and num_mel_bins must be positive (got {sampling_rate}, {n_fft}, {num_mel_bins})"
        )
    return _mel_filters_cached(int(sampling_rate), int(n_fft), int(num_mel_bins))


def whisper_num_frames(num_samples: int, cfg: WhisperFbankConfig = WhisperFbankConfig()) -> int:
    """Frames :func:`compute_whisper_fbank` returns without padding: round(num_samples / hop), lhotse's count."""
    return (num_samples + cfg.hop_length // 2) // cfg.hop_length


def compute_whisper_fbank(
    samples: np.ndarray,
    cfg: WhisperFbankConfig = WhisperFbankConfig(),
    pad_to_seconds: float | None = None,
) -> np.ndarray:
    """Whisper's log-mel features of a mono float waveform in [-1, 1] at ``cfg.sampling_rate``.

    Args:
        samples: (num_samples,) float array.
        pad_to_seconds: None (default): no Whisper padding; returns
            :func:`whisper_num_frames` frames, equal to the first frames of the padded
            version (see the module docstring).  A number: *append* that many seconds of
            zeros first (whatever the audio's length) and return every frame,
            ``(num_samples + pad) // hop`` of them: Whisper's ``padding`` argument, so
            ``pad_to_seconds=30.0`` equals faster-whisper's
            ``FeatureExtractor(feature_size)(samples, padding=480000).T``.
    Returns:
        (num_frames, cfg.num_mel_bins) float32 array.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"expected mono (num_samples,) audio, got shape {samples.shape}")
    if pad_to_seconds is not None and pad_to_seconds < 0:
        raise ValueError(f"pad_to_seconds must be >= 0 (got {pad_to_seconds})")
    n = samples.shape[0]
    if pad_to_seconds is None:
        # n_fft zeros: every frame whose window touches the audio sees zeros past its end.
        pad = cfg.n_fft
        num_frames = whisper_num_frames(n, cfg)
    else:
        pad = int(round(pad_to_seconds * cfg.sampling_rate))
        num_frames = (n + pad) // cfg.hop_length
        if 0 < n + pad <= cfg.n_fft // 2:
            raise ValueError(f"reflect padding needs more than {cfg.n_fft // 2} samples (got {n + pad})")
    if num_frames == 0:
        return np.zeros((0, cfg.num_mel_bins), dtype=np.float32)
    # float64 throughout: the clamp keeps 8 decades of power, and float32 FFT rounding in
    # quiet bands next to loud ones shows at ~2e-5 (ARCTIC); in float64 the difference to
    # faster-whisper is its own float32 rounding (<= 1e-5), at little cost next to decoding audio.
    x = torch.zeros(n + pad, dtype=torch.float64)
    x[:n] = torch.from_numpy(samples.astype(np.float64, copy=False))
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64)
    stft = torch.stft(
        x, cfg.n_fft, cfg.hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
    )  # (n_fft // 2 + 1, 1 + (n + pad) // hop)
    power = stft[:, :-1].abs() ** 2
    filters = torch.from_numpy(np.array(mel_filters(cfg.sampling_rate, cfg.n_fft, cfg.num_mel_bins)))
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()  # (num_mel_bins, frames)
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec[:, :num_frames].T.contiguous().numpy().astype(np.float32)
