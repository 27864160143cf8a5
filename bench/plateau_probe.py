#!/usr/bin/env python3
"""How many updates does a model spend on the label prior before it uses the audio?

Trains a fresh HybridTransducer on a cuts manifest for a fixed number of updates and
prints the mean per-frame CTC loss of every 20 updates.  The prior-only model sits
on a flat CTC loss (about 1.4-1.6 per frame on the embedded corpus with BPE 128); the
update at which it starts to fall is where the model begins to use the acoustics.
Used to choose ``--adam-beta2`` and ``--ctc-encoder-warmup-steps`` (docs/DESIGN_NOTES.md,
note 10; numbers in docs/RESULTS.md).

Usage (after stages 0-2 of egs/synth/run.sh, from its work dir):
  cd egs/synth
  # CTC loss only, PyTorch's default Adam beta2, then 0.95:
  python ../../bench/plateau_probe.py --loss-weights 0,0,1 --adam-beta2 0.999
  python ../../bench/plateau_probe.py --loss-weights 0,0,1 --adam-beta2 0.95
  # hybrid loss, with and without the CTC-only encoder warm-up:
  python ../../bench/plateau_probe.py --loss-weights 0.5,1,0.5 --adam-beta2 0.95
  python ../../bench/plateau_probe.py --loss-weights 0.5,1,0.5 --adam-beta2 0.95 --ctc-encoder-warmup-steps 300
"""

from __future__ import annotations

import argparse
import time

import torch

from dsr.data.cuts import filter_cuts, load_cuts
from dsr.lang.bpe import Tokenizer
from dsr.models.config import ModelConfig, build_model
from dsr.training.config import TrainConfig
from dsr.training.datamodule import batch_features, batch_texts, make_loader
from dsr.training.trainer import feature_stats, rnnt_encoder_grad_scale


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuts", default="data/fbank/synth_cuts_train.jsonl.gz")
    p.add_argument("--lang-dir", default="data/lang_bpe_128")
    p.add_argument("--loss-weights", default="0.5,1,0.5", help="simple,pruned,ctc loss weights")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--adam-beta2", type=float, default=0.95)
    p.add_argument("--ctc-encoder-warmup-steps", type=int, default=0)
    p.add_argument("--max-duration", type=float, default=40.0)
    p.add_argument("--encoder-dim", type=int, default=96)
    p.add_argument("--num-encoder-layers", type=int, default=4)
    p.add_argument("--spec-augment", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    ws, wp, wc = (float(x) for x in args.loss_weights.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cuts = filter_cuts(load_cuts(args.cuts), 0.3, 30.0).to_eager()
    loader, _ = make_loader(cuts, args.max_duration, shuffle=True, spec_augment=args.spec_augment)
    tok = Tokenizer(args.lang_dir)
    d = args.encoder_dim
    model = build_model(
        ModelConfig(vocab_size=tok.vocab_size, encoder_dim=d, num_encoder_layers=args.num_encoder_layers,
                    num_heads=4, ffn_dim=4 * d, conv_kernel_size=15, decoder_dim=256, joiner_dim=256)
    )  # fmt: skip
    model.set_feature_stats(*feature_stats(cuts))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3, betas=(0.9, args.adam_beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    warm = TrainConfig(ctc_encoder_warmup_steps=args.ctc_encoder_warmup_steps)

    step, t0, window = 0, time.time(), []
    while step < args.steps:
        for batch in loader:
            feats, lens = batch_features(batch, torch.device("cpu"))
            targets = [tok.encode(t) for t in batch_texts(batch)]
            out = model(feats, lens, targets, rnnt_encoder_grad_scale=rnnt_encoder_grad_scale(warm, step))
            frames = out["num_frames"].float()
            loss = (ws * out["simple_loss"] + wp * out["pruned_loss"] + wc * out["ctc_loss"]) / frames
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            step += 1
            window.append((out["ctc_loss"] / frames).item())
            if step % 20 == 0:
                print(
                    f"step {step:5d}  ctc loss/frame {sum(window) / len(window):.3f}  {time.time() - t0:6.1f} s",
                    flush=True,
                )
                window = []
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
