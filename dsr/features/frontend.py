"""Front ends (waveform -> log-mel features) and their settings as they travel with data.

Two front ends exist: ``kaldi-fbank`` (:class:`~dsr.features.fbank.FbankConfig`, the
default, what every dsr model before Whisper was trained on) and ``whisper-fbank``
(:class:`~dsr.features.whisper_fbank.WhisperFbankConfig`, what pretrained Whisper
encoders expect).  They differ in scale, mel layout and log base, so a model only works
on features of the front end it was trained on; nothing about an (N, T, 80) tensor says
which one it is.  The settings are therefore written next to the features:
``dsr features`` stores :func:`frontend_to_dict` in every cut's ``custom["frontend"]``
(and the front end's name in lhotse's ``Features.type``), and :func:`check_frontend_match`
turns a mismatch into a one-line user error naming both sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

import numpy as np

from dsr.errors import OptionError
from dsr.features.fbank import FbankConfig, compute_fbank
from dsr.features.whisper_fbank import WhisperFbankConfig, compute_whisper_fbank

FrontendConfig = FbankConfig | WhisperFbankConfig

# Name (the CLI's --feature-type, lhotse's Features.type, the dict's "type") -> settings class.
FRONTEND_TYPES: dict[str, type] = {"kaldi-fbank": FbankConfig, "whisper-fbank": WhisperFbankConfig}
DEFAULT_FRONTEND = "kaldi-fbank"


def frontend_type(cfg: FrontendConfig) -> str:
    """The front end's name: ``"kaldi-fbank"`` or ``"whisper-fbank"``."""
    for name, cls in FRONTEND_TYPES.items():
        if type(cfg) is cls:
            return name
    raise ValueError(f"not a front-end config: {cfg!r}")


def make_frontend(feature_type: str = DEFAULT_FRONTEND, num_mel_bins: int = 80) -> FrontendConfig:
    """Default settings of front end ``feature_type`` with ``num_mel_bins`` bins (ValueError if unknown/invalid)."""
    if feature_type not in FRONTEND_TYPES:
        raise ValueError(f"unknown front end {feature_type!r}; choose from {', '.join(FRONTEND_TYPES)}")
    if num_mel_bins <= 0:
        raise ValueError(f"num_mel_bins must be positive (got {num_mel_bins})")
    return FRONTEND_TYPES[feature_type](num_mel_bins=num_mel_bins)


def frontend_to_dict(cfg: FrontendConfig) -> dict[str, Any]:
    """``{"type": name, **settings}``: JSON-ready, the inverse of :func:`frontend_from_dict`."""
    return {"type": frontend_type(cfg), **cfg.to_dict()}


def frontend_from_dict(d: Mapping[str, Any]) -> FrontendConfig:
    """Settings from :func:`frontend_to_dict`'s dict.

    A dict without ``"type"`` is a bare ``FbankConfig.to_dict()`` (kaldi-fbank); settings
    missing from it take their defaults.  Unknown types or keys raise ValueError.
    """
    d = dict(d)
    name = d.pop("type", DEFAULT_FRONTEND)
    if name not in FRONTEND_TYPES:
        raise ValueError(f"unknown front end {name!r}; choose from {', '.join(FRONTEND_TYPES)}")
    cls = FRONTEND_TYPES[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {name} settings: {', '.join(unknown)}")
    return cls(**d)


def compute_frontend(samples: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Features of a mono float waveform at ``cfg.sampling_rate`` with front end ``cfg``.

    Args:
        samples: (num_samples,) float array in [-1, 1].
    Returns:
        (num_frames, cfg.num_mel_bins) float32 array; both front ends give
        round(num_samples / frame shift) frames.
    """
    if isinstance(cfg, WhisperFbankConfig):
        return compute_whisper_fbank(samples, cfg)
    if isinstance(cfg, FbankConfig):
        return compute_fbank(samples, cfg)
    raise ValueError(f"not a front-end config: {cfg!r}")


def frontend_of_cuts(cuts: Iterable[Any]) -> dict[str, Any] | None:
    """The front-end settings (:func:`frontend_to_dict`) the first cut's features were computed with.

    Cuts written by ``dsr features`` before front ends were recorded count as the
    default kaldi-fbank ``FbankConfig()``.  None when there is no cut or the first cut
    has no features (recordings only: any front end can be computed from its audio).
    """
    first = next(iter(cuts), None)
    if first is None or not first.has_features:
        return None
    recorded = (first.custom or {}).get("frontend")
    if recorded is None:
        return frontend_to_dict(FbankConfig())
    return frontend_to_dict(frontend_from_dict(recorded))


def describe_frontend(d: Mapping[str, Any], keys: Iterable[str] = ("num_mel_bins",)) -> str:
    """``"whisper-fbank (num_mel_bins 80)"``: the name and the listed settings."""
    shown = ", ".join(f"{k} {d[k]}" for k in keys if k in d and k != "type")
    return f"{d.get('type', DEFAULT_FRONTEND)} ({shown})" if shown else str(d.get("type", DEFAULT_FRONTEND))


def check_frontend_match(
    expected: Mapping[str, Any],
    actual: Mapping[str, Any],
    expected_what: str,
    actual_what: str,
    expected_verb: str = "was trained on",
) -> None:
    """Raise a one-line :class:`~dsr.errors.OptionError` (a DsrUserError) when two front-end settings differ.

    Args:
        expected: settings the consumer needs (e.g. the model's), :func:`frontend_to_dict` form.
        actual: settings the features have (e.g. :func:`frontend_of_cuts`).
        expected_what: e.g. ``"the model in exp/w"``, or an option as ``"{pretrained} whisper-tiny.en"``
            (shown as the option's name, or by the CLI as its flag).
        actual_what: e.g. ``"features of data/fbank/x_cuts_test.jsonl.gz"``.
        expected_verb: joins ``expected_what`` and its settings in the message.

    Example message::

        features of data/fbank/x_cuts_test.jsonl.gz are kaldi-fbank (num_mel_bins 80) but the
        model in exp/w was trained on whisper-fbank (num_mel_bins 80); recompute them with:
        dsr features --feature-type whisper-fbank
    """
    # Through the dataclasses: defaults filled in, 80 == 80.0, legacy dicts without "type".
    exp = frontend_to_dict(frontend_from_dict(expected))
    act = frontend_to_dict(frontend_from_dict(actual))
    if exp == act:
        return
    differing = [k for k in exp if k != "type" and k in act and exp[k] != act[k]]
    keys = ["num_mel_bins"] + [k for k in differing if k != "num_mel_bins"]
    fix = f"dsr features --feature-type {exp['type']}"
    if exp["num_mel_bins"] != 80:
        fix += f" --num-mel-bins {exp['num_mel_bins']}"
    # Only type and bin count are CLI options; other settings need the expected side's config.
    cli_fixes = exp["type"] != act["type"] or set(differing) <= {"num_mel_bins"}
    fix = f"recompute them with: {fix}" if cli_fixes else f"recompute them with the settings {exp}"
    raise OptionError(
        f"{actual_what} are {describe_frontend(act, keys)} but {expected_what} {expected_verb} "
        f"{describe_frontend(exp, keys)}; {fix}"
    )


def check_cuts_frontend(
    cuts: Iterable[Any],
    expected: Mapping[str, Any] | None,
    cuts_what: str,
    expected_what: str,
    expected_verb: str = "was trained on",
) -> None:
    """Hook for training/decoding: the cuts' recorded front end must be ``expected``.

    ``expected`` None (e.g. a checkpoint saved before front ends were recorded) means the
    default kaldi-fbank, as for old cuts.  Cuts without features pass: their features are
    computed from audio with whatever front end the caller uses.

    Example::

        check_cuts_frontend(cuts, ckpt.get("frontend"), str(cuts_file), f"the model in {exp_dir}")
    """
    actual = frontend_of_cuts(cuts)
    if actual is None:
        return
    check_frontend_match(expected or {}, actual, expected_what, f"features of {cuts_what}", expected_verb)
