"""Feature batches for ``dsr decode`` that survive unreadable inputs.

A cuts manifest to decode may carry precomputed features (``dsr features``) or only
recordings (the features are then computed here with the given front end, by the code
``dsr features`` and ``dsr transcribe`` use).  A cut whose feature file or audio cannot be read is skipped and
listed in :attr:`DecodeBatches.unreadable`; every readable cut of its batch is still
decoded.  Batches are formed and padded as lhotse's ``K2SpeechRecognitionDataset`` does
(longest first, right-padded with ``LOG_EPSILON``), so results do not depend on the path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut

from dsr.data.cuts import make_sampler, pad_features
from dsr.errors import DsrUserError
from dsr.features.audio import load_recording_mono
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import FrontendConfig, compute_frontend

# Fewest feature frames a cut needs: the same limit as `dsr features` and `dsr transcribe`
# (4x subsampling needs 7; 10 frames = 0.1 s holds no word anyway).
MIN_FRAMES = 10


@dataclass(frozen=True)
class Unreadable:
    """A cut that could not be decoded: its id, the file it reads and why."""

    cut_id: str
    source: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"cut_id": self.cut_id, "source": self.source, "error": self.error}


def cut_source(cut: Cut) -> str:
    """The file a cut's input comes from (its feature storage, else its first audio source)."""
    if cut.has_features:
        return str(cut.features.storage_path)
    if cut.has_recording and cut.recording.sources:
        return str(cut.recording.sources[0].source)
    return ""


def cut_features(cut: Cut, frontend: FrontendConfig = FbankConfig()) -> torch.Tensor:
    """(T, F) features of one cut: the stored ones, else the ``frontend`` features of its
    recording's audio (all channels downmixed, resampled to ``frontend.sampling_rate``)."""
    if cut.has_features:
        return torch.from_numpy(np.asarray(cut.load_features(), dtype=np.float32))
    if not cut.has_recording:
        raise ValueError("the cut has neither features nor a recording")
    # Every channel of the recording, downmixed, as dsr features does (a MonoCut alone would load one channel).
    audio = load_recording_mono(cut.recording, cut.start, cut.duration, frontend.sampling_rate)
    return torch.from_numpy(compute_frontend(audio, frontend))


class DecodeBatches:
    """Iterates ``(features (N, T, F), lengths (N,), cuts)`` batches of ``cuts`` on ``device``.

    ``max_duration`` seconds of audio per batch (dynamic bucketing, no shuffling).  Cuts
    that fail to load are left out of their batch and appended to :attr:`unreadable`
    (a batch with no readable cut is not yielded).  ``frontend`` computes the features of
    cuts that have only a recording.
    """

    def __init__(
        self, cuts: CutSet, max_duration: float, device: torch.device, frontend: FrontendConfig = FbankConfig()
    ) -> None:
        if max_duration <= 0:
            raise ValueError(f"max_duration must be > 0, got {max_duration}")
        self.cuts = cuts
        self.sampler = make_sampler(cuts, max_duration, shuffle=False)
        self.device = device
        self.frontend = frontend
        self.unreadable: list[Unreadable] = []

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[Cut]]]:
        self.unreadable = []
        for batch in self.sampler:
            loaded: list[tuple[Cut, torch.Tensor]] = []
            for cut in sorted(batch, key=lambda c: c.duration, reverse=True):
                try:
                    feats = cut_features(cut, self.frontend)
                except Exception as e:  # lhotse, soundfile and the codecs raise many types for bad files
                    why = str(e) if isinstance(e, DsrUserError) else f"{type(e).__name__}: {e}"  # ours already say what
                    self.unreadable.append(Unreadable(cut.id, cut_source(cut), why))
                    continue
                if feats.size(0) < MIN_FRAMES:
                    # The encoder's subsampling needs a few frames; one such cut used to abort the run.
                    self.unreadable.append(
                        Unreadable(
                            cut.id,
                            cut_source(cut),
                            f"too short to decode: {feats.size(0)} "
                            f"feature frames ({cut.duration:.3f} s) < {MIN_FRAMES}",
                        )
                    )
                    continue
                loaded.append((cut, feats))
            if not loaded:
                continue
            lengths = torch.tensor([f.size(0) for _, f in loaded], dtype=torch.int64)
            feats = pad_features([f for _, f in loaded])
            yield feats.to(self.device), lengths.to(self.device), [c for c, _ in loaded]
