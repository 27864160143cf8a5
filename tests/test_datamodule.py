"""The in-memory feature cache gives the same batches, random draws included, as lhotse's reader."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from dsr.data.cuts import load_cuts
from dsr.training.datamodule import CachedFeatures, make_loader
from tests.tiny_corpus import write_feature_cuts

FRAMES = (37, 120, 64, 90, 15, 101, 77, 52, 33, 118, 46, 88)


def _cuts(tmp_path: Path):
    texts = [f"WORD {i}" for i in range(len(FRAMES))]
    return load_cuts(write_feature_cuts(tmp_path, texts, FRAMES)).to_eager()


def _epochs(cuts, cache: CachedFeatures | None, num_epochs: int = 2, **trim: float) -> list[dict]:
    random.seed(3)
    torch.manual_seed(3)
    np.random.seed(3)
    loader, sampler = make_loader(
        cuts,
        max_duration=2.5,
        shuffle=True,
        spec_augment=True,
        gain_db=10.0,
        freq_warp=0.1,
        num_buckets=2,
        feature_cache=cache,
        **trim,
    )
    batches = []
    for epoch in range(1, num_epochs + 1):
        sampler.set_epoch(epoch)
        batches += list(loader)
    return batches


# trimmed cuts are slices of the cached matrix
@pytest.mark.parametrize("trim", [{}, {"edge_trim": 0.12}, {"endpoint_trim_db": 3.0, "edge_trim_keep": 0.5}])
@pytest.mark.parametrize("budget_mb", [16.0, 0.02])  # everything cached / only a few cuts fit
def test_cached_batches_equal_lhotse_reader(tmp_path, budget_mb, trim):
    cuts = _cuts(tmp_path)
    cache = CachedFeatures(int(budget_mb * 2**20))
    reference, cached = _epochs(cuts, None, **trim), _epochs(cuts, cache, **trim)
    assert len(reference) == len(cached) > 2
    for a, b in zip(reference, cached):
        assert torch.equal(a["inputs"], b["inputs"])  # padding value, augmentation draws, order
        assert torch.equal(a["supervisions"]["num_frames"], b["supervisions"]["num_frames"])
        assert a["supervisions"]["text"] == b["supervisions"]["text"]
    if trim:
        lengths = sorted(int(n) for batch in cached for n in batch["supervisions"]["num_frames"])
        assert lengths != sorted(FRAMES * 2)  # some cuts were trimmed
    assert 0 < cache.cached_bytes <= cache.max_bytes
    if budget_mb > 1:
        assert cache.cached_bytes == sum(f * 80 * 4 for f in FRAMES)


def test_cache_serves_from_memory_after_first_read(tmp_path):
    cuts = _cuts(tmp_path)
    cache = CachedFeatures(2**24)
    first = cache.load(cuts[0])
    (tmp_path / "feats.lca").unlink()  # a second read from disk would fail now
    assert np.array_equal(cache.load(cuts[0]), first)
    with pytest.raises(FileNotFoundError):
        cache.load(cuts[1])


def test_cache_rejects_negative_budget():
    with pytest.raises(ValueError, match="max_bytes"):
        CachedFeatures(-1)


def test_speed_perturbed_copies_dropped_on_request(tmp_path):
    """--no-speed-perturbed keeps the original-speed cuts of a --speed-perturb manifest, and
    a manifest with none left is one error naming it."""
    from lhotse import CutSet

    from dsr.data.cuts import is_speed_perturbed
    from dsr.errors import DsrUserError
    from dsr.training.datamodule import load_training_cuts

    cuts = _cuts(tmp_path)
    ids = ["a", "a_sp0.9", "a_sp1.1", "b_sp1.1", "c_spx", "d_sp1", "e_sp0.9"] + [f"f{i}" for i in range(5)]
    renamed = CutSet.from_cuts(c.with_id(i) for c, i in zip(cuts, ids))
    path = tmp_path / "sp_cuts.jsonl.gz"
    renamed.to_file(path)
    assert [is_speed_perturbed(i) for i in ids[:7]] == [False, True, True, True, False, True, True]
    all_cuts = load_training_cuts(str(path), 0.0, 30.0)
    assert len(all_cuts) == len(ids)
    kept = load_training_cuts(str(path), 0.0, 30.0, speed_perturbed=False)
    assert [c.id for c in kept] == ["a", "c_spx"] + [f"f{i}" for i in range(5)]
    only_copies = tmp_path / "copies.jsonl.gz"
    CutSet.from_cuts(c for c in renamed if is_speed_perturbed(c.id)).to_file(only_copies)
    with pytest.raises(DsrUserError, match="no cuts at original speed"):
        load_training_cuts(str(only_copies), 0.0, 30.0, speed_perturbed=False)
