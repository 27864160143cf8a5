"""A pruned model against the model it was pruned from: WER and decoding time on one CPU thread,
features included, one utterance at a time, in one run; prints the speed ratio (issue: a pruned
model >= 1.5x faster with <= 10 % relative WER change).

Usage:
    # the embedded recipe's model against its pruned + fine-tuned copy (dsr prune, then dsr train --init-from):
    python bench/prune_speed.py --lang-dir egs/synth/data/lang_bpe_128 \\
        --model full=egs/synth/exp/conformer:4:1 --model pruned=egs/synth/exp/pruned-ft:2:1 \\
        --recordings egs/synth/data/manifests/synth_recordings_test.jsonl.gz \\
        --supervisions egs/synth/data/manifests/synth_supervisions_test.jsonl.gz
    # + their sherpa-onnx exports (dsr export onnx ... --out-dir EXP/onnx), first 100 utterances, 3 rounds:
    python bench/prune_speed.py --lang-dir egs/synth/data/lang_bpe_128 \\
        --model full=egs/synth/exp/conformer:4:1:egs/synth/exp/conformer/onnx \\
        --model pruned=egs/synth/exp/pruned-ft:2:1:egs/synth/exp/pruned-ft/onnx \\
        --recordings ... --supervisions ... --limit 100 --rounds 3 --json bench-out/prune_speed.json

    # batched corpus decoding as `dsr decode` runs it (features read from the manifest, not timed):
    python bench/prune_speed.py --lang-dir egs/synth/data/lang_bpe_128 \\
        --model full=egs/synth/exp/conformer:4:1 --model pruned=egs/synth/exp/pruned-ft:2:1 \\
        --cuts egs/synth/data/fbank/synth_cuts_test.jsonl.gz --rounds 3

``--model NAME=EXP_DIR:EPOCH:AVG[:ONNX_DIR]``: the first is the reference of the ratios.  Each
system (dsr's PyTorch greedy search through ``dsr.Recognizer``, and sherpa-onnx's greedy search
on the ONNX files when an ONNX dir is given) decodes every utterance from 16 kHz samples in
memory (its own features included; model loading and file reading are not timed); the rounds
interleave the systems utterance by utterance, so a busy machine slows each alike, and each
utterance's fastest round counts.  One thread: ``torch.set_num_threads(1)``, sherpa-onnx
``num_threads=1``.  The speed ratio of a system is the reference's seconds (same runtime) over
its own.

``--cuts``: batched decoding of a feature manifest instead, what ``dsr decode`` (and so every
recipe's decode stage) does: batches of ``--max-duration`` seconds of audio (dsr decode's default
300) from :class:`dsr.data.batches.DecodeBatches`, each decoded by
:func:`dsr.decoding.decode.decode_one_batch` (encoder + greedy search + detokenisation timed; the
features come from the manifest, computed once before decoding, and are not timed); rounds
interleave the models batch by batch.  sherpa-onnx is not run in this mode (it computes its own
features from audio).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsr.decoding.options import TranscribeOptions  # noqa: E402
from dsr.decoding.recognizer import Recognizer  # noqa: E402
from dsr.evaluation.wer import score  # noqa: E402
from dsr.features.audio import load_audio_mono  # noqa: E402


@dataclass
class ModelSpec:
    name: str
    exp_dir: Path
    epoch: int
    avg: int
    onnx_dir: Path | None


@dataclass
class System:
    label: str
    runtime: str  # "dsr" or "sherpa-onnx"
    model: str
    transcribe: Callable[[np.ndarray], str]
    seconds: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def parse_model(value: str) -> ModelSpec:
    name, sep, rest = value.partition("=")
    parts = rest.split(":")
    if not sep or not name or len(parts) not in (3, 4):
        raise argparse.ArgumentTypeError(f"expected NAME=EXP_DIR:EPOCH:AVG[:ONNX_DIR], got {value!r}")
    try:
        epoch, avg = int(parts[1]), int(parts[2])
    except ValueError:
        raise argparse.ArgumentTypeError(f"EPOCH and AVG must be integers in {value!r}") from None
    onnx = Path(parts[3]) if len(parts) == 4 and parts[3] else None
    return ModelSpec(name, Path(parts[0]), epoch, avg, onnx)


def dsr_system(spec: ModelSpec, lang_dir: Path) -> System:
    asr = Recognizer(
        options=TranscribeOptions(
            exp_dir=spec.exp_dir, lang_dir=lang_dir, epoch=spec.epoch, avg=spec.avg, method="greedy", device="cpu"
        )
    )

    def transcribe(samples: np.ndarray) -> str:
        return asr.transcribe(samples, sample_rate=16000, max_duration=0)[0].text

    return System(f"dsr {spec.name}", "dsr", spec.name, transcribe)


def sherpa_system(spec: ModelSpec) -> System:
    import sherpa_onnx

    assert spec.onnx_dir is not None
    rec = sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(spec.onnx_dir / "encoder.onnx"),
        decoder=str(spec.onnx_dir / "decoder.onnx"),
        joiner=str(spec.onnx_dir / "joiner.onnx"),
        tokens=str(spec.onnx_dir / "tokens.txt"),
        num_threads=1,
        decoding_method="greedy_search",
    )

    def transcribe(samples: np.ndarray) -> str:
        stream = rec.create_stream()
        stream.accept_waveform(16000, samples)
        rec.decode_stream(stream)
        return str(stream.result.text)

    return System(f"sherpa-onnx {spec.name}", "sherpa-onnx", spec.name, transcribe)


def load_utterances(recordings: Path, supervisions: Path, limit: int) -> list[tuple[str, np.ndarray, str]]:
    from lhotse import load_manifest

    recs = load_manifest(recordings)
    sups = list(load_manifest(supervisions))
    out = []
    for sup in sups[:limit] if limit else sups:
        path = Path(recs[sup.recording_id].sources[0].source)
        out.append((sup.id, load_audio_mono(path, 16000).astype(np.float32), sup.text or ""))
    return out


def load_batches(cuts: Any, max_duration: float) -> list[tuple[torch.Tensor, torch.Tensor, list[Any]]]:
    """``dsr decode``'s batches of the CutSet ``cuts``, features loaded (once, before any timing)."""
    from dsr.data.batches import DecodeBatches

    batches = DecodeBatches(cuts, max_duration, torch.device("cpu"))
    out = list(batches)
    if batches.unreadable:
        raise SystemExit(f"{len(batches.unreadable)} cuts cannot be read, e.g. {batches.unreadable[0]}")
    return out


def batched_system(spec: ModelSpec, lang_dir: Path, cuts: Any, cuts_name: str) -> System:
    """dsr decode's greedy decoding of one batch of precomputed features (``transcribe`` takes
    a batch of :func:`load_batches` and returns its texts joined by newlines); ``cuts`` (named
    ``cuts_name``) are checked against the model's front end, as dsr decode checks them."""
    from dsr.decoding.decode import decode_one_batch, prepare
    from dsr.decoding.methods import get_method
    from dsr.decoding.options import DecodeOptions

    options = DecodeOptions(
        exp_dir=spec.exp_dir, lang_dir=lang_dir, epoch=spec.epoch, avg=spec.avg, methods=("greedy",), device="cpu"
    )
    decoder = prepare(options, cuts, cuts_name)
    method = get_method("greedy")

    def transcribe(batch: Any) -> str:
        feats, lens, batch_cuts = batch
        return "\n".join(decode_one_batch(decoder, method, feats, lens, batch_cuts, []).texts)

    return System(f"dsr {spec.name} (batched)", "dsr", spec.name, transcribe)


def run_rounds(systems: list[System], items: list[Any], rounds: int) -> None:
    """Each system on each item (an utterance's samples, or a batch), ``rounds`` times interleaved;
    ``seconds``: each item's fastest round, ``texts``: the first round's."""
    for s in systems:  # warm-up: first calls allocate and pick kernels
        s.transcribe(items[0])
    best = {s.label: [float("inf")] * len(items) for s in systems}
    for r in range(rounds):
        for i, samples in enumerate(items):
            for s in systems:
                start = time.perf_counter()
                text = s.transcribe(samples)
                best[s.label][i] = min(best[s.label][i], time.perf_counter() - start)
                if r == 0:
                    s.texts.append(text)
    for s in systems:
        s.seconds = best[s.label]


def summarise(systems: list[System], refs: list[str], audio_seconds: float) -> list[dict[str, Any]]:
    """One row per system; texts of batches (newline-joined) are split back into utterances."""
    reference_seconds = {}
    rows = []
    for s in systems:
        total = sum(s.seconds)
        reference_seconds.setdefault(s.runtime, total)
        hyps = [line for text in s.texts for line in text.split("\n")]
        if len(hyps) != len(refs):
            raise AssertionError(f"{s.label} gave {len(hyps)} transcripts for {len(refs)} utterances")
        stats = score([(str(i), r, h) for i, (r, h) in enumerate(zip(refs, hyps))])
        rows.append(
            {
                "system": s.label,
                "runtime": s.runtime,
                "model": s.model,
                "wer": stats.wer,
                "seconds": total,
                "rtf": total / audio_seconds,
                "ms_per_utt": 1000 * total / len(refs),
                "speed_ratio": reference_seconds[s.runtime] / total,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model", type=parse_model, action="append", required=True, help="NAME=EXP_DIR:EPOCH:AVG[:ONNX_DIR]"
    )
    p.add_argument("--lang-dir", type=Path, required=True)
    p.add_argument("--recordings", type=Path, help="Recordings manifest (one utterance at a time from audio).")
    p.add_argument("--supervisions", type=Path, help="Supervisions manifest of --recordings.")
    p.add_argument("--cuts", type=Path, help="Feature manifest: batched decoding as dsr decode runs it, instead.")
    p.add_argument("--max-duration", type=float, default=300.0, help="With --cuts: seconds of audio per batch.")
    p.add_argument("--limit", type=int, default=0, help="First N utterances (0: all; not with --cuts).")
    p.add_argument("--rounds", type=int, default=2, help="Interleaved rounds; each utterance's fastest counts.")
    p.add_argument("--json", type=Path, help="Also write the rows here.")
    args = p.parse_args(argv)
    if len(args.model) < 2:
        p.error("give at least two --model: the reference first, then the pruned one(s)")
    if (args.cuts is None) == (args.recordings is None or args.supervisions is None):
        p.error("give either --recordings and --supervisions, or --cuts")
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    items: list[Any]
    if args.cuts is not None:
        from dsr.data.cuts import load_cuts

        cut_set = load_cuts(args.cuts)
        items = load_batches(cut_set, args.max_duration)
        cuts = [c for _, _, batch_cuts in items for c in batch_cuts]
        refs = [c.supervisions[0].text or "" for c in cuts]
        audio_seconds = sum(c.duration for c in cuts)
        systems = [batched_system(m, args.lang_dir, cut_set, str(args.cuts)) for m in args.model]
        how = f"batches of {args.max_duration:g} s from {args.cuts} ({len(items)} batches, features not timed)"
    else:
        utts = load_utterances(args.recordings, args.supervisions, args.limit)
        items = [a for _, a, _ in utts]
        refs = [t for _, _, t in utts]
        audio_seconds = sum(len(a) for a in items) / 16000
        systems = [dsr_system(m, args.lang_dir) for m in args.model]
        systems += [sherpa_system(m) for m in args.model if m.onnx_dir is not None]
        how = "one at a time, features included"
    with torch.inference_mode():
        run_rounds(systems, items, args.rounds)
    rows = summarise(systems, refs, audio_seconds)
    print(
        f"{len(refs)} utterances, {audio_seconds:.1f} s of audio, {how}, one thread, "
        f"best of {args.rounds} interleaved rounds"
    )
    print(f"{'system':<34} {'WER %':>7} {'RTF':>8} {'ms/utt':>8} {'speed ratio':>12}")
    for r in rows:
        print(f"{r['system']:<34} {r['wer']:7.2f} {r['rtf']:8.4f} {r['ms_per_utt']:8.1f} {r['speed_ratio']:11.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
