"""Kaldi-compatible FBANK features (kaldi-native-fbank; kaldifeat when importable)."""

from dsr.features.audio import load_audio_mono, resample, speed_perturb
from dsr.features.fbank import FbankConfig, compute_fbank
from dsr.features.extract import FeatureReport, compute_features, cuts_path

__all__ = [
    "FbankConfig",
    "FeatureReport",
    "compute_fbank",
    "compute_features",
    "cuts_path",
    "load_audio_mono",
    "resample",
    "speed_perturb",
]
