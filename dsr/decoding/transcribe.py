"""``dsr transcribe FILE...``: decode audio files of any sample rate / channel count."""

from __future__ import annotations

from pathlib import Path

import torch

from dsr.decoding.decode import METHODS, load_model
from dsr.decoding.greedy import ctc_greedy_search, transducer_greedy_search
from dsr.errors import DsrUserError
from dsr.features.audio import load_audio_mono
from dsr.features.fbank import FbankConfig, compute_fbank
from dsr.lang.bpe import Tokenizer
from dsr.training.trainer import resolve_device


@torch.no_grad()
def transcribe(
    files: list[Path],
    exp_dir: Path,
    lang_dir: Path,
    method: str = "greedy",
    epoch: int = 0,
    avg: int = 1,
    device: str = "auto",
) -> list[tuple[Path, str]]:
    """Return ``(file, text)`` for each file; raises DsrUserError naming a bad file."""
    if method not in METHODS:
        raise DsrUserError(f"--method {method!r} is unknown; choose from {', '.join(METHODS)}")
    dev = resolve_device(device)
    tokenizer = Tokenizer(lang_dir)
    model, _ = load_model(Path(exp_dir), epoch, avg, dev)
    cfg = FbankConfig()
    out = []
    for f in files:
        feats = torch.from_numpy(compute_fbank(load_audio_mono(f, cfg.sampling_rate), cfg))
        if feats.shape[0] < 10:
            raise DsrUserError(f"audio file {f} is too short to transcribe ({feats.shape[0] * 10} ms)")
        enc, enc_lens = model.encode(feats[None].to(dev), torch.tensor([feats.shape[0]], device=dev))
        if method == "greedy":
            hyp = transducer_greedy_search(model, enc, enc_lens)[0]
        else:
            hyp = ctc_greedy_search(model.ctc_log_probs(enc), enc_lens, blank=model.blank_id)[0]
        out.append((Path(f), tokenizer.decode(hyp)))
    return out
