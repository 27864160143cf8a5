"""HybridTransducer with any subset of heads (transducer, CTC, attention decoder)."""

from __future__ import annotations

import itertools

import pytest
import torch

from dsr.models import HybridTransducer, ModelConfig, build_model

torch.set_num_threads(1)

FEAT = 20


def config(**kw) -> ModelConfig:
    args = dict(
        feature_dim=FEAT,
        encoder_dim=32,
        num_encoder_layers=1,
        num_heads=4,
        ffn_dim=64,
        conv_kernel_size=5,
        subsampling_channels=(4, 8),
        decoder_dim=24,
        joiner_dim=40,
        vocab_size=12,
        attention_decoder_dim=16,
        attention_decoder_heads=2,
        attention_decoder_ffn_dim=32,
    )
    args.update(kw)
    return ModelConfig(**args)


HEADS = [
    (transducer, ctc, att) for transducer, ctc, att in itertools.product((True, False), repeat=3) if transducer or ctc
]


@pytest.mark.parametrize("transducer,ctc,att", HEADS)
def test_forward_returns_each_head_loss_and_backward_reaches_every_parameter(transducer, ctc, att) -> None:
    torch.manual_seed(0)
    model = build_model(config(use_transducer=transducer, use_ctc=ctc, attention_decoder_layers=2 if att else 0))
    model.train()
    assert model.has_transducer == transducer and (model.ctc_output is not None) == ctc
    assert (model.attention_decoder is not None) == att
    out = model(torch.randn(2, 60, FEAT), torch.tensor([60, 41]), [[3, 4, 5], [6, 7]])
    expected = (
        ({"simple_loss", "pruned_loss"} if transducer else set())
        | ({"ctc_loss"} if ctc else set())
        | ({"attention_loss"} if att else set())
    )
    losses = {k for k in out if k.endswith("_loss")}
    assert losses == expected
    assert out["num_tokens"].item() == 5 and out["num_frames"].item() == 14 + 9
    total = sum(out[k] for k in losses)
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []


def test_a_model_needs_ctc_or_transducer() -> None:
    with pytest.raises(ValueError, match="transducer or a CTC head"):
        build_model(config(use_transducer=False, use_ctc=False))
    model = build_model(config())
    with pytest.raises(ValueError, match="both"):
        HybridTransducer(model.encoder, model.predictor, None, 12)
    with pytest.raises(ValueError, match="attention_decoder_layers"):
        build_model(config(attention_decoder_layers=-1))


def test_old_model_config_dicts_still_load() -> None:
    """A checkpoint's model_config written before the attention decoder and the optional
    transducer existed builds the same model as then (same parameter names)."""
    old = {
        "feature_dim": FEAT,
        "encoder_dim": 32,
        "num_encoder_layers": 1,
        "num_heads": 4,
        "ffn_dim": 64,
        "conv_kernel_size": 5,
        "dropout": 0.1,
        "subsampling_channels": [4, 8],
        "decoder_dim": 24,
        "joiner_dim": 40,
        "context_size": 2,
        "causal": False,
        "chunk_size": -1,
        "left_context_chunks": -1,
        "vocab_size": 12,
        "blank_id": 0,
        "use_ctc": True,
    }
    cfg = ModelConfig.from_dict(old)
    assert cfg.use_transducer and cfg.attention_decoder_layers == 0
    keys = set(build_model(cfg).state_dict())
    assert not any(k.startswith("attention_decoder") for k in keys)
    assert {
        "simple_am_proj.weight",
        "simple_lm_proj.weight",
        "joiner.output_linear.weight",
        "ctc_output.1.weight",
        "feature_mean",
    } <= keys
    assert ModelConfig.from_dict(config(attention_decoder_layers=2).to_dict()) == config(attention_decoder_layers=2)


def test_return_outputs_for_distillation() -> None:
    torch.manual_seed(0)
    model = build_model(config(attention_decoder_layers=1)).eval()
    feats = torch.randn(2, 60, FEAT, generator=torch.Generator().manual_seed(1))
    lens = torch.tensor([60, 41])
    out = model(feats, lens, [[3, 4, 5], [6, 7]], return_outputs=True)
    assert out["encoder_lens"].tolist() == [14, 9]
    assert out["ctc_log_probs"].shape == (2, 14, 12)
    ranges, logits = out["prune_ranges"], out["pruned_logits"]
    assert logits.shape == (*ranges.shape, 12)
    # The public pruned_joiner_logits recomputes the same cells (what a teacher uses).
    with torch.no_grad():
        enc, _ = model.encode(feats, lens)
        again = model.pruned_joiner_logits(enc, out["sos_y_padded"], ranges)
    torch.testing.assert_close(again, logits.detach(), rtol=1e-5, atol=1e-5)
    plain = model(feats, lens, [[3, 4, 5], [6, 7]])
    assert "pruned_logits" not in plain and "ctc_log_probs" not in plain


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(use_transducer=False, ctc_loss_scale=0.0), "use_transducer=False needs ctc_loss_scale"),
        (dict(attention_decoder_layers=-1), "attention_decoder_layers must be"),
        (dict(attention_decoder_layers=2, attention_loss_scale=0.0), "attention_loss_scale > 0"),
        (dict(attention_decoder_layers=2, label_smoothing=1.0), "label_smoothing"),
        (dict(attention_decoder_layers=2, attention_decoder_dim=90, attention_decoder_heads=4), "divisible"),
    ],
)
def test_train_config_head_options_are_validated(kw: dict, match: str) -> None:
    from dsr.errors import DsrUserError
    from dsr.training.config import TrainConfig

    with pytest.raises(DsrUserError, match=match):
        TrainConfig.from_dict(kw).validate()


def test_train_config_builds_the_heads_it_names(tmp_path) -> None:
    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import model_config_from

    train_bpe(
        ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"] * 30,
        tmp_path,
        vocab_size=40,
    )
    cfg = TrainConfig.from_dict(
        dict(
            use_transducer=False,
            attention_decoder_layers=3,
            attention_decoder_dim=64,
            attention_decoder_heads=2,
            attention_decoder_ffn_dim=128,
        )
    )
    cfg.validate()
    mcfg = model_config_from(cfg, Tokenizer(tmp_path))
    assert (mcfg.use_transducer, mcfg.attention_decoder_layers, mcfg.attention_decoder_dim) == (False, 3, 64)
    assert (mcfg.attention_decoder_heads, mcfg.attention_decoder_ffn_dim, mcfg.sos_eos_id) == (2, 128, 1)
