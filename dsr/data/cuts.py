"""Cuts manifests: loading, filtering, batch sampling and padding.

Shared by training (:mod:`dsr.training.datamodule`) and decoding
(:mod:`dsr.data.batches`) so that both read and batch features the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from lhotse import CutSet, combine
from lhotse.dataset import DynamicBucketingSampler, SimpleCutSampler
from lhotse.utils import LOG_EPSILON

from dsr.data.cut_paths import check_feature_storage, resolve_feature_paths
from dsr.errors import DsrUserError


def load_cuts(path: Path | str) -> CutSet:
    path = Path(path)
    if not path.is_file():
        raise DsrUserError(f"cuts manifest {path} does not exist; run the features stage (dsr features) first")
    # Feature paths of older manifests are relative to where `dsr features` ran: resolve them here.
    return resolve_feature_paths(CutSet.from_file(path), path)


def load_cut_list(paths: str) -> CutSet:
    """Comma-separated cuts manifests, concatenated in order (e.g. a corpus plus synthetic
    pretraining data, without writing a combined manifest)."""
    parts = [p.strip() for p in paths.split(",")]
    if not paths.strip() or not all(parts):
        raise ValueError(f"expected comma-separated manifest paths, got {paths!r}")
    cut_sets = [load_cuts(p) for p in parts]
    # Training reads every cut many times: a truncated feature file is one line now, not a
    # decompression traceback mid-epoch (decoding instead skips and lists such cuts).
    for path, cuts in zip(parts, cut_sets):
        check_feature_storage(cuts, path)
    return cut_sets[0] if len(cut_sets) == 1 else combine(*cut_sets)


def filter_cuts(cuts: CutSet, min_duration: float, max_duration: float) -> CutSet:
    """Drop cuts whose duration the model cannot (or should not) train on."""
    return cuts.filter(lambda c: min_duration <= c.duration <= max_duration)


_SPEED_COPY_ID = re.compile(r"_sp\d+(\.\d+)?$")


def is_speed_perturbed(cut_id: str) -> bool:
    """True for the 0.9x/1.1x copies ``dsr features --speed-perturb`` adds (ids ``<id>_sp0.9``)."""
    return _SPEED_COPY_ID.search(cut_id) is not None


def drop_speed_perturbed(cuts: CutSet) -> CutSet:
    """Keep the original-speed cuts of a manifest made with ``--speed-perturb``."""
    return cuts.filter(lambda c: not is_speed_perturbed(c.id))


def pad_features(feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """(T_i, F) matrices -> (N, max T_i, F) float32, right-padded with ``LOG_EPSILON``.

    The value and dtype lhotse's collation pads with (float64 ``LOG_EPSILON`` stored as
    float32), so batches built here equal lhotse's.
    """
    out = torch.full((len(feats), max(f.size(0) for f in feats), feats[0].size(1)), LOG_EPSILON, dtype=torch.float32)
    for i, f in enumerate(feats):
        out[i, : f.size(0)] = f
    return out


def make_sampler(
    cuts: CutSet,
    max_duration: float,
    shuffle: bool,
    num_buckets: int = 10,
    seed: int = 0,
    world_size: int | None = None,
    rank: int | None = None,
) -> DynamicBucketingSampler | SimpleCutSampler:
    """Batches of ``cuts`` of at most ``max_duration`` seconds of audio each.

    Dynamic bucketing groups similar lengths so padding stays small; a set too small for
    two buckets of four cuts gets one simple sampler.  With ``world_size`` > 1 it yields
    rank ``rank``'s share of the batches.
    """
    if hasattr(cuts, "__len__"):
        # Buckets need several cuts each to be worth it; tiny sets use one simple sampler.
        num_buckets = min(num_buckets, len(cuts) // 4)
    if num_buckets < 2:
        sampler = SimpleCutSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, seed=seed, world_size=world_size, rank=rank
        )
    else:
        sampler = DynamicBucketingSampler(
            cuts,
            max_duration=max_duration,
            shuffle=shuffle,
            num_buckets=num_buckets,
            seed=seed,
            drop_last=False,
            world_size=world_size,
            rank=rank,
            buffer_size=20000,
        )
    return sampler
