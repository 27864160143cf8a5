"""Peak tensor memory and time of one training step with and without --activation-checkpointing.

Usage:
    python bench/activation_checkpointing.py                                   # egs/synth's model, 40 s batch
    python bench/activation_checkpointing.py --config egs/synth/conf/train.yaml --seconds 200 --utt-seconds 10
    python bench/activation_checkpointing.py --config "" --seconds 80 --utt-seconds 10   # dsr train defaults
    python bench/activation_checkpointing.py --device cuda --repeats 5

The model is built from a ``dsr train`` YAML config (its model keys; the vocabulary
size is --vocab-size) and trained on a random batch of ``--seconds`` of 10 ms
frames cut into utterances of ``--utt-seconds``.  Memory is the peak of tensor
storage alive during forward + backward (dsr.evaluation.memory.PeakTensorMemory:
activations, gradients and temporaries, not the weights), which does not depend on
the allocator or on other processes.  Times are the best of --repeats steps after
a warm-up, measured without the memory tracker: wall-clock, and on the CPU also the
process's CPU time, which other processes on the machine disturb far less.
"""

from __future__ import annotations

import argparse
import copy
import time
from types import SimpleNamespace

import torch

from dsr.evaluation.memory import PeakTensorMemory
from dsr.models import build_model
from dsr.training.config import resolve_config
from dsr.training.trainer import model_config_from


def _step(model: torch.nn.Module, feats: torch.Tensor, lens: torch.Tensor, targets: list[list[int]]) -> None:
    out = model(feats, lens, targets)
    (out["simple_loss"] + out["pruned_loss"] + out["ctc_loss"]).backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="egs/synth/conf/train.yaml")
    ap.add_argument("--vocab-size", type=int, default=128)
    ap.add_argument("--seconds", type=float, default=40.0, help="audio per batch (as --max-duration)")
    ap.add_argument("--utt-seconds", type=float, default=4.0)
    ap.add_argument("--tokens-per-second", type=float, default=3.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = resolve_config(args.config or None, {})  # "" = dsr train's default model
    mcfg = model_config_from(cfg, SimpleNamespace(vocab_size=args.vocab_size, blank_id=0, sos_eos_id=1))
    torch.manual_seed(0)
    plain = build_model(mcfg).to(device).train()
    recomputed = copy.deepcopy(plain)
    recomputed.encoder.activation_checkpointing = True

    n = max(1, int(args.seconds // args.utt_seconds))
    frames = int(args.utt_seconds * 100)
    feats = torch.randn(n, frames, mcfg.feature_dim, device=device)
    lens = torch.full((n,), frames, device=device)
    g = torch.Generator().manual_seed(0)
    targets = [torch.randint(1, args.vocab_size, (int(args.utt_seconds * args.tokens_per_second),), generator=g).tolist()
               for _ in range(n)]  # fmt: skip

    print(f"model: {sum(p.numel() for p in plain.parameters()) / 1e6:.2f} M params "
          f"({mcfg.num_encoder_layers} x {mcfg.encoder_dim}-dim Conformer layers), batch {n} x {args.utt_seconds} s, "
          f"device {device}, {args.threads} thread(s)")  # fmt: skip
    print("| activation checkpointing | peak tensor memory (MB) | wall time per step (s) | CPU time per step (s) |")
    print("|---|---|---|---|")
    for name, model in (("off", plain), ("on", recomputed)):
        with PeakTensorMemory() as mem:
            _step(model, feats, lens, targets)
        wall, cpu = [], []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0, c0 = time.perf_counter(), time.process_time()
            _step(model, feats, lens, targets)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f"| {name} | {mem.peak_bytes / 1e6:.1f} | {min(wall[1:]):.3f} | {min(cpu[1:]):.3f} |")


if __name__ == "__main__":
    main()
