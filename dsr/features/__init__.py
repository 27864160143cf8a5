"""Log-mel front ends: Kaldi-compatible FBANK (kaldi-native-fbank; kaldifeat when importable) and Whisper's log-mel.

The names below are imported when first used (PEP 562): ``dsr.features.options`` is read by
``dsr --help``, which must not import torch or lhotse through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsr.features.audio import load_audio_mono, resample, speed_perturb
    from dsr.features.extract import FeatureReport, compute_features, compute_split, cuts_path
    from dsr.features.fbank import FbankConfig, compute_fbank
    from dsr.features.frontend import (
        FrontendConfig,
        check_frontend_match,
        compute_frontend,
        frontend_from_dict,
        frontend_of_cuts,
        frontend_to_dict,
    )
    from dsr.features.options import FeaturesOptions
    from dsr.features.whisper_fbank import WhisperFbankConfig, compute_whisper_fbank

_MODULE_OF = {
    "load_audio_mono": "audio",
    "resample": "audio",
    "speed_perturb": "audio",
    "FeatureReport": "extract",
    "compute_features": "extract",
    "compute_split": "extract",
    "cuts_path": "extract",
    "FbankConfig": "fbank",
    "compute_fbank": "fbank",
    "FrontendConfig": "frontend",
    "check_frontend_match": "frontend",
    "compute_frontend": "frontend",
    "frontend_from_dict": "frontend",
    "frontend_of_cuts": "frontend",
    "frontend_to_dict": "frontend",
    "FeaturesOptions": "options",
    "WhisperFbankConfig": "whisper_fbank",
    "compute_whisper_fbank": "whisper_fbank",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)


__all__ = [
    "FbankConfig",
    "FeatureReport",
    "FeaturesOptions",
    "FrontendConfig",
    "WhisperFbankConfig",
    "check_frontend_match",
    "compute_fbank",
    "compute_features",
    "compute_frontend",
    "compute_split",
    "compute_whisper_fbank",
    "cuts_path",
    "frontend_from_dict",
    "frontend_of_cuts",
    "frontend_to_dict",
    "load_audio_mono",
    "resample",
    "speed_perturb",
]
