"""``--init-from`` / ``--init-exclude`` / ``--freeze``: exact weight loading, frozen parameters, error messages."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_corpus import TINY_MODEL, make_tiny_corpus, tiny_train_options

from dsr.errors import DsrUserError
from dsr.models import ModelConfig, build_model
from dsr.models.checkpoint import save_checkpoint
from dsr.training.config import TrainConfig
from dsr.training.init import freeze_parameters, load_initial_weights, name_matches, split_patterns
from dsr.training.trainer import train

torch.set_num_threads(1)


def _config(vocab_size: int = 30) -> ModelConfig:
    return ModelConfig(
        encoder_dim=32, num_encoder_layers=1, num_heads=2, ffn_dim=64, conv_kernel_size=5,
        decoder_dim=32, joiner_dim=32, vocab_size=vocab_size,
    )  # fmt: skip


def _checkpoint(path: Path, cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    weights = build_model(cfg).state_dict()
    save_checkpoint(path, {"model": weights, "model_config": cfg.to_dict(), "global_step": 1})
    return weights


VOCAB_SIZED = ["predictor.embedding.weight", "joiner.output_linear.weight", "joiner.output_linear.bias",
               "simple_am_proj.weight", "simple_am_proj.bias", "simple_lm_proj.weight", "simple_lm_proj.bias",
               "ctc_output.1.weight", "ctc_output.1.bias"]  # fmt: skip


def test_patterns() -> None:
    assert split_patterns(" encoder.*, joiner ,,") == ["encoder.*", "joiner"]
    assert name_matches("encoder.layers.0.ffn1.net.1.weight", "encoder")
    assert name_matches("encoder.layers.0.ffn1.net.1.weight", "encoder.layers.?.ffn*")
    assert not name_matches("encoder_extra.weight", "encoder")
    assert not name_matches("joiner.output_linear.weight", "joiner.output")


def test_init_from_loads_every_weight_exactly(tmp_path) -> None:
    saved = _checkpoint(tmp_path / "pre.pt", _config(), seed=1)
    torch.manual_seed(2)
    model = build_model(_config())
    loaded = load_initial_weights(model, str(tmp_path / "pre.pt"), [])
    assert loaded == set(saved)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_other_vocabulary_is_an_error_naming_the_weights_unless_excluded(tmp_path) -> None:
    saved = _checkpoint(tmp_path / "pre.pt", _config(vocab_size=30), seed=1)
    torch.manual_seed(2)
    model = build_model(_config(vocab_size=40))
    random_init = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DsrUserError) as err:
        load_initial_weights(model, str(tmp_path / "pre.pt"), [], _config(vocab_size=40))
    msg = str(err.value)
    assert msg.startswith("init_from ") and "vocab_size 30 (this run: 40)" in msg and "with init_exclude " in msg
    # dsr train names them as flags.
    assert err.value.as_flags().startswith("--init-from ") and "with --init-exclude " in err.value.as_flags()
    assert all(name in msg for name in VOCAB_SIZED)

    loaded = load_initial_weights(
        model, str(tmp_path / "pre.pt"), ["predictor.embedding", "joiner.output_linear", "simple_*_proj", "ctc_output"]
    )
    assert loaded == set(saved) - set(VOCAB_SIZED)
    for k, v in model.state_dict().items():
        assert torch.equal(v, random_init[k] if k in VOCAB_SIZED else saved[k]), k


def test_missing_and_unknown_weights_are_named(tmp_path, caplog) -> None:
    cfg = _config()
    torch.manual_seed(1)
    weights = build_model(cfg).state_dict()
    weights["old_head.weight"] = torch.zeros(3)
    del weights["joiner.output_linear.bias"]
    save_checkpoint(tmp_path / "pre.pt", {"model": weights})
    model = build_model(cfg)
    with caplog.at_level(logging.INFO, logger="dsr"):
        loaded = load_initial_weights(model, str(tmp_path / "pre.pt"), [])
    assert "joiner.output_linear.bias" not in loaded
    assert "has no joiner.output_linear.bias" in caplog.text and "old_head.weight" in caplog.text


@pytest.mark.parametrize(
    "source,exclude,match",
    [("nope.pt", [], "no such checkpoint"), ("pre.pt", ["decoder.*"], "init_exclude 'decoder.*' matches no")],
)
def test_init_from_user_errors(tmp_path, source, exclude, match) -> None:
    _checkpoint(tmp_path / "pre.pt", _config(), seed=1)
    with pytest.raises(DsrUserError, match=match):
        load_initial_weights(build_model(_config()), str(tmp_path / source), exclude)


def test_freeze_patterns_and_errors(caplog) -> None:
    model = build_model(_config())
    with caplog.at_level(logging.INFO, logger="dsr"):
        trainable = freeze_parameters(model, ["encoder", "joiner.*_proj.weight"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith("encoder.")} | {
        "joiner.encoder_proj.weight", "joiner.decoder_proj.weight"}  # fmt: skip
    assert {id(p) for p in trainable} == {id(p) for p in model.parameters() if p.requires_grad}
    assert "frozen" in caplog.text and "trainable" in caplog.text
    with pytest.raises(DsrUserError, match="freeze 'decoder' matches no parameter name; names start with"):
        freeze_parameters(build_model(_config()), ["decoder"])
    with pytest.raises(DsrUserError, match="freezes every parameter"):
        freeze_parameters(build_model(_config()), ["*"])
    with pytest.raises(DsrUserError, match="init_exclude only applies with init_from"):
        TrainConfig(init_exclude="joiner.*").validate()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Any]:
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory) -> Path:
    exp = tmp_path_factory.mktemp("pre") / "exp"
    train(TrainConfig.from_dict(tiny_train_options(corpus, exp, max_steps=2, dev_cuts="")))
    return exp


def test_fine_tune_from_an_exp_dir_with_a_frozen_encoder(corpus, pretrained, tmp_path) -> None:
    from dsr.models.checkpoint import resolve_model_checkpoint

    start = resolve_model_checkpoint(pretrained)[0]["model"]  # what --init-from an exp dir loads
    exp = tmp_path / "fine"
    options = tiny_train_options(corpus, exp, max_steps=3, dev_cuts="", init_from=str(pretrained), freeze="encoder")
    result = train(TrainConfig.from_dict(options))
    assert result.global_step == 3
    final = torch.load(exp / "epoch-1.pt", weights_only=False)
    for k, v in final["model"].items():
        if k.startswith("encoder.") or k.startswith("feature_"):  # frozen, and the pretrained normalisation kept
            assert torch.equal(v, start[k]), k
    assert not torch.equal(final["model"]["joiner.output_linear.weight"], start["joiner.output_linear.weight"])
    # The optimizer only ever had the trainable parameters.
    num_trainable = sum(1 for k in start if not k.startswith(("encoder.", "feature_")))
    assert len(final["optimizer"]["param_groups"][0]["params"]) == num_trainable

    # Resuming with another --freeze cannot reuse the optimizer state: a clear error.
    with pytest.raises(
        DsrUserError, match="trained with freeze 'encoder'.*same freeze, or start a new exp_dir with init_from"
    ):
        train(TrainConfig.from_dict({**options, "max_steps": 4, "freeze": "predictor"}))


def test_init_from_with_another_vocabulary_fails_before_training(corpus, pretrained, tmp_path) -> None:
    other = make_tiny_corpus(tmp_path / "other", vocab_size=34)
    options = tiny_train_options(other, tmp_path / "exp", max_steps=1, dev_cuts="", init_from=str(pretrained))
    with pytest.raises(DsrUserError, match=r"vocab_size 30 \(this run: 34\).*init_exclude predictor.embedding.weight"):
        train(TrainConfig.from_dict(options))
    options["init_exclude"] = "predictor.embedding,joiner.output_linear,simple_am_proj,simple_lm_proj,ctc_output"
    assert train(TrainConfig.from_dict(options)).global_step == 1


def test_tiny_model_options_are_train_config_fields() -> None:
    assert set(TINY_MODEL) <= set(TrainConfig().to_dict())
