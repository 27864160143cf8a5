"""``dsr lang``."""

from __future__ import annotations

from pathlib import Path

import typer

from dsr.cli.common import already_done, finish


def lang(
    cuts: Path = typer.Option(
        ..., "--cuts", help="Training cuts (or supervisions) manifest whose texts train the BPE."
    ),
    lang_dir: Path = typer.Option(..., "--lang-dir", help="Output directory, e.g. data/lang_bpe_256."),
    vocab_size: int = typer.Option(
        256, "--vocab-size", min=4, help="Number of BPE pieces including <blk>, <sos/eos>, <unk>."
    ),
    force: bool = typer.Option(False, "--force", help="Retrain even if already done."),
) -> None:
    """Train a sentencepiece BPE tokenizer and write tokens.txt.

    Texts are normalised (upper case, no punctuation) exactly as for scoring.

    Example:

        dsr lang --cuts data/fbank/synth_cuts_train.jsonl.gz --lang-dir data/lang_bpe_256 --vocab-size 256
    """
    from dsr.lang.bpe import Tokenizer, train_bpe_from_cuts

    # Other transcripts (features redone on edited ones) or another size train another BPE model.
    inputs, options = {"cuts": cuts}, {"vocab_size": vocab_size}
    if already_done(lang_dir, "lang", force, inputs=inputs, options=options):
        return
    train_bpe_from_cuts(cuts, lang_dir, vocab_size)
    tok = Tokenizer(lang_dir)
    summary = f"{tok.vocab_size} BPE tokens in {lang_dir}/bpe.model and tokens.txt"
    finish(lang_dir, "lang", summary, inputs=inputs, options=options)
