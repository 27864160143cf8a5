"""``dsr decode``, ``dsr transcribe`` and ``dsr results``."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from dsr.cli.common import console, show_progress
from dsr.cli.options import build, flag_errors, make_command

_DECODE_DOC = """Decode cuts and score them: writes recogs.txt, errs.txt, wer.txt, cer.txt and result.json.

    Outputs go to EXP_DIR/decode/<method>/<corpus>_<split>/.  The beam-search methods
    also write nbest.jsonl (the n-best list of every utterance with its scores).
    result.json also has the RTF, per-utterance latency (mean/p50/p90/max ms) and peak
    memory.  Cuts may carry features or only recordings (FBANK computed on the fly);
    cuts whose input cannot be read are skipped, counted in a warning and listed in result.json.
    --streaming writes to EXP_DIR/decode/greedy-streaming-<N>ms/ and reports the
    algorithmic latency (chunk + 30 ms look-ahead of the front end) in result.json.
    The model is loaded once for every --cuts manifest.

    Examples:

        dsr decode --exp-dir exp/conformer --lang-dir data/lang_bpe_256 --cuts data/fbank/synth_cuts_test.jsonl.gz

        dsr decode --exp-dir exp/conformer --lang-dir data/lang_bpe_256 --cuts data/fbank/synth_cuts_test.jsonl.gz -m greedy -m ctc-greedy --epoch 10 --avg 3

        dsr decode --exp-dir exp/conformer --lang-dir data/lang_bpe_256 --cuts data/fbank/synth_cuts_test.jsonl.gz -m modified-beam-search -m ctc-prefix-beam-search --beam-size 8 --nbest 4 --hotwords-file hotwords.txt

        dsr decode --exp-dir exp/hybrid --lang-dir data/lang_bpe_256 --cuts data/fbank/synth_cuts_test.jsonl.gz -m ctc-attention-rescoring -m transducer-attention-rescoring --beam-size 8 --attention-scale 1.0

        dsr decode --exp-dir exp/streaming --lang-dir data/lang_bpe_256 --cuts data/fbank/synth_cuts_test.jsonl.gz --streaming --chunk-ms 320

        dsr decode --exp-dir exp/conformer --lang-dir data/lang_bpe_256 --cuts data/fbank/synth_cuts_test.jsonl.gz --int8 --device cpu

        dsr decode --exp-dir exp/conformer --lang-dir data/lang_bpe_128 --cuts data/fbank/arctic_cuts_test.jsonl.gz -m modified-beam-search --beam-size 8 --expand-lexicon /usr/share/dict/american-english

        dsr decode --exp-dir exp/zeroshot-tiny.en --pretrained whisper-tiny.en --cuts data/whisper_fbank/arctic_cuts_test.jsonl.gz -m whisper-greedy

        dsr decode --exp-dir exp/speech-llm --cuts data/whisper_fbank/arctic_cuts_test.jsonl.gz -m speech-llm-greedy -m speech-llm-beam-search --beam-size 4

        dsr decode --exp-dir exp/speech-llm --cuts data/whisper_fbank/arctic_cuts_dev.jsonl.gz --cuts data/whisper_fbank/arctic_cuts_test.jsonl.gz -m speech-llm-rescoring --nbest-file exp/whisper-tiny.en/decode/modified-beam-search/arctic_dev/nbest.jsonl --nbest-file exp/whisper-tiny.en/decode/modified-beam-search/arctic_test/nbest.jsonl
    """


def _decode(cuts: list[Path], **flags: Any) -> None:
    from dsr.decoding.options import DecodeOptions

    with flag_errors(DecodeOptions, {"cuts": "--cuts"}):
        options = build(DecodeOptions, flags)  # a bad option is reported before torch is imported
        nbest_files = options.nbest_files_for(cuts)  # --nbest-file: one per --cuts
        from dsr.data.cuts import load_cuts
        from dsr.decoding.decode import decode_manifest, prepare
        from dsr.decoding.methods import SPEECH_LLM_METHODS

        # The model is loaded once for every manifest (streaming reads the first one's frame shift);
        # a speech-LLM checkpoint is loaded by its own decoder, per manifest.
        speech_llm = set(options.methods) <= set(SPEECH_LLM_METHODS)
        decoder = None if speech_llm else prepare(options, load_cuts(cuts[0]), str(cuts[0]))
        for c, nbest_file in zip(cuts, nbest_files):
            for res in decode_manifest(options, c, progress=show_progress(), decoder=decoder, nbest_file=nbest_file):
                console.print(f"[green]done[/] decode: {res.summary()}")


_TRANSCRIBE_DOC = """Transcribe audio files; prints ``FILE<TAB>TEXT`` per file on stdout.

    Unreadable files are skipped and listed on stderr with their count (exit status 1
    only when no file could be read).  The same from Python: dsr.Recognizer.

    Examples:

        dsr transcribe --exp-dir exp/conformer --lang-dir data/lang_bpe_256 a.wav b.flac

        dsr transcribe --exp-dir exp/conformer --lang-dir data/lang_bpe_256 -m modified-beam-search --hotwords-file names.txt a.wav

        dsr transcribe --pretrained whisper-tiny.en -m whisper-greedy a.wav
    """


def _transcribe(files: list[Path], **flags: Any) -> None:
    from dsr.decoding.options import TranscribeOptions

    unreadable: list[tuple[Path, str]] = []
    with flag_errors(TranscribeOptions):
        options = build(TranscribeOptions, flags)  # a bad option is reported before torch is imported
        from dsr.decoding.transcribe import transcribe_files

        results = transcribe_files(files, options, unreadable)
    for f, text in results:
        print(f"{f}\t{text}")
    if unreadable:
        console.print(
            f"[yellow]warning:[/] {len(unreadable)} of {len(files)} file(s) could not be read and "
            "were skipped (every other file was transcribed):"
        )
        for f, reason in unreadable:
            console.print(f"  {f}: {reason}", markup=False)
        if len(unreadable) == len(files):
            raise typer.Exit(1)


def _commands() -> tuple[Any, Any]:
    from dsr.decoding.options import DecodeOptions, TranscribeOptions

    cuts = inspect.Parameter(
        "cuts",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=list[Path],
        default=typer.Option(
            ..., "--cuts", help="Cuts manifest(s) with features or recordings to decode (repeatable)."
        ),
    )
    files = inspect.Parameter(
        "files",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=list[Path],
        default=typer.Argument(..., help="Audio files (wav/flac/..., any sample rate, mono or stereo)."),
    )
    decode = make_command(DecodeOptions, _decode, _DECODE_DOC, [cuts], required=("exp_dir",))
    transcribe = make_command(TranscribeOptions, _transcribe, _TRANSCRIBE_DOC, [files])
    return decode, transcribe


decode, transcribe = _commands()


def results(
    exp_dir: Path = typer.Option(..., "--exp-dir", help="Experiment directory that has been decoded."),
    also_exp_dir: list[Path] = typer.Option(
        [],
        "--also-exp-dir",
        help="Another decoded experiment whose rows join the table, labelled by their exp dir (repeatable; "
        "e.g. a speech-LLM beside the transducer). The files are still written to --exp-dir.",
    ),
    plot: bool | None = typer.Option(
        None,
        "--plot/--no-plot",
        help="Also write training_curves.png and wer.png next to results.md (default: when matplotlib is installed).",
    ),
) -> None:
    """Print the table of WER, CER, RTF, latency and peak memory of every decoding result under EXP_DIR/decode.

    Also writes EXP_DIR/results.md and results.json, and with matplotlib the pictures
    EXP_DIR/training_curves.png (losses against update, valid loss per epoch) and wer.png.
    With --also-exp-dir the rows of other experiments join the table, with an exp column.

    Example:

        dsr results --exp-dir exp/conformer
        dsr results --exp-dir exp/conformer --no-plot
        dsr results --exp-dir exp/whisper-tiny.en --also-exp-dir exp/speech-llm-stage1 --also-exp-dir exp/speech-llm-stage2
    """
    import sys

    from rich.console import Console
    from rich.markup import escape

    from dsr.evaluation.plots import INSTALL_HINT, matplotlib_available, write_plots
    from dsr.evaluation.report import collect_results, rescoring_table, rich_table, write_results

    if plot and not matplotlib_available():
        console.print(f"[red]error:[/] --plot needs matplotlib: {escape(INSTALL_HINT)}")
        raise typer.Exit(2)
    rows = collect_results(exp_dir, also_exp_dir)
    decoded = {r["exp_dir"] for r in rows}  # collect_results records each row's exp dir
    for d in [exp_dir, *also_exp_dir]:
        if str(d) not in decoded:
            flag = "--exp-dir" if d == exp_dir else "--also-exp-dir"
            message = f"{flag} {d}: no decoding results under {d}/decode; run dsr decode first"
            console.print(f"[red]error:[/] {escape(message)}")
            raise typer.Exit(2)
    # Like dsr.cli.common.console: a pipe or file gets the full width instead of 80 columns.
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(rich_table(rows, "Results: " + " + ".join(str(d) for d in [exp_dir, *also_exp_dir])))
    rescoring = rescoring_table([r for r in rows if "oracle_wer" in r])
    if rescoring:  # first pass, n-best oracle and LLM-rescored WER side by side
        out.print("\n".join(rescoring), markup=False, highlight=False)
    path = write_results(exp_dir, rows)
    console.print(f"[green]done[/] results: {len(rows)} rows -> {path}")
    if plot is None and not matplotlib_available():
        console.print(f"no pictures: matplotlib is not installed ({escape(INSTALL_HINT)})")
    elif plot is not False:
        for picture in write_plots(exp_dir, rows):
            console.print(f"[green]done[/] picture -> {picture}")
