"""Single-thread real-time factor of transducer decoding: greedy search and modified beam
search (beam 4), offline and chunk by chunk, with encoder and search time apart.

Usage:
    # the synth recipe's model, a streaming model and a ~20M-parameter random-weight Conformer:
    python bench/decode.py --cuts egs/synth/data/fbank/synth_cuts_test.jsonl.gz \\
        --exp-dir egs/synth/exp/conformer --streaming-exp-dir egs/synth/exp/streaming
    python bench/decode.py --cuts CUTS --exp-dir EXP --epoch 4 --avg 1 --num-utts 100 --batch-size 1
    python bench/decode.py --cuts CUTS --only big --encoder-dim 256 --num-layers 12 --ffn-dim 1024
    python bench/decode.py --cuts CUTS --only big --int8 --num-utts 10 --repeats 10   # int8 Linear layers

Models (``--only`` picks some): ``trained`` is --exp-dir's checkpoint (as dsr decode loads
it); ``streaming`` is --streaming-exp-dir's causal model, decoded offline and chunk by chunk
(--chunk-ms); ``big`` is a Conformer of --encoder-dim/--num-layers/--ffn-dim with *random
weights*: they exercise the same compute as trained ones, so its encoder time is what a
trained model of that size costs, but its search time is not (a random joiner emits a
different number of symbols than a trained one; max 1 per frame bounds the greedy cost).

Everything runs on one CPU thread (torch.set_num_threads(1)) under inference_mode, on the
first --num-utts cuts of --cuts, --batch-size utterances at a time, after one warm-up
batch; each batch runs --repeats times and the fastest encoder and search times count
(on shared cores other jobs only ever add time).  RTF = (encoder + search seconds) /
audio seconds; feature loading is excluded.
The goal column is RTF / 0.02 (issue 4's goal for a ~20M-parameter model: <= 1 meets it).
"greedy frame-by-frame" is the same greedy search scoring one frame per joiner call (what
dsr did before it skipped blank runs): the ratio of the two search columns is the speed-up.
The reference line times a fixed single-thread float32 matmul in the same run: machines (or
a busy one) differ in speed, so compare RTFs across runs only together with it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsr.data.cuts import load_cuts  # noqa: E402
from dsr.decoding.beam_search import modified_beam_search  # noqa: E402
from dsr.decoding.greedy import TransducerGreedySearch, transducer_greedy_search  # noqa: E402
from dsr.decoding.loading import load_model  # noqa: E402
from dsr.decoding.quantize import quantize_int8  # noqa: E402
from dsr.decoding.streaming import streaming_options  # noqa: E402
from dsr.models import HybridTransducer, ModelConfig, build_model  # noqa: E402
from dsr.models.conformer import ConformerEncoder  # noqa: E402
from dsr.models.streaming import StreamingEncoder, stream_windows  # noqa: E402

GOAL_RTF = 0.02


def reference_gflops(size: int = 512, repeats: int = 20) -> float:
    """Single-thread float32 GFLOP/s of a (size x size) matmul (best of ``repeats``): this run's machine speed."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def load_batches(
    cuts_file: Path, num_utts: int, batch_size: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], float]:
    """The first ``num_utts`` cuts' features as padded (N, T, F) batches with (N,) lengths; audio seconds."""
    cuts = list(load_cuts(cuts_file).subset(first=num_utts))
    batches = []
    for i in range(0, len(cuts), batch_size):
        feats = [torch.from_numpy(c.load_features()) for c in cuts[i : i + batch_size]]
        lens = torch.tensor([f.size(0) for f in feats])
        batches.append((torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lens))
    return batches, sum(c.duration for c in cuts)


def time_offline(model: HybridTransducer, batches: list, search: str, repeats: int) -> tuple[float, float, int]:
    """Encoder seconds, search seconds (each the sum over batches of the best of ``repeats``
    runs, after a warm-up batch) and symbols emitted."""
    enc_s = search_s = 0.0
    symbols = 0
    for i, (feats, lens) in enumerate([batches[0], *batches]):
        best_enc = best_search = float("inf")
        for _ in range(repeats if i > 0 else 1):
            t0 = time.perf_counter()
            enc, enc_lens = model.encode(feats, lens)
            t1 = time.perf_counter()
            if search == "greedy":
                hyps = transducer_greedy_search(model, enc, enc_lens)
            elif search == "greedy frame-by-frame":  # the search before blank runs were skipped, for reference
                greedy = TransducerGreedySearch(model, enc.size(0), enc.device, lookahead=1)
                greedy.advance(enc, enc_lens)
                hyps = greedy.hyps
            else:
                hyps = [h[0].tokens for h in modified_beam_search(model, enc, enc_lens, beam_size=4)]
            t2 = time.perf_counter()
            best_enc, best_search = min(best_enc, t1 - t0), min(best_search, t2 - t1)
        if i > 0:  # batch 0 is the warm-up
            enc_s, search_s, symbols = enc_s + best_enc, search_s + best_search, symbols + sum(map(len, hyps))
    return enc_s, search_s, symbols


def time_streaming(model: HybridTransducer, batches: list, chunk_ms: float, repeats: int) -> tuple[float, float, int]:
    """Like :func:`time_offline` for greedy search fed chunk by chunk (dsr.decoding.streaming's loop, timed in parts)."""
    opts = streaming_options(model, chunk_ms)
    enc_s = search_s = 0.0
    symbols = 0
    for i, (feats, lens) in enumerate([batches[0], *batches]):
        best_enc = best_search = float("inf")
        for _ in range(repeats if i > 0 else 1):
            streamer = StreamingEncoder(model, opts.chunk_size, opts.left_context_chunks)
            search = TransducerGreedySearch(model, feats.size(0), feats.device)
            e = s = 0.0
            for window, num_frames in stream_windows(feats, lens, opts.chunk_size):
                t0 = time.perf_counter()
                enc, enc_lens = streamer.encode_chunk(window, num_frames)
                t1 = time.perf_counter()
                search.advance(enc, enc_lens)
                t2 = time.perf_counter()
                e, s = e + t1 - t0, s + t2 - t1
            best_enc, best_search = min(best_enc, e), min(best_search, s)
        if i > 0:
            enc_s, search_s, symbols = enc_s + best_enc, search_s + best_search, symbols + sum(map(len, search.hyps))
    return enc_s, search_s, symbols


def report(name: str, params: int, mode: str, timing: tuple[float, float, int], audio_s: float) -> None:
    enc_s, search_s, symbols = timing
    rtf = (enc_s + search_s) / audio_s
    print(
        f"{name:<15} {params / 1e6:6.2f}M  {mode:<29} {rtf:8.4f} {enc_s / audio_s:9.4f} {search_s / audio_s:9.4f} "
        f"{symbols:8d} {rtf / GOAL_RTF:8.2f}",
        flush=True,
    )


def bench_model(name: str, model: HybridTransducer, batches: list, audio_s: float, args: argparse.Namespace) -> None:
    params = sum(p.numel() for p in model.parameters())
    if args.int8:
        # What dsr decode --int8 runs: hypotheses can differ slightly from the float model's.
        model = quantize_int8(model, torch.device("cpu"))
        name += "-int8"
    for search in ("greedy", "greedy frame-by-frame", "beam-4"):
        report(name, params, f"offline {search}", time_offline(model, batches, search, args.repeats), audio_s)
    # Whisper's encoder (dsr train --pretrained) has no causal mode: offline rows only.
    if isinstance(model.encoder, ConformerEncoder) and model.encoder.causal:
        for ms in args.chunk_ms:
            timing = time_streaming(model, batches, ms, args.repeats)
            report(name, params, f"streaming {ms:g}ms greedy", timing, audio_s)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cuts", type=Path, required=True, help="Cuts manifest with features.")
    p.add_argument("--exp-dir", type=Path, help="Trained model (the recipe's).")
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--streaming-exp-dir", type=Path, help="Trained causal model (conf/train_streaming.yaml).")
    p.add_argument("--streaming-epoch", type=int, default=0)
    p.add_argument("--chunk-ms", type=float, nargs="+", default=[320.0, 640.0])
    p.add_argument("--encoder-dim", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=12)
    p.add_argument("--ffn-dim", type=int, default=1024)
    p.add_argument("--vocab-size", type=int, default=500)
    p.add_argument("--num-utts", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=1, help="Utterances decoded together (streams in lockstep).")
    p.add_argument(
        "--int8",
        action="store_true",
        help="Quantise the Linear layers to int8 (dynamic) first: how far cheaper arithmetic goes.",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Runs per batch; the best counts (other jobs on the cores only ever slow a run down).",
    )
    p.add_argument(
        "--only", nargs="+", choices=("trained", "streaming", "big"), default=("trained", "streaming", "big")
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batches, audio_s = load_batches(args.cuts, args.num_utts, args.batch_size)
    print(
        f"reference: single-thread float32 matmul {reference_gflops():.1f} GFLOP/s; {sum(len(utts) for _, utts in batches)} "
        f"utts, {audio_s:.1f} s of audio, batch size {args.batch_size}, torch {torch.__version__}"
    )
    print(
        f"{'model':<15} {'params':>7}  {'decoding':<29} {'RTF':>8} {'encoder':>9} {'search':>9} {'symbols':>8} "
        f"{'RTF/0.02':>8}"
    )
    with torch.inference_mode():
        if "trained" in args.only and args.exp_dir:
            bench_model("trained", load_model(args.exp_dir, args.epoch, args.avg)[0], batches, audio_s, args)
        if "streaming" in args.only and args.streaming_exp_dir:
            model = load_model(args.streaming_exp_dir, args.streaming_epoch, 1)[0]
            bench_model("streaming", model, batches, audio_s, args)
        if "big" in args.only:
            cfg = ModelConfig(
                feature_dim=batches[0][0].size(-1),
                encoder_dim=args.encoder_dim,
                num_encoder_layers=args.num_layers,
                ffn_dim=args.ffn_dim,
                decoder_dim=512,
                joiner_dim=512,
                vocab_size=args.vocab_size,
            )
            bench_model("big-random", build_model(cfg).eval(), batches, audio_s, args)


if __name__ == "__main__":
    main()
