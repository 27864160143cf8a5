"""``dsr export onnx``: the exported files decoded by sherpa-onnx's own Python API give
exactly dsr's greedy transcripts, for the transducer and the CTC head, fp32 and int8.

The model is a tiny random Conformer whose output layers are biased (see ``_make_model``)
so that it emits a token on a good share of the frames of real speech: a random model
emits almost only blanks, and two decoders that agree on empty transcripts prove nothing.
The tests assert that the transcripts are long enough to mean something.

Needs onnx, onnxruntime and sherpa-onnx (``pip install -e '.[export]'``) and real speech
from ../shared/data/arctic_cathy; each test skips with the reason when they are absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dsr.errors import DsrUserError
from dsr.export.onnx import (
    SHERPA_FBANK,
    OnnxExportOptions,
    StreamingExport,
    check_exportable,
    export_onnx,
    export_onnx_model,
    read_metadata,
    read_tokens,
)
from dsr.features.frontend import frontend_to_dict
from dsr.features.whisper_fbank import WhisperFbankConfig
from dsr.models.config import ModelConfig, build_model
from dsr.models.transducer import HybridTransducer

pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[export]')")

ARCTIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "arctic_cathy"  # ../shared/data next to the repo
NUM_UTTS = 4
VOCAB = 100
TINY = dict(
    encoder_dim=32, num_encoder_layers=2, num_heads=2, ffn_dim=64, conv_kernel_size=5, decoder_dim=32,
    joiner_dim=32, dropout=0.0, vocab_size=VOCAB,
)  # fmt: skip
FRONTEND = frontend_to_dict(SHERPA_FBANK)


def _arctic() -> list[tuple[str, str]]:
    if not (ARCTIC / "transcripts.tsv").is_file():
        pytest.skip(f"real speech not found: {ARCTIC} (../shared/data/arctic_cathy)")
    lines = (ARCTIC / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines]  # type: ignore[misc]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four ARCTIC utterances (audio, FBANK) and a BPE lang dir trained on ARCTIC's prompts."""
    from dsr.features.audio import load_audio_mono
    from dsr.features.fbank import compute_fbank
    from dsr.lang.bpe import Tokenizer, train_bpe

    rows = _arctic()
    root = tmp_path_factory.mktemp("onnx")
    train_bpe([text for _, text in rows], root / "lang", vocab_size=VOCAB)
    picked = rows[:: len(rows) // NUM_UTTS][:NUM_UTTS]
    audio = [load_audio_mono(ARCTIC / "audio" / f"{utt}.flac", 16000) for utt, _ in picked]
    feats = [torch.from_numpy(compute_fbank(a, SHERPA_FBANK)) for a in audio]
    return {"root": root, "lang": root / "lang", "audio": audio, "feats": feats,
            "tokenizer": Tokenizer(root / "lang")}  # fmt: skip


def _make_model(
    feats: list[torch.Tensor], seed: int = 0, drop_heads: int = 0, **extra: object
) -> tuple[HybridTransducer, ModelConfig]:
    """A random tiny model that emits tokens on roughly half of the frames; with ``drop_heads``,
    that many attention heads pruned (``dsr prune --drop-heads``) before the output layers are set.

    The global CMVN comes from the utterances' own features; the joiner's and the CTC head's
    output weights are scaled up (clear margins between tokens, so fp32 rounding between
    PyTorch and onnxruntime cannot flip an argmax) and the blank bias is moved near the
    median margin of the best other token over blank.  ``<sos/eos>`` and ``<unk>`` are switched off:
    sherpa-onnx's transducer search treats ``<unk>`` as blank and dsr's does not.
    """
    torch.manual_seed(seed)
    cfg = ModelConfig(**{**TINY, **extra})
    model = build_model(cfg).eval()
    if drop_heads:
        from dsr.models.prune import PruneOptions, prune_model

        model, cfg, _ = prune_model(model, cfg, PruneOptions(drop_heads=drop_heads))
    frames = torch.cat(feats)
    model.set_feature_stats(frames.mean(0), frames.std(0))
    lens = torch.tensor([f.size(0) for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    with torch.no_grad():
        enc, enc_lens = model.encode(x, lens)
        valid = torch.arange(enc.size(1))[None, :] < enc_lens[:, None]
        heads = []
        if model.joiner is not None and model.predictor is not None:
            joiner, predictor = model.joiner, model.predictor
            heads.append((joiner.output_linear, lambda: joiner(
                enc, predictor(torch.zeros(enc.size(0), cfg.context_size, dtype=torch.long), need_pad=False))))  # fmt: skip
        if model.ctc_output is not None:
            ctc = model.ctc_output[1]
            heads.append((ctc, lambda: ctc(enc)))
        for linear, logits_of in heads:
            linear.weight.mul_(8.0)
            linear.bias.mul_(8.0)
            linear.bias[1:3] = -100.0  # <sos/eos>, <unk>
            logits = logits_of()[valid]
            margin = (logits[:, 1:].max(dim=-1).values - logits[:, 0]).sort().values
            # The widest gap between the margins of the middle fifth of the frames: no frame's
            # blank ties with its best token (the median itself would be an exact tie).
            lo, hi = int(0.4 * margin.numel()), int(0.6 * margin.numel())
            k = lo + int((margin[lo + 1 : hi + 1] - margin[lo:hi]).argmax())
            linear.bias[0] += (margin[k] + margin[k + 1]) / 2
    return model, cfg


def _dsr_greedy(model: HybridTransducer, feats: list[torch.Tensor]) -> tuple[list[list[int]], list[list[int]]]:
    """dsr's transducer and CTC greedy search on a padded batch."""
    from dsr.decoding.greedy import ctc_greedy_search, transducer_greedy_search

    lens = torch.tensor([f.size(0) for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    with torch.no_grad():
        enc, enc_lens = model.encode(x, lens)
        return transducer_greedy_search(model, enc, enc_lens), ctc_greedy_search(model.ctc_log_probs(enc), enc_lens)


def _sherpa_decode(recognizer, audio: list[np.ndarray]) -> list:
    """sherpa-onnx's results of one batch (decode_streams pads the features as it does in deployment)."""
    streams = []
    for a in audio:
        s = recognizer.create_stream()
        s.accept_waveform(16000, a)
        streams.append(s)
    recognizer.decode_streams(streams)
    return [s.result for s in streams]


@pytest.fixture(scope="module")
def exported(speech: dict) -> dict:
    model, cfg = _make_model(speech["feats"])
    out = speech["root"] / "export"
    result = export_onnx_model(model, cfg, FRONTEND, speech["lang"] / "tokens.txt", out)
    return {"model": model, "cfg": cfg, "out": out, "result": result}


def _check_same(dsr_hyps: list[list[int]], results: list, speech: dict, min_tokens: int) -> None:
    tok = speech["tokenizer"]
    symbols = read_tokens(speech["lang"] / "tokens.txt")
    for hyp, res in zip(dsr_hyps, results):
        # sherpa-onnx's symbol table shows BPE's word marker as a space.
        assert list(res.tokens) == [symbols[i].replace("\u2581", " ") for i in hyp]
        assert res.text.strip() == tok.decode(hyp)
    # A comparison of near-empty transcripts would mean nothing.
    assert min(len(h) for h in dsr_hyps) >= min_tokens, [len(h) for h in dsr_hyps]
    assert len({tuple(h) for h in dsr_hyps}) == len(dsr_hyps)


def test_export_writes_sherpa_layout_and_metadata(exported: dict) -> None:
    out, cfg = exported["out"], exported["cfg"]
    assert sorted(exported["result"].files) == sorted(
        [f"{n}{s}.onnx" for n in ("encoder", "decoder", "joiner", "ctc") for s in ("", ".int8")] + ["tokens.txt"]
    )
    enc, dec, ctc = (read_metadata(out / f"{n}.onnx") for n in ("encoder", "decoder", "ctc"))
    assert enc["model_type"] == "conformer" and ctc["model_type"] == "zipformer2_ctc"
    assert (int(dec["vocab_size"]), int(dec["context_size"])) == (cfg.vocab_size, cfg.context_size)
    assert json.loads(enc["dsr_frontend"]) == FRONTEND
    for name in ("encoder", "decoder", "joiner", "ctc"):
        assert read_metadata(out / f"{name}.int8.onnx") == {
            **read_metadata(out / f"{name}.onnx"),
            "onnx.infer": "onnxruntime.quant",
        }
    # int8 MatMul weights: the encoder file shrinks (its LayerNorm/conv weights stay float).
    assert (out / "encoder.int8.onnx").stat().st_size < 0.7 * (out / "encoder.onnx").stat().st_size


def test_onnxruntime_matches_pytorch_with_dynamic_batch_and_time(exported: dict, speech: dict) -> None:
    """The graphs equal the PyTorch model on shapes other than the export's example (N=2, T=100)."""
    import onnxruntime as ort

    model, out = exported["model"], exported["out"]
    feats = speech["feats"][:3]
    lens = torch.tensor([f.size(0) for f in feats])
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    with torch.no_grad():
        enc, enc_lens = model.encode(x, lens)
        ref_enc = model.joiner.encoder_proj(enc)
        ref_ctc = model.ctc_log_probs(enc)
    got_enc, got_lens = ort.InferenceSession(str(out / "encoder.onnx")).run(
        None, {"x": x.numpy(), "x_lens": lens.numpy()}
    )
    got_ctc, _ = ort.InferenceSession(str(out / "ctc.onnx")).run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
    assert got_lens.tolist() == enc_lens.tolist()
    for i, n in enumerate(enc_lens.tolist()):
        np.testing.assert_allclose(got_enc[i, :n], ref_enc[i, :n].numpy(), atol=2e-4)
        np.testing.assert_allclose(got_ctc[i, :n], ref_ctc[i, :n].numpy(), atol=2e-4)


@pytest.mark.parametrize("model_type", ["transducer", ""])
def test_sherpa_onnx_transducer_greedy_equals_dsr(exported: dict, speech: dict, model_type: str) -> None:
    """model_type "" makes sherpa-onnx detect the model from encoder.onnx's metadata."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed (pip install -e '.[export]')")
    out = exported["out"]
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(out / "encoder.onnx"), decoder=str(out / "decoder.onnx"), joiner=str(out / "joiner.onnx"),
        tokens=str(out / "tokens.txt"), num_threads=1, decoding_method="greedy_search", model_type=model_type,
    )  # fmt: skip
    hyps, _ = _dsr_greedy(exported["model"], speech["feats"])
    _check_same(hyps, _sherpa_decode(rec, speech["audio"]), speech, min_tokens=10)
    # One stream at a time (no padding) gives the same.
    _check_same(hyps, [_sherpa_decode(rec, [a])[0] for a in speech["audio"]], speech, min_tokens=10)


def test_sherpa_onnx_ctc_greedy_equals_dsr(exported: dict, speech: dict) -> None:
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed (pip install -e '.[export]')")
    out = exported["out"]
    rec = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(out / "ctc.onnx"), tokens=str(out / "tokens.txt"), num_threads=1, decoding_method="greedy_search"
    )
    _, hyps = _dsr_greedy(exported["model"], speech["feats"])
    _check_same(hyps, _sherpa_decode(rec, speech["audio"]), speech, min_tokens=10)


def test_sherpa_onnx_decodes_the_int8_files(exported: dict, speech: dict) -> None:
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed (pip install -e '.[export]')")
    out = exported["out"]
    fp32 = _sherpa_decode(sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(out / "encoder.onnx"), decoder=str(out / "decoder.onnx"), joiner=str(out / "joiner.onnx"),
        tokens=str(out / "tokens.txt"), num_threads=1), speech["audio"])  # fmt: skip
    int8 = _sherpa_decode(sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(out / "encoder.int8.onnx"), decoder=str(out / "decoder.int8.onnx"),
        joiner=str(out / "joiner.int8.onnx"), tokens=str(out / "tokens.txt"), num_threads=1), speech["audio"])  # fmt: skip
    ctc8 = _sherpa_decode(sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(out / "ctc.int8.onnx"), tokens=str(out / "tokens.txt"), num_threads=1), speech["audio"])  # fmt: skip
    import kaldialign

    for a, b, c in zip(fp32, int8, ctc8):
        assert len(b.tokens) >= 10 and len(c.tokens) >= 10
        # Quantisation may flip a few argmaxes of this random model, not the transcript.
        errors = kaldialign.edit_distance(list(a.tokens), list(b.tokens))["total"]
        assert errors <= 0.5 * len(a.tokens), (a.tokens, b.tokens)


def test_export_refuses_what_sherpa_onnx_cannot_run(tmp_path: Path) -> None:
    tokens = ["<blk>", "<sos/eos>", "<unk>"] + [f"t{i}" for i in range(VOCAB - 3)]
    cfg = ModelConfig(**TINY)
    check_exportable(cfg, FRONTEND, tokens)
    whisper_cfg = ModelConfig(**{**TINY, "encoder_type": "whisper"})
    with pytest.raises(DsrUserError, match="pretrained whisper encoder: its front end is Whisper's log-mel"):
        check_exportable(whisper_cfg, frontend_to_dict(WhisperFbankConfig()), tokens)
    with pytest.raises(DsrUserError, match="features sherpa-onnx does not compute: type whisper-fbank"):
        check_exportable(cfg, frontend_to_dict(WhisperFbankConfig()), tokens)
    with pytest.raises(DsrUserError, match=r"high_freq 0.0 \(sherpa-onnx: -400.0\)"):
        check_exportable(cfg, {**FRONTEND, "high_freq": 0.0}, tokens)
    with pytest.raises(DsrUserError, match="tokens.txt has 99 tokens but the model's vocabulary is 100"):
        check_exportable(cfg, FRONTEND, tokens[:-1])
    with pytest.raises(DsrUserError, match="needs '<blk>'"):
        check_exportable(cfg, FRONTEND, ["<b>"] + tokens[1:])
    with pytest.raises(DsrUserError, match="blank id 0"):
        check_exportable(ModelConfig(**{**TINY, "blank_id": 3}), FRONTEND, tokens)
    with pytest.raises(DsrUserError, match="exactly one of exp_dir"):
        OnnxExportOptions(out_dir=tmp_path, lang_dir=tmp_path).validate()


def test_cli_exports_a_checkpoint_file(tmp_path: Path) -> None:
    """``dsr export onnx --checkpoint``: files and done marker; a Whisper-front-end checkpoint
    is refused with one line."""
    from typer.testing import CliRunner

    from dsr.cli.main import app

    lang = tmp_path / "lang"
    lang.mkdir()
    tokens = ["<blk>", "<sos/eos>", "<unk>"] + [f"\u2581t{i}" for i in range(VOCAB - 3)]
    (lang / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    cfg = ModelConfig(**{**TINY, "use_ctc": False})
    torch.save({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict(), "frontend": FRONTEND},
               tmp_path / "model.pt")  # fmt: skip
    out = tmp_path / "export"
    args = ["export", "onnx", "--checkpoint", str(tmp_path / "model.pt"), "--lang-dir", str(lang), "--out-dir", str(out),
            "--no-int8"]  # fmt: skip
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    assert sorted(p.name for p in out.iterdir()) == [".done.export-onnx", "decoder.onnx", "encoder.onnx",
                                                     "joiner.onnx", "tokens.txt"]  # fmt: skip
    torch.save({"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict(),
                "frontend": frontend_to_dict(WhisperFbankConfig())}, tmp_path / "whisper-fe.pt")  # fmt: skip
    with pytest.raises(DsrUserError, match="features sherpa-onnx does not compute"):
        export_onnx(OnnxExportOptions(out_dir=tmp_path / "x", lang_dir=lang, checkpoint=tmp_path / "whisper-fe.pt"))


@pytest.mark.parametrize(
    "extra",
    [dict(causal=True, chunk_size=4, left_context_chunks=1), dict(chunk_size=8, left_context_chunks=-1),
     dict(utterance_norm="mean-var")],
)  # fmt: skip
def test_chunked_causal_and_normalised_encoders_export_exactly(tmp_path: Path, extra: dict) -> None:
    """Chunked attention (block-wise in PyTorch for long inputs, a (T, T) mask in the graph) and
    per-utterance normalisation give the PyTorch model's encoder output, padded batch included."""
    import onnxruntime as ort

    torch.manual_seed(1)
    cfg = ModelConfig(**{**TINY, **extra})
    model = build_model(cfg).eval()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{t} {i}\n" for i, t in enumerate(["<blk>"] + [f"t{i}" for i in range(VOCAB - 1)])))
    export_onnx_model(model, cfg, FRONTEND, tokens, tmp_path / "out", int8=False)
    lens = torch.tensor([203, 150, 61])
    x = torch.randn(3, 203, 80) * 3 - 8
    with torch.no_grad():
        enc, enc_lens = model.encode(x, lens)
        ref = model.joiner.encoder_proj(enc)
    got, got_lens = ort.InferenceSession(str(tmp_path / "out" / "encoder.onnx")).run(
        None, {"x": x.numpy(), "x_lens": lens.numpy()})  # fmt: skip
    assert got_lens.tolist() == enc_lens.tolist()
    for i, n in enumerate(enc_lens.tolist()):
        np.testing.assert_allclose(got[i, :n], ref[i, :n].numpy(), atol=2e-4)


# Streaming: 160 ms chunks (4 encoder frames), 2 chunks of left context.
CHUNK, LEFT = 4, 2


@pytest.fixture(scope="module")
def streaming_export(speech: dict) -> dict:
    # Silence after each utterance, as sherpa-onnx's streaming examples append: sherpa-onnx
    # only runs whole windows, and the padding lets the last words' window complete.
    audio = [np.concatenate([a, np.zeros(8000, dtype=np.float32)]) for a in speech["audio"]]
    from dsr.features.fbank import compute_fbank

    feats = [torch.from_numpy(compute_fbank(a, SHERPA_FBANK)) for a in audio]
    model, cfg = _make_model(feats, causal=True, chunk_size=CHUNK, left_context_chunks=LEFT)
    out = speech["root"] / "export-streaming"
    result = export_onnx_model(model, cfg, FRONTEND, speech["lang"] / "tokens.txt", out,
                               streaming=StreamingExport(CHUNK, LEFT))  # fmt: skip
    return {"model": model, "cfg": cfg, "out": out, "result": result, "audio": audio, "feats": feats}


def _sherpa_online(out: Path, audio: list[np.ndarray], suffix: str = "", ctc: bool = False) -> list:
    """sherpa-onnx's OnlineRecognizer on the streaming export: the transducer files, or with
    ``ctc`` ctc.onnx as a zipformer2 CTC model (``sherpa-onnx --zipformer2-ctc-model``)."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed (pip install -e '.[export]')")
    if ctc:
        rec = sherpa_onnx.OnlineRecognizer.from_zipformer2_ctc(
            tokens=str(out / "tokens.txt"), model=str(out / f"ctc{suffix}.onnx"), num_threads=1,
            decoding_method="greedy_search",
        )  # fmt: skip
    else:
        rec = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(out / "tokens.txt"), encoder=str(out / f"encoder{suffix}.onnx"),
            decoder=str(out / f"decoder{suffix}.onnx"), joiner=str(out / f"joiner{suffix}.onnx"), num_threads=1,
            decoding_method="greedy_search",
        )  # fmt: skip
    streams = []
    for a in audio:
        s = rec.create_stream()
        s.accept_waveform(16000, a)
        s.input_finished()
        streams.append(s)
    # All streams in one batch while any is ready (sherpa-onnx stacks their states).
    while any(rec.is_ready(s) for s in streams):
        rec.decode_streams([s for s in streams if rec.is_ready(s)])
    return [rec.get_result_all(s) for s in streams]


def test_streaming_export_layout(streaming_export: dict) -> None:
    out, cfg = streaming_export["out"], streaming_export["cfg"]
    assert sorted(streaming_export["result"].files) == sorted(
        [f"{n}{s}.onnx" for n in ("encoder", "decoder", "joiner", "ctc") for s in ("", ".int8")] + ["tokens.txt"]
    )
    meta = read_metadata(out / "encoder.onnx")
    expected = {"model_type": "conformer", "num_encoder_layers": cfg.num_encoder_layers, "T": 4 * CHUNK + 3,
                "decode_chunk_len": 4 * CHUNK, "left_context": 2 * LEFT * CHUNK, "encoder_dim": cfg.encoder_dim,
                "pad_length": 3, "cnn_module_kernel": cfg.conv_kernel_size}  # fmt: skip
    assert {k: meta[k] for k in expected} == {k: str(v) for k, v in expected.items()}
    # ctc.onnx: sherpa-onnx's online zipformer2 CTC layout, one "stack" per dsr layer.
    meta = read_metadata(out / "ctc.onnx")
    per_layer = lambda v: ",".join([str(v)] * cfg.num_encoder_layers)  # noqa: E731
    dh = cfg.encoder_dim // cfg.num_heads
    expected = {"T": 4 * CHUNK + 3, "decode_chunk_len": 4 * CHUNK, "encoder_dims": per_layer(cfg.encoder_dim),
                "num_encoder_layers": per_layer(1), "num_heads": per_layer(cfg.num_heads),
                "query_head_dims": per_layer(dh), "value_head_dims": per_layer(dh // 2),
                "cnn_module_kernels": per_layer(cfg.conv_kernel_size), "left_context_len": per_layer(LEFT * CHUNK)}  # fmt: skip
    assert {k: meta[k] for k in expected} == {k: str(v) for k, v in expected.items()}


def _used_frames(f: torch.Tensor) -> int:
    """Feature frames of the windows sherpa-onnx runs: a window when processed + T < frames
    ready (online-recognizer-transducer-impl.h and online-recognizer-ctc-impl.h alike)."""
    from dsr.models.streaming import window_frames

    hop, width = 4 * CHUNK, window_frames(CHUNK)
    num_windows = sum(1 for k in range(f.size(0)) if k * hop + width < f.size(0))
    return (num_windows - 1) * hop + width


def _dsr_streaming_greedy(model: HybridTransducer, feats: list[torch.Tensor]) -> list[list[int]]:
    """dsr's streaming greedy search (``dsr decode --streaming``'s) on the windows sherpa-onnx runs."""
    from dsr.decoding.streaming import StreamingOptions, streaming_greedy_search

    hyps = []
    for f in feats:
        used = _used_frames(f)
        opts = StreamingOptions(chunk_ms=CHUNK * 40, chunk_size=CHUNK, left_context_chunks=LEFT, latency_ms=0.0)
        hyps += streaming_greedy_search(model, f[None, :used], torch.tensor([used]), opts)
    return hyps


def _dsr_streaming_ctc_greedy(model: HybridTransducer, feats: list[torch.Tensor]) -> list[list[int]]:
    """CTC greedy search on dsr's chunk-by-chunk encoder output (:class:`StreamingEncoder`, what
    ``dsr decode --streaming`` runs), on the windows sherpa-onnx runs.  dsr has no streaming CTC
    decode of its own; greedy CTC is frame-local, so searching the concatenated chunks is the same."""
    from dsr.decoding.greedy import ctc_greedy_search
    from dsr.models.streaming import StreamingEncoder

    hyps = []
    for f in feats:
        used = _used_frames(f)
        enc, lens = StreamingEncoder(model, CHUNK, LEFT).encode(f[None, :used], torch.tensor([used]))
        hyps += ctc_greedy_search(model.ctc_log_probs(enc), lens)
    return hyps


def test_sherpa_onnx_streaming_ctc_greedy_equals_dsr_streaming(streaming_export: dict, speech: dict) -> None:
    """sherpa-onnx's OnlineRecognizer on the streaming ctc.onnx (zipformer2 CTC layout) gives CTC
    greedy search on dsr's streaming encoder, with its streams batched and one at a time."""
    hyps = _dsr_streaming_ctc_greedy(streaming_export["model"], streaming_export["feats"])
    out, audio = streaming_export["out"], streaming_export["audio"]
    _check_same(hyps, _sherpa_online(out, audio, ctc=True), speech, min_tokens=10)
    _check_same(hyps, [_sherpa_online(out, [a], ctc=True)[0] for a in audio], speech, min_tokens=10)


def test_streaming_ctc_graph_with_an_even_kernel_equals_dsr_streaming(tmp_path: Path) -> None:
    """An even convolution kernel (K - 1 odd: the second half of the convolution state carries one
    zero column): the streaming ctc.onnx, fed its own states chunk after chunk by onnxruntime,
    gives dsr's streaming encoder + CTC head for two streams at once."""
    import onnxruntime as ort

    from dsr.models.streaming import StreamingEncoder

    torch.manual_seed(2)
    cfg = ModelConfig(**{**TINY, "causal": True, "conv_kernel_size": 4, "use_transducer": False})
    model = build_model(cfg).eval()
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{t} {i}\n" for i, t in enumerate(["<blk>"] + [f"t{i}" for i in range(VOCAB - 1)])))
    export_onnx_model(model, cfg, FRONTEND, tokens, tmp_path, int8=False, streaming=StreamingExport(CHUNK, LEFT))
    chunks = 6
    x = torch.randn(2, chunks * 4 * CHUNK + 3, 80) * 3 - 8
    with torch.no_grad():
        enc, _ = StreamingEncoder(model, CHUNK, LEFT).encode(x, torch.tensor([x.size(1)] * 2))
        ref = model.ctc_log_probs(enc)[:, : chunks * CHUNK].numpy()
    sess = ort.InferenceSession(str(tmp_path / "ctc.onnx"))
    inputs = sess.get_inputs()[1:]
    # Zeros of the shapes sherpa-onnx's InitStates makes (the batch axis is the symbolic one).
    states = [np.zeros([2 if isinstance(d, str) else d for d in i.shape],
                       dtype=np.int64 if i.type == "tensor(int64)" else np.float32) for i in inputs]  # fmt: skip
    got = []
    for k in range(chunks):
        out = sess.run(None, {"x": x[:, 4 * CHUNK * k : 4 * CHUNK * (k + 1) + 3].numpy(),
                              **{i.name: s for i, s in zip(inputs, states)}})  # fmt: skip
        got.append(out[0])
        states = out[1:]
    np.testing.assert_allclose(np.concatenate(got, axis=1), ref, atol=2e-4)
    assert states[-1].tolist() == [chunks * CHUNK] * 2  # processed_lens: encoder frames


def test_sherpa_onnx_streaming_greedy_equals_dsr_streaming(streaming_export: dict, speech: dict) -> None:
    """sherpa-onnx's OnlineRecognizer on the streaming export gives dsr's streaming greedy search
    (``dsr decode --streaming``'s search) on the windows sherpa-onnx ran."""
    results = _sherpa_online(streaming_export["out"], streaming_export["audio"])
    hyps = _dsr_streaming_greedy(streaming_export["model"], streaming_export["feats"])
    _check_same(hyps, results, speech, min_tokens=10)


def test_sherpa_onnx_decodes_a_head_pruned_model_as_dsr_does(speech: dict, streaming_export: dict) -> None:
    """A model whose layers kept different numbers of attention heads (``dsr prune --drop-heads``):
    sherpa-onnx's offline transducer and CTC recognisers, and its OnlineRecognizer on the streaming
    layout (whose state keeps encoder_dim columns per layer, zeros past a layer's heads), give
    dsr's greedy transcripts."""
    sherpa_onnx = pytest.importorskip("sherpa_onnx", reason="sherpa-onnx is not installed (pip install -e '.[export]')")
    tokens = speech["lang"] / "tokens.txt"
    model, cfg = _make_model(speech["feats"], num_heads=4, drop_heads=3)
    assert len(set(cfg.encoder_layer_heads)) == 2 and sum(cfg.encoder_layer_heads) == 5
    out = speech["root"] / "export-pruned"
    export_onnx_model(model, cfg, FRONTEND, tokens, out, int8=False)
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(out / "encoder.onnx"), decoder=str(out / "decoder.onnx"), joiner=str(out / "joiner.onnx"),
        tokens=str(tokens), num_threads=1, decoding_method="greedy_search",
    )  # fmt: skip
    ctc = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(model=str(out / "ctc.onnx"), tokens=str(tokens),
                                                           num_threads=1)  # fmt: skip
    transducer_hyps, ctc_hyps = _dsr_greedy(model, speech["feats"])
    _check_same(transducer_hyps, _sherpa_decode(rec, speech["audio"]), speech, min_tokens=10)
    _check_same(ctc_hyps, _sherpa_decode(ctc, speech["audio"]), speech, min_tokens=10)

    feats = streaming_export["feats"]
    model, cfg = _make_model(feats, num_heads=4, drop_heads=3, causal=True, chunk_size=CHUNK, left_context_chunks=LEFT)
    assert len(set(cfg.encoder_layer_heads)) == 2
    out = speech["root"] / "export-pruned-streaming"
    export_onnx_model(model, cfg, FRONTEND, tokens, out, int8=False, streaming=StreamingExport(CHUNK, LEFT))
    assert read_metadata(out / "encoder.onnx")["encoder_dim"] == str(cfg.encoder_dim)
    results = _sherpa_online(out, streaming_export["audio"])
    _check_same(_dsr_streaming_greedy(model, feats), results, speech, min_tokens=10)
    # The streaming CTC layout sizes each layer's state by its own head count.
    assert read_metadata(out / "ctc.onnx")["num_heads"] == ",".join(map(str, cfg.encoder_layer_heads))
    results = _sherpa_online(out, streaming_export["audio"], ctc=True)
    _check_same(_dsr_streaming_ctc_greedy(model, feats), results, speech, min_tokens=10)


@pytest.mark.parametrize("ctc", [False, True])
def test_sherpa_onnx_decodes_the_int8_streaming_files(streaming_export: dict, ctc: bool) -> None:
    import kaldialign

    fp32 = _sherpa_online(streaming_export["out"], streaming_export["audio"], ctc=ctc)
    int8 = _sherpa_online(streaming_export["out"], streaming_export["audio"], ".int8", ctc=ctc)
    for a, b in zip(fp32, int8):
        assert len(b.tokens) >= 10
        assert kaldialign.edit_distance(list(a.tokens), list(b.tokens))["total"] <= 0.5 * len(a.tokens)


def test_cli_streaming_export_of_a_ctc_only_model(tmp_path: Path, speech: dict, streaming_export: dict) -> None:
    """``dsr export onnx --streaming`` on a causal model with only a CTC head writes ctc.onnx (and
    tokens.txt), which sherpa-onnx's OnlineRecognizer decodes as dsr's streaming encoder + CTC does."""
    from typer.testing import CliRunner

    from dsr.cli.main import app

    feats = streaming_export["feats"]
    model, cfg = _make_model(feats, use_transducer=False, causal=True, chunk_size=CHUNK, left_context_chunks=LEFT)
    assert model.joiner is None
    torch.save({"model_config": cfg.to_dict(), "model": model.state_dict(), "frontend": FRONTEND},
               tmp_path / "ctc.pt")  # fmt: skip
    out = tmp_path / "export"
    args = ["export", "onnx", "--checkpoint", str(tmp_path / "ctc.pt"), "--lang-dir", str(speech["lang"]),
            "--out-dir", str(out), "--streaming", "--chunk-ms", str(40 * CHUNK), "--no-int8"]  # fmt: skip
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    assert sorted(p.name for p in out.iterdir()) == [".done.export-onnx", "ctc.onnx", "tokens.txt"]
    # The model's own left context (LEFT chunks) is the default.
    assert read_metadata(out / "ctc.onnx")["left_context_len"] == ",".join([str(LEFT * CHUNK)] * 2)
    results = _sherpa_online(out, streaming_export["audio"], ctc=True)
    _check_same(_dsr_streaming_ctc_greedy(model, feats), results, speech, min_tokens=10)


def test_streaming_export_refuses_models_it_cannot_stream(tmp_path: Path) -> None:
    from dsr.export.onnx import check_streamable

    causal = ModelConfig(**{**TINY, "causal": True})
    check_streamable(causal, StreamingExport(4, 2))
    with pytest.raises(DsrUserError, match="streaming: needs a model with causal convolutions"):
        check_streamable(ModelConfig(**TINY), StreamingExport(4, 2))
    with pytest.raises(DsrUserError, match="left_context_chunks: must be >= 1 .* fixed-size attention state"):
        check_streamable(causal, StreamingExport(4, -1))
    with pytest.raises(DsrUserError, match="cannot stream"):
        check_streamable(ModelConfig(**{**TINY, "causal": True, "utterance_norm": "mean"}), StreamingExport(4, 2))
    check_streamable(ModelConfig(**{**TINY, "causal": True, "use_transducer": False}), StreamingExport(4, 2))
    with pytest.raises(DsrUserError, match="CTC head of a model with conv_kernel_size 1"):
        check_streamable(ModelConfig(**{**TINY, "causal": True, "conv_kernel_size": 1}), StreamingExport(4, 2))


def test_cli_exports_the_epoch_average_of_an_exp_dir(tmp_path: Path) -> None:
    """``--exp-dir --epoch 2 --avg 2``: the exported graph computes the average of the two epochs'
    weights (as ``dsr decode`` loads them)."""
    import onnxruntime as ort
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.models.checkpoint import save_checkpoint

    lang = tmp_path / "lang"
    lang.mkdir()
    tokens = ["<blk>", "<sos/eos>", "<unk>"] + [f"\u2581t{i}" for i in range(VOCAB - 3)]
    (lang / "tokens.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    cfg = ModelConfig(**TINY)
    models = []
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        models.append(build_model(cfg).eval())
        save_checkpoint(tmp_path / "exp" / f"epoch-{epoch}.pt",
                        {"model_config": cfg.to_dict(), "model": models[-1].state_dict(), "frontend": FRONTEND})  # fmt: skip
    out = tmp_path / "export"
    args = ["export", "onnx", "--exp-dir", str(tmp_path / "exp"), "--epoch", "2", "--avg", "2", "--lang-dir", str(lang),
            "--out-dir", str(out), "--no-int8", "--no-use-averaged-model"]  # fmt: skip
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    averaged = build_model(cfg).eval()
    averaged.load_state_dict({k: (v + models[1].state_dict()[k]) / 2 if v.is_floating_point() else v
                              for k, v in models[0].state_dict().items()})  # fmt: skip
    x, lens = torch.randn(1, 90, 80), torch.tensor([90])
    with torch.no_grad():
        ref = averaged.ctc_log_probs(averaged.encode(x, lens)[0])
    got = ort.InferenceSession(str(out / "ctc.onnx")).run(None, {"x": x.numpy(), "x_lens": lens.numpy()})[0]
    np.testing.assert_allclose(got, ref.numpy(), atol=2e-4)
    # A second run is a no-op (done marker); --force exports again.
    assert "skip" in CliRunner().invoke(app, args).output


def test_cli_names_the_flags_of_the_options_it_got_wrong(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dsr.cli.main import app

    args = ["export", "onnx", "--lang-dir", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    proc = CliRunner().invoke(app, args)
    assert isinstance(proc.exception, DsrUserError), proc.output
    assert str(proc.exception) == "give exactly one of --exp-dir (with --epoch/--avg) or --checkpoint"
    proc = CliRunner().invoke(app, [*args, "--checkpoint", str(tmp_path / "c.pt"), "--avg", "0"])
    assert str(proc.exception) == "--avg: must be >= 1 (got 0)"


def test_missing_packages_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from dsr.export.onnx import require_export_packages

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    require_export_packages(int8=False)  # onnxruntime is only needed for the int8 files
    with pytest.raises(DsrUserError, match=r"needs onnxruntime: run bash tools/setup.sh --export"):
        require_export_packages(int8=True)
