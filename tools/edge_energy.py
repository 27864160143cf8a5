"""How much of a word each speaker's files keep at their edges: median energy profiles.

Usage:
    python tools/edge_energy.py ../shared/data/fsdd --word six
    python tools/edge_energy.py ../shared/data/fsdd --word eight --frames 20

Reads a folder laid out as FSDD (audio/<digit>_<speaker>_<index>.flac, transcripts.tsv) and
prints, per speaker, the median over the files holding --word of the energy below 600 Hz
(voicing) and above 2.5 kHz (frication) in 20 ms steps from the start and from the end of
each file, in dB relative to the file's loudest low-band frame.  A fricative onset shows as
high band above low band; a file cut into the word starts with voicing at once.  Written
to explain the FSDD held-out speaker's errors (docs/RESULTS.md, FSDD).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf


def band_profiles(x: np.ndarray, sr: int, steps: int) -> np.ndarray:
    """(2 edges, 2 bands, steps) dB profile of one file: [start, end] x [low, high]."""
    n, hop = int(0.025 * sr), int(0.005 * sr)
    out = np.full((2, 2, steps), np.nan)
    for edge, sig in enumerate((x, x[::-1])):
        if len(sig) < n:
            continue
        frames = np.lib.stride_tricks.sliding_window_view(sig - sig.mean(), n)[::hop] * np.hanning(n)
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
        freq = np.fft.rfftfreq(n, 1 / sr)
        low = 10 * np.log10(power[:, (freq > 80) & (freq < 600)].sum(1) + 1e-12)
        high = 10 * np.log10(power[:, freq > 2500].sum(1) + 1e-12)
        peak = low.max()
        for band, values in enumerate((low, high)):
            picked = values[::4][:steps] - peak  # every 4th 5 ms hop: 20 ms steps
            out[edge, band, : len(picked)] = picked
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--word", required=True, help="transcript of the files to profile, e.g. six")
    parser.add_argument("--frames", type=int, default=10, help="20 ms steps to print from each edge")
    args = parser.parse_args()
    tsv = args.corpus_dir / "transcripts.tsv"
    if not tsv.is_file():
        raise SystemExit(f"{tsv} not found: pass a folder with audio/ and transcripts.tsv")
    profiles: dict[str, list[np.ndarray]] = defaultdict(list)
    with tsv.open(encoding="utf-8") as f:
        for utt, text in csv.reader(f, delimiter="\t"):
            if text.strip().lower() != args.word.lower():
                continue
            audio = next(iter(sorted((args.corpus_dir / "audio").glob(f"{utt}.*"))), None)
            if audio is None:
                print(f"skipping {utt}: no audio file in {args.corpus_dir / 'audio'}")
                continue
            x, sr = sf.read(audio, dtype="float64", always_2d=True)
            speaker = utt.split("_")[1] if utt.count("_") >= 2 else "all"
            profiles[speaker].append(band_profiles(x.mean(axis=1), sr, args.frames))
    if not profiles:
        raise SystemExit(f"no file in {tsv} is transcribed {args.word!r}")
    for speaker, p in sorted(profiles.items()):
        med = np.nanmedian(np.stack(p), axis=0)
        for edge, name in enumerate(("start", "end")):
            for band, bname in enumerate(("low <600 Hz", "high >2.5 kHz")):
                row = " ".join(f"{v:5.0f}" for v in med[edge, band])
                print(f"{speaker:>10} {name:>5} {bname:>13} ({len(p)} files): {row}")


if __name__ == "__main__":
    main()
