"""WER of a model's ONNX export decoded by sherpa-onnx (fp32 and int8) against dsr's own greedy
search on the same audio, in one run: does deployment change what the model recognises?

Usage:
    dsr export onnx --exp-dir egs/synth/exp/conformer --lang-dir egs/synth/data/lang_bpe_128 \
        --out-dir egs/synth/exp/conformer/onnx
    python bench/onnx_wer.py --exp-dir egs/synth/exp/conformer --lang-dir egs/synth/data/lang_bpe_128 \
        --onnx-dir egs/synth/exp/conformer/onnx \
        --recordings egs/synth/data/manifests/synth_recordings_test.jsonl.gz \
        --supervisions egs/synth/data/manifests/synth_supervisions_test.jsonl.gz
    python bench/onnx_wer.py ... --limit 50 --json out.json

Every system reads the same audio files (sherpa-onnx computes its own features, dsr its
kaldi-native-fbank ones), greedy search, one thread. Printed per system: WER, utterances whose
transcript equals dsr's, and the size of its files; the WER difference against dsr is what the
export must keep at 0 (fp32) and small (int8).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from dsr.data.normalize import normalize_for_scoring
from dsr.decoding.options import TranscribeOptions
from dsr.decoding.recognizer import Recognizer
from dsr.evaluation.wer import score
from dsr.features.audio import load_audio_mono


def _utterances(recordings: Path, supervisions: Path, limit: int) -> list[tuple[str, Path, str]]:
    from lhotse import load_manifest

    recs = load_manifest(recordings)
    out = []
    for sup in load_manifest(supervisions):
        rec = recs[sup.recording_id]
        out.append((sup.id, Path(rec.sources[0].source), sup.text or ""))
    return out[:limit] if limit else out


def _sherpa(onnx_dir: Path, suffix: str, audio: list[np.ndarray]) -> list[str]:
    import sherpa_onnx

    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(onnx_dir / f"encoder{suffix}.onnx"),
        decoder=str(onnx_dir / f"decoder{suffix}.onnx"),
        joiner=str(onnx_dir / f"joiner{suffix}.onnx"),
        tokens=str(onnx_dir / "tokens.txt"),
        num_threads=1,
        decoding_method="greedy_search",
    )
    texts = []
    for a in audio:  # one at a time, as dsr's side decodes
        s = rec.create_stream()
        s.accept_waveform(16000, a)
        rec.decode_stream(s)
        texts.append(s.result.text)
    return texts


def _size_mb(onnx_dir: Path, suffix: str) -> float:
    return sum((onnx_dir / f"{n}{suffix}.onnx").stat().st_size for n in ("encoder", "decoder", "joiner")) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp-dir", type=Path, required=True)
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--epoch", type=int, default=0)
    p.add_argument("--avg", type=int, default=1)
    p.add_argument("--onnx-dir", type=Path, required=True, help="dsr export onnx's --out-dir for the same model")
    p.add_argument("--recordings", type=Path, required=True)
    p.add_argument("--supervisions", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0, help="First N utterances (0 = all).")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)

    utts = _utterances(args.recordings, args.supervisions, args.limit)
    audio = [load_audio_mono(path, 16000).astype(np.float32) for _, path, _ in utts]
    refs = [(uid, normalize_for_scoring(text)) for uid, _, text in utts]
    recognizer = Recognizer(
        options=TranscribeOptions(
            exp_dir=args.exp_dir, lang_dir=args.lang_dir, epoch=args.epoch, avg=args.avg, method="greedy", device="cpu"
        )
    )
    dsr_texts = [t.text for t in recognizer.transcribe([path for _, path, _ in utts])]
    systems = {
        "dsr PyTorch greedy": dsr_texts,
        "sherpa-onnx greedy, fp32": _sherpa(args.onnx_dir, "", audio),
        "sherpa-onnx greedy, int8": _sherpa(args.onnx_dir, ".int8", audio),
    }
    sizes = {
        "dsr PyTorch greedy": None,
        "sherpa-onnx greedy, fp32": _size_mb(args.onnx_dir, ""),
        "sherpa-onnx greedy, int8": _size_mb(args.onnx_dir, ".int8"),
    }
    rows = []
    print(f"{len(utts)} utterances; WER after normalize_for_scoring")
    print("| system | WER % | equal to dsr's | transducer files MB |\n|---|---|---|---|")
    for name, texts in systems.items():
        hyps = [normalize_for_scoring(t) for t in texts]
        wer = score([(uid, ref, hyp) for (uid, ref), hyp in zip(refs, hyps)]).wer
        same = sum(a == b for a, b in zip(hyps, (normalize_for_scoring(t) for t in dsr_texts)))
        rows.append({"system": name, "wer": wer, "equal_to_dsr": same, "utts": len(utts), "size_mb": sizes[name]})
        size = f"{sizes[name]:.2f}" if sizes[name] is not None else "-"
        print(f"| {name} | {wer:.2f} | {same}/{len(utts)} | {size} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
