"""``dsr pseudo-label``: label cuts with a teacher, keep the confident hypotheses (:mod:`dsr.decoding.pseudo_label`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from dsr.cli.common import already_done, console, finish, show_progress
from dsr.cli.options import field_option
from dsr.decoding.options import TranscribeOptions
from dsr.errors import DsrUserError, OptionError
from dsr.utils import is_done, read_done_info

# The same flags as dsr transcribe's, from the same fields.
_BEAM_SIZE = field_option(TranscribeOptions, "beam_size", min=1)
_ATTENTION_SCALE = field_option(TranscribeOptions, "attention_scale", min=0.0)
_USE_AVERAGED_MODEL = field_option(TranscribeOptions, "use_averaged_model")


def pseudo_label(
    cuts: Path = typer.Option(
        ...,
        "--cuts",
        help="Cuts manifest to label (features or recordings; existing texts "
        "are only used to measure the labels' WER).",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Cuts manifest to write (*.jsonl.gz): the kept cuts with their "
        "pseudo-labels; the report goes to <out>.report.json.",
    ),
    method: str = typer.Option(
        ...,
        "--method",
        "-m",
        help="Decoding method: whisper-greedy, whisper-beam-search "
        "(Whisper head or --pretrained), greedy, ctc-greedy, modified-beam-search, "
        "ctc-prefix-beam-search, ctc-attention-rescoring, transducer-attention-rescoring.",
    ),
    min_confidence: float = typer.Option(
        ...,
        "--min-confidence",
        help="Keep hypotheses whose confidence in [0, 1] "
        "is at least this (see dsr.decoding.pseudo_label for each method's).",
    ),
    exp_dir: Path | None = typer.Option(
        None, "--exp-dir", help="Teacher: a dsr experiment directory (with --lang-dir)."
    ),
    lang_dir: Path | None = typer.Option(
        None, "--lang-dir", help="Directory with the teacher's bpe.model (not needed for the whisper-* methods)."
    ),
    pretrained: str | None = typer.Option(
        None, "--pretrained", help="Teacher: zero-shot Whisper (whisper-tiny.en, whisper-base, or a Whisper dir/file)."
    ),
    onto: Path | None = typer.Option(
        None,
        "--onto",
        help="Write the labels onto these cuts (same cut ids, e.g. "
        "kaldi-fbank features of the same audio for the student) instead of --cuts.",
    ),
    beam_size: int = _BEAM_SIZE,
    attention_scale: float = _ATTENTION_SCALE,
    max_tokens_per_second: float | None = typer.Option(
        None,
        "--max-tokens-per-second",
        help="Length guard: drop hypotheses longer than ceil(RATE * seconds) + 3 "
        "tokens as unfinished (default: Whisper's 8; none for the transducer/CTC methods).",
    ),
    whisper_language: str = typer.Option(
        "en", "--whisper-language", help="With --pretrained multilingual Whisper: the language token of the prompt."
    ),
    epoch: int = typer.Option(0, "--epoch", help="Teacher checkpoint epoch-E.pt (0 = the newest)."),
    avg: int = typer.Option(1, "--avg", min=1, help="Average the teacher over the last AVG epochs ending at --epoch."),
    use_averaged_model: bool = _USE_AVERAGED_MODEL,
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    num_threads: int = typer.Option(0, "--num-threads", help="torch CPU threads (0 = default)."),
    max_duration: float = typer.Option(300.0, "--max-duration", help="Seconds of audio per batch."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Label again even if OUT was written with these settings (e.g. after the teacher was trained further).",
    ),
) -> None:
    """Pseudo-label cuts with a teacher: keep the confident hypotheses as a training manifest.

    Writes OUT (the kept cuts, features unchanged, text = the hypothesis, its confidence in
    the supervision's custom["pseudo_label"]) and OUT's .report.json (kept/dropped counts,
    mean confidence and, when the input cuts have texts, the WER of the kept labels, of all
    and by confidence bin, to choose --min-confidence).  Train on it as one more manifest:
    dsr train --train-cuts data/fbank/x_cuts_train.jsonl.gz,OUT.  Re-running with the same
    settings is a no-op.

    Examples:

        dsr pseudo-label --cuts data/whisper_fbank/unlab_cuts_train.jsonl.gz --out data/fbank/pseudo_cuts_train.jsonl.gz --pretrained whisper-tiny.en -m whisper-beam-search --min-confidence 0.6 --onto data/fbank/unlab_cuts_train.jsonl.gz

        dsr pseudo-label --cuts data/fbank/unlab_cuts_train.jsonl.gz --out data/fbank/pseudo_cuts_train.jsonl.gz --exp-dir exp/conformer --lang-dir data/lang_bpe_256 -m modified-beam-search --beam-size 8 --min-confidence 0.9

        dsr pseudo-label --cuts data/fbank/synth_cuts_dev.jsonl.gz --out exp/conformer/pseudo/dev.jsonl.gz --exp-dir exp/conformer --lang-dir data/lang_bpe_256 -m greedy --min-confidence 0 --epoch 10 --avg 3
    """
    try:
        _run(**locals())
    except OptionError as e:  # the library names its arguments and options; here they are flags
        raise DsrUserError(e.as_flags(_FLAGS)) from None


# The library's names that are not the flags' (``--name-of-the-field`` otherwise).
_FLAGS = {"method": "-m", "out_file": "--out", "onto_cuts": "--onto", "cuts_file": "--cuts"}


def _run(
    cuts: Path,
    out: Path,
    method: str,
    min_confidence: float,
    beam_size: int,
    attention_scale: float,
    max_tokens_per_second: float | None,
    exp_dir: Path | None,
    lang_dir: Path | None,
    pretrained: str | None,
    onto: Path | None,
    whisper_language: str,
    epoch: int,
    avg: int,
    use_averaged_model: bool,
    device: str,
    num_threads: int,
    max_duration: float,
    force: bool,
) -> None:
    from dsr.decoding.pseudo_label import PseudoLabelOptions
    from dsr.decoding.pseudo_label import pseudo_label as run

    options = PseudoLabelOptions(
        method=method,
        min_confidence=min_confidence,
        beam_size=beam_size,
        attention_scale=attention_scale,
        max_tokens_per_second=max_tokens_per_second,
    )
    settings: dict[str, Any] = {
        "cuts": str(cuts),
        "onto": str(onto) if onto else None,
        "exp_dir": str(exp_dir) if exp_dir else None,
        "lang_dir": str(lang_dir) if lang_dir else None,
        "pretrained": pretrained,
        "epoch": epoch,
        "avg": avg,
        "use_averaged_model": use_averaged_model,
        "whisper_language": whisper_language,
        **asdict(options),
    }
    stage = f"pseudo-label-{out.name}"
    if (
        not force
        and is_done(out.parent, stage)
        and (read_done_info(out.parent, stage).get("settings") != settings or not out.is_file())
    ):
        console.print(f"[yellow]redo[/] {stage}: {out} was written with other settings (or is gone)")
        force = True
    if already_done(out.parent, stage, force):
        return
    report = run(
        cuts,
        out,
        options,
        exp_dir=exp_dir,
        pretrained=pretrained,
        lang_dir=lang_dir,
        epoch=epoch,
        avg=avg,
        use_averaged_model=use_averaged_model,
        device=device,
        num_threads=num_threads,
        max_duration=max_duration,
        whisper_language=whisper_language,
        onto_cuts=onto,
        progress=show_progress(),
    )
    finish(out.parent, stage, report.summary(), {"settings": settings, "report": report.report_file})
