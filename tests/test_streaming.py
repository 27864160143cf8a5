"""Streaming: chunk-by-chunk encoding equals the chunked full-utterance encoder, streaming
greedy search equals offline greedy search, ``dsr decode --streaming`` and the training
options that make a model streamable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_corpus import write_feature_cuts

from dsr.decoding.greedy import TransducerGreedySearch, transducer_greedy_search
from dsr.decoding.streaming import StreamingOptions, streaming_greedy_search, streaming_options
from dsr.errors import DsrUserError
from dsr.models import HybridTransducer, ModelConfig, build_model
from dsr.models.streaming import StreamingEncoder, stream_windows, window_frames

torch.set_num_threads(1)
FEAT = 20


def model_config(**kw) -> ModelConfig:
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
        causal=True,
    )
    args.update(kw)
    return ModelConfig(**args)


def causal_model(seed: int = 0, **kw) -> HybridTransducer:
    """A random causal model with non-trivial feature normalisation, and a joiner sharpened
    so that greedy search emits a mix of blanks and tokens."""
    torch.manual_seed(seed)
    model = build_model(model_config(**kw)).eval()
    with torch.no_grad():
        model.set_feature_stats(torch.randn(model.encoder.input_dim), torch.rand(model.encoder.input_dim) + 0.5)
        model.joiner.output_linear.weight.mul_(3.0)
        model.joiner.output_linear.bias[model.blank_id] += 1.0
    return model


@pytest.mark.parametrize("chunk_size,left", [(4, 1), (4, 0), (3, -1), (5, 2), (40, 1)])
def test_streaming_encoder_equals_chunked_full_utterance_encoder(chunk_size: int, left: int) -> None:
    model = causal_model()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 150, FEAT, generator=g)
    lengths = torch.tensor([150, 97, 30])  # streams end at different chunks, mid-chunk
    with torch.no_grad():
        ref, ref_lens = model.encode(feats, lengths, chunk_size=chunk_size, left_context_chunks=left)
    got, got_lens = StreamingEncoder(model, chunk_size, left).encode(feats, lengths)
    assert got_lens.tolist() == ref_lens.tolist()
    for i, n in enumerate(ref_lens.tolist()):
        torch.testing.assert_close(got[i, :n], ref[i, :n], rtol=1e-4, atol=1e-5)


def test_stream_windows_overlap_by_the_lookahead() -> None:
    feats = torch.arange(1.0, 27.0)[None, :, None].expand(2, 26, FEAT)
    windows = list(stream_windows(feats, torch.tensor([26, 12]), chunk_size=2))
    assert window_frames(2) == 11
    # 26 frames -> 5 encoder frames -> 3 chunks of 2, windows of 8 + 3 frames every 8 frames.
    assert [w[0, :, 0].tolist() for w, _ in windows] == [
        list(range(1, 12)),
        list(range(9, 20)),
        list(range(17, 27)) + [0],  # zero-padded past the batch
    ]
    assert [n.tolist() for _, n in windows] == [[11, 11], [11, 4], [10, 0]]


def test_streaming_greedy_search_equals_offline_greedy_search() -> None:
    model = causal_model(seed=2)
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(3, 200, FEAT, generator=g)
    lengths = torch.tensor([200, 143, 61])
    opts = StreamingOptions(chunk_ms=160, chunk_size=4, left_context_chunks=2, latency_ms=190)
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lengths, chunk_size=4, left_context_chunks=2)
    offline = transducer_greedy_search(model, enc, enc_lens)
    assert all(len(h) > 3 for h in offline), "the random model must emit tokens for the test to mean anything"
    assert streaming_greedy_search(model, feats, lengths, opts) == offline
    # The search state carries over between pieces cut anywhere, not only at chunk boundaries.
    search = TransducerGreedySearch(model, 3, enc.device)
    for start, stop in ((0, 5), (5, 6), (6, 31), (31, enc.size(1))):
        search.advance(enc[:, start:stop], (enc_lens - start).clamp(0, stop - start))
    assert search.hyps == offline


def test_final_chunk_latency_is_the_time_of_each_streams_last_chunk() -> None:
    from dsr.decoding.streaming import final_chunk_latency

    # Three streams: 3 chunks of frames, 1 chunk, and 2 chunks (then padding).
    log = [(0.5, torch.tensor([4, 4, 4])), (0.25, torch.tensor([4, 0, 2])), (0.125, torch.tensor([1, 0, 0]))]
    assert final_chunk_latency(log) == [0.125, 0.5, 0.25]
    assert final_chunk_latency([]) == []


def test_streaming_errors() -> None:
    with pytest.raises(ValueError, match="causal"):
        StreamingEncoder(causal_model(causal=False), 4, 1)
    model = causal_model()
    with pytest.raises(ValueError, match="chunk_size"):
        StreamingEncoder(model, 0, 1)
    streamer = StreamingEncoder(model, 4, 1)
    with pytest.raises(ValueError, match="window"):
        streamer.encode_chunk(torch.zeros(1, 18, FEAT), torch.tensor([18]))
    with pytest.raises(DsrUserError, match="--causal"):
        streaming_options(causal_model(causal=False), 160)
    with pytest.raises(DsrUserError, match="multiple of 40 ms"):
        streaming_options(model, 100)
    opts = streaming_options(causal_model(left_context_chunks=3), 320)
    assert (opts.chunk_size, opts.left_context_chunks, opts.latency_ms) == (8, 3, 350)
    assert streaming_options(model, 80, left_context_chunks=0).left_context_chunks == 0


# ---------------------------------------------------------------- dsr decode --streaming


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict[str, Path]:
    """A lang dir, a random causal checkpoint whose default attention is chunked (4 frames,
    1 chunk of left context) and 3 cuts of random features."""

    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("streaming")
    texts = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]
    train_bpe(texts * 30, root / "lang", vocab_size=40)
    vocab = Tokenizer(root / "lang").vocab_size
    config = dict(feature_dim=80, vocab_size=vocab, chunk_size=4, left_context_chunks=1)
    model = causal_model(**config)
    save_checkpoint(
        root / "exp" / "epoch-1.pt", {"model_config": model_config(**config).to_dict(), "model": model.state_dict()}
    )
    non_causal = causal_model(**config, causal=False)
    save_checkpoint(
        root / "non_causal" / "epoch-1.pt",
        {"model_config": model_config(**config, causal=False).to_dict(), "model": non_causal.state_dict()},
    )
    write_feature_cuts(root, texts, (250, 171, 90))
    return {"root": root, "exp": root / "exp", "lang": root / "lang", "cuts": root / "toy_cuts_test.jsonl.gz"}


def test_decode_streaming_cli_equals_offline_chunked_decode(exp: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from dsr.cli.main import app

    common = [
        "decode",
        "--exp-dir",
        str(exp["exp"]),
        "--cuts",
        str(exp["cuts"]),
        "--lang-dir",
        str(exp["lang"]),
        "--device",
        "cpu",
    ]
    offline = CliRunner().invoke(app, common + ["-m", "greedy"])
    assert offline.exit_code == 0, offline.output
    streaming = CliRunner().invoke(app, common + ["--streaming", "--chunk-ms", "160"])
    assert streaming.exit_code == 0, streaming.output
    # The library names the option (chunk_ms), the command its flag.
    bad = CliRunner().invoke(app, common + ["--streaming", "--chunk-ms", "100"])
    assert isinstance(bad.exception, DsrUserError), bad.output
    assert str(bad.exception).startswith("--chunk-ms: must be a positive multiple of 40 ms"), str(bad.exception)
    assert "algorithmic latency 190 ms" in " ".join(streaming.output.split())
    out = exp["exp"] / "decode"
    # The checkpoint's default attention is chunked like the stream (4 frames = 160 ms, 1 chunk
    # of left context): chunk-by-chunk decoding must reproduce the offline recognitions.
    recogs = (out / "greedy-streaming-160ms/toy_test/recogs.txt").read_text()
    assert recogs == (out / "greedy/toy_test/recogs.txt").read_text()
    assert "hyp=[" in recogs and "hyp=[]" not in recogs
    info = json.loads((out / "greedy-streaming-160ms/toy_test/result.json").read_text())
    assert info["method"] == "greedy-streaming-160ms" and info["streaming"] is True
    assert (info["chunk_ms"], info["chunk_frames"], info["left_context_chunks"]) == (160, 4, 1)
    assert info["algorithmic_latency_ms"] == 190 and info["num_utts"] == 3 and info["rtf"] > 0
    # Per-utterance latency = compute of its last chunk; one batch, as many chunks as the longest cut needs.
    from dsr.models.subsampling import Conv2dSubsampling

    chunks, latency = info["chunk_compute_ms"], info["latency_ms"]
    assert chunks["count"] == -(-int(Conv2dSubsampling.output_lengths(torch.tensor([250]))) // 4)
    assert latency["count"] == 3
    assert 0 < chunks["p50"] <= chunks["max"] and latency["max"] <= chunks["max"]
    assert json.loads((out / "greedy/toy_test/result.json").read_text())["streaming"] is False


def test_decode_streaming_user_errors(exp: dict[str, Path]) -> None:
    from dsr.decoding.decode import decode

    def run(exp_dir: Path, **kw) -> None:
        decode(exp_dir, exp["cuts"], exp["lang"], device="cpu", progress=False, **kw)

    with pytest.raises(DsrUserError, match="train it with dsr train --causal"):
        run(exp["root"] / "non_causal", streaming=True, chunk_ms=160)
    with pytest.raises(DsrUserError, match="greedy only"):
        run(exp["exp"], methods=("modified-beam-search",), streaming=True, chunk_ms=160)
    with pytest.raises(DsrUserError, match="only apply with `streaming`"):
        run(exp["exp"], chunk_ms=160)
    with pytest.raises(DsrUserError, match="chunk_ms: must be a positive multiple of 40 ms"):
        run(exp["exp"], streaming=True)


# ---------------------------------------------------------------- training options


def test_train_config_streaming_options(tmp_path: Path) -> None:
    from dsr.training.config import TrainConfig, resolve_config

    conf = tmp_path / "train.yaml"
    conf.write_text("causal: true\nchunk-sizes: 8,16,32\nleft-context-chunks: 2\n")
    cfg = resolve_config(conf, {"full_context_prob": 0.25})
    assert cfg.model_chunking() == {
        "causal": True,
        "chunk_size": -1,
        "left_context_chunks": 2,
        "train_chunk_sizes": (8, 16, 32),
        "train_left_context_chunks": (2,),
        "train_full_context_prob": 0.25,
    }
    # Never full attention in training: the default attention is the largest chunk.
    always = TrainConfig.from_dict(
        dict(chunk_sizes="[4, 8]", left_context_chunks="1,-1", full_context_prob=0.0)
    ).model_chunking()
    assert (always["chunk_size"], always["left_context_chunks"]) == (8, -1)
    assert TrainConfig.from_dict({"causal": True}).model_chunking() == {"causal": True}
    for bad, match in [
        (dict(chunk_sizes="8,x"), "chunk_sizes"),
        (dict(chunk_sizes="0,8"), "chunk_sizes"),
        (dict(left_context_chunks="-2"), "left_context_chunks"),
        (dict(left_context_chunks=""), "left_context_chunks"),
        (dict(full_context_prob=1.0), "full_context_prob"),
    ]:
        with pytest.raises(DsrUserError, match=match):
            TrainConfig.from_dict(bad).validate()


def test_training_a_streaming_model_saves_its_chunking(tmp_path: Path, exp: dict[str, Path]) -> None:
    """Two training steps with dynamic chunks through the CLI; the checkpoint says how to stream."""
    from typer.testing import CliRunner

    from dsr.cli.main import app

    args = [
        "train",
        "--exp-dir",
        str(tmp_path / "exp"),
        "--train-cuts",
        str(exp["cuts"]),
        "--dev-cuts",
        "",
        "--lang-dir",
        str(exp["lang"]),
        "--encoder-dim",
        "32",
        "--num-encoder-layers",
        "1",
        "--num-heads",
        "2",
        "--ffn-dim",
        "64",
        "--decoder-dim",
        "32",
        "--joiner-dim",
        "32",
        "--max-steps",
        "2",
        "--num-epochs",
        "1",
        "--device",
        "cpu",
        "--num-threads",
        "1",
        "--save-every-n",
        "0",
        "--average-period",
        "0",
        "--causal",
        "--chunk-sizes",
        "2,4",
        "--left-context-chunks",
        "-1",
        "--full-context-prob",
        "0.5",
    ]
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    ckpt = torch.load(tmp_path / "exp" / "epoch-1.pt", map_location="cpu", weights_only=False)
    mcfg = ModelConfig.from_dict(ckpt["model_config"])
    assert mcfg.causal and mcfg.train_chunk_sizes == (2, 4) and mcfg.train_left_context_chunks == (-1,)
    assert (mcfg.chunk_size, mcfg.left_context_chunks, mcfg.train_full_context_prob) == (-1, -1, 0.5)
