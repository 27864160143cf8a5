"""Distillation: KL terms, teacher loading and checks, and the trainer's loss with a teacher."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dsr.errors import DsrUserError
from dsr.losses.distill import ctc_distillation_loss, kl_divergence, pruned_joiner_distillation_loss
from dsr.models import ModelConfig, build_model
from dsr.models.checkpoint import save_checkpoint
from dsr.training.distill import distillation_losses, load_teacher, parse_distill_heads

torch.set_num_threads(1)

FEAT = 20
TARGETS = [[3, 4, 5], [6, 7]]
TEXTS = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]
OTHER_TEXTS = ["please play some quiet music now", "how far away is the moon tonight", "remind me to buy bread"]


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
    )
    args.update(kw)
    return ModelConfig(**args)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(2, 60, FEAT, generator=torch.Generator().manual_seed(3)), torch.tensor([60, 41])


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    return model.eval().requires_grad_(False)


def test_kl_is_zero_for_equal_distributions_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 7, generator=g), torch.randn(3, 4, 7, generator=g)
    mask = torch.ones(3, 4, dtype=torch.bool)
    assert float(kl_divergence(a, a + 5.0, mask)) == pytest.approx(0.0, abs=1e-5)  # logits up to a constant
    kl = float(kl_divergence(a, b, mask, temperature=2.0))
    p, q = (b / 2).softmax(-1), (a / 2).softmax(-1)
    assert kl == pytest.approx(4 * float((p * (p.log() - q.log())).sum()), rel=1e-5)
    # Masked positions do not count, whatever they hold.
    mask[1:] = False
    assert float(kl_divergence(a, b, mask)) == pytest.approx(float(kl_divergence(a[:1], b[:1], mask[:1])), rel=1e-6)


def test_pruned_joiner_kl_ignores_cells_past_the_labels_and_frames() -> None:
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 2, 5, generator=g)
    teacher = student.clone()
    ranges = torch.tensor([[[0, 1], [1, 2], [2, 3]], [[0, 1], [0, 1], [1, 2]]])
    # Utterance 0 has 2 labels (position 3 is past them) and 3 frames; utterance 1 has 1 label
    # (position 2 is past it) and 2 frames (frame 2 is padding).
    teacher[0, 2, 1] = torch.randn(5, generator=g)
    teacher[1, 2] = torch.randn(2, 5, generator=g)
    zero = pruned_joiner_distillation_loss(student, teacher, ranges, torch.tensor([3, 2]), torch.tensor([2, 1]))
    assert float(zero) == pytest.approx(0.0, abs=1e-6)
    teacher[1, 1, 1] = torch.randn(5, generator=g)  # position 1 <= 1 label: counts
    assert (
        float(pruned_joiner_distillation_loss(student, teacher, ranges, torch.tensor([3, 2]), torch.tensor([2, 1]))) > 0
    )


@pytest.mark.parametrize("heads", [("ctc",), ("joiner",), ("ctc", "joiner")])
def test_distillation_from_itself_is_zero_and_from_another_model_positive(heads) -> None:
    torch.manual_seed(0)
    student = build_model(config()).eval()  # eval: the CTC head's dropout would make the copy differ
    feats, lens = batch()
    out = student(feats, lens, TARGETS, return_outputs=True)
    same = distillation_losses(frozen(copy.deepcopy(student)), out, feats, lens, heads, temperature=1.0)
    assert set(same) == {f"distill_{h}_loss" for h in heads}
    for v in same.values():
        assert v.item() == pytest.approx(0.0, abs=1e-4)
    torch.manual_seed(1)
    other = frozen(build_model(config(encoder_dim=48, num_encoder_layers=2, joiner_dim=20)))
    diff = distillation_losses(other, out, feats, lens, heads, temperature=2.0)
    assert all(v.item() > 0 for v in diff.values())


def test_gradients_reach_only_the_student() -> None:
    torch.manual_seed(0)
    student = build_model(config()).train()
    teacher = frozen(build_model(config(encoder_dim=48)))
    feats, lens = batch()
    out = student(feats, lens, TARGETS, return_outputs=True)
    losses = distillation_losses(teacher, out, feats, lens, ("ctc", "joiner"), temperature=1.0)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.encoder.layers[0].attn.qkv.weight.grad.abs().sum() > 0
    assert student.ctc_output[1].weight.grad.abs().sum() > 0
    assert student.joiner.output_linear.weight.grad.abs().sum() > 0


def test_ctc_distillation_counts_valid_frames_only() -> None:
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 6, 5, generator=g).log_softmax(-1), torch.randn(2, 6, 5, generator=g).log_softmax(-1)
    full = ctc_distillation_loss(s, t, torch.tensor([6, 3]))
    t2 = t.clone()
    t2[1, 3:] = 0.0  # padding frames of utterance 1
    assert float(ctc_distillation_loss(s, t2, torch.tensor([6, 3]))) == pytest.approx(float(full), rel=1e-6)


def test_frame_rate_mismatch_is_a_user_error() -> None:
    torch.manual_seed(0)
    student = build_model(config()).eval()
    feats, lens = batch()
    out = student(feats, lens, TARGETS, return_outputs=True)
    out["encoder_lens"] = out["encoder_lens"] * 2  # as if the student subsampled 2x instead of 4x
    with pytest.raises(DsrUserError, match="frame rate"):
        distillation_losses(frozen(copy.deepcopy(student)), out, feats, lens, ("ctc",), 1.0)


def test_load_teacher_from_file_or_exp_dir_and_its_checks(tmp_path) -> None:
    from dsr.lang.bpe import Tokenizer, train_bpe

    train_bpe(TEXTS * 30, tmp_path / "lang", vocab_size=40)
    tok = Tokenizer(tmp_path / "lang")
    tcfg = config(vocab_size=tok.vocab_size, encoder_dim=48)
    torch.manual_seed(0)
    teacher = build_model(tcfg)
    ckpt = {
        "model_config": tcfg.to_dict(),
        "model": teacher.state_dict(),
        "global_step": 7,
        "train_config": {"lang_dir": str(tmp_path / "lang")},
    }
    save_checkpoint(tmp_path / "exp" / "epoch-1.pt", ckpt)
    student = config(vocab_size=tok.vocab_size)
    cpu = torch.device("cpu")
    for spec in (tmp_path / "exp", tmp_path / "exp" / "epoch-1.pt"):
        loaded = load_teacher(str(spec), student, tok, ("ctc", "joiner"), cpu)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert torch.equal(loaded.encoder.layers[0].attn.qkv.weight, teacher.encoder.layers[0].attn.qkv.weight)
    with pytest.raises(DsrUserError, match="vocab_size"):
        load_teacher(str(tmp_path / "exp"), config(vocab_size=tok.vocab_size + 1), tok, ("ctc",), cpu)
    with pytest.raises(DsrUserError, match="needs transducers"):
        load_teacher(
            str(tmp_path / "exp"), config(vocab_size=tok.vocab_size, use_transducer=False), tok, ("joiner",), cpu
        )
    # A teacher trained with another tokenizer of the same size is refused.
    train_bpe(OTHER_TEXTS * 30, tmp_path / "lang2", vocab_size=40)
    ckpt["train_config"] = {"lang_dir": str(tmp_path / "lang2")}
    save_checkpoint(tmp_path / "other.pt", ckpt)
    with pytest.raises(DsrUserError, match="tokens differ"):
        load_teacher(str(tmp_path / "other.pt"), student, tok, ("ctc",), cpu)
    with pytest.raises(DsrUserError, match="does not exist"):
        load_teacher(str(tmp_path / "missing.pt"), student, tok, ("ctc",), cpu)


def test_parse_distill_heads() -> None:
    assert parse_distill_heads("ctc") == ("ctc",)
    assert parse_distill_heads(" ctc , joiner") == ("ctc", "joiner")
    for bad in ("", "attention", "ctc,ctc"):
        with pytest.raises(DsrUserError, match="distill_heads: must be ctc, joiner or ctc,joiner"):
            parse_distill_heads(bad)


def test_compute_loss_adds_the_scaled_distillation_terms(tmp_path) -> None:
    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import compute_loss

    texts = TEXTS[:2]
    train_bpe(TEXTS * 30, tmp_path / "lang", vocab_size=40)
    tok = Tokenizer(tmp_path / "lang")
    torch.manual_seed(0)
    student = build_model(
        config(
            vocab_size=tok.vocab_size,
            attention_decoder_layers=1,
            attention_decoder_dim=16,
            attention_decoder_heads=2,
            attention_decoder_ffn_dim=32,
        )
    ).eval()
    teacher = frozen(build_model(config(vocab_size=tok.vocab_size, encoder_dim=48)))
    feats, lens = batch()
    fake_batch = {"inputs": feats, "supervisions": {"num_frames": lens, "sequence_idx": torch.arange(2), "text": texts}}
    cfg = TrainConfig.from_dict(
        dict(
            lang_dir=str(tmp_path / "lang"),
            distill_scale=0.5,
            distill_heads="ctc,joiner",
            attention_decoder_layers=1,
            attention_loss_scale=0.3,
        )
    )
    cpu = torch.device("cpu")
    plain, parts = compute_loss(student, fake_batch, tok, cfg, cpu, step=10_000)
    assert set(parts) == {"simple_loss", "pruned_loss", "ctc_loss", "attention_loss"}
    expected = (
        cfg.simple_loss_scale * parts["simple_loss"]
        + parts["pruned_loss"]
        + cfg.ctc_loss_scale * parts["ctc_loss"]
        + cfg.attention_loss_scale * parts["attention_loss"]
    )
    assert plain.item() == pytest.approx(expected, rel=1e-5)
    with_teacher, parts_t = compute_loss(student, fake_batch, tok, cfg, cpu, step=10_000, teacher=teacher)
    assert {"distill_ctc_loss", "distill_joiner_loss"} <= set(parts_t)
    extra = 0.5 * (parts_t["distill_ctc_loss"] + parts_t["distill_joiner_loss"])
    assert extra > 0 and math.isclose(with_teacher.item(), plain.item() + extra, rel_tol=1e-5)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(distill_scale=0.0), "distill_scale"),
        (dict(distill_temperature=0.0), "distill_temperature"),
        (dict(distill_heads="ctc,attention"), "distill_heads: must be ctc, joiner"),
        (dict(distill_heads="joiner", use_transducer=False), "needs a transducer student"),
    ],
)
def test_train_config_distillation_options_are_validated(kw: dict, match: str) -> None:
    from dsr.training.config import TrainConfig

    with pytest.raises(DsrUserError, match=match):
        TrainConfig.from_dict({"teacher": "exp/teacher", **kw}).validate()
    if "use_transducer" not in kw:
        TrainConfig.from_dict(kw).validate()  # without --teacher the distillation options are unused
