"""A tiny training set built in a second: random 80-dim features, random sentences, a small BPE model.

Not learnable, but every loss is finite and every code path of ``dsr train`` runs,
which is what the trainer tests need.  Imported by test modules (and by the
worker processes that tests/test_ddp.py spawns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse import CutSet, Features, MonoCut, SupervisionSegment
from lhotse.features.io import LilcomChunkyWriter

from dsr.lang.bpe import train_bpe

WORDS = "turn on the kitchen lights set a timer for five minutes what is weather in paris play music".split()

# A model of ~40 k parameters: one training step takes a few tens of milliseconds.
TINY_MODEL = dict(
    encoder_dim=32, num_encoder_layers=2, num_heads=2, ffn_dim=64, conv_kernel_size=5,
    decoder_dim=32, joiner_dim=32, dropout=0.0,
)  # fmt: skip


def _cuts(root: Path, name: str, num: int, rng: np.random.Generator) -> Path:
    cuts = []
    with LilcomChunkyWriter(root / f"{name}_feats") as writer:
        for i in range(num):
            frames = int(rng.integers(80, 200))
            duration = frames / 100
            cut_id = f"{name}-{i:03d}"
            key = writer.write(cut_id, rng.normal(-8.0, 3.0, size=(frames, 80)).astype(np.float32))
            feats = Features(
                type="kaldi-fbank", num_frames=frames, num_features=80, frame_shift=0.01, sampling_rate=16000,
                start=0.0, duration=duration, storage_type=writer.name, storage_path=str(writer.storage_path),
                storage_key=key, recording_id=cut_id, channels=0,
            )  # fmt: skip
            text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 5))))
            sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0.0, duration=duration, channel=0, text=text)
            cuts.append(MonoCut(id=cut_id, start=0.0, duration=duration, channel=0, supervisions=[sup], features=feats))
    path = root / f"cuts_{name}.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def make_tiny_corpus(root: Path, num_train: int = 16, num_dev: int = 4, vocab_size: int = 30) -> dict[str, Any]:
    """Write train/dev cuts and a lang dir under ``root``; returns ``dsr train`` options that use them."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train = _cuts(root, "train", num_train, rng)
    dev = _cuts(root, "dev", num_dev, rng)
    texts = [" ".join(rng.choice(WORDS, size=6)) for _ in range(200)] + WORDS
    train_bpe(texts, root / "lang", vocab_size=vocab_size)
    return {"train_cuts": str(train), "dev_cuts": str(dev), "lang_dir": str(root / "lang")}


def tiny_train_options(corpus: dict[str, Any], exp_dir: Path, **overrides: Any) -> dict[str, Any]:
    """``TrainConfig`` keyword arguments for a few fast steps on the tiny corpus."""
    options = dict(
        **corpus, **TINY_MODEL, exp_dir=str(exp_dir), max_duration=4.0, num_epochs=1, num_buckets=1,
        warmup_steps=2, model_warm_step=4, save_every_n=0, log_interval=1, average_period=2, num_threads=1,
        spec_augment=False, device="cpu",
    )  # fmt: skip
    options.update(overrides)
    return options


def write_feature_cuts(root: Path, texts: list[str], frame_counts: tuple[int, ...], seed: int = 5) -> Path:
    """``root/toy_cuts_test.jsonl.gz``: one cut ``u<i>`` per text with ``frame_counts[i]`` frames
    of standard-normal 80-dim features (decoding tests: any features will do)."""
    g = torch.Generator().manual_seed(seed)
    cuts = []
    with LilcomChunkyWriter(root / "feats.lca") as writer:
        for i, (text, frames) in enumerate(zip(texts, frame_counts)):
            feats = torch.randn(frames, 80, generator=g).numpy()
            dur = frames / 100
            features = Features(
                type="kaldi-fbank",
                num_frames=frames,
                num_features=80,
                frame_shift=0.01,
                sampling_rate=16000,
                start=0.0,
                duration=dur,
                storage_type=writer.name,
                storage_path=str(root / "feats.lca"),
                storage_key=writer.write(f"u{i}", feats),
                recording_id=f"u{i}",
                channels=0,
            )
            sup = SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0.0, duration=dur, channel=0, text=text)
            cuts.append(MonoCut(id=f"u{i}", start=0.0, duration=dur, channel=0, supervisions=[sup], features=features))
    path = root / "toy_cuts_test.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path
