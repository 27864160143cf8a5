"""Additive-noise augmentation (e.g. MUSAN) applied to training audio before FBANK.

``dsr features --noise data/manifests/musan_recordings_noise.jsonl.gz`` mixes, into
each training cut with probability ``prob``, a random stretch of a random noise
recording at an SNR drawn uniformly from ``snr_db``.  The draw is seeded by
``(seed, cut id)``, so a re-run (or another ``-j``) writes the same features and a
speed-perturbed copy gets its own, independent noise.

Why in the features stage, in the audio domain, rather than on the fly in
training as icefall does (lhotse ``CutMix`` on stored features): it is exact
(no log-mel approximation of a sum of signals), it needs no features for the
noise corpus and no change to the trainer, and the training loop stays as fast
as it is.  The cost: one fixed noisy version per cut instead of a fresh draw per
epoch; speed perturbation's extra copies each get a different draw.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lhotse import Recording, RecordingSet, load_manifest

from dsr.errors import DsrUserError
from dsr.features.audio import load_recording_mono


@dataclass(frozen=True)
class NoiseMixing:
    """Which noise to add, how loud, how often."""

    recordings: tuple[Recording, ...]
    snr_db: tuple[float, float] = (10.0, 20.0)
    prob: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.recordings:
            raise ValueError("recordings must hold at least one noise recording")
        low, high = self.snr_db
        if low > high:
            raise ValueError(f"snr_db must be (low, high) with low <= high, got {self.snr_db}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {self.prob}")


def load_noise(
    manifests: Sequence[Path], snr_db: tuple[float, float] = (10.0, 20.0), prob: float = 0.5, seed: int = 0
) -> NoiseMixing:
    """Read recordings manifests (e.g. ``musan_recordings_noise.jsonl.gz``) into a :class:`NoiseMixing`."""
    recordings: list[Recording] = []
    for path in manifests:
        path = Path(path)
        if not path.is_file():
            raise DsrUserError(
                f"noise manifest {path} does not exist; fix: run 'dsr prepare musan' or pass a recordings manifest"
            )
        try:
            recordings += list(load_manifest(path, manifest_cls=RecordingSet))
        except Exception as exc:  # lhotse raises assorted errors for a file that is not a RecordingSet
            raise DsrUserError(
                f"noise manifest {path} is not a recordings manifest ({exc}); fix: pass a *_recordings_*.jsonl.gz"
            ) from None
    if not recordings:
        raise DsrUserError(
            f"noise manifests {', '.join(map(str, manifests))} hold no recordings; fix: pass a non-empty one"
        )
    return NoiseMixing(tuple(recordings), snr_db, prob, seed)


def _noise_segment(rec: Recording, num_samples: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """``num_samples`` of ``rec`` at ``sr``, from a random offset; a short recording is repeated."""
    need_s = num_samples / sr
    if rec.duration > need_s:
        noise = load_recording_mono(rec, float(rng.uniform(0.0, rec.duration - need_s)), need_s, sr)
    else:
        noise = load_recording_mono(rec, 0.0, rec.duration, sr)
    if noise.size == 0:
        return np.zeros(num_samples, dtype=np.float32)
    return np.resize(noise, num_samples)  # repeats a short noise; trims rounding overshoot


def add_noise(speech: np.ndarray, sr: int, cut_id: str, mixing: NoiseMixing) -> tuple[np.ndarray, dict | None]:
    """Return ``speech`` (1-D, at ``sr``) with noise mixed in, and what was mixed (``None``: left clean).

    Silent speech or silent noise leaves the cut clean: no SNR is defined.
    """
    rng = np.random.default_rng([mixing.seed, zlib.crc32(cut_id.encode("utf-8"))])
    if speech.size == 0 or rng.random() >= mixing.prob:
        return speech, None
    rec = mixing.recordings[int(rng.integers(len(mixing.recordings)))]
    snr = float(rng.uniform(*mixing.snr_db))
    noise = _noise_segment(rec, speech.size, sr, rng)
    p_speech, p_noise = float(np.mean(speech**2)), float(np.mean(noise**2))
    if p_speech == 0.0 or p_noise == 0.0:
        return speech, None
    scale = np.sqrt(p_speech / (p_noise * 10.0 ** (snr / 10.0)))
    return (speech + scale * noise).astype(np.float32), {"recording": rec.id, "snr_db": round(snr, 2)}
