"""Real-time factor on one CPU thread: dsr's PyTorch greedy search vs sherpa-onnx on the same
model's ONNX export (fp32 and int8), offline and (``--streaming``) streaming, in one run; and
whether the transcripts agree.

Usage:
    python bench/onnx_speed.py --exp-dir exp/conformer --lang-dir data/lang_bpe_256 \
        --audio-dir ../shared/data/arctic_cathy/audio --num-utts 30
    python bench/onnx_speed.py --random-model --audio-dir ../shared/data/arctic_cathy/audio --num-utts 30
    python bench/onnx_speed.py --random-model --rounds 3 --keep-export bench-out/onnx-export
    python bench/onnx_speed.py --random-model --streaming --chunk-ms 320 --left-context-chunks 4
    python bench/onnx_speed.py --exp-dir exp/streaming --lang-dir data/lang_bpe_128 --streaming --chunk-ms 640

``--random-model`` builds dsr's default ModelConfig (3.5 M parameters, vocabulary 256) with
random weights, its global CMVN from the audio and its joiner's blank bias moved to the
median margin, so that it emits a token on about half of the frames (a random model
otherwise emits only blanks, which would flatter any transducer decoder); speed, not
accuracy, is what it measures.

Streaming: the streaming export (``dsr export onnx --streaming``) in sherpa-onnx's
OnlineRecognizer against dsr's ``streaming_greedy_search``, both on each utterance plus 0.5 s of
silence and on exactly the windows sherpa-onnx runs (it runs whole windows only).

Every system decodes the utterances one at a time, features included (dsr: kaldi-native-fbank
in Python + the PyTorch model; sherpa-onnx: its own C++ feature extractor + onnxruntime), on one
thread.  Rounds are interleaved (every system once per round) and the best round is kept, so
other processes on the machine disturb the ratios less.  Printed: RTF (decode seconds / audio
seconds), mean per-utterance latency, speed-up over dsr, identical transcripts (token ids)
against dsr's, and the size of each export.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dsr.decoding.greedy import transducer_greedy_search
from dsr.export.onnx import SHERPA_FBANK, export_onnx_model, read_tokens
from dsr.features.audio import load_audio_mono
from dsr.features.fbank import compute_fbank
from dsr.features.frontend import frontend_to_dict
from dsr.models.config import ModelConfig, build_model


def _random_model(audio: list[np.ndarray], vocab_size: int, **extra: object) -> tuple[torch.nn.Module, ModelConfig]:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab_size, dropout=0.0, **extra)
    model = build_model(cfg).eval()
    feats = [torch.from_numpy(compute_fbank(a, SHERPA_FBANK)) for a in audio]
    frames = torch.cat(feats)
    model.set_feature_stats(frames.mean(0), frames.std(0))
    with torch.no_grad():
        enc, _ = model.encode(feats[0][None], torch.tensor([feats[0].size(0)]))
        ctx = torch.zeros(1, cfg.context_size, dtype=torch.long)
        logits = model.joiner(enc[0], model.predictor(ctx, need_pad=False)[0])
        margin = logits[:, 1:].max(dim=-1).values - logits[:, 0]
        model.joiner.output_linear.bias[0] += margin.median()
        model.joiner.output_linear.bias[1:3] = -100.0  # <sos/eos>, <unk>: sherpa-onnx skips <unk>
    return model, cfg


def _write_tokens(path: Path, vocab_size: int) -> None:
    names = ["<blk>", "<sos/eos>", "<unk>"] + [f"\u2581t{i}" for i in range(vocab_size - 3)]
    path.write_text("".join(f"{t} {i}\n" for i, t in enumerate(names)), encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", type=Path)
    p.add_argument("--lang-dir", type=Path)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--random-model", action="store_true")
    p.add_argument("--audio-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data"
                   / "arctic_cathy" / "audio")  # fmt: skip
    p.add_argument("--num-utts", type=int, default=30)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep-export", type=Path, help="Write the export here instead of a temporary directory.")
    p.add_argument(
        "--streaming",
        action="store_true",
        help="Also streaming (a causal model; with --random-model a causal chunked one).",
    )
    p.add_argument("--chunk-ms", type=float, default=320.0, help="Streaming chunk.")
    p.add_argument("--left-context-chunks", type=int, default=4, help="Streaming left context, in chunks.")
    args = p.parse_args()
    if args.random_model == (args.exp_dir is not None):
        p.error("give exactly one of --exp-dir (with --lang-dir) or --random-model")
    import sherpa_onnx

    torch.set_num_threads(1)
    if not args.audio_dir.is_dir():
        p.error(f"--audio-dir {args.audio_dir} is not a folder")
    files = sorted(f for f in args.audio_dir.iterdir() if f.suffix in (".flac", ".wav"))
    if not files:
        p.error(f"--audio-dir {args.audio_dir} holds no .flac or .wav files")
    files = files[:: max(1, len(files) // args.num_utts)][: args.num_utts]
    audio = [load_audio_mono(f, 16000) for f in files]
    seconds = sum(len(a) for a in audio) / 16000
    out = args.keep_export or Path(tempfile.mkdtemp(prefix="dsr-onnx-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.random_model:
        chunk = round(args.chunk_ms / 40)
        causal = (
            dict(causal=True, chunk_size=chunk, left_context_chunks=args.left_context_chunks) if args.streaming else {}
        )
        model, cfg = _random_model(audio, 256, **causal)
        tokens_file = out / "lang-tokens.txt"
        _write_tokens(tokens_file, cfg.vocab_size)
        frontend = frontend_to_dict(SHERPA_FBANK)
        what = "random default-size model"
    else:
        from dsr.features.frontend import frontend_from_dict
        from dsr.models.checkpoint import resolve_model_checkpoint

        ckpt, tag = resolve_model_checkpoint(args.exp_dir, args.epoch, args.avg)
        cfg = ModelConfig.from_dict(ckpt["model_config"])
        model = build_model(cfg)
        model.load_state_dict(ckpt["model"])
        model.eval()
        frontend = frontend_to_dict(frontend_from_dict(ckpt.get("frontend") or {}))
        tokens_file = args.lang_dir / "tokens.txt"
        what = f"{args.exp_dir} ({tag})"
    export_onnx_model(model, cfg, frontend, tokens_file, out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{what}: {params / 1e6:.2f} M parameters; {len(audio)} utterances, {seconds:.1f} s of audio; "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    symbols = read_tokens(tokens_file)

    def dsr_decode(a: np.ndarray) -> list[int]:
        f = torch.from_numpy(compute_fbank(a, SHERPA_FBANK))
        with torch.no_grad():
            enc, lens = model.encode(f[None], torch.tensor([f.size(0)]))
            return transducer_greedy_search(model, enc, lens)[0]

    def sherpa(suffix: str):
        rec = sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(out / f"encoder{suffix}.onnx"), decoder=str(out / f"decoder{suffix}.onnx"),
            joiner=str(out / f"joiner{suffix}.onnx"), tokens=str(out / "tokens.txt"), num_threads=1,
        )  # fmt: skip
        index = {s.replace("\u2581", " "): i for i, s in enumerate(symbols)}

        def run(a: np.ndarray) -> list[int]:
            s = rec.create_stream()
            s.accept_waveform(16000, a)
            rec.decode_stream(s)
            return [index[t] for t in s.result.tokens]

        return run

    systems = {"dsr PyTorch fp32": dsr_decode, "sherpa-onnx fp32": sherpa(""), "sherpa-onnx int8": sherpa(".int8")}
    _report(_time(systems, audio, args.rounds), seconds, "offline")
    if args.streaming:
        _streaming(args, model, cfg, frontend, tokens_file, out, audio, symbols)
    for name in ("encoder", "decoder", "joiner"):
        fp32, int8 = (out / f"{name}.onnx").stat().st_size, (out / f"{name}.int8.onnx").stat().st_size
        print(f"{name}.onnx {fp32 / 1e6:.2f} MB, int8 {int8 / 1e6:.2f} MB ({100 * int8 / fp32:.0f} %)")
    print(f"export in {out}")


def _time(systems: dict, inputs: list, rounds: int) -> dict[str, tuple[float, list[float], list[list[int]]]]:
    """Best of ``rounds`` interleaved rounds per system: (total seconds, per-input seconds, outputs)."""
    for run in systems.values():  # warm-up
        run(inputs[0])
    best: dict[str, tuple[float, list[float], list[list[int]]]] = {}
    for _ in range(rounds):
        for name, run in systems.items():
            lat, hyps = [], []
            for a in inputs:
                t0 = time.perf_counter()
                hyps.append(run(a))
                lat.append(time.perf_counter() - t0)
            if name not in best or sum(lat) < best[name][0]:
                best[name] = (sum(lat), lat, hyps)
    return best


def _report(best: dict, seconds: float, what: str) -> None:
    ref_name = next(iter(best))
    ref_total, _, ref_hyps = best[ref_name]
    tokens = sum(len(h) for h in ref_hyps)
    print(f"{what}: {ref_name} emitted {tokens} tokens ({tokens / (seconds * 25):.2f} per encoder frame)")
    print(f"{'system':28s} {'RTF':>8s} {'ms/utt':>8s} {'speed-up':>9s} {'same as dsr':>12s}")
    for name, (total, lat, hyps) in best.items():
        same = sum(h == r for h, r in zip(hyps, ref_hyps))
        print(f"{name:28s} {total / seconds:8.4f} {1000 * np.mean(lat):8.1f} {ref_total / total:8.2f}x "
              f"{same:>5d}/{len(hyps):<6d}")  # fmt: skip


def _streaming(args, model, cfg, frontend, tokens_file: Path, out: Path, audio: list[np.ndarray], symbols) -> None:
    """dsr's streaming greedy search vs sherpa-onnx's OnlineRecognizer on the streaming export."""
    import sherpa_onnx

    from dsr.decoding.streaming import StreamingOptions, streaming_greedy_search
    from dsr.export.onnx import StreamingExport
    from dsr.models.streaming import window_frames

    chunk = round(args.chunk_ms / 40)
    sout = out / f"streaming-{args.chunk_ms:g}ms"
    export_onnx_model(
        model, cfg, frontend, tokens_file, sout, streaming=StreamingExport(chunk, args.left_context_chunks)
    )
    # Half a second of silence after each utterance, as sherpa-onnx's streaming examples add:
    # it runs whole windows only.  Both systems decode exactly the windows sherpa-onnx runs.
    padded = [np.concatenate([a, np.zeros(8000, dtype=np.float32)]) for a in audio]
    seconds = sum(len(a) for a in padded) / 16000
    hop, width = 4 * chunk, window_frames(chunk)
    opts = StreamingOptions(args.chunk_ms, chunk, args.left_context_chunks, 0.0)

    def dsr_stream(a: np.ndarray) -> list[int]:
        f = torch.from_numpy(compute_fbank(a, SHERPA_FBANK))
        windows = sum(1 for k in range(f.size(0)) if k * hop + width < f.size(0))
        used = (windows - 1) * hop + width
        return streaming_greedy_search(model, f[None, :used], torch.tensor([used]), opts)[0]

    def sherpa(suffix: str):
        rec = sherpa_onnx.OnlineRecognizer.from_transducer(
            tokens=str(sout / "tokens.txt"), encoder=str(sout / f"encoder{suffix}.onnx"),
            decoder=str(sout / f"decoder{suffix}.onnx"), joiner=str(sout / f"joiner{suffix}.onnx"), num_threads=1,
        )  # fmt: skip
        index = {s.replace("\u2581", " "): i for i, s in enumerate(symbols)}

        def run(a: np.ndarray) -> list[int]:
            s = rec.create_stream()
            s.accept_waveform(16000, a)
            s.input_finished()
            while rec.is_ready(s):
                rec.decode_stream(s)
            return [index[t] for t in rec.get_result_all(s).tokens]

        return run

    systems = {"dsr PyTorch streaming fp32": dsr_stream, "sherpa-onnx online fp32": sherpa(""),
               "sherpa-onnx online int8": sherpa(".int8")}  # fmt: skip
    _report(
        _time(systems, padded, args.rounds),
        seconds,
        f"streaming, {args.chunk_ms:g} ms chunks, "
        f"{args.left_context_chunks} chunks left context (+0.5 s silence per utterance)",
    )


if __name__ == "__main__":
    main()
