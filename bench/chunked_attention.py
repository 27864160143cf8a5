"""Memory and time of the Conformer encoder (forward + backward) against utterance length:
full attention, chunked attention through a (T, T) mask, and block-wise chunked attention.

Usage:
    python bench/chunked_attention.py                          # 20 s and 80 s of audio, CUDA if available
    python bench/chunked_attention.py --seconds 30 120 480 --device cuda
    python bench/chunked_attention.py --chunk-size 16 --left-context-chunks 4 --repeats 3

Modes (same weights, same input):
    full        chunk_size -1: every frame attends to every frame
    chunk-mask  chunked attention computed with a (T, T) mask (what dsr did before block attention)
    chunk-block chunked attention computed block by block (dsr's path whenever left context is bounded)

Columns: ``saved MB`` is the size of the distinct tensors autograd keeps for the backward
pass (deterministic, allocator-independent: what training memory grows with); ``peak MB``
is, on CUDA, torch.cuda.max_memory_allocated() above the model and input and, on CPU, the
peak resident set size (VmHWM, reset through /proc/self/clear_refs) above the resident
size before the pass, which also counts temporaries such as the mask; ``ms`` is the
best of --repeats forward + backward passes after a warm-up.  Each ratio compares a length
with the first one, so growth is linear where it equals the length ratio.  Every (mode,
length) runs in a fresh subprocess, so that memory freed by one run cannot hide the next
one's peak.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsr.evaluation.memory import proc_status_bytes, reset_peak_rss, saved_for_backward_bytes  # noqa: E402
from dsr.models import conformer  # noqa: E402
from dsr.models.conformer import ConformerEncoder  # noqa: E402

MODES = ("full", "chunk-mask", "chunk-block")


def measure(enc: ConformerEncoder, mode: str, seconds: float, args, device: torch.device) -> dict:
    frames = int(seconds * 100)  # 10 ms features
    x = torch.randn(1, frames, enc.input_dim, device=device)
    lengths = torch.tensor([frames], device=device)
    chunking = (-1, -1) if mode == "full" else (args.chunk_size, args.left_context_chunks)
    real_choice = conformer.use_block_attention
    if mode == "chunk-mask":
        conformer.use_block_attention = lambda *a: False
    try:

        def step() -> torch.Tensor:
            out, _ = enc(x, lengths, *chunking)
            return out.float().pow(2).mean()

        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            can_reset = reset_peak_rss()
            base = proc_status_bytes("VmRSS")
        saved = saved_for_backward_bytes(step)  # also the warm-up
        if cuda:
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            peak = proc_status_bytes("VmHWM") - base if can_reset else None
        times = []
        for _ in range(args.repeats):
            enc.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step().backward()
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        enc.zero_grad(set_to_none=True)
    finally:
        conformer.use_block_attention = real_choice
    return {"saved": saved, "peak": peak, "ms": 1000 * min(times) if times else None}


def _worker(args) -> None:
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    enc = ConformerEncoder(
        80, args.encoder_dim, args.num_layers, 4, 4 * args.encoder_dim, 15, dropout=0.0, causal=True
    ).to(device)
    print(json.dumps(measure(enc, args.modes[0], args.seconds[0], args, device)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, nargs="+", default=[20.0, 80.0], help="utterance lengths")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--chunk-size", type=int, default=16, help="encoder frames (40 ms each)")
    p.add_argument("--left-context-chunks", type=int, default=4)
    p.add_argument("--encoder-dim", type=int, default=192)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2, help="timed passes (0: memory only)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return _worker(args)
    print(
        f"encoder {args.encoder_dim}x{args.num_layers} on {args.device}, chunk {args.chunk_size} frames, "
        f"left context {args.left_context_chunks} chunks; batch 1, forward + backward"
    )
    print(f"{'mode':<12} {'seconds':>8} {'saved MB':>10} {'x':>6} {'peak MB':>9} {'x':>6} {'ms':>9} {'x':>6}")
    for mode in args.modes:
        first = None
        for seconds in args.seconds:
            cmd = [sys.executable, __file__, "--worker", "--modes", mode, "--seconds", str(seconds)]
            for flag in (
                "chunk_size",
                "left_context_chunks",
                "encoder_dim",
                "num_layers",
                "repeats",
                "device",
                "num_threads",
            ):
                cmd += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            first = first or r
            none = f"{'-':>9} {'-':>6}"
            peak = f"{r['peak'] / 2**20:9.1f} {r['peak'] / first['peak']:6.2f}" if r["peak"] is not None else none
            ms = f"{r['ms']:9.1f} {r['ms'] / first['ms']:6.2f}" if r["ms"] is not None else none
            print(
                f"{mode:<12} {seconds:8.0f} {r['saved'] / 2**20:10.1f} {r['saved'] / first['saved']:6.2f} {peak} {ms}",
                flush=True,
            )


if __name__ == "__main__":
    main()
