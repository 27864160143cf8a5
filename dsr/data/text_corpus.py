"""Sentences from a plain-text file for the synthetic corpus (``dsr prepare synth --text-source file``).

The grammar of :mod:`dsr.synth.sentences` has a few hundred words; read speech (ARCTIC,
LibriSpeech) has tens of thousands.  Pretraining for it needs TTS voices reading open
text, e.g. public-domain books (``tools/public_domain_text.py`` writes the King James
Bible and the ``fortunes`` collection).  Lines are cut into sentences at ``. ! ? ; :``,
and a sentence is kept only if TTS will read it as its transcript says: letters,
apostrophes and ordinary punctuation only (no digits, which engines expand in their own
way), no all-capital words (acronyms, spelled letter by letter), ``min_words`` to
``max_words`` words.  Transcripts are :func:`~dsr.data.normalize.normalize_text`'s upper case.

Decontamination: ``exclude`` sentences (e.g. every prompt of an evaluation set) remove
every candidate that shares a word ``exclude_ngram``-gram with one of them, so no test
sentence, nor a long stretch of one, is ever spoken in training.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from dsr.data.normalize import normalize_text
from dsr.errors import DsrUserError

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
_ALLOWED = re.compile(r"^[A-Za-z' ,.!?;:\-\"()]+$")
_ACRONYM = re.compile(r"\b[A-Z]{2,}\b")


def sentences_of(lines: Iterable[str], min_words: int = 4, max_words: int = 16) -> list[str]:
    """Normalised, de-duplicated sentences of ``lines`` that TTS reads as written, in first-seen order."""
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got {min_words}, {max_words}")
    seen: set[str] = set()
    out: list[str] = []
    for line in lines:
        for piece in _SENTENCE_END.split(line.strip()):
            piece = piece.strip()
            if not piece or not _ALLOWED.match(piece) or _ACRONYM.search(piece):
                continue
            text = normalize_text(piece)
            if min_words <= len(text.split()) <= max_words and text not in seen:
                seen.add(text)
                out.append(text)
    return out


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def decontaminate(sentences: Sequence[str], exclude: Iterable[str], ngram: int = 5) -> list[str]:
    """``sentences`` without those sharing a word ``ngram``-gram with any ``exclude`` text
    (compared after normalisation; an excluded text shorter than ``ngram`` words removes
    exact matches)."""
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    banned: set[tuple[str, ...]] = set()
    exact: set[str] = set()
    for text in exclude:
        words = normalize_text(text).split()
        exact.add(" ".join(words))
        banned |= _ngrams(words, ngram)
    return [s for s in sentences if s not in exact and not (_ngrams(s.split(), ngram) & banned)]


def read_exclude_texts(path: Path) -> list[str]:
    """Texts of a plain file (one per line) or of a ``utt-id<TAB>text`` transcripts file."""
    if not path.is_file():
        raise DsrUserError(f"{path}: no such file (the texts to keep out of the synthetic corpus)")
    texts = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        texts.append(line.split("\t", 1)[1] if "\t" in line else line)
    return texts


def split_file_sentences(
    path: Path, sizes: dict[str, int], seed: int, exclude: Sequence[str] = (), min_words: int = 4, max_words: int = 16
) -> dict[str, list[str]]:
    """Disjoint, seeded sentence lists per split from the text file ``path``.

    Raises :class:`DsrUserError` naming the file when it is missing or holds fewer usable
    sentences than asked for.
    """
    if not path.is_file():
        raise DsrUserError(f"{path}: no such text file; write one with tools/public_domain_text.py")
    with path.open(encoding="utf-8", errors="replace") as f:
        candidates = decontaminate(sentences_of(f, min_words, max_words), exclude)
    need = sum(sizes.values())
    if len(candidates) < need:
        raise DsrUserError(
            f"{path}: {len(candidates)} usable sentences ({min_words}-{max_words} words, no digits or "
            f"acronyms, none near an excluded text), {need} asked for; give more text or fewer utterances"
        )
    random.Random(seed).shuffle(candidates)
    out, start = {}, 0
    for split in ("test", "dev", "train"):  # test first: it does not move when train grows
        out[split] = candidates[start : start + sizes.get(split, 0)]
        start += sizes.get(split, 0)
    return out
