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
from dsr.models.prune import (
    PruneOptions,
    head_importance,
    layer_importance,
    prune_model,
    subsampling_channel_importance,
)

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


def test_subsampling_pruning_removes_the_channels_that_contribute_nothing() -> None:
    """Half of each subsampling convolution's channels silenced (zero kernels and bias: SiLU(0)
    = 0), keeping half by importance keeps exactly the others: the function is unchanged, and
    the pruned model is the plain model of ``subsampling_channels`` (8, 32)."""
    model, cfg = _model()
    sub = model.encoder.subsampling
    with torch.no_grad():
        for conv in (sub.conv[0], sub.conv[2]):
            dead = torch.randperm(conv.out_channels)[: conv.out_channels // 2]
            conv.weight[dead] = 0.0
            conv.bias[dead] = 0.0
    x, lens = _batch()
    pruned, new_cfg, report = prune_model(model, cfg, PruneOptions(subsampling_keep=0.5))
    assert new_cfg.subsampling_channels == (8, 32) and report["subsampling_channels"] == [[16, 64], [8, 32]]
    f_out = 19  # 80 bins after two stride-2 3x3 convolutions
    removed = 8 * (9 + 1) + (16 * 64 - 8 * 32) * 9 + 32 + 32 * f_out * cfg.encoder_dim
    assert report["parameters_before"] - report["parameters_after"] == removed
    assert report["parameters_after"] == count_parameters(build_model(new_cfg))
    with torch.no_grad():
        torch.testing.assert_close(pruned.encode(x, lens)[0], model.encode(x, lens)[0], atol=1e-5, rtol=1e-5)
    # On trained-looking (random) weights it keeps the highest-scoring channels of both layers.
    model, cfg = _model(1)
    first, second = subsampling_channel_importance(model.encoder.subsampling)
    pruned, _, _ = prune_model(model, cfg, PruneOptions(subsampling_keep=0.25))
    kept2 = second.argsort(descending=True)[:16].sort().values
    assert torch.equal(pruned.encoder.subsampling.conv[2].bias, model.encoder.subsampling.conv[2].bias[kept2])
    first, _ = subsampling_channel_importance(model.encoder.subsampling, kept2)
    kept1 = first.argsort(descending=True)[:4].sort().values
    assert torch.equal(pruned.encoder.subsampling.conv[0].bias, model.encoder.subsampling.conv[0].bias[kept1])


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
                       (PruneOptions(ffn_keep=0.001), "keeps no channel"),
                       (PruneOptions(subsampling_keep=1.5), "subsampling_keep must be in"),
                       (PruneOptions(subsampling_keep=0.01), "keeps no channel of subsampling")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            bad.validate(cfg)
    with pytest.raises(ValueError, match="only Conformer encoders"):
        PruneOptions().validate(ModelConfig(**{**TINY, "encoder_type": "whisper"}))


def _errors_name_arguments_in_python_and_flags_in_the_cli(tmp_path: Path, model: Path) -> None:
    """prune_checkpoint's errors name its arguments and options; dsr prune says the same with its flags."""
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.models.prune import prune_checkpoint

    missing = tmp_path / "missing.jsonl.gz"
    cases = [  # (arguments, flags, the message with {name} for each argument's name)
        (dict(options=PruneOptions(drop_layers=1), checkpoint=model), ["--drop-layers", "1", "--checkpoint", model],
         "{drop_layers} scores the layers on real features: give {cuts} (e.g. the dev cuts)"),
        (dict(options=PruneOptions(drop_layers=1), checkpoint=model, cuts=missing),
         ["--drop-layers", "1", "--checkpoint", model, "--cuts", missing],
         f"{{cuts}} {missing} does not exist; run dsr features first"),
        (dict(options=PruneOptions()), [], "give exactly one of {exp_dir} (with {epoch}/{avg}) or {checkpoint}"),
        (dict(options=PruneOptions(), checkpoint=tmp_path / "nope.pt"), ["--checkpoint", tmp_path / "nope.pt"],
         f"{{checkpoint}} {tmp_path / 'nope.pt'} does not exist; train first or give another {{checkpoint}}"),
    ]  # fmt: skip
    names = ("drop_layers", "cuts", "exp_dir", "epoch", "avg", "checkpoint")
    for kwargs, flags, message in cases:
        with pytest.raises(DsrUserError) as raised:
            prune_checkpoint(tmp_path / "x.pt", **kwargs)  # type: ignore[arg-type]
        assert str(raised.value) == message.format(**{n: n for n in names})
        proc = CliRunner().invoke(app, ["prune", "--out", str(tmp_path / "x.pt"), *map(str, flags)])
        assert isinstance(proc.exception, DsrUserError), proc.output
        assert str(proc.exception) == message.format(**{n: "--" + n.replace("_", "-") for n in names})
    assert not (tmp_path / "x.pt").exists()


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
            "--subsampling-keep", "0.5", "--cuts", corpus["dev_cuts"], "--out", str(out)]  # fmt: skip
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    assert "--ffn-dim 32 --num-encoder-layers 3 --subsampling-channels 8,32" in proc.output.replace("\n", "")
    ckpt = torch.load(out, weights_only=False)
    assert ckpt["prune_report"]["num_encoder_layers"] == [4, 3]
    # dsr train --init-from with the printed flags loads every weight.
    fresh = build_model(
        ModelConfig(**{**TINY, "ffn_dim": 32, "num_encoder_layers": 3, "subsampling_channels": (8, 32)})
    )
    assert load_initial_weights(fresh, str(out), []) == set(fresh.state_dict())
    _errors_name_arguments_in_python_and_flags_in_the_cli(tmp_path, tmp_path / "model.pt")
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


# Attention heads: 4 heads of 8 dimensions per layer.
HEADS = {**TINY, "num_heads": 4}
HEAD_DIM = 8


def _heads_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(**HEADS)
    return build_model(cfg).eval(), cfg


def _silence_heads(model, dead: dict[int, list[int]], part: str) -> None:
    """Zero the weights of the given heads (layer -> heads): ``"out"`` their columns of the output
    projection, ``"value"`` their value rows of qkv (biases kept: their constant output must be
    folded into the output bias)."""
    d = TINY["encoder_dim"]
    with torch.no_grad():
        for layer, heads in dead.items():
            attn = model.encoder.layers[layer].attn
            for h in heads:
                cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
                if part == "out":
                    attn.out.weight[:, cols] = 0.0
                else:
                    attn.qkv.weight[2 * d + h * HEAD_DIM : 2 * d + (h + 1) * HEAD_DIM] = 0.0


@pytest.mark.parametrize("part", ["out", "value"])
def test_head_pruning_removes_silent_heads_exactly_and_the_stated_parameters(part: str) -> None:
    """Heads whose output (or value) weights are zero score 0 and go first; the pruned model,
    with fewer heads in those layers only, computes the same function."""
    model, cfg = _heads_model()
    dead = {0: [1], 2: [0, 2]}  # inner heads too: the slicing must keep the others' rows in place
    _silence_heads(model, dead, part)
    scores = [head_importance(layer.attn) for layer in model.encoder.layers]
    assert [(i, h) for i, s in enumerate(scores) for h in range(4) if s[h] == 0] == [(0, 1), (2, 0), (2, 2)]
    x, lens = _batch()
    pruned, new_cfg, report = prune_model(model, cfg, PruneOptions(drop_heads=3))
    assert new_cfg.encoder_layer_heads == (3, 4, 2, 4) and new_cfg.num_heads == 4
    assert report["dropped_heads"] == [[0, 1], [2, 0], [2, 2]]
    assert report["encoder_layer_heads"] == [[4, 4, 4, 4], [3, 4, 2, 4]]
    # A head is Dh rows of each of q, k, v (weights and biases) and Dh columns of the output projection.
    d = cfg.encoder_dim
    assert report["parameters_before"] - report["parameters_after"] == 3 * (3 * HEAD_DIM * (d + 1) + d * HEAD_DIM)
    assert report["parameters_after"] == count_parameters(build_model(new_cfg))
    assert pruned.encoder.layers[2].attn.out.weight.shape == (d, 2 * HEAD_DIM)
    with torch.no_grad():
        torch.testing.assert_close(pruned.encode(x, lens)[0], model.encode(x, lens)[0], atol=1e-5, rtol=1e-5)
        # The chunked (block-wise) attention path too, on the valid frames (a padded query that
        # sees no key has no convex combination of values, so the folded bias need not match there).
        got, enc_lens = pruned.encode(x, lens, chunk_size=4, left_context_chunks=1)
        want, _ = model.encode(x, lens, chunk_size=4, left_context_chunks=1)
        for i, n in enumerate(enc_lens.tolist()):
            torch.testing.assert_close(got[i, :n], want[i, :n], atol=1e-5, rtol=1e-5)


def test_head_pruning_ranks_across_layers_keeps_one_per_layer_and_composes() -> None:
    model, cfg = _heads_model()
    x, lens = _batch()
    with torch.no_grad():  # layer 1's heads matter least of all: all but one of them go first
        model.encoder.layers[1].attn.out.weight.mul_(1e-3)
    pruned, new_cfg, report = prune_model(model, cfg, PruneOptions(drop_heads=4))
    assert new_cfg.encoder_layer_heads[1] == 1 and sum(new_cfg.encoder_layer_heads) == 12
    # Pruning a pruned model again: layers dropped (with their head counts), more heads, fewer channels.
    again, cfg2, report2 = prune_model(
        pruned, new_cfg, PruneOptions(ffn_keep=0.5, drop_layers=1, drop_heads=2), x, lens
    )
    kept = [i for i in range(4) if i not in report2["dropped_layers"]]
    assert len(cfg2.encoder_layer_heads) == 3
    assert sum(cfg2.encoder_layer_heads) == sum(new_cfg.encoder_layer_heads[i] for i in kept) - 2
    assert report2["parameters_after"] == count_parameters(build_model(cfg2))
    with torch.no_grad():
        enc, enc_lens = again.encode(x, lens)
        assert len(transducer_greedy_search(again, enc, enc_lens)) == 2
    with pytest.raises(ValueError, match=r"drop_heads must be in \[0, 12\]"):
        PruneOptions(drop_heads=13).validate(cfg)
    # Two of four layers dropped: the kept ones may be the two with the fewest heads.
    removable = sum(sorted(h - 1 for h in new_cfg.encoder_layer_heads)[:2])
    with pytest.raises(ValueError, match=rf"drop_heads must be in \[0, {removable}\] for 2 kept layers"):
        PruneOptions(drop_layers=2, drop_heads=removable + 1).validate(new_cfg)
    PruneOptions(drop_layers=2, drop_heads=removable).validate(new_cfg)


def test_all_heads_is_the_plain_model_bit_for_bit() -> None:
    """A config naming every layer's full head count builds the same modules as an old checkpoint's
    config (no encoder_layer_heads key), which load unchanged and compute bit-identical outputs."""
    model, cfg = _heads_model()
    old = cfg.to_dict()
    del old["encoder_layer_heads"]
    from_old = build_model(ModelConfig.from_dict(old)).eval()
    from_old.load_state_dict(model.state_dict())
    explicit = build_model(ModelConfig(**{**HEADS, "encoder_layer_heads": (4, 4, 4, 4)})).eval()
    explicit.load_state_dict(model.state_dict())
    x, lens = _batch()
    with torch.no_grad():
        assert torch.equal(explicit.encode(x, lens)[0], from_old.encode(x, lens)[0])
    with pytest.raises(ValueError, match=r"layer_heads must be 4 head counts in \[1, 4\]"):
        build_model(ModelConfig(**{**HEADS, "encoder_layer_heads": (4, 4, 5, 4)}))


def test_head_pruned_model_streams_as_it_encodes() -> None:
    """dsr's streaming encoder (per-layer key/value caches of each layer's own head count) gives
    the chunked full-utterance encoder's frames."""
    from dsr.models.streaming import StreamingEncoder, window_frames

    torch.manual_seed(0)
    cfg = ModelConfig(**{**HEADS, "causal": True, "chunk_size": 4, "left_context_chunks": 2})
    model = build_model(cfg).eval()
    pruned, _, _ = prune_model(model, cfg, PruneOptions(drop_heads=5))
    x = torch.randn(1, 16 * 6 + 3, 80)
    with torch.no_grad():
        full, _ = pruned.encode(x, torch.tensor([x.size(1)]))
        stream = StreamingEncoder(pruned, chunk_size=4, left_context_chunks=2)
        chunks = [stream.encode_chunk(x[:, 16 * k : 16 * k + window_frames(4)], torch.tensor([window_frames(4)]))[0]
                  for k in range(6)]  # fmt: skip
    torch.testing.assert_close(torch.cat(chunks, dim=1), full[:, :24], atol=1e-5, rtol=1e-5)


def test_cli_prunes_heads_then_dsr_decodes_and_fine_tunes_it(tmp_path: Path) -> None:
    """``dsr prune --drop-heads``: the checkpoint decodes in dsr.Recognizer as the pruned model
    itself does, and ``dsr train --init-from`` with the printed flags fine-tunes it (every weight
    loaded), after which ``dsr decode`` reads the fine-tuned run."""
    import yaml
    from tiny_corpus import make_tiny_corpus, tiny_train_options
    from typer.testing import CliRunner

    import dsr
    from dsr.cli.main import app
    from dsr.decoding.decode import decode
    from dsr.lang.bpe import Tokenizer

    corpus = make_tiny_corpus(tmp_path / "corpus")
    torch.manual_seed(0)
    cfg = ModelConfig(**{**HEADS, "num_encoder_layers": 2, "vocab_size": 30})
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.joiner.output_linear.bias[0] = -100.0  # no blank: long transcripts to compare
    torch.save({"model_config": cfg.to_dict(), "model": model.state_dict()}, tmp_path / "model.pt")
    out = tmp_path / "pruned.pt"
    runner = CliRunner()
    proc = runner.invoke(app, ["prune", "--checkpoint", str(tmp_path / "model.pt"), "--drop-heads", "3",
                               "--out", str(out)])  # fmt: skip
    assert proc.exit_code == 0, proc.output
    ckpt = torch.load(out, weights_only=False)
    heads = ckpt["prune_report"]["encoder_layer_heads"][1]
    assert sum(heads) == 5 and tuple(heads) == tuple(ckpt["model_config"]["encoder_layer_heads"])
    flags = ckpt["prune_report"]["finetune_flags"]
    assert flags == f"--ffn-dim 64 --num-encoder-layers 2 --encoder-layer-heads {heads[0]},{heads[1]}"
    assert flags in " ".join(proc.output.split())

    # dsr.Recognizer (dsr decode's loading) on the pruned checkpoint = the pruned model's own search.
    pruned = build_model(ModelConfig.from_dict(ckpt["model_config"])).eval()
    pruned.load_state_dict(ckpt["model"])
    recognizer = dsr.Recognizer(checkpoint=out, lang_dir=corpus["lang_dir"], device="cpu")
    from lhotse import CutSet

    cuts = list(CutSet.from_file(corpus["dev_cuts"]))
    tokenizer = Tokenizer(Path(corpus["lang_dir"]))
    by_hand = []
    with torch.no_grad():
        for c in cuts:
            feats = torch.from_numpy(c.load_features())
            enc, lens = pruned.encode(feats[None], torch.tensor([feats.size(0)]))
            by_hand.append(tokenizer.decode(transducer_greedy_search(pruned, enc, lens)[0]))
    assert min(len(t.split()) for t in by_hand) >= 3
    assert [t.text for t in recognizer.transcribe(corpus["dev_cuts"])] == by_hand

    # dsr train --init-from pruned.pt <printed flags>: every weight loaded, then trains.
    exp = tmp_path / "exp"
    conf = tmp_path / "train.yaml"
    options = tiny_train_options(corpus, exp, max_steps=2, dev_cuts="", num_heads=4)
    conf.write_text(yaml.safe_dump({k.replace("_", "-"): v for k, v in options.items()}))
    proc = runner.invoke(app, ["train", "--config", str(conf), "--init-from", str(out), *flags.split()])
    assert proc.exit_code == 0, proc.output
    trained = torch.load(exp / "epoch-1.pt", weights_only=False)
    assert trained["model_config"]["encoder_layer_heads"] == heads
    assert set(trained["model"]) == set(ckpt["model"]) | {k for k in trained["model"] if k.startswith("feature_")}
    (res,) = decode(exp, corpus["dev_cuts"], corpus["lang_dir"], methods=("greedy",), device="cpu", progress=False)
    assert (res.out_dir / "recogs.txt").is_file()

    # A bad count is a user error naming the flag (dsr's entry point prints it as one line).
    proc = runner.invoke(app, ["prune", "--checkpoint", str(tmp_path / "model.pt"), "--drop-heads", "7",
                               "--out", str(tmp_path / "x.pt")])  # fmt: skip
    assert type(proc.exception) is DsrUserError and "--drop-heads must be in [0, 6]" in str(proc.exception)
