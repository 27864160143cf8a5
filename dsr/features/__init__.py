"""Log-mel front ends: Kaldi-compatible FBANK (kaldi-native-fbank; kaldifeat when importable) and Whisper's log-mel."""

from dsr.features.audio import load_audio_mono, resample, speed_perturb
from dsr.features.extract import FeatureReport, compute_features, cuts_path
from dsr.features.fbank import FbankConfig, compute_fbank
from dsr.features.frontend import (
    FrontendConfig,
    check_frontend_match,
    compute_frontend,
    frontend_from_dict,
    frontend_of_cuts,
    frontend_to_dict,
)
from dsr.features.whisper_fbank import WhisperFbankConfig, compute_whisper_fbank

__all__ = [
    "FbankConfig",
    "FeatureReport",
    "FrontendConfig",
    "WhisperFbankConfig",
    "check_frontend_match",
    "compute_fbank",
    "compute_features",
    "compute_frontend",
    "compute_whisper_fbank",
    "cuts_path",
    "frontend_from_dict",
    "frontend_of_cuts",
    "frontend_to_dict",
    "load_audio_mono",
    "resample",
    "speed_perturb",
]
