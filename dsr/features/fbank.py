"""Kaldi-compatible log-mel filterbank features.

kaldi-native-fbank is the default: it installs as a wheel everywhere and matches
Kaldi (and lhotse's/kaldifeat's FBANK to ~2e-4).  kaldifeat is used instead when
importable and asked for, because icefall models were trained with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class FbankConfig:
    """Options of the FBANK front end; stored with every cuts manifest and model."""

    sampling_rate: int = 16000
    num_mel_bins: int = 80
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    # No dither: features become deterministic, and training adds its own noise (SpecAugment).
    dither: float = 0.0
    # snip_edges=False gives round(duration / shift) frames, the convention of lhotse and icefall.
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def frame_shift(self) -> float:
        return self.frame_shift_ms / 1000.0


def _knf_options(cfg: FbankConfig):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = cfg.sampling_rate
    opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
    opts.frame_opts.frame_length_ms = cfg.frame_length_ms
    opts.frame_opts.dither = cfg.dither
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    return opts


def compute_fbank(samples: np.ndarray, cfg: FbankConfig = FbankConfig()) -> np.ndarray:
    """Compute FBANK of a mono float waveform in [-1, 1] at ``cfg.sampling_rate``.

    Args:
        samples: (num_samples,) float array.
    Returns:
        (num_frames, cfg.num_mel_bins) float32 array.
    """
    if samples.ndim != 1:
        raise ValueError(f"expected mono (num_samples,) audio, got shape {samples.shape}")
    import kaldi_native_fbank as knf

    fbank = knf.OnlineFbank(_knf_options(cfg))
    fbank.accept_waveform(cfg.sampling_rate, samples.astype(np.float32, copy=False))
    fbank.input_finished()
    n = fbank.num_frames_ready
    if n == 0:
        return np.zeros((0, cfg.num_mel_bins), dtype=np.float32)
    return np.stack([fbank.get_frame(i) for i in range(n)]).astype(np.float32, copy=False)
