"""``dsr prune``: feed-forward channels and layers removed by their stated importance; the
pruned model is a plain dsr model of a smaller configuration that decodes, fine-tunes
(``--init-from``) and exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsr.decoding.greedy import transducer_greedy_search
from dsr.errors import DsrUserError
from dsr.models.config import ModelConfig, build_model, count_parameters
from dsr.models.prune import PruneOptions, layer_importance, prune_model

TINY = dict(
    encoder_dim=32, num_encoder_layers=4, num_heads=2, ffn_dim=64, conv_kernel_size=5, decoder_dim=32,
    joiner_dim=32, dropout=0.0, vocab_size=50,
)  # fmt: skip


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(**TINY)
    return build_model(cfg).eval(), cfg


def _batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 120, 80, generator=g), torch.tensor([120, 83])


def test_pruning_nothing_is_the_identity() -> None:
    model, cfg = _model()
    x, lens = _batch()
    pruned, new_cfg, report = prune_model(model, cfg, PruneOptions())
    assert new_cfg == cfg and report["parameters_after"] == report["parameters_before"]
    with torch.no_grad():
        assert torch.equal(pruned.encode(x, lens)[0], model.encode(x, lens)[0])


def test_ffn_pruning_removes_the_channels_that_contribute_nothing() -> None:
    """With half of every feed-forward module's channels silenced (zero output weights), keeping
    half by importance keeps exactly the others: the function is unchanged."""
    model, cfg = _model()
    with torch.no_grad():
        for layer in model.encoder.layers:
            for ffn in (layer.ffn1, layer.ffn2):
                dead = torch.randperm(cfg.ffn_dim)[: cfg.ffn_dim // 2]
                ffn.net[3].weight[:, dead] = 0.0
    x, lens = _batch()
    pruned, new_cfg, report = prune_model(model, cfg, PruneOptions(ffn_keep=0.5))
    assert new_cfg.ffn_dim == 32
    # Two modules per layer, each losing 32 channels of (D + 1) + D weights.
    assert report["parameters_before"] - report["parameters_after"] == 4 * 2 * 32 * (2 * 32 + 1)
    assert report["parameters_after"] == count_parameters(build_model(new_cfg))
    with torch.no_grad():
        torch.testing.assert_close(pruned.encode(x, lens)[0], model.encode(x, lens)[0], atol=1e-5, rtol=1e-5)


def test_layer_dropping_removes_the_least_changing_layer_and_still_decodes() -> None:
    model, cfg = _model()
    x, lens = _batch()
    scores = layer_importance(model, x, lens)
    assert scores.shape == (4,) and bool((scores > 0).all())
    pruned, new_cfg, report = prune_model(model, cfg, PruneOptions(ffn_keep=0.5, drop_layers=2), x, lens)
    assert report["dropped_layers"] == sorted(scores.argsort()[:2].tolist())
    assert new_cfg.num_encoder_layers == 2
    assert report["parameters_after"] == count_parameters(pruned) < 0.7 * report["parameters_before"]
    # The kept layers are the original ones, in order: with only layer dropping, layer i of the
    # pruned model has the weights of the i-th kept layer.
    kept = [i for i in range(4) if i not in report["dropped_layers"]]
    only_layers, _, _ = prune_model(model, cfg, PruneOptions(drop_layers=2), x, lens)
    for i, old in enumerate(kept):
        assert torch.equal(only_layers.encoder.layers[i].attn.qkv.weight, model.encoder.layers[old].attn.qkv.weight)
    with torch.no_grad():
        enc, enc_lens = pruned.encode(x, lens)
        hyps = transducer_greedy_search(pruned, enc, enc_lens)
    assert len(hyps) == 2 and enc.shape[-1] == cfg.encoder_dim


def test_prune_options_are_checked() -> None:
    _, cfg = _model()
    for bad, match in ((PruneOptions(ffn_keep=0.0), "ffn_keep must be in"), (PruneOptions(drop_layers=4), r"\[0, 3\]"),
                       (PruneOptions(ffn_keep=0.001), "keeps no channel")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            bad.validate(cfg)
    with pytest.raises(ValueError, match="only Conformer encoders"):
        PruneOptions().validate(ModelConfig(**{**TINY, "encoder_type": "whisper"}))


def test_cli_prunes_a_checkpoint_that_init_from_and_export_read(tmp_path: Path) -> None:
    from tiny_corpus import make_tiny_corpus
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.training.init import load_initial_weights

    corpus = make_tiny_corpus(tmp_path / "corpus")
    model, cfg = _model()
    torch.save({"model_config": cfg.to_dict(), "model": model.state_dict()}, tmp_path / "model.pt")
    out = tmp_path / "pruned" / "pruned.pt"
    args = ["prune", "--checkpoint", str(tmp_path / "model.pt"), "--ffn-keep", "0.5", "--drop-layers", "1",
            "--cuts", corpus["dev_cuts"], "--out", str(out)]  # fmt: skip
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    assert "--ffn-dim 32 --num-encoder-layers 3" in proc.output.replace("\n", "")
    ckpt = torch.load(out, weights_only=False)
    assert ckpt["prune_report"]["num_encoder_layers"] == [4, 3]
    # dsr train --init-from with the printed flags loads every weight.
    fresh = build_model(ModelConfig(**{**TINY, "ffn_dim": 32, "num_encoder_layers": 3}))
    assert load_initial_weights(fresh, str(out), []) == set(fresh.state_dict())
    with pytest.raises(DsrUserError, match="--drop-layers scores the layers on real features: pass --cuts"):
        from dsr.models.prune import prune_checkpoint

        prune_checkpoint(tmp_path / "x.pt", PruneOptions(drop_layers=1), checkpoint=tmp_path / "model.pt")
    # ... and dsr export onnx takes it like any other checkpoint.
    pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")
    from dsr.export.onnx import OnnxExportOptions, export_onnx

    lang = tmp_path / "lang"
    lang.mkdir()
    (lang / "tokens.txt").write_text(
        "".join(f"{t} {i}\n" for i, t in enumerate(["<blk>"] + [f"t{i}" for i in range(49)]))
    )
    result = export_onnx(OnnxExportOptions(out_dir=tmp_path / "export", lang_dir=lang, checkpoint=out, int8=False))
    assert {"encoder.onnx", "decoder.onnx", "joiner.onnx", "ctc.onnx"} <= set(result.files)
