"""``dsr features``."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import already_done, console, finish, show_progress


def features(
    corpus: str = typer.Option(..., "--corpus", help="Corpus name used in the manifest file names, e.g. synth."),
    splits: list[str] = typer.Option(["train", "dev", "test"], "--split", help="Split(s) to process (repeatable)."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), "--manifest-dir", help="Where the lhotse manifests are."),
    out_dir: Path = typer.Option(Path("data/fbank"), "--out-dir", help="Where cuts manifests and features go."),
    num_jobs: int = typer.Option(2, "--num-jobs", "-j", min=1, help="Parallel worker processes."),
    speed_perturb: bool = typer.Option(
        False, "--speed-perturb", help="Add 0.9x and 1.1x copies of the train split(s) (names starting with 'train')."),
    noise: list[Path] = typer.Option(
        [], "--noise", help="Recordings manifest(s) of noise (e.g. data/manifests/musan_recordings_noise.jsonl.gz) "
        "to mix into the train split(s); repeatable."),
    noise_snr: tuple[float, float] = typer.Option((10.0, 20.0), "--noise-snr", help="With --noise: SNR range in dB, LOW HIGH."),
    noise_prob: float = typer.Option(0.5, "--noise-prob", min=0.0, max=1.0, help="With --noise: share of train cuts mixed."),
    force: bool = typer.Option(False, "--force", help="Recompute even if already done."),
) -> None:
    """Compute 80-dim Kaldi FBANK (16 kHz, mono) and write cuts manifests.

    Any input sample rate and channel count is accepted: audio is downmixed and
    resampled first.  Outputs: OUT_DIR/<corpus>_cuts_<split>.jsonl.gz plus lilcom
    feature storage in OUT_DIR/<corpus>_feats_<split>/.

    Example:

        dsr features --corpus synth --split train --split dev --split test --speed-perturb -j 2

        dsr features --corpus librispeech --split train-clean-100 --speed-perturb --noise data/manifests/musan_recordings_noise.jsonl.gz --noise-snr 10 20
    """
    from dsr.features.extract import compute_features
    from dsr.features.noise import load_noise

    mixing = load_noise(noise, noise_snr, noise_prob) if noise else None
    for split in splits:
        stage = f"features-{corpus}-{split}"
        if already_done(out_dir, stage, force):
            continue
        # LibriSpeech's train-clean-100 etc. are training splits too.
        is_train = split.startswith("train")
        factors = (0.9, 1.0, 1.1) if speed_perturb and is_train else (1.0,)
        report = compute_features(manifest_dir, corpus, split, out_dir, num_jobs, factors, progress=show_progress(),
                                  noise=mixing if is_train else None)
        if report.num_cuts == 0:
            console.print(f"[red]no features computed for {corpus}/{split}: every utterance was skipped[/]")
            raise typer.Exit(1)
        finish(out_dir, stage, report.summary(), {"num_cuts": report.num_cuts, "skipped": len(report.skipped)})
