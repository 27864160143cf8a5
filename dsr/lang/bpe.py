"""Sentencepiece BPE trained on normalised transcripts, icefall's ``lang_bpe_<N>`` layout.

Writes ``<lang_dir>/bpe.model``, ``tokens.txt`` (``<token> <id>`` per line, as
sherpa-onnx reads it) and ``transcript_words.txt`` (the training text).  Id 0 is
``<blk>`` (the transducer/CTC blank), 1 is ``<sos/eos>``, 2 is ``<unk>``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

from lhotse import CutSet, SupervisionSet, load_manifest

from dsr.data.normalize import normalize_text
from dsr.errors import DsrUserError, OptionError
from dsr.utils import atomic_path, write_text_atomic

logger = logging.getLogger("dsr")

BLANK = "<blk>"
SOS_EOS = "<sos/eos>"
UNK = "<unk>"


def train_bpe(
    texts: Iterable[str],
    lang_dir: Path,
    vocab_size: int = 256,
    character_coverage: float = 1.0,
) -> Path:
    """Train a BPE model on normalised ``texts`` and write the lang dir.

    If the text cannot support ``vocab_size`` pieces, sentencepiece's own limit is
    reported as an :class:`~dsr.errors.OptionError` suggesting another ``vocab_size`` (``dsr lang``
    shows it as ``--vocab-size``).
    """
    import sentencepiece as spm

    if vocab_size < 4:
        raise ValueError(f"vocab_size must be >= 4, got {vocab_size}")
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    lines = [t for t in (normalize_text(x) for x in texts) if t]
    if not lines:
        raise DsrUserError("no non-empty transcripts to train the BPE model on; check the training cuts")
    text_file = lang_dir / "transcript_words.txt"
    write_text_atomic(text_file, "\n".join(lines) + "\n")
    prefix = lang_dir / ".bpe_tmp"
    try:
        spm.SentencePieceTrainer.train(
            input=str(text_file),
            model_prefix=str(prefix),
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            input_sentence_size=10_000_000,
            user_defined_symbols=[BLANK, SOS_EOS],
            unk_id=2,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            minloglevel=2,
        )
    except RuntimeError as e:
        raise OptionError(f"sentencepiece failed on {text_file}: {e} ({_vocab_fix(str(e))})") from e
    with atomic_path(lang_dir / "bpe.model") as tmp:
        Path(f"{prefix}.model").replace(tmp)
    Path(f"{prefix}.vocab").unlink(missing_ok=True)
    tok = Tokenizer(lang_dir)
    write_text_atomic(lang_dir / "tokens.txt", "".join(f"{tok.id_to_piece(i)} {i}\n" for i in range(tok.vocab_size)))
    return lang_dir / "bpe.model"


def _vocab_fix(message: str) -> str:
    """The fix for a failed training: every character needs a piece (thousands for Chinese), so the
    vocabulary can be too small as well as too large for the text."""
    needed = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", message)
    if needed:
        return f"fix: use {{vocab_size}} >= {needed.group(2)}, one piece per character of the text plus the specials"
    return "fix: try a smaller {vocab_size}"


class Tokenizer:
    """Normalise-then-encode wrapper around a sentencepiece model."""

    def __init__(self, lang_dir: Path | str):
        import sentencepiece as spm

        model = Path(lang_dir) / "bpe.model"
        if not model.is_file():
            raise DsrUserError(f"tokenizer {model} does not exist; run the lang stage (dsr lang) first")
        self.lang_dir = Path(lang_dir)
        self.sp = spm.SentencePieceProcessor(model_file=str(model))
        self.blank_id = self.sp.piece_to_id(BLANK)
        self.sos_eos_id = self.sp.piece_to_id(SOS_EOS)
        self.unk_id = self.sp.unk_id()
        if self.blank_id != 0:
            raise DsrUserError(f"{model}: blank {BLANK} must have id 0, has {self.blank_id}; retrain with dsr lang")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(normalize_text(text), out_type=int)

    def decode(self, ids: list[int]) -> str:
        ids = [i for i in ids if i not in (self.blank_id, self.sos_eos_id)]
        return self.sp.decode(ids)


def train_bpe_from_cuts(cuts_file: Path, lang_dir: Path, vocab_size: int = 256) -> Path:
    """Train the tokenizer on the supervision texts of a cuts (or supervisions) manifest."""
    if not Path(cuts_file).is_file():
        raise DsrUserError(f"{cuts_file} does not exist; run the features stage first")
    manifest = load_manifest(cuts_file)
    if isinstance(manifest, SupervisionSet):
        texts = (s.text for s in manifest if s.text)
    elif isinstance(manifest, CutSet):
        texts = (s.text for c in manifest for s in c.supervisions if s.text)
    else:
        raise DsrUserError(f"{cuts_file} is a {type(manifest).__name__}; give a cuts or supervisions manifest")
    return train_bpe(texts, lang_dir, vocab_size=vocab_size)
