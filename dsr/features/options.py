"""The options of ``dsr features``: one dataclass that validates itself (:class:`FeaturesOptions`).

Errors are :class:`~dsr.errors.OptionError` in the options' own terms (the field, other fields
in backticks); the CLI generates a flag per field and names the flags instead
(:mod:`dsr.cli.options`).  This module imports nothing heavy at load time (no torch, no lhotse):
``dsr --help`` builds the command from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsr.errors import OptionError
from dsr.options import opt

if TYPE_CHECKING:
    from dsr.features.frontend import FrontendConfig

SPEED_FACTORS = (0.9, 1.0, 1.1)


@dataclass
class FeaturesOptions:
    """Everything ``dsr features`` needs (see :func:`dsr.features.extract.compute_split`)."""

    corpus: str = field(metadata={"help": "Corpus name used in the manifest file names, e.g. synth."})
    splits: tuple[str, ...] = opt(("train", "dev", "test"), "Split(s) to process (repeatable).", flag="--split")
    manifest_dir: Path = opt(Path("data/manifests"), "Where the lhotse manifests are.")
    out_dir: Path = opt(Path("data/fbank"), "Where cuts manifests and features go.")
    num_jobs: int = opt(2, "Parallel worker processes.", short="-j", min=1)
    speed_perturb: bool = opt(
        False,
        "Add 0.9x and 1.1x copies of the train split(s) (names starting with 'train').",
        negatable=False,
    )
    noise: tuple[Path, ...] = opt(
        (),
        "Recordings manifest(s) of noise (e.g. data/manifests/musan_recordings_noise.jsonl.gz) "
        "to mix into the train split(s); repeatable.",
    )
    noise_snr: tuple[float, float] = opt((10.0, 20.0), "With --noise: SNR range in dB, LOW HIGH.")
    noise_prob: float = opt(0.5, "With --noise: share of train cuts mixed.", min=0.0, max=1.0)
    feature_type: str = opt(
        "kaldi-fbank",
        "Front end: kaldi-fbank (Kaldi FBANK, the default) or whisper-fbank (Whisper's log-mel, for Whisper encoders).",
    )
    num_mel_bins: int = opt(80, "Mel bins (whisper-fbank: 80, or 128 for large-v3).", min=1)
    force: bool = opt(False, "Recompute even if already done.", negatable=False)

    def __post_init__(self) -> None:
        # Python callers may pass a str, a list or a single split name.
        self.splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)
        self.noise = tuple(Path(p) for p in self.noise)
        self.manifest_dir, self.out_dir = Path(self.manifest_dir), Path(self.out_dir)
        if not self.corpus or "/" in self.corpus:
            raise OptionError("corpus", f"give a name without '/' (it is part of file names), got {self.corpus!r}")
        if not self.splits or any(not s or "/" in s for s in self.splits):
            raise OptionError("splits", f"give one or more split names without '/', got {list(self.splits)}")
        if self.num_jobs < 1:
            raise OptionError("num_jobs", f"must be >= 1, got {self.num_jobs}")
        if len(self.noise_snr) != 2 or self.noise_snr[0] > self.noise_snr[1]:
            raise OptionError("noise_snr", f"give LOW HIGH in dB with LOW <= HIGH, got {list(self.noise_snr)}")
        self.noise_snr = (float(self.noise_snr[0]), float(self.noise_snr[1]))
        if not 0.0 <= self.noise_prob <= 1.0:
            raise OptionError("noise_prob", f"must be between 0 and 1, got {self.noise_prob}")
        # Imported here, not at the top: the front ends import torch, which `dsr --help` must not.
        from dsr.features.frontend import FRONTEND_TYPES, make_frontend

        if self.feature_type not in FRONTEND_TYPES:
            raise OptionError(
                "feature_type", f"{self.feature_type!r} is unknown; choose from {', '.join(FRONTEND_TYPES)}"
            )
        if self.num_mel_bins < 1:
            raise OptionError("num_mel_bins", f"must be >= 1, got {self.num_mel_bins}")
        try:
            make_frontend(self.feature_type, self.num_mel_bins)
        except ValueError as e:
            raise OptionError("num_mel_bins", str(e)) from None

    def frontend(self) -> FrontendConfig:
        """The front end's settings (:class:`~dsr.features.fbank.FbankConfig` or Whisper's)."""
        from dsr.features.frontend import make_frontend

        return make_frontend(self.feature_type, self.num_mel_bins)

    @staticmethod
    def is_train(split: str) -> bool:
        """Training splits get speed perturbation and noise; LibriSpeech's train-clean-100 etc. count."""
        return split.startswith("train")

    def speed_factors(self, split: str) -> tuple[float, ...]:
        return SPEED_FACTORS if self.speed_perturb and self.is_train(split) else (1.0,)

    def inputs(self, split: str) -> dict[str, Path]:
        """What the stage reads for ``split`` (role -> path), recorded in its done-marker: a
        ``prepare --force`` that rewrote the manifests makes the old cuts stale."""
        inputs = {
            kind: self.manifest_dir / f"{self.corpus}_{kind}_{split}.jsonl.gz"
            for kind in ("recordings", "supervisions")
        }
        if self.is_train(split):
            inputs.update({f"noise{i}": p for i, p in enumerate(self.noise)})
        return inputs

    def marker_options(self, split: str) -> dict[str, Any]:
        """The settings of ``split`` that its done-marker records (a change re-runs the split)."""
        return {
            "speed_factors": list(self.speed_factors(split)),
            "noise": {"snr": list(self.noise_snr), "prob": self.noise_prob}
            if self.noise and self.is_train(split)
            else None,
        }
