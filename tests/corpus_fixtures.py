"""Tiny corpora in the layouts lhotse's LibriSpeech, AISHELL and MUSAN recipes read, written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def audio(path: Path, seconds: float = 1.0, seed: int = 0) -> Path:
    """Write a quiet tone plus noise: decodable, not silent, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.1 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR)  # format from the suffix: .flac or .wav
    return path


def corrupt(path: Path) -> None:
    """Overwrite ``path`` with bytes no audio library can decode."""
    path.write_bytes(b"this is not audio" * 50)


# LibriSpeech: <part>/<spk>/<chapter>/<spk>-<chapter>-<n>.flac + <spk>-<chapter>.trans.txt
LS_TEXT = {
    "dev-clean-2": {"1272-128104": ["MISTER QUILTER IS THE APOSTLE", "NOR IS MISTER QUILTER'S MANNER"]},
    "train-clean-5": {"19-198": ["NORTHANGER ABBEY", "CHAPTER ONE"], "26-495": ["THE BEGINNING", "SHE WAS"]},
}


def librispeech(root: Path) -> Path:
    """root/LibriSpeech with parts dev-clean-2 (2 utterances) and train-clean-5 (4), 1 s FLACs."""
    corpus = root / "LibriSpeech"
    seed = 0
    for part, chapters in LS_TEXT.items():
        for key, texts in chapters.items():
            spk, chapter = key.split("-")
            folder = corpus / part / spk / chapter
            lines = []
            for n, text in enumerate(texts):
                utt = f"{key}-{n:04d}"
                audio(folder / f"{utt}.flac", seed=seed)
                seed += 1
                lines.append(f"{utt} {text}\n")
            (folder / f"{key}.trans.txt").write_text("".join(lines))
    return corpus


# AISHELL: data_aishell/wav/<split>/<spk>/<utt>.wav + data_aishell/transcript/aishell_transcript_v0.8.txt
AISHELL_TEXT = {
    "train": {
        "S0002": {
            "BAC009S0002W0122": "而 对 楼市 成交 抑制 作用 最 大 的 限 购",
            "BAC009S0002W0123": "也 成为 地方 政府 的 眼中 钉",
        }
    },
    "dev": {"S0724": {"BAC009S0724W0121": "甚至 出现 交易 几乎 停滞 的 情况"}},
    "test": {
        "S0764": {
            "BAC009S0764W0121": "甚至 出现 交易 几乎 停滞 的 情况",
            "BAC009S0764W0122": "一二 线 城市 虽然 也 处于 调整 中",
        }
    },
}


def aishell(root: Path) -> Path:
    """root/aishell with 2 train, 1 dev, 2 test utterances, 2 s wavs."""
    corpus = root / "aishell"
    lines = []
    seed = 0
    for split, speakers in AISHELL_TEXT.items():
        for spk, utts in speakers.items():
            for utt, text in utts.items():
                audio(corpus / "data_aishell/wav" / split / spk / f"{utt}.wav", seconds=2.0, seed=seed)
                seed += 1
                lines.append(f"{utt} {text}\n")
    transcript = corpus / "data_aishell/transcript/aishell_transcript_v0.8.txt"
    transcript.parent.mkdir(parents=True)
    transcript.write_text("".join(lines), encoding="utf-8")
    return corpus


# MUSAN: musan/{music,speech,noise}/<source>/*.wav (+ ANNOTATIONS files lhotse reads for music)
def musan(root: Path) -> Path:
    """root/musan with one music, one speech and two noise recordings, 3 s each."""
    corpus = root / "musan"
    for seed, rel in enumerate(
        [
            "music/fma/music-fma-0000.wav",
            "speech/librivox/speech-librivox-0000.wav",
            "noise/free-sound/noise-free-sound-0000.wav",
            "noise/free-sound/noise-free-sound-0001.wav",
        ]
    ):
        audio(corpus / rel, seconds=3.0, seed=seed)
    (corpus / "music/fma/ANNOTATIONS").write_text("music-fma-0000 Pop N someone\n")
    return corpus
