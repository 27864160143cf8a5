"""Augmentation of cuts before their features are read (lhotse cut transforms).

:class:`RandomEdgeTrim` cuts a random stretch off the start and the end of training
utterances; :class:`RandomEndpointTrim` cuts the quiet frames at the edges, as a silence
remover with a random threshold would.  Corpora of isolated words are often trimmed by an energy-based silence
remover that also eats weak speech at the edges: in FSDD the held-out speaker's "six"
is voiced from its first 20 ms and has no final /s/, where two training speakers' files
hold 40-60 ms of /s/ first.  A model that has only heard "six" with its /s/ reads his as
EIGHT or THREE (36 of his 50 sixes, docs/RESULTS.md).  Trimming the training audio the
same way teaches it the rest of the word.  Frames are cut in whole feature frames, so
the features of a trimmed cut are a slice of the stored matrix (read once and kept by
:class:`~dsr.training.datamodule.CachedFeatures`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut, MonoCut
from lhotse.utils import fastcopy


class _EdgeTrim:
    """Shared part of the edge trims: a lhotse cut transform ``trim(cuts) -> cuts``.

    :meth:`draw` says how many whole frames to cut off each edge; the cut keeps at least
    ``min_keep`` of its duration, and its supervision is cut to the new span (so one
    supervision per cut stays one).  Cuts without features or with several supervisions
    pass unchanged.  Draws come from torch's global generator, which training seeds and
    checkpoints, so a resumed run trims as the uninterrupted one would.
    """

    def __init__(self, p: float, min_keep: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1] (got {p})")
        if not 0.0 < min_keep <= 1.0:
            raise ValueError(f"min_keep must be in (0, 1] (got {min_keep})")
        self.p = p
        self.min_keep = min_keep

    def draw(self, cut: MonoCut) -> tuple[int, int]:
        """Frames to cut off the (start, end) of ``cut``, before the ``min_keep`` limit."""
        raise NotImplementedError

    def trim_cut(self, cut: Cut) -> Cut:
        if not isinstance(cut, MonoCut) or cut.features is None or len(cut.supervisions) != 1:
            return cut
        shift = cut.features.frame_shift
        spare = int(cut.duration * (1.0 - self.min_keep) / shift)
        drawn = self.draw(cut)
        head, tail = min(drawn[0], spare), min(drawn[1], max(0, spare - drawn[0]))
        if head == 0 and tail == 0:
            return cut
        start, duration = head * shift, cut.duration - (head + tail) * shift
        sup = cut.supervisions[0]
        new_sup = fastcopy(sup, start=max(0.0, sup.start - start))
        new_sup = fastcopy(new_sup, duration=min(sup.end - start, duration) - new_sup.start)
        # Same id: lhotse keys nothing on it, and logs/alignments stay readable.
        return fastcopy(cut, start=cut.start + start, duration=duration, supervisions=[new_sup])

    def __call__(self, cuts: CutSet) -> CutSet:
        return CutSet.from_cuts([self.trim_cut(c) for c in cuts])


class RandomEdgeTrim(_EdgeTrim):
    """Trim up to ``max_seconds`` off each edge of every cut, independently per edge.

    Each edge is trimmed with probability ``p`` by a uniform number of whole frames in
    ``[0, max_seconds]`` (see :class:`_EdgeTrim` for ``min_keep`` and supervisions).

    Args:
        max_seconds: the most trimmed from one edge, > 0.
        p: probability of trimming each edge, in [0, 1].
        min_keep: fraction of the duration always kept, in (0, 1].
    """

    def __init__(self, max_seconds: float, p: float = 0.5, min_keep: float = 0.6) -> None:
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0 (got {max_seconds})")
        super().__init__(p, min_keep)
        self.max_seconds = max_seconds

    def draw(self, cut: MonoCut) -> tuple[int, int]:
        coin, frames = torch.rand(2), torch.randint(0, int(self.max_seconds / cut.features.frame_shift) + 1, (2,))
        return tuple(int(f) if c < self.p else 0 for c, f in zip(coin, frames))  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"RandomEdgeTrim(max_seconds={self.max_seconds}, p={self.p}, min_keep={self.min_keep})"


class RandomEndpointTrim(_EdgeTrim):
    """Trim each edge as an energy-based silence remover with a random threshold would.

    With probability ``p`` per edge, a threshold ``theta`` is drawn uniformly in
    ``[max_db / 2, max_db]`` dB below the cut's loudest frame, and the frames at that edge
    quieter than it are cut off (frame energy = log of the summed mel power).  Unlike
    :class:`RandomEdgeTrim`, how much speech goes does not depend on how much silence a
    file holds: weak onsets and codas (/s/, /f/, /k/ bursts) go first, as in corpora cut by
    such a tool.  ``min_keep`` and the supervision handling are as in :class:`_EdgeTrim`.

    Args:
        max_db: the highest threshold, in dB below the peak, > 0 (e.g. 40).
        load_features: ``cut -> (num_frames, num_mel_bins)`` log-mel matrix (the
            training loader's feature reader, so nothing is read twice).
        p: probability of trimming each edge.
        min_keep: fraction of the duration always kept.
        whisper_log_mel: the features are Whisper's ``(log10(power) + 4) / 4`` instead of
            Kaldi's natural-log power; they are converted back before measuring energy.
    """

    def __init__(
        self,
        max_db: float,
        load_features: Callable[[Cut], np.ndarray],
        p: float = 0.5,
        min_keep: float = 0.6,
        whisper_log_mel: bool = False,
    ) -> None:
        if max_db <= 0:
            raise ValueError(f"max_db must be > 0 (got {max_db})")
        super().__init__(p, min_keep)
        self.max_db = max_db
        self.load_features = load_features
        self.whisper_log_mel = whisper_log_mel
        self._energy: dict[tuple[str, float, float], np.ndarray] = {}

    def energy_db(self, cut: MonoCut) -> np.ndarray:
        """(num_frames,) frame energy in dB relative to the loudest frame (<= 0)."""
        key = (cut.id, cut.start, cut.duration)
        db = self._energy.get(key)
        if db is None:
            feats = self.load_features(cut).astype(np.float64)
            if self.whisper_log_mel:
                feats = (4.0 * feats - 4.0) * np.log(10.0)  # natural log of the mel power
            peak = feats.max(axis=1, keepdims=True)
            log_power = peak[:, 0] + np.log(np.exp(feats - peak).sum(axis=1))
            db = (log_power - log_power.max()) * (10.0 / np.log(10.0))
            self._energy[key] = db.astype(np.float32)
        return db

    def draw(self, cut: MonoCut) -> tuple[int, int]:
        db = self.energy_db(cut)
        coin, theta = torch.rand(2), (0.5 + 0.5 * torch.rand(2)) * self.max_db
        loud = [np.flatnonzero(db >= -float(t)) for t in theta]
        head = int(loud[0][0]) if coin[0] < self.p else 0
        tail = len(db) - 1 - int(loud[1][-1]) if coin[1] < self.p else 0
        return head, tail

    def __repr__(self) -> str:
        return f"RandomEndpointTrim(max_db={self.max_db}, p={self.p}, min_keep={self.min_keep})"
