"""``dsr features``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from dsr.cli.common import already_done, console, finish, show_progress
from dsr.cli.options import build, flag_errors, make_command
from dsr.features.options import FeaturesOptions
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


_DOC = """Compute log-mel features (16 kHz, mono; 80-dim Kaldi FBANK by default) and write cuts manifests.

    Any input sample rate and channel count is accepted: audio is downmixed and
    resampled first.  Outputs: OUT_DIR/<corpus>_cuts_<split>.jsonl.gz plus lilcom
    feature storage in OUT_DIR/<corpus>_feats_<split>/.

    Example:

        dsr features --corpus synth --split train --split dev --split test --speed-perturb -j 2

        dsr features --corpus librispeech --split train-clean-100 --speed-perturb --noise data/manifests/musan_recordings_noise.jsonl.gz --noise-snr 10 20

        dsr features --corpus arctic --feature-type whisper-fbank --num-mel-bins 80
    """


def _features(**flags: Any) -> None:
    with flag_errors(FeaturesOptions):
        options = build(FeaturesOptions, flags)
    from dsr.features.extract import compute_split
    from dsr.features.frontend import describe_frontend, frontend_to_dict
    from dsr.features.noise import load_noise

    frontend = frontend_to_dict(options.frontend())
    mixing = load_noise(list(options.noise), options.noise_snr, options.noise_prob) if options.noise else None
    for split in options.splits:
        stage = f"features-{options.corpus}-{split}"
        # The stage name stays the same for every front end (scripts and older markers keep
        # working); the marker records the front end, and a marker of other settings (or an
        # older one, which was kaldi-fbank) does not count as done: the cuts are recomputed.
        other = _done_with_other_frontend(options.out_dir, stage, frontend)
        if other is not None:
            console.print(
                f"[yellow]redo[/] {stage}: done before with {describe_frontend(other)} features, "
                f"now {describe_frontend(frontend)}"
            )
        inputs, marker = options.inputs(split), options.marker_options(split)
        if already_done(options.out_dir, stage, options.force or other is not None, inputs=inputs, options=marker):
            continue
        report = compute_split(options, split, progress=show_progress(), noise=mixing)
        if report.num_cuts == 0:
            console.print(f"[red]no features computed for {options.corpus}/{split}: every utterance was skipped[/]")
            raise typer.Exit(1)
        finish(
            options.out_dir,
            stage,
            report.summary(),
            {"num_cuts": report.num_cuts, "skipped": len(report.skipped), "frontend": frontend},
            inputs=inputs,
            options=marker,
        )


features = make_command(FeaturesOptions, _features, _DOC, required=("corpus",))
