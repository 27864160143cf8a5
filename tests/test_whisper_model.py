"""Whisper inside dsr's hybrid model: the encoder adapter, the decoder head, pretrained
weights, and the fine-tuning options (tiny random Whisper; no files needed)."""

from __future__ import annotations

import pytest
import torch

from dsr.models.config import ModelConfig, build_model
from dsr.models.whisper.dsr_modules import WhisperDecoderHead, WhisperEncoder
from dsr.models.whisper.model import N_FRAMES_30S, Whisper, WhisperDims
from dsr.models.whisper.pretrained import (
    encoder_param_names_to_freeze,
    load_whisper_weights,
    whisper_model_config,
    whisper_text,
)

DIMS = WhisperDims(
    n_mels=80,
    n_audio_ctx=1500,
    n_audio_state=32,
    n_audio_head=2,
    n_audio_layer=2,
    n_vocab=50,
    n_text_ctx=32,
    n_text_state=32,
    n_text_head=2,
    n_text_layer=2,
)
PROMPT, EOT = (45, 47), 46


def _whisper_hybrid(whisper_decoder: bool = True, pad_to_30s: bool = False, vocab: int = 20) -> torch.nn.Module:
    base = ModelConfig(vocab_size=vocab, decoder_dim=16, joiner_dim=16)
    torch.manual_seed(0)
    return build_model(whisper_model_config(base, DIMS, PROMPT, EOT, whisper_decoder, pad_to_30s))


def test_encoder_on_a_padded_batch_equals_each_utterance_alone():
    torch.manual_seed(0)
    enc = WhisperEncoder(DIMS).eval()
    lens = torch.tensor([40, 25, 31])
    feats = torch.randn(3, 40, 80)
    out, out_lens = enc(feats, lens)
    assert out.shape == (3, 20, 32) and out_lens.tolist() == [20, 13, 16]
    for i, n in enumerate(lens.tolist()):
        alone, _ = enc(feats[i : i + 1, :n], lens[i : i + 1])
        # The convolutions see zeros past the end in the batch and in the single run alike.
        torch.testing.assert_close(out[i, : out_lens[i]], alone[0], atol=1e-5, rtol=1e-5)


def test_encoder_is_whisper_audio_encoder_with_sliced_positions():
    torch.manual_seed(0)
    whisper = Whisper(DIMS).eval()
    enc = WhisperEncoder(DIMS).eval()
    enc.load_state_dict(whisper.encoder.state_dict())
    feats = torch.randn(1, 30, 80)
    out, _ = enc(feats, torch.tensor([30]))
    torch.testing.assert_close(out, whisper.encoder(feats.transpose(1, 2)))
    with pytest.raises(ValueError, match="longer than"):
        enc(torch.randn(1, N_FRAMES_30S + 2, 80), torch.tensor([N_FRAMES_30S + 2]))
    with pytest.raises(ValueError, match="streaming"):
        enc(feats, torch.tensor([30]), chunk_size=8)


def test_pad_to_30s_runs_whisper_on_a_zero_padded_30s_window():
    torch.manual_seed(0)
    enc = WhisperEncoder(DIMS, pad_to_30s=True).eval()
    feats = torch.rand(2, 30, 80) * 2 - 1
    out, out_lens = enc(feats, torch.tensor([30, 21]))
    assert out.shape == (2, 1500, 32) and out_lens.tolist() == [1500, 1500]
    # faster-whisper's pad_or_trim: zeros after the utterance's own frames.
    window = torch.zeros(1, 80, N_FRAMES_30S)
    window[:, :, :21] = feats[1:, :21].transpose(1, 2)
    plain = WhisperEncoder(DIMS).eval()
    plain.load_state_dict(enc.state_dict())
    torch.testing.assert_close(out[1:], super(WhisperEncoder, plain).forward(window), atol=1e-5, rtol=1e-5)


def test_hybrid_on_whisper_trains_every_head():
    model = _whisper_hybrid()
    assert isinstance(model.encoder, WhisperEncoder) and isinstance(model.attention_decoder, WhisperDecoderHead)
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 44])
    out = model(feats, lens, [[3, 4, 5], [6, 7]], attention_targets=[[10, 11, 12, 13], [14]])
    for key in ("simple_loss", "pruned_loss", "ctc_loss", "attention_loss"):
        assert torch.isfinite(out[key]), key
    total = out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"] + out["attention_loss"]
    total.backward()
    assert model.encoder.conv1.weight.grad is not None
    assert model.attention_decoder.token_embedding.weight.grad is not None
    with pytest.raises(ValueError, match="attention target lists"):
        model(feats, lens, [[3], [4]], attention_targets=[[10]])


def test_decoder_head_loss_and_score_are_teacher_forced_log_probs():
    torch.manual_seed(0)
    head = WhisperDecoderHead(DIMS, PROMPT, EOT).eval()
    enc_out, enc_lens = torch.randn(2, 10, 32), torch.tensor([10, 7])
    hyps = [[3, 4], [5]]
    inputs, targets = head.make_inputs(hyps, torch.device("cpu"))
    assert inputs[0].tolist() == [45, 47, 3, 4] and targets[0].tolist() == [-1, 3, 4, EOT]
    assert inputs[1].tolist() == [45, 47, 5, EOT] and targets[1].tolist() == [-1, 5, EOT, -1]
    scores = head.score(enc_out, enc_lens, [[hyps[0]], [hyps[1]]])
    # The summed CE without smoothing is minus the sum of the scores.
    ce = head.loss(enc_out, enc_lens, hyps, label_smoothing=0.0)
    assert ce.item() == pytest.approx(-(scores[0][0] + scores[1][0]), rel=1e-5)
    # Each one alone, by the decoder's own step-by-step log-probs.
    logp = head(torch.tensor([[45, 47, 5]]), enc_out[1:, :7]).log_softmax(-1)[0]
    assert scores[1][0] == pytest.approx((logp[1, 5] + logp[2, EOT]).item(), rel=1e-5)


def test_pretrained_weights_load_into_encoder_and_head():
    torch.manual_seed(1)
    whisper = Whisper(DIMS)
    model = _whisper_hybrid()
    loaded = load_whisper_weights(model, whisper.state_dict())
    assert "encoder.blocks.1.attn.query.weight" in loaded and "attention_decoder.ln.weight" in loaded
    torch.testing.assert_close(model.encoder.conv2.weight, whisper.encoder.conv2.weight)
    torch.testing.assert_close(model.attention_decoder.positional_embedding, whisper.decoder.positional_embedding)
    no_head = _whisper_hybrid(whisper_decoder=False)
    assert not any(k.startswith("attention_decoder") for k in load_whisper_weights(no_head, whisper.state_dict()))
    bad = {**whisper.state_dict(), "encoder.conv1.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match="shape"):
        load_whisper_weights(model, bad)


def test_freezing_all_but_the_top_layers():
    model = _whisper_hybrid()
    names = encoder_param_names_to_freeze(model, keep_top=1)
    assert "encoder.conv1.weight" in names and "encoder.blocks.0.mlp.0.weight" in names
    assert not any(n.startswith(("encoder.blocks.1.", "encoder.ln_post")) for n in names)
    assert all(n.startswith("encoder.") for n in names)
    everything = encoder_param_names_to_freeze(model, keep_top=0)
    assert "encoder.ln_post.weight" in everything


def test_encoder_freezer_and_learning_rate_groups():
    from dsr.training.config import TrainConfig
    from dsr.training.pretrained import EncoderFreezer, PretrainedWhisper, optimizer_groups

    model = _whisper_hybrid()
    trainable = list(model.parameters())
    freezer = EncoderFreezer(model, steps=3, keep_top=0, trainable=trainable)
    freezer.update(0)
    assert not model.encoder.conv1.weight.requires_grad and model.joiner.output_linear.weight.requires_grad
    freezer.update(3)
    assert model.encoder.conv1.weight.requires_grad
    cfg = TrainConfig(base_lr=1e-3, pretrained_lr_scale=0.1)
    whisper = PretrainedWhisper(loaded=None, tokenizer=object(), prompt=PROMPT, source="x")
    groups = optimizer_groups(model, trainable, cfg, whisper)
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(1e-4)
    pretrained_ids = {id(p) for p in groups[1]["params"]}
    assert id(model.encoder.conv1.weight) in pretrained_ids and id(model.attention_decoder.ln.weight) in pretrained_ids
    assert id(model.joiner.output_linear.weight) not in pretrained_ids


def test_whisper_targets_keep_whisper_style_text_and_hypotheses_get_sentence_case():
    from dsr.models.whisper.pretrained import whisper_target

    assert (
        whisper_target(" Author of the danger trail,  Philip Steels, etc.")
        == "Author of the danger trail, Philip Steels, etc."
    )
    assert whisper_target("SET A TIMER FOR TEN MINUTES") == "set a timer for ten minutes"
    assert whisper_text("IF I EVER NEEDED A FIGHTER I'M HERE") == "If I ever needed a fighter I'm here"
