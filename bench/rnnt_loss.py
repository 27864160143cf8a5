"""Benchmark the RNN-T losses: time and peak memory of forward + backward.

Usage:
    python bench/rnnt_loss.py                       # default shapes, CUDA if available
    python bench/rnnt_loss.py --device cpu --repeats 3
    python bench/rnnt_loss.py --shapes 8x500x100x500 4x200x40x500
    python bench/rnnt_loss.py --methods dsr_pruned fast_rnnt_pruned

Shapes are BxTxUxV (batch, frames, labels, vocabulary).  Methods:
    dsr_pruned        dsr: smoothed simple loss + prune ranges + pruned loss (s_range 5)
    dsr_full          dsr: full rnnt_loss on (B, T, U+1, V) logits
    fast_rnnt_pruned  fast_rnnt, same pipeline as dsr_pruned (skipped if not installed;
                      build it with tools/install_fast_rnnt.sh)
    fast_rnnt_full    fast_rnnt's full rnnt_loss (not run by default)

The joiner is the additive one (logits = am + lm), so only the loss code is
timed; the time is the best of --repeats runs after a warm-up (the least
disturbed by other processes).  Every (shape, method) runs in a fresh subprocess so peak memory is not
polluted by earlier runs: on CUDA it is torch.cuda.max_memory_allocated()
above the inputs; on CPU it is the peak resident set size (VmHWM, reset
through /proc/self/clear_refs) above the resident size with the inputs built.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsr.evaluation.memory import proc_status_bytes, reset_peak_rss  # noqa: E402

DEFAULT_SHAPES = ["8x500x100x500", "8x200x50x500", "4x100x20x500"]
DEFAULT_METHODS = ["dsr_pruned", "dsr_full", "fast_rnnt_pruned"]
S_RANGE = 5
BLANK = 0


# ----------------------------------------------------------------------------
# worker side: one (shape, method) per process
# ----------------------------------------------------------------------------


def _backend(name: str):
    if name == "dsr":
        import dsr.losses as backend
    else:
        import fast_rnnt as backend
    return backend


def _make_step(method: str, B: int, T: int, U: int, V: int, device: torch.device) -> Callable[[], None]:
    backend_name, kind = method.rsplit("_", 1)
    k2 = _backend(backend_name)
    g = torch.Generator().manual_seed(0)
    am = torch.randn(B, T, V, generator=g).to(device).requires_grad_()
    lm = torch.randn(B, U + 1, V, generator=g).to(device).requires_grad_()
    symbols = torch.randint(1, V, (B, U), generator=g).to(device)
    # Ragged batch, like real data: lengths spread over [T/2, T] and [U/2, U].
    frac = torch.linspace(0.5, 1.0, B)
    boundary = torch.zeros(B, 4, dtype=torch.int64)
    boundary[:, 2] = (frac * U).long().clamp(min=1)
    boundary[:, 3] = (frac * T).long().clamp(min=1)
    boundary[-1, 2:] = torch.tensor([U, T])
    boundary = boundary.to(device)

    def pruned() -> None:
        simple, (px_grad, py_grad) = k2.rnnt_loss_smoothed(
            lm=lm,
            am=am,
            symbols=symbols,
            termination_symbol=BLANK,
            lm_only_scale=0.25,
            am_only_scale=0.0,
            boundary=boundary,
            reduction="sum",
            return_grad=True,
        )
        ranges = k2.get_rnnt_prune_ranges(px_grad=px_grad, py_grad=py_grad, boundary=boundary, s_range=S_RANGE)
        am_p, lm_p = k2.do_rnnt_pruning(am=am, lm=lm, ranges=ranges)
        loss = k2.rnnt_loss_pruned(
            logits=am_p + lm_p,
            symbols=symbols,
            ranges=ranges,
            termination_symbol=BLANK,
            boundary=boundary,
            reduction="sum",
        )
        (0.5 * simple + loss).backward()

    def full() -> None:
        logits = am.unsqueeze(2) + lm.unsqueeze(1)  # (B, T, U+1, V)
        loss = k2.rnnt_loss(
            logits=logits, symbols=symbols, termination_symbol=BLANK, boundary=boundary, reduction="sum"
        )
        loss.backward()

    return {"pruned": pruned, "full": full}[kind]


def _worker(spec: dict) -> dict:
    device = torch.device(spec["device"])
    B, T, U, V = spec["shape"]
    try:
        step = _make_step(spec["method"], B, T, U, V, device)
    except ImportError as e:
        return {"skipped": f"{e}"}
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    sync()
    if cuda:
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = proc_status_bytes("VmRSS")
        can_reset = reset_peak_rss()
    step()  # warm-up; also the peak-memory measurement
    sync()
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = proc_status_bytes("VmHWM") - base
        if not can_reset:
            peak = -1
    times = []
    for _ in range(spec["repeats"]):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return {"time_s": min(times), "peak_bytes": peak}


# ----------------------------------------------------------------------------
# driver side
# ----------------------------------------------------------------------------


def _run_one(shape: tuple[int, int, int, int], method: str, device: str, repeats: int, threads: int) -> dict:
    spec = {"shape": list(shape), "method": method, "device": device, "repeats": repeats, "threads": threads}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_shape(text: str) -> tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"shape must be BxTxUxV, e.g. 8x500x100x500; got {text!r}")
    B, T, U, V = (int(p) for p in parts)
    return B, T, U, V


def _fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0 or num < 0:
        return "n/a"
    return f"{num / den:.2f}x"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", type=_parse_shape, default=[_parse_shape(s) for s in DEFAULT_SHAPES])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=DEFAULT_METHODS,
        choices=["dsr_pruned", "dsr_full", "fast_rnnt_pruned", "fast_rnnt_full"],
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; the fastest is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        if spec["threads"] > 0:
            torch.set_num_threads(spec["threads"])
        print(json.dumps(_worker(spec)))
        return

    threads = args.threads or torch.get_num_threads()
    print(f"device={args.device} torch={torch.__version__} threads={threads} s_range={S_RANGE} repeats={args.repeats}")
    print(f"{'shape BxTxUxV':<16} {'method':<18} {'time (ms)':>10} {'peak (MiB)':>11}")
    for shape in args.shapes:
        results: dict[str, dict] = {}
        for method in args.methods:
            r = _run_one(shape, method, args.device, args.repeats, args.threads)
            results[method] = r
            name = "x".join(map(str, shape))
            if "time_s" in r:
                mem = f"{r['peak_bytes'] / 2**20:.1f}" if r["peak_bytes"] >= 0 else "n/a"
                print(f"{name:<16} {method:<18} {r['time_s'] * 1e3:>10.1f} {mem:>11}", flush=True)
            else:
                print(f"{name:<16} {method:<18} {'skipped: ' + r.get('skipped', r.get('error', '?'))}", flush=True)

        def get(method: str, key: str, results: dict = results) -> float | None:
            return results.get(method, {}).get(key)

        pairs = [
            ("dsr_full", "dsr_pruned", "full / dsr pruned"),
            ("dsr_pruned", "fast_rnnt_pruned", "dsr / fast_rnnt pruned"),
        ]
        for num, den, label in pairs:
            if num in results and den in results:
                print(
                    f"{'':<16} {label:<24} time {_fmt_ratio(get(num, 'time_s'), get(den, 'time_s'))}, "
                    f"memory {_fmt_ratio(get(num, 'peak_bytes'), get(den, 'peak_bytes'))}"
                )


if __name__ == "__main__":
    main()
