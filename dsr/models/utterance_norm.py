"""Per-utterance feature normalisation (CMN / CMVN over each utterance's own frames).

The model's global CMVN (statistics of the training set) keeps the recording level and the
channel's spectral tilt: a speaker recorded 15 dB quieter, or through another microphone,
produces features the model has never seen.  A change of gain adds a constant to every
log-mel bin and a fixed channel adds a constant per bin, so subtracting each utterance's
own mean per bin removes both exactly ("mean"); dividing by the utterance's standard
deviation per bin as well ("mean-var") also evens out the dynamic range.

It runs inside :meth:`dsr.models.transducer.HybridTransducer.encode`, so training,
validation and every decoding method see the same transform.  It needs the whole
utterance, so a model that uses it cannot stream.  On FSDD's held-out speaker it was worse
than random-gain augmentation (docs/RESULTS.md, FSDD), so it is off by default.
"""

from __future__ import annotations

import torch

UTTERANCE_NORMS = ("none", "mean", "mean-var")

# Floor of the per-utterance standard deviation: a bin that is constant over a short
# utterance (e.g. above the 4 kHz band edge of 8 kHz audio) must not be blown up.
_MIN_STD = 0.1


def normalize_utterances(features: torch.Tensor, lengths: torch.Tensor, mode: str) -> torch.Tensor:
    """Normalise each utterance of a padded (N, T, F) batch over its first ``lengths[i]`` frames.

    Args:
        features: (N, T, F) features (padded frames may hold anything).
        lengths: (N,) valid frames per utterance, each >= 1.
        mode: one of :data:`UTTERANCE_NORMS`; ``"none"`` returns ``features`` unchanged.

    Returns:
        (N, T, F) normalised features; padded frames are 0.
    """
    if mode not in UTTERANCE_NORMS:
        raise ValueError(f"mode must be one of {UTTERANCE_NORMS} (got {mode!r})")
    if mode == "none":
        return features
    if features.dim() != 3 or lengths.shape != features.shape[:1]:
        raise ValueError(
            f"expected (N, T, F) features and (N,) lengths, got {tuple(features.shape)}, {tuple(lengths.shape)}"
        )
    if bool((lengths < 1).any()):
        raise ValueError("every utterance needs at least one frame")
    mask = (torch.arange(features.shape[1], device=features.device)[None, :] < lengths[:, None]).unsqueeze(-1)
    count = lengths.to(features.dtype)[:, None, None]
    x = features.masked_fill(~mask, 0.0)
    mean = x.sum(dim=1, keepdim=True) / count
    x = (x - mean).masked_fill(~mask, 0.0)
    if mode == "mean-var":
        std = (x.pow(2).sum(dim=1, keepdim=True) / count).sqrt().clamp(min=_MIN_STD)
        x = x / std
    return x
