"""``dsr features``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from dsr.cli.common import already_done, console, finish, show_progress
from dsr.utils import is_done, read_done_info


def _done_with_other_frontend(out_dir: Path, stage: str, frontend: dict[str, Any]) -> dict[str, Any] | None:
    """The front end a finished ``stage`` used, when it is not ``frontend`` (else None).

    Markers written before front ends were recorded count as kaldi-fbank ``FbankConfig()``.
    """
    from dsr.features.fbank import FbankConfig
    from dsr.features.frontend import frontend_from_dict, frontend_to_dict

    if not is_done(out_dir, stage):
        return None
    recorded = read_done_info(out_dir, stage).get("frontend")
    try:
        done = frontend_to_dict(frontend_from_dict(recorded) if recorded else FbankConfig())
    except (TypeError, ValueError):  # a hand-edited or foreign marker: recompute rather than trust it
        return {"type": "unknown"}
    return None if done == frontend else done


def features(
    corpus: str = typer.Option(..., "--corpus", help="Corpus name used in the manifest file names, e.g. synth."),
    splits: list[str] = typer.Option(["train", "dev", "test"], "--split", help="Split(s) to process (repeatable)."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where the lhotse manifests are."),
    out_dir: Path = typer.Option(Path("data/fbank"), "--out-dir", help="Where cuts manifests and features go."),
    num_jobs: int = typer.Option(2, "--num-jobs", "-j", min=1, help="Parallel worker processes."),
    speed_perturb: bool = typer.Option(
        False, "--speed-perturb", help="Add 0.9x and 1.1x copies of the train split(s) (names starting with 'train')."
    ),
    noise: list[Path] = typer.Option(
        [],
        "--noise",
        help="Recordings manifest(s) of noise (e.g. data/manifests/musan_recordings_noise.jsonl.gz) "
        "to mix into the train split(s); repeatable.",
    ),
    noise_snr: tuple[float, float] = typer.Option(
        (10.0, 20.0), "--noise-snr", help="With --noise: SNR range in dB, LOW HIGH."
    ),
    noise_prob: float = typer.Option(
        0.5, "--noise-prob", min=0.0, max=1.0, help="With --noise: share of train cuts mixed."
    ),
    feature_type: str = typer.Option(
        "kaldi-fbank",
        "--feature-type",
        help="Front end: kaldi-fbank (Kaldi FBANK, the default) or whisper-fbank "
        "(Whisper's log-mel, for Whisper encoders).",
    ),
    num_mel_bins: int = typer.Option(
        80, "--num-mel-bins", min=1, help="Mel bins (whisper-fbank: 80, or 128 for large-v3)."
    ),
    force: bool = typer.Option(False, "--force", help="Recompute even if already done."),
) -> None:
    """Compute log-mel features (16 kHz, mono; 80-dim Kaldi FBANK by default) and write cuts manifests.

    Any input sample rate and channel count is accepted: audio is downmixed and
    resampled first.  Outputs: OUT_DIR/<corpus>_cuts_<split>.jsonl.gz plus lilcom
    feature storage in OUT_DIR/<corpus>_feats_<split>/.

    Example:

        dsr features --corpus synth --split train --split dev --split test --speed-perturb -j 2

        dsr features --corpus librispeech --split train-clean-100 --speed-perturb --noise data/manifests/musan_recordings_noise.jsonl.gz --noise-snr 10 20

        dsr features --corpus arctic --feature-type whisper-fbank --num-mel-bins 80
    """
    from dsr.errors import DsrUserError
    from dsr.features.extract import compute_features
    from dsr.features.frontend import FRONTEND_TYPES, describe_frontend, frontend_to_dict, make_frontend
    from dsr.features.noise import load_noise

    if feature_type not in FRONTEND_TYPES:
        raise DsrUserError(f"--feature-type {feature_type!r} is unknown; choose from {', '.join(FRONTEND_TYPES)}")
    try:
        cfg = make_frontend(feature_type, num_mel_bins)
    except ValueError as e:
        raise DsrUserError(f"--num-mel-bins {num_mel_bins}: {e}") from None
    frontend = frontend_to_dict(cfg)
    mixing = load_noise(noise, noise_snr, noise_prob) if noise else None
    for split in splits:
        stage = f"features-{corpus}-{split}"
        # The stage name stays the same for every front end (scripts and older markers keep
        # working); the marker records the front end, and a marker of other settings (or an
        # older one, which was kaldi-fbank) does not count as done: the cuts are recomputed.
        other = _done_with_other_frontend(out_dir, stage, frontend)
        if other is not None:
            console.print(
                f"[yellow]redo[/] {stage}: done before with {describe_frontend(other)} features, "
                f"now {describe_frontend(frontend)}"
            )
        # LibriSpeech's train-clean-100 etc. are training splits too.
        is_train = split.startswith("train")
        factors = (0.9, 1.0, 1.1) if speed_perturb and is_train else (1.0,)
        # What the stage reads: a `prepare --force` that rewrote the manifests (edited
        # transcripts) makes the old cuts stale, so the marker must not count as done.
        inputs: dict[str, Path] = {
            kind: manifest_dir / f"{corpus}_{kind}_{split}.jsonl.gz" for kind in ("recordings", "supervisions")
        }
        if is_train:
            inputs.update({f"noise{i}": p for i, p in enumerate(noise)})
        options = {
            "speed_factors": list(factors),
            "noise": {"snr": list(noise_snr), "prob": noise_prob} if noise and is_train else None,
        }
        if already_done(out_dir, stage, force or other is not None, inputs=inputs, options=options):
            continue
        report = compute_features(
            manifest_dir,
            corpus,
            split,
            out_dir,
            num_jobs,
            factors,
            cfg=cfg,
            progress=show_progress(),
            noise=mixing if is_train else None,
        )
        if report.num_cuts == 0:
            console.print(f"[red]no features computed for {corpus}/{split}: every utterance was skipped[/]")
            raise typer.Exit(1)
        finish(
            out_dir,
            stage,
            report.summary(),
            {"num_cuts": report.num_cuts, "skipped": len(report.skipped), "frontend": frontend},
            inputs=inputs,
            options=options,
        )
