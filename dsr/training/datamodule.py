"""Training batches of precomputed features from a cuts manifest (lhotse dynamic bucketing,
augmentation, resumable sampling).

Reading manifests, sampling and padding are :mod:`dsr.data.cuts`, which decoding uses too,
so both read features the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut, MonoCut
from lhotse.dataset import DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler, SpecAugment
from lhotse.dataset.input_strategies import PrecomputedFeatures

from dsr.data.cuts import drop_speed_perturbed, filter_cuts, load_cut_list, make_sampler, pad_features
from dsr.errors import DsrUserError
from dsr.features.fbank import FbankConfig
from dsr.features.frontend import FrontendConfig, frontend_type
from dsr.training.cut_augment import RandomEdgeTrim, RandomEndpointTrim
from dsr.training.feature_augment import MelFrequencyWarp, RandomGain


def load_training_cuts(paths: str, min_duration: float, max_duration: float, speed_perturbed: bool = True) -> CutSet:
    """The cuts of ``paths`` (comma-separated manifests) that training reads, in memory.

    Cuts outside [``min_duration``, ``max_duration``] are dropped, and with ``speed_perturbed``
    false so are the 0.9x/1.1x copies of ``dsr features --speed-perturb``.  No cut left is a
    user error naming the manifests.
    """
    cuts = filter_cuts(load_cut_list(paths), min_duration, max_duration)
    if not speed_perturbed:
        cuts = drop_speed_perturbed(cuts)
    cuts = cuts.to_eager()
    if len(cuts) == 0:
        kept = "" if speed_perturbed else " at original speed"
        raise DsrUserError(f"{paths} has no cuts{kept} between {min_duration} and {max_duration} s")
    return cuts


class CachedFeatures(PrecomputedFeatures):
    """lhotse's ``PrecomputedFeatures`` that keeps the decoded matrices of up to ``max_bytes`` in memory.

    Every epoch after the first reads its features from memory instead of decompressing
    lilcom chunks and padding through lhotse's ``MixedCut`` machinery: that was ~16 ms of
    a ~230 ms update on the embedded recipe.  The batches are bit-identical to lhotse's
    (padding value ``LOG_EPSILON``, float32; ``tests/test_datamodule.py``), and loading
    draws no random numbers, so training is unchanged.  Cuts beyond the budget are read
    from disk every time (no eviction: with shuffled epochs any policy hits the same
    fraction, and this one never churns).
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.cached_bytes = 0
        self._cache: dict[tuple, np.ndarray] = {}

    def load(self, cut: Cut) -> np.ndarray:
        """The (num_frames, num_features) float32 matrix of ``cut``.

        A cut's own stored matrix is kept whole, keyed by its storage, so cuts that are
        windows of it (:class:`~dsr.training.cut_augment.RandomEdgeTrim`) are slices of
        one entry; other cuts (mixes) are kept as loaded.
        """
        stored = cut.features if isinstance(cut, MonoCut) else None
        if stored is None or cut.start < stored.start:
            return self._cached(cut, (cut.id, cut.start, cut.duration), cut.load_features, cut.num_frames)
        key = (stored.storage_path, stored.storage_key, stored.start, stored.duration)
        whole = self._cached(cut, key, stored.load, stored.num_frames)
        first = round((cut.start - stored.start) / stored.frame_shift)
        if first + cut.num_frames > whole.shape[0]:
            return cut.load_features()
        return whole[first : first + cut.num_frames]

    def _cached(self, cut: Cut, key: tuple, load: Callable[[], np.ndarray], num_frames: int) -> np.ndarray:
        feats = self._cache.get(key)
        if feats is None:
            feats = load()
            if feats.shape[0] != num_frames:
                raise RuntimeError(
                    f"cut {cut.id}: {feats.shape[0]} feature frames stored, manifest says "
                    f"{num_frames}; recompute the features (dsr features --force)"
                )
            if self.cached_bytes + feats.nbytes <= self.max_bytes:
                self._cache[key] = feats
                self.cached_bytes += feats.nbytes
        return feats

    def __call__(self, cuts: CutSet, pad_direction: str | None = "right") -> tuple[torch.Tensor, torch.Tensor]:
        if pad_direction != "right":
            return super().__call__(cuts, pad_direction)
        lens = torch.tensor([cut.num_frames for cut in cuts], dtype=torch.int)
        return pad_features([torch.from_numpy(self.load(cut)) for cut in cuts]), lens


class ResumableSampler(torch.utils.data.Sampler):
    """A lhotse sampler whose next pass can start after the first ``n`` batches of the epoch.

    Resuming mid-epoch replays the sampler (cut metadata only, no features are
    loaded) instead of restoring lhotse's saved state: the replay is exact for
    every sampler type and every rank of a distributed job, whereas the saved state
    of a ``SimpleCutSampler`` fast-forwards by this rank's cuts only (wrong with
    several ranks), and a saved state also counts the batches that DataLoader
    workers had prefetched but training never used.
    """

    def __init__(self, sampler: DynamicBucketingSampler | SimpleCutSampler) -> None:
        super().__init__()
        self.sampler = sampler
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def skip_batches(self, num_batches: int) -> None:
        """Make the next pass over the epoch leave out its first ``num_batches`` batches."""
        if num_batches < 0:
            raise ValueError(f"num_batches must be >= 0, got {num_batches}")
        self._skip = num_batches

    def __iter__(self) -> Iterator[CutSet]:
        batches = iter(self.sampler)
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            if next(batches, None) is None:
                return iter(())
        return batches


def make_loader(
    cuts: CutSet,
    max_duration: float,
    shuffle: bool,
    spec_augment: bool = False,
    freq_warp: float = 0.0,
    gain_db: float = 0.0,
    edge_trim: float = 0.0,
    endpoint_trim_db: float = 0.0,
    edge_trim_keep: float = 0.6,
    num_workers: int = 0,
    num_buckets: int = 10,
    seed: int = 0,
    world_size: int | None = None,
    rank: int | None = None,
    feature_cache: CachedFeatures | None = None,
    frontend: FrontendConfig = FbankConfig(),
) -> tuple[torch.utils.data.DataLoader, ResumableSampler]:
    """A DataLoader of ``{"inputs": (N, T, F), "supervisions": {...}, "cut": [...]}`` batches.

    ``max_duration`` is the total seconds of audio in a batch; dynamic bucketing
    groups similar lengths so padding stays small.  ``gain_db`` > 0 applies
    :class:`~dsr.training.feature_augment.RandomGain` and ``freq_warp`` > 0
    :class:`~dsr.training.feature_augment.MelFrequencyWarp`, both before SpecAugment; ``edge_trim`` > 0
    trims up to that many seconds off each edge of the cuts and ``endpoint_trim_db`` > 0 trims
    them as a silence remover would (:class:`~dsr.training.cut_augment.RandomEndpointTrim`), keeping
    ``edge_trim_keep`` of each (:class:`~dsr.training.cut_augment.RandomEdgeTrim`).  With ``world_size`` > 1 the
    loader yields rank ``rank``'s share: every ``world_size``-th batch, and the same
    number of batches on every rank (lhotse splits the last ones to ensure it).
    A ``feature_cache`` keeps decoded features in memory for loaders that see the cuts
    again (training epochs, validation); several loaders may share one (and its budget);
    each DataLoader worker process holds its own copy.  ``frontend`` is the front end the
    cuts' features were computed with (the gain and warp depend on its log scale and mel layout).
    """
    if max_duration <= 0:
        raise ValueError(f"max_duration must be > 0, got {max_duration}")
    transforms: list[Callable[..., Any]] = []  # feature transforms of the dataset, applied in order
    if gain_db > 0:
        transforms.append(RandomGain(gain_db, fbank=frontend))
    if freq_warp > 0:
        transforms.append(MelFrequencyWarp(freq_warp, fbank=frontend))
    if spec_augment:
        # Time warping is off: it needs per-utterance resampling that costs CPU time for little gain at this scale.
        transforms.append(
            SpecAugment(time_warp_factor=0, num_frame_masks=2, features_mask_size=15, frames_mask_size=20, p=0.9)
        )
    if edge_trim > 0 and endpoint_trim_db > 0:
        raise ValueError("give edge_trim or endpoint_trim_db, not both")
    inputs = feature_cache if feature_cache is not None else PrecomputedFeatures()
    cut_transforms: list[Callable[..., Any]] = []
    if edge_trim > 0:
        cut_transforms.append(RandomEdgeTrim(edge_trim, min_keep=edge_trim_keep))
    if endpoint_trim_db > 0:
        read = feature_cache.load if feature_cache is not None else lambda cut: cut.load_features()
        cut_transforms.append(
            RandomEndpointTrim(
                endpoint_trim_db,
                read,
                min_keep=edge_trim_keep,
                whisper_log_mel=frontend_type(frontend) == "whisper-fbank",
            )
        )
    dataset = K2SpeechRecognitionDataset(
        cut_transforms=cut_transforms, input_transforms=transforms, input_strategy=inputs, return_cuts=True
    )
    sampler = make_sampler(cuts, max_duration, shuffle, num_buckets, seed, world_size, rank)
    resumable = ResumableSampler(sampler)
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=resumable,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
    )
    return loader, resumable


def batch_texts(batch: dict) -> list[str]:
    return list(batch["supervisions"]["text"])


def batch_features(batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, T, F) and their lengths (N,) on ``device``."""
    feats = batch["inputs"].to(device)
    sup = batch["supervisions"]
    # One supervision per cut, starting at frame 0: num_frames is the valid length.
    lens = sup["num_frames"].to(device)
    order = sup["sequence_idx"]
    if not torch.equal(order, torch.arange(len(order))):
        raise RuntimeError("dsr expects one supervision per cut in batch order")
    return feats, lens
