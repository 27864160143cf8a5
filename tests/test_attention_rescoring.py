"""Attention rescoring of CTC / transducer n-best lists, and decoding a hybrid model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_corpus import write_feature_cuts

from dsr.decoding.attention_rescoring import attention_rescore
from dsr.decoding.methods import RESCORING_FIRST_PASS, check_method
from dsr.decoding.search import SearchOptions, nbest_search
from dsr.errors import DsrUserError
from dsr.models import HybridTransducer, ModelConfig, build_model

torch.set_num_threads(1)


def hybrid_config(vocab_size: int, feature_dim: int = 20, **kw) -> ModelConfig:
    args = dict(
        feature_dim=feature_dim,
        encoder_dim=32,
        num_encoder_layers=1,
        num_heads=4,
        ffn_dim=64,
        conv_kernel_size=5,
        subsampling_channels=(4, 8),
        decoder_dim=24,
        joiner_dim=40,
        vocab_size=vocab_size,
        attention_decoder_layers=2,
        attention_decoder_dim=16,
        attention_decoder_heads=2,
        attention_decoder_ffn_dim=32,
    )
    args.update(kw)
    return ModelConfig(**args)


def hybrid_model(vocab_size: int = 9, feature_dim: int = 20, seed: int = 0, **kw) -> HybridTransducer:
    """A random tiny hybrid whose transducer and CTC heads emit a mix of blanks and tokens."""
    torch.manual_seed(seed)
    model = build_model(hybrid_config(vocab_size, feature_dim, **kw)).eval()
    with torch.no_grad():
        if model.joiner is not None:
            model.joiner.output_linear.weight.mul_(3.0)
            model.joiner.output_linear.bias[model.blank_id] += 1.0
        if model.ctc_output is not None:
            model.ctc_output[1].weight.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def encoded() -> tuple[HybridTransducer, torch.Tensor, torch.Tensor]:
    model = hybrid_model()
    feats = torch.randn(3, 160, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, torch.tensor([160, 110, 70]))
    return model, enc, enc_lens


@pytest.mark.parametrize("method", list(RESCORING_FIRST_PASS))
def test_scale_zero_reproduces_the_first_pass_exactly(encoded, method: str) -> None:
    model, enc, enc_lens = encoded
    opts = SearchOptions(beam_size=4, attention_scale=0.0)
    first = nbest_search(model, enc, enc_lens, RESCORING_FIRST_PASS[method], opts)
    rescored = nbest_search(model, enc, enc_lens, method, opts)
    assert all(len(hs) > 1 for hs in first), "the n-best lists must offer a choice for the test to mean anything"
    assert [[h.tokens for h in hs] for hs in rescored] == [[h.tokens for h in hs] for hs in first]
    assert [[h.am_score for h in hs] for hs in rescored] == [[h.am_score for h in hs] for hs in first]
    assert all(h.attention_score is not None and h.attention_score < 0 for hs in rescored for h in hs)


def test_attention_scores_and_ranking(encoded) -> None:
    model, enc, enc_lens = encoded
    first = nbest_search(model, enc, enc_lens, "ctc-prefix-beam-search", SearchOptions(beam_size=4))
    scores = model.attention_decoder.score(enc, enc_lens, [[h.tokens for h in hs] for hs in first])
    rescored = attention_rescore(model.attention_decoder, enc, enc_lens, first, attention_scale=1.0)
    for hs, att, old in zip(rescored, scores, first):
        by_tokens = {tuple(h.tokens): a for h, a in zip(old, att)}
        assert [h.attention_score for h in hs] == [by_tokens[tuple(h.tokens)] for h in hs]
        totals = [h.score + h.attention_score for h in hs]
        assert totals == sorted(totals, reverse=True)
    # A huge scale ranks by the attention decoder alone.
    dominated = attention_rescore(model.attention_decoder, enc, enc_lens, first, attention_scale=1e6)
    assert [hs[0].attention_score for hs in dominated] == [max(att) for att in scores]
    # ... which here changes some 1-best: so keeping the first pass at scale 0 is no accident.
    assert [hs[0].tokens for hs in dominated] != [hs[0].tokens for hs in first]
    with pytest.raises(ValueError, match="attention_scale"):
        attention_rescore(model.attention_decoder, enc, enc_lens, first, attention_scale=-1.0)


def test_methods_need_their_heads() -> None:
    plain = build_model(hybrid_config(9, attention_decoder_layers=0))
    with pytest.raises(DsrUserError, match="needs an attention decoder"):
        check_method(plain, "ctc-attention-rescoring")
    ctc_only = hybrid_model(use_transducer=False)
    for method in ("greedy", "modified-beam-search", "transducer-attention-rescoring"):
        with pytest.raises(DsrUserError, match="needs a transducer"):
            check_method(ctc_only, method)
    check_method(ctc_only, "ctc-attention-rescoring")
    no_ctc = hybrid_model(use_ctc=False)
    with pytest.raises(DsrUserError, match="needs a CTC head"):
        check_method(no_ctc, "ctc-attention-rescoring")


# ---------------------------------------------------------------- the dsr decode stage


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict[str, Path]:
    """A lang dir, random-weight hybrid checkpoints (with and without transducer) and 3 cuts."""

    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("attdecode")
    texts = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]
    train_bpe(texts * 30, root / "lang", vocab_size=40)
    vocab = Tokenizer(root / "lang").vocab_size
    for name, kw in (("exp", {}), ("ctc_exp", {"use_transducer": False})):
        model = hybrid_model(vocab, 80, **kw)
        ckpt = {"model_config": hybrid_config(vocab, 80, **kw).to_dict(), "model": model.state_dict()}
        save_checkpoint(root / name / "epoch-1.pt", ckpt)
    write_feature_cuts(root, texts, (150, 110, 80))
    return {
        "root": root,
        "exp": root / "exp",
        "ctc_exp": root / "ctc_exp",
        "lang": root / "lang",
        "cuts": root / "toy_cuts_test.jsonl.gz",
    }


def test_decode_hybrid_with_every_method(exp: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.decoding.decode import decode
    from dsr.decoding.methods import METHODS

    # Scale 0 through the CLI: each rescoring method recognises what its first pass did.
    args = [
        "decode",
        "--exp-dir",
        str(exp["exp"]),
        "--cuts",
        str(exp["cuts"]),
        "--lang-dir",
        str(exp["lang"]),
        "--device",
        "cpu",
        "--attention-scale",
        "0",
    ]
    for m in METHODS:
        if not m.startswith("whisper-") and m != "faster-whisper":  # need Whisper (test_whisper_finetune.py)
            args += ["-m", m]
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    out = exp["exp"] / "decode"
    for method, first in RESCORING_FIRST_PASS.items():
        assert (out / method / "toy_test/recogs.txt").read_text() == (out / first / "toy_test/recogs.txt").read_text()

    results = decode(
        exp["exp"],
        exp["cuts"],
        exp["lang"],
        methods=tuple(RESCORING_FIRST_PASS),
        device="cpu",
        progress=False,
        beam_size=3,
        attention_scale=2.0,
    )
    for r in results:
        info = json.loads((r.out_dir / "result.json").read_text())
        assert info["attention_scale"] == 2.0 and info["beam_size"] == 3 and info["num_utts"] == 3
        recogs = (r.out_dir / "recogs.txt").read_text()
        for line in (r.out_dir / "nbest.jsonl").read_text().splitlines():
            rec = json.loads(line)
            hyps = rec["hyps"]
            assert 1 <= len(hyps) <= 3 and f"{rec['utt_id']}:\thyp={hyps[0]['text'].split()}" in recogs
            totals = [h["am_score"] + h["context_score"] + 2.0 * h["attention_score"] for h in hyps]
            assert totals == sorted(totals, reverse=True)
            if r.method == "transducer-attention-rescoring":
                assert all("ctc_score" in h for h in hyps)
    plain = json.loads((out / "greedy/toy_test/result.json").read_text())
    assert plain["attention_scale"] is None


def test_decode_model_without_transducer(exp: dict[str, Path]) -> None:
    from dsr.decoding.decode import decode

    results = decode(
        exp["ctc_exp"],
        exp["cuts"],
        exp["lang"],
        methods=("ctc-greedy", "ctc-attention-rescoring"),
        device="cpu",
        progress=False,
    )
    assert [r.num_utts for r in results] == [3, 3]
    with pytest.raises(DsrUserError, match="needs a transducer"):
        decode(exp["ctc_exp"], exp["cuts"], exp["lang"], methods=("greedy",), device="cpu", progress=False)
