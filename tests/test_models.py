"""Shapes, masking and streaming properties of the models in ``dsr.models``."""

from __future__ import annotations

import pytest
import torch

from dsr.models import (
    ConformerEncoder,
    Conv2dSubsampling,
    HybridTransducer,
    Joiner,
    ModelConfig,
    StatelessPredictor,
    build_model,
    chunk_attention_mask,
    count_parameters,
)

FEAT = 20  # small feature dim keeps the tests fast; 80 is covered by the default-config test


def small_encoder(**kw) -> ConformerEncoder:
    torch.manual_seed(0)
    args = dict(input_dim=FEAT, d_model=32, num_layers=2, num_heads=4, ffn_dim=64, conv_kernel_size=5, dropout=0.1)
    args.update(kw)
    return ConformerEncoder(**args).eval()


def small_config(**kw) -> ModelConfig:
    args = dict(
        feature_dim=FEAT,
        encoder_dim=32,
        num_encoder_layers=2,
        num_heads=4,
        ffn_dim=64,
        conv_kernel_size=5,
        subsampling_channels=(4, 8),
        decoder_dim=24,
        joiner_dim=40,
        vocab_size=12,
    )
    args.update(kw)
    return ModelConfig(**args)


# ---------------------------------------------------------------- subsampling


@pytest.mark.parametrize("t", range(7, 40))
def test_subsampling_output_length_formula(t: int) -> None:
    sub = Conv2dSubsampling(FEAT, 16, channels=(4, 8))
    y, lens = sub(torch.randn(2, t, FEAT), torch.tensor([t, 7]))
    assert y.shape == (2, Conv2dSubsampling.output_lengths(t), 16)
    assert lens.tolist() == [Conv2dSubsampling.output_lengths(t), 1]


def test_subsampling_rejects_short_or_bad_input() -> None:
    sub = Conv2dSubsampling(FEAT, 16)
    with pytest.raises(ValueError, match="at least 7"):
        sub(torch.randn(1, 6, FEAT), torch.tensor([6]))
    with pytest.raises(ValueError, match="in \\[7"):
        sub(torch.randn(2, 20, FEAT), torch.tensor([20, 21]))
    with pytest.raises(ValueError, match="shape"):
        sub(torch.randn(1, 20, FEAT + 1), torch.tensor([20]))
    with pytest.raises(ValueError, match="integer"):
        sub(torch.randn(1, 20, FEAT), torch.tensor([20.0]))
    with pytest.raises(ValueError):
        Conv2dSubsampling(FEAT, 16, channels=(0, 8))


# ---------------------------------------------------------------- encoder


def test_encoder_shapes_and_lengths() -> None:
    enc = small_encoder()
    out, lens = enc(torch.randn(3, 100, FEAT), torch.tensor([100, 61, 7]))
    assert out.shape == (3, 24, 32)
    assert lens.tolist() == [24, 14, 1]
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("causal,chunk_size,left", [(False, -1, -1), (True, -1, -1), (True, 4, 0), (False, 3, 1)])
def test_encoder_padding_invariance(causal: bool, chunk_size: int, left: int) -> None:
    """An utterance's output must not depend on the padding added by a longer batch-mate."""
    enc = small_encoder(causal=causal, chunk_size=chunk_size, left_context_chunks=left)
    short = torch.randn(1, 60, FEAT)
    alone, alone_len = enc(short, torch.tensor([60]))
    # Garbage (not zeros) in the padding makes any leak visible.
    batch = torch.randn(2, 100, FEAT) * 3.0
    batch[1, :60] = short[0]
    batched, lens = enc(batch, torch.tensor([100, 60]))
    n = int(alone_len[0])
    assert int(lens[1]) == n
    torch.testing.assert_close(batched[1, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


def test_chunk_attention_mask_pattern() -> None:
    m = chunk_attention_mask(6, chunk_size=2, left_context_chunks=1)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 1, 1, 1, 1],
            [0, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    assert torch.equal(chunk_attention_mask(5, 2, -1), torch.arange(5)[None, :] // 2 <= torch.arange(5)[:, None] // 2)


@pytest.mark.parametrize("left", [0, 1, -1])
def test_chunked_causal_encoder_does_not_look_ahead(left: int) -> None:
    """With causal conv + chunked attention, later chunks cannot change earlier outputs."""
    chunk = 4
    enc = small_encoder(causal=True, chunk_size=chunk, left_context_chunks=left)
    x = torch.randn(1, 120, FEAT)
    out, _ = enc(x, torch.tensor([120]))  # 29 frames
    boundary = 2 * chunk  # first frame of chunk 2
    # Output frame t reads input frames 4t .. 4t+6, so inputs from 4*boundary+3 on
    # belong only to chunk 2 and later.
    y = x.clone()
    y[:, 4 * boundary + 3 :] = torch.randn_like(y[:, 4 * boundary + 3 :])
    out2, _ = enc(y, torch.tensor([120]))
    torch.testing.assert_close(out2[:, :boundary], out[:, :boundary], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out2[:, boundary:], out[:, boundary:])


def test_full_attention_does_look_ahead() -> None:
    """Sanity check of the test above: without chunking the future does leak."""
    enc = small_encoder(causal=True)
    x = torch.randn(1, 120, FEAT)
    out, _ = enc(x, torch.tensor([120]))
    y = x.clone()
    y[:, 35:] += 1.0
    out2, _ = enc(y, torch.tensor([120]))
    assert not torch.allclose(out2[:, :8], out[:, :8])


def test_chunk_settings_can_be_overridden_per_call() -> None:
    full = small_encoder(causal=True)
    chunked = small_encoder(causal=True, chunk_size=4, left_context_chunks=0)
    chunked.load_state_dict(full.state_dict())
    x, lens = torch.randn(2, 80, FEAT), torch.tensor([80, 50])
    expected, _ = chunked(x, lens)
    got, _ = full(x, lens, chunk_size=4, left_context_chunks=0)
    torch.testing.assert_close(got, expected)
    back_to_full, _ = chunked(x, lens, chunk_size=-1)
    torch.testing.assert_close(back_to_full, full(x, lens)[0])


def test_encoder_under_bf16_autocast() -> None:
    enc = small_encoder(chunk_size=4)
    x, lens = torch.randn(2, 80, FEAT), torch.tensor([80, 50])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = enc(x, lens)
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_heads=3),  # 32 not divisible by 3
        dict(num_heads=32),  # head_dim 1 is odd: RoPE needs pairs
        dict(conv_kernel_size=4),  # even kernel without causal
        dict(dropout=1.0),
        dict(chunk_size=0),
        dict(left_context_chunks=-2),
        dict(num_layers=0),
    ],
)
def test_encoder_constructor_errors(kw: dict) -> None:
    with pytest.raises(ValueError):
        small_encoder(**kw)


def test_encoder_forward_errors() -> None:
    enc = small_encoder()
    with pytest.raises(ValueError):
        enc(torch.randn(2, 50, FEAT + 1), torch.tensor([50, 50]))
    with pytest.raises(ValueError):
        enc(torch.randn(2, 50, FEAT), torch.tensor([50]))
    with pytest.raises(ValueError):
        enc(torch.randn(2, 50, FEAT), torch.tensor([50, 5]))
    with pytest.raises(ValueError):
        enc(torch.randn(2, 50, FEAT), torch.tensor([50, 50]), chunk_size=0)
    assert small_encoder(causal=True, conv_kernel_size=4) is not None  # even kernels are fine when causal


# ---------------------------------------------------------------- predictor and joiner


def test_predictor_context_and_shapes() -> None:
    torch.manual_seed(0)
    pred = StatelessPredictor(vocab_size=10, embed_dim=8, blank_id=0, context_size=2)
    y = torch.tensor([[0, 3, 4, 5, 6]])
    out = pred(y)
    assert out.shape == (1, 5, 8)
    # Position u sees tokens u-1 and u only.
    y2 = y.clone()
    y2[0, 3] = 9
    out2 = pred(y2)
    torch.testing.assert_close(out2[:, :3], out[:, :3])
    torch.testing.assert_close(out2[:, 5:], out[:, 5:])
    assert not torch.allclose(out2[:, 3:5], out[:, 3:5])
    # Decoding: the last context_size tokens give the last training-time output.
    torch.testing.assert_close(pred(y[:, -2:], need_pad=False), out[:, -1:])
    # Left padding is equivalent to blanks (blank embedding is zero).
    torch.testing.assert_close(pred(torch.tensor([[0, 0, 3]]))[:, 1:], pred(torch.tensor([[0, 3]])))


def test_predictor_decoding_path_equals_the_convolution() -> None:
    # need_pad=False computes the depthwise convolution as a weighted sum (the beam search's fast
    # path); every position of the training-time convolution must come out the same.
    torch.manual_seed(0)
    pred = StatelessPredictor(vocab_size=12, embed_dim=6, blank_id=0, context_size=3)
    y = torch.randint(-1, 12, (4, 7))
    out = pred(y)  # (4, 7, 6), left-padded
    padded = torch.cat([torch.full((4, 2), -1), y], dim=1)
    for u in range(7):
        torch.testing.assert_close(pred(padded[:, u : u + 3], need_pad=False), out[:, u : u + 1])


def test_predictor_errors() -> None:
    with pytest.raises(ValueError):
        StatelessPredictor(10, 8, blank_id=10)
    with pytest.raises(ValueError):
        StatelessPredictor(10, 8, context_size=0)
    pred = StatelessPredictor(10, 8, context_size=2)
    with pytest.raises(ValueError):
        pred(torch.zeros(2, 3))  # float ids
    with pytest.raises(ValueError):
        pred(torch.zeros(2, 3, dtype=torch.long), need_pad=False)
    with pytest.raises(ValueError):
        pred(torch.zeros(3, dtype=torch.long))


def test_joiner_projection_paths_agree() -> None:
    torch.manual_seed(0)
    joiner = Joiner(encoder_dim=6, decoder_dim=5, joiner_dim=7, vocab_size=11)
    enc, dec = torch.randn(2, 4, 1, 6), torch.randn(2, 1, 3, 5)
    full = joiner(enc, dec)
    assert full.shape == (2, 4, 3, 11)
    pre = joiner(joiner.encoder_proj(enc), joiner.decoder_proj(dec), project_input=False)
    torch.testing.assert_close(pre, full)
    with pytest.raises(ValueError):
        joiner(enc, dec, project_input=False)
    with pytest.raises(ValueError):
        joiner(enc[..., 0, :], dec)


# ---------------------------------------------------------------- transducer


def test_model_config_roundtrip_and_default_size() -> None:
    cfg = ModelConfig(chunk_size=8, causal=True)
    d = cfg.to_dict()
    assert isinstance(d["subsampling_channels"], list)
    assert ModelConfig.from_dict(d) == cfg
    assert ModelConfig.from_dict({"vocab_size": 300}).vocab_size == 300
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"encoder_dims": 3})
    n = count_parameters(build_model(ModelConfig()))
    assert 3_000_000 <= n <= 5_000_000


def test_transducer_component_mismatch_errors() -> None:
    cfg = small_config()
    model = build_model(cfg)
    other_pred = StatelessPredictor(cfg.vocab_size + 1, cfg.decoder_dim)
    with pytest.raises(ValueError, match="vocab_size"):
        HybridTransducer(model.encoder, other_pred, model.joiner, cfg.vocab_size)
    with pytest.raises(ValueError, match="blank_id"):
        HybridTransducer(model.encoder, model.predictor, model.joiner, cfg.vocab_size, blank_id=1)
    with pytest.raises(ValueError, match="joiner"):
        HybridTransducer(model.encoder, model.predictor, Joiner(16, cfg.decoder_dim, 8, cfg.vocab_size), cfg.vocab_size)


def _batch(vocab: int, blank: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 90, FEAT, generator=g)
    lens = torch.tensor([90, 70, 41])
    tokens = [t for t in range(vocab) if t != blank]
    targets = [[tokens[(3 * i + j) % len(tokens)] for j in range(n)] for i, n in enumerate([12, 5, 3])]
    return feats, lens, targets


@pytest.mark.parametrize("blank_id", [0, 3])
def test_transducer_losses_are_finite_and_differentiable(blank_id: int) -> None:
    torch.manual_seed(0)
    model = build_model(small_config(blank_id=blank_id)).train()
    feats, lens, targets = _batch(model.vocab_size, blank_id)
    out = model(feats, lens, targets, prune_range=3)
    assert set(out) == {"simple_loss", "pruned_loss", "ctc_loss", "num_frames", "num_tokens"}
    assert int(out["num_frames"]) == int(model.encoder.output_lengths(lens).sum())
    assert int(out["num_tokens"]) == 20
    for key in ("simple_loss", "pruned_loss", "ctc_loss"):
        assert out[key].ndim == 0 and out[key].dtype == torch.float32
        assert torch.isfinite(out[key]) and out[key] > 0, key
    (out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"]).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoder.layers[0].attn.qkv.weight.grad.abs().sum() > 0


def test_transducer_without_ctc_and_under_autocast() -> None:
    torch.manual_seed(0)
    model = build_model(small_config(use_ctc=False, causal=True, chunk_size=4)).train()
    feats, lens, targets = _batch(model.vocab_size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(feats, lens, targets, chunk_size=2, left_context_chunks=1)
    assert "ctc_loss" not in out
    assert torch.isfinite(out["simple_loss"]) and torch.isfinite(out["pruned_loss"])
    (out["simple_loss"] + out["pruned_loss"]).backward()
    with pytest.raises(ValueError, match="CTC"):
        model.ctc_log_probs(torch.randn(1, 5, 32))


def test_transducer_forward_errors() -> None:
    model = build_model(small_config())
    feats, lens, targets = _batch(model.vocab_size)
    with pytest.raises(ValueError, match="target lists"):
        model(feats, lens, targets[:2])
    with pytest.raises(ValueError, match="blank"):
        model(feats, lens, [[1, 0], [2], [3]])
    with pytest.raises(ValueError, match="token ids"):
        model(feats, lens, [[1, 12], [2], [3]])
    with pytest.raises(ValueError, match="prune_range"):
        model(feats, lens, targets, prune_range=0)


def test_ctc_log_probs_shape() -> None:
    model = build_model(small_config()).eval()
    enc, enc_lens = model.encode(torch.randn(2, 50, FEAT), torch.tensor([50, 30]))
    lp = model.ctc_log_probs(enc)
    assert lp.shape == (2, 11, 12)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(2, 11))


def test_pruned_loss_with_full_range_equals_full_rnnt_loss() -> None:
    """With prune_range > U nothing is pruned, so the pruned loss is the exact RNN-T loss."""
    from dsr.losses import rnnt_loss

    torch.manual_seed(0)
    model = build_model(small_config(dropout=0.0)).eval()
    feats, lens, targets = _batch(model.vocab_size)
    out = model(feats, lens, targets, prune_range=13)

    enc, enc_lens = model.encode(feats, lens)
    y_lens = torch.tensor([len(t) for t in targets])
    y = torch.zeros(3, int(y_lens.max()), dtype=torch.int64)
    for i, t in enumerate(targets):
        y[i, : len(t)] = torch.tensor(t)
    dec = model.predictor(torch.nn.functional.pad(y, (1, 0), value=model.blank_id))
    logits = model.joiner(enc[:, :, None, :], dec[:, None, :, :])
    boundary = torch.stack([torch.zeros_like(y_lens), torch.zeros_like(y_lens), y_lens, enc_lens], dim=1)
    full = rnnt_loss(logits=logits, symbols=y, termination_symbol=model.blank_id, boundary=boundary, reduction="sum")
    torch.testing.assert_close(out["pruned_loss"], full, rtol=1e-4, atol=1e-3)


def test_rnnt_encoder_grad_scale_leaves_values_and_scales_encoder_gradient() -> None:
    """With scale 0 the encoder gets CTC's gradient only; losses themselves never change."""
    feats, lens, targets = _batch(12)

    def encoder_grad(scale: float, with_ctc: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(small_config(dropout=0.0)).train()
        out = model(feats, lens, targets, prune_range=3, rnnt_encoder_grad_scale=scale)
        loss = out["simple_loss"] + out["pruned_loss"] + (out["ctc_loss"] if with_ctc else 0.0)
        loss.backward()
        return out, model.encoder.layers[0].attn.qkv.weight.grad.clone()

    full, g_full = encoder_grad(1.0, with_ctc=True)
    half, g_half = encoder_grad(0.5, with_ctc=False)
    off, g_off = encoder_grad(0.0, with_ctc=True)
    _, g_rnnt_only = encoder_grad(1.0, with_ctc=False)
    for key in ("simple_loss", "pruned_loss", "ctc_loss"):
        torch.testing.assert_close(full[key], off[key])
        torch.testing.assert_close(full[key], half[key])
    torch.testing.assert_close(g_half, 0.5 * g_rnnt_only)
    # Scale 0: what reaches the encoder is exactly the CTC part of the full gradient.
    torch.testing.assert_close(g_off, g_full - g_rnnt_only, rtol=1e-4, atol=1e-6)
    model = build_model(small_config())
    with pytest.raises(ValueError, match="rnnt_encoder_grad_scale"):
        model(feats, lens, targets, rnnt_encoder_grad_scale=1.5)
