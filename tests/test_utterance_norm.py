"""Per-utterance feature normalisation: exact statistics, padding-invariant, the same in the
training loss and in decoding, stored in the model config; comma-separated train cuts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_models import FEAT, small_config
from tiny_corpus import write_feature_cuts

from dsr.data.cuts import load_cut_list
from dsr.errors import DsrUserError
from dsr.models import ModelConfig, build_model
from dsr.models.streaming import StreamingEncoder
from dsr.models.utterance_norm import normalize_utterances
from dsr.training.config import ModelOptions, TrainConfig


def _padded(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(3, 60, FEAT, generator=g) * 3 + 2
    return feats, torch.tensor([60, 45, 33])


@pytest.mark.parametrize("mode", ["mean", "mean-var"])
def test_statistics_over_valid_frames_only(mode: str) -> None:
    feats, lens = _padded()
    feats[1, 45:] = 1e6  # padding must not leak into the statistics
    out = normalize_utterances(feats, lens, mode)
    for i, n in enumerate(lens.tolist()):
        valid = out[i, :n]
        torch.testing.assert_close(valid.mean(0), torch.zeros(FEAT), atol=1e-5, rtol=0)
        if mode == "mean-var":
            torch.testing.assert_close(valid.pow(2).mean(0), torch.ones(FEAT), atol=1e-4, rtol=0)
        else:
            torch.testing.assert_close(valid, feats[i, :n] - feats[i, :n].mean(0))
        assert bool((out[i, n:] == 0).all())
    # Each utterance alone gives what it gives inside the padded batch.
    alone = normalize_utterances(feats[2:3, :33], lens[2:3], mode)
    torch.testing.assert_close(alone[0], out[2, :33])


def test_none_is_identity_and_bad_arguments() -> None:
    feats, lens = _padded()
    assert normalize_utterances(feats, lens, "none") is feats
    with pytest.raises(ValueError, match="mode"):
        normalize_utterances(feats, lens, "global")
    with pytest.raises(ValueError, match="frame"):
        normalize_utterances(feats, torch.tensor([60, 0, 3]), "mean")
    with pytest.raises(ValueError, match="lengths"):
        normalize_utterances(feats, lens[:2], "mean")


def test_constant_bins_are_not_blown_up() -> None:
    feats, lens = _padded()
    feats[:, :, 0] = -15.0  # e.g. a mel bin above the band edge of 8 kHz audio
    out = normalize_utterances(feats, lens, "mean-var")
    assert bool(torch.isfinite(out).all()) and float(out[:, :, 0].abs().max()) == 0.0


def _shifted(feats: torch.Tensor) -> torch.Tensor:
    """A recording level change (same constant on every bin) plus a channel (constant per bin)."""
    return feats - 3.2 + torch.linspace(-1.0, 1.0, FEAT)


def test_model_is_invariant_to_level_and_channel_in_training_loss_and_decoding() -> None:
    """The transform runs in ``encode``: the training loss (``forward``) and decoding
    (``encode`` + heads) both see it, so a 15 dB quieter speaker looks the same to both."""
    torch.manual_seed(0)
    model = build_model(small_config(utterance_norm="mean")).eval()
    model.set_feature_stats(torch.full((FEAT,), 1.0), torch.full((FEAT,), 2.0))
    feats, lens = _padded()
    targets = [[1, 2, 3], [4, 5], [6]]
    enc, enc_lens = model.encode(feats, lens)
    enc2, enc_lens2 = model.encode(_shifted(feats), lens)
    torch.testing.assert_close(enc, enc2, atol=1e-4, rtol=1e-4)
    assert torch.equal(enc_lens, enc_lens2)
    loss, loss2 = model(feats, lens, targets), model(_shifted(feats), lens, targets)
    for key in ("simple_loss", "pruned_loss", "ctc_loss"):
        torch.testing.assert_close(loss[key], loss2[key], atol=1e-3, rtol=1e-4)
    # Without it the same shift changes what the model computes.
    torch.manual_seed(0)
    plain = build_model(small_config()).eval()
    assert not torch.allclose(plain.encode(feats, lens)[0], plain.encode(_shifted(feats), lens)[0], atol=1e-3)


def test_config_round_trip_and_streaming_refused() -> None:
    cfg = small_config(utterance_norm="mean-var", causal=True, chunk_size=4)
    assert ModelConfig.from_dict(cfg.to_dict()).utterance_norm == "mean-var"
    assert ModelConfig.from_dict({}).utterance_norm == "none"  # checkpoints from before the option
    model = build_model(cfg)
    assert model.utterance_norm == "mean-var"
    with pytest.raises(ValueError, match="stream"):
        StreamingEncoder(model, chunk_size=4, left_context_chunks=-1)
    with pytest.raises(ValueError, match="utterance_norm"):
        build_model(small_config(utterance_norm="cmvn"))


def test_train_config_validation() -> None:
    TrainConfig(model=ModelOptions(utterance_norm="mean")).validate()
    with pytest.raises(DsrUserError, match="utterance_norm"):
        TrainConfig(model=ModelOptions(utterance_norm="cmvn")).validate()
    with pytest.raises(DsrUserError, match="utterance_norm"):
        TrainConfig(model=ModelOptions(utterance_norm="mean", chunk_sizes="8,16")).validate()


def test_comma_separated_train_cuts_are_concatenated(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_feature_cuts(tmp_path / "a", ["one", "two"], (30, 40))
    b = write_feature_cuts(tmp_path / "b", ["three"], (50,), seed=6)
    cuts = load_cut_list(f"{a},{b}")
    assert [c.supervisions[0].text for c in cuts] == ["one", "two", "three"]
    assert len(load_cut_list(str(a))) == 2
    with pytest.raises(ValueError, match="comma"):
        load_cut_list(f"{a},")
    with pytest.raises(DsrUserError, match="does not exist"):
        load_cut_list(f"{a},{tmp_path / 'missing.jsonl.gz'}")
