"""``dsr decode``, ``dsr transcribe`` and ``dsr results``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dsr.cli.common import console, show_progress
from dsr.errors import DsrUserError


# Options shared by `dsr decode` and `dsr transcribe` (typer accepts one OptionInfo in several commands).
_BEAM_SIZE = typer.Option(4, "--beam-size", min=1, help="Beam of the beam-search methods.")
_HOTWORDS_FILE = typer.Option(
    None, "--hotwords-file", help="Phrases to bias the beam searches towards: one per line, optionally PHRASE<TAB>SCORE."
)
_USE_AVERAGED_MODEL = typer.Option(
    True, "--use-averaged-model/--no-use-averaged-model",
    help="Average every model the trainer sampled during the last AVG epochs (needs epoch-(E-AVG).pt) "
    "instead of only the AVG epoch-end checkpoints.",
)
_HOTWORD_SCORE = typer.Option(
    1.0, "--hotword-score", help="Bonus per matched hotword token, for phrases without their own score "
    "(0.5-1 suited the transducer of the embedded recipe, ~2 its CTC head: bench/hotwords.py)."
)
_INT8 = typer.Option(
    False, "--int8", help="Quantise the Linear layers to int8 (dynamic, CPU only): ~2x faster encoder for large "
    "models, slightly different scores; results go to <method>-int8.",
)
_ATTENTION_SCALE = typer.Option(
    1.0, "--attention-scale", min=0.0,
    help="Attention-rescoring methods: rank by first-pass score + SCALE * attention-decoder score.",
)
_METHODS_HELP = (
    "greedy, modified-beam-search (transducer), ctc-greedy, ctc-prefix-beam-search, or the attention "
    "decoder's rescoring of an n-best list: ctc-attention-rescoring, transducer-attention-rescoring; with "
    "Whisper's decoder head (dsr train --pretrained, or zero-shot --pretrained): whisper-greedy, whisper-beam-search; "
    "with --pretrained also faster-whisper (the reference implementation, on the cuts' audio); with a "
    "speech-LLM checkpoint (dsr train --speech-llm; no --lang-dir needed): speech-llm-greedy, "
    "speech-llm-beam-search (--hotwords-file phrases go into its prompt), speech-llm-rescoring (--nbest-file)"
)


def decode(
    exp_dir: Path = typer.Option(..., "--exp-dir", help="Experiment directory with checkpoints."),
    cuts: list[Path] = typer.Option(..., "--cuts", help="Cuts manifest(s) with features to decode (repeatable)."),
    lang_dir: Optional[Path] = typer.Option(
        None, "--lang-dir", help="Directory with bpe.model (not needed with --pretrained)."),
    methods: list[str] = typer.Option(
        ["greedy"], "--method", "-m",
        help=f"{_METHODS_HELP}; repeatable.",
    ),
    pretrained: Optional[str] = typer.Option(
        None, "--pretrained", help="Decode zero-shot Whisper (whisper-tiny.en, whisper-base, or a Whisper dir/file) "
        "instead of EXP_DIR's checkpoint, with -m whisper-greedy / whisper-beam-search; results go to EXP_DIR/decode/. "
        "The cuts need whisper-fbank features."),
    whisper_language: str = typer.Option("en", "--whisper-language", help="With --pretrained multilingual Whisper: "
                                         "the language token of the prompt."),
    epoch: int = typer.Option(0, "--epoch", help="Decode epoch-E.pt (0 = the newest checkpoint)."),
    avg: int = typer.Option(1, "--avg", min=1, help="Average the model over the last AVG epochs ending at --epoch."),
    use_averaged_model: bool = _USE_AVERAGED_MODEL,
    max_duration: float = typer.Option(300.0, "--max-duration", help="Seconds of audio per batch."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    num_threads: int = typer.Option(0, "--num-threads", help="torch CPU threads (0 = default)."),
    beam_size: int = _BEAM_SIZE,
    nbest: int = typer.Option(0, "--nbest", min=0, help="Hypotheses per utterance in nbest.jsonl (0 = --beam-size)."),
    hotwords_file: Optional[Path] = _HOTWORDS_FILE,
    hotword_score: float = _HOTWORD_SCORE,
    attention_scale: float = _ATTENTION_SCALE,
    streaming: bool = typer.Option(
        False, "--streaming",
        help="Decode chunk by chunk with cached encoder state, as live audio (greedy only; needs a --causal model).",
    ),
    chunk_ms: float = typer.Option(
        0.0, "--chunk-ms", help="With --streaming: audio per chunk in ms, a multiple of 40 (one encoder frame)."
    ),
    left_context_chunks: Optional[int] = typer.Option(
        None, "--left-context-chunks",
        help="With --streaming: chunks of attention left context, -1 = all (default: the model's own).",
    ),
    int8: bool = _INT8,
    expand_lexicon: Optional[Path] = typer.Option(
        None, "--expand-lexicon", help="Word list (one word per line, e.g. /usr/share/dict/american-english): add "
        "respellings, splits and joins of the 1-best's out-of-lexicon words, scored by the model, to the n-best "
        "list for LLM rescoring (modified-beam-search, ctc-prefix-beam-search; results go to <method>+lexicon).",
    ),
    nbest_file: Optional[Path] = typer.Option(
        None, "--nbest-file", help="With -m speech-llm-rescoring: the nbest.jsonl of another method on the same cuts "
        "(e.g. EXP/decode/modified-beam-search/SPLIT/nbest.jsonl) to rerank by the speech-LLM's likelihood."),
    speech_llm_scale: float = typer.Option(
        1.0, "--speech-llm-scale", min=0.0, help="With -m speech-llm-rescoring: rank by am_score + SCALE * "
        "speech-LLM log-likelihood."),
    expand_max_edits: int = typer.Option(2, "--expand-max-edits", help="With --expand-lexicon: character edits "
                                         "to a lexicon word (one fewer for words of up to 4 letters)."),
    expand_per_word: int = typer.Option(4, "--expand-per-word", help="With --expand-lexicon: candidates kept per "
                                        "word, best acoustic score first."),
    expand_max_hyps: int = typer.Option(32, "--expand-max-hyps", help="With --expand-lexicon: hypotheses added "
                                        "per utterance at most."),
    expand_parents: int = typer.Option(3, "--expand-parents", help="With --expand-lexicon: expand the non-words of "
                                       "this many of the best hypotheses."),
    expand_max_am_drop: float = typer.Option(8.0, "--expand-max-am-drop", help="With --expand-lexicon: drop "
                                             "variants whose acoustic log-likelihood is this far below the 1-best's."),
) -> None:
    """Decode cuts and score them: writes recogs.txt, errs.txt, wer.txt, cer.txt and result.json.

    Outputs go to EXP_DIR/decode/<method>/<corpus>_<split>/.  The beam-search methods
    also write nbest.jsonl (the n-best list of every utterance with its scores).
    result.json also has the RTF, per-utterance latency (mean/p50/p90/max ms) and peak
    memory.  Cuts may carry features or only recordings (FBANK computed on the fly);
    cuts whose input cannot be read are skipped, counted in a warning and listed in result.json.
    --streaming writes to EXP_DIR/decode/greedy-streaming-<N>ms/ and reports the
    algorithmic latency (chunk + 30 ms look-ahead of the front end) in result.json.

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
    """
    from dsr.decoding.decode import decode as run_decode
    from dsr.decoding.lexicon_expand import ExpandOptions

    try:
        expand = ExpandOptions(max_edits=expand_max_edits, per_word=expand_per_word, max_am_drop=expand_max_am_drop,
                               max_hyps=expand_max_hyps, parents=expand_parents)
    except ValueError as e:
        raise DsrUserError(f"--expand-* options: {e}") from e
    speech_llm = bool(methods) and all(m.startswith("speech-llm-") for m in methods)
    if lang_dir is None and not pretrained and not speech_llm:
        raise DsrUserError("--lang-dir is required (the BPE model the checkpoint was trained with)")

    for c in cuts:
        for res in run_decode(exp_dir, c, lang_dir, tuple(methods), epoch, avg, max_duration, device, num_threads,
                              progress=show_progress(), beam_size=beam_size, nbest=nbest or None,
                              hotwords_file=hotwords_file, hotword_score=hotword_score,
                              use_averaged_model=use_averaged_model, attention_scale=attention_scale,
                              streaming=streaming, chunk_ms=chunk_ms, left_context_chunks=left_context_chunks,
                              int8=int8, expand_lexicon=expand_lexicon, expand_options=expand,
                              pretrained=pretrained, whisper_language=whisper_language, nbest_file=nbest_file,
                              speech_llm_scale=speech_llm_scale):
            console.print(f"[green]done[/] decode: {res.summary()}")


def transcribe(
    files: list[Path] = typer.Argument(..., help="Audio files (wav/flac/..., any sample rate, mono or stereo)."),
    exp_dir: Path = typer.Option(..., "--exp-dir", help="Experiment directory with checkpoints."),
    lang_dir: Path = typer.Option(..., "--lang-dir", help="Directory with bpe.model."),
    method: str = typer.Option("greedy", "--method", "-m", help=f"{_METHODS_HELP}."),
    epoch: int = typer.Option(0, "--epoch", help="Checkpoint epoch (0 = newest)."),
    avg: int = typer.Option(1, "--avg", min=1, help="Epochs to average the model over."),
    use_averaged_model: bool = _USE_AVERAGED_MODEL,
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    beam_size: int = _BEAM_SIZE,
    hotwords_file: Optional[Path] = _HOTWORDS_FILE,
    hotword_score: float = _HOTWORD_SCORE,
    attention_scale: float = _ATTENTION_SCALE,
    int8: bool = _INT8,
) -> None:
    """Transcribe audio files; prints ``FILE<TAB>TEXT`` per file on stdout.

    Unreadable files are skipped and listed on stderr with their count (exit status 1
    only when no file could be read).

    Examples:

        dsr transcribe --exp-dir exp/conformer --lang-dir data/lang_bpe_256 a.wav b.flac

        dsr transcribe --exp-dir exp/conformer --lang-dir data/lang_bpe_256 -m modified-beam-search --hotwords-file names.txt a.wav
    """
    from dsr.decoding.transcribe import transcribe as run_transcribe

    unreadable: list[tuple[Path, str]] = []
    for f, text in run_transcribe(files, exp_dir, lang_dir, method, epoch, avg, device, beam_size, hotwords_file,
                                  hotword_score, use_averaged_model, attention_scale, unreadable, int8):
        print(f"{f}\t{text}")
    if unreadable:
        console.print(f"[yellow]warning:[/] {len(unreadable)} of {len(files)} file(s) could not be read and "
                      "were skipped (every other file was transcribed):")
        for f, reason in unreadable:
            console.print(f"  {f}: {reason}", markup=False)
        if len(unreadable) == len(files):
            raise typer.Exit(1)


def results(
    exp_dir: Path = typer.Option(..., "--exp-dir", help="Experiment directory that has been decoded."),
) -> None:
    """Print the table of WER, CER, RTF, latency and peak memory of every decoding result under EXP_DIR/decode.

    Also writes EXP_DIR/results.md and results.json.

    Example:

        dsr results --exp-dir exp/conformer
    """
    import sys

    from rich.console import Console

    from dsr.evaluation.report import collect_results, rescoring_table, rich_table, write_results

    rows = collect_results(exp_dir)
    if not rows:
        console.print(f"[red]error:[/] no decoding results under {exp_dir}/decode; run dsr decode first")
        raise typer.Exit(2)
    # Like dsr.cli.common.console: a pipe or file gets the full width instead of 80 columns.
    out = Console(width=None if sys.stdout.isatty() else 200)
    out.print(rich_table(rows, f"Results: {exp_dir}"))
    rescoring = rescoring_table([r for r in rows if "oracle_wer" in r])
    if rescoring:  # first pass, n-best oracle and LLM-rescored WER side by side
        out.print("\n".join(rescoring), markup=False, highlight=False)
    path = write_results(exp_dir, rows)
    console.print(f"[green]done[/] results: {len(rows)} rows -> {path}")
