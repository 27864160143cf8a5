"""A token n-gram LM in ARPA format, read for shallow fusion in the transducer's beam search.

The n-gram's words are the BPE pieces of a lang dir (``▁THE``, ``ND``, ...), as icefall's token
n-grams (``lm/*.arpa`` of ``shared/make_kn_lm.py``) are: ``dsr lm ngram`` writes one
(:mod:`dsr.lm.ngram_train`), and an ARPA file of the same pieces from KenLM or SRILM reads the
same way.  Scores follow ARPA's backoff rule,

    log P(w | h) = logp(h, w)                       if (h, w) is listed,
                 = backoff(h) + log P(w | h[1:])    otherwise,

in natural log (ARPA stores log10).  :meth:`NgramLm.row` gives the scores of every next token
of a context at once, cached per context, which is what a beam search needs: one vector per
hypothesis and frame, not one lookup per (hypothesis, token) pair.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

from dsr.errors import DsrUserError
from dsr.lang.bpe import BLANK, SOS_EOS, UNK, Tokenizer

LN10 = math.log(10.0)
#: bytes of cached score rows before the cache starts over (a decode visits each context many times).
ROW_CACHE_BYTES = 256 * 2**20
BOS_WORD, EOS_WORD = "<s>", "</s>"
#: ids of the sentence markers inside the LM's contexts (the tokenizer's ids are >= 0).
BOS_ID = -1
#: pieces that are never words of a token n-gram: the transducer's blank and the attention
#: decoder's <sos/eos> (the LM has its own <s> and </s>).
_NOT_WORDS = (BLANK, SOS_EOS)


def _open_text(path: Path) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        yield from f


def read_arpa(path: Path) -> tuple[int, dict[tuple[str, ...], tuple[float, float]]]:
    """``(order, {ngram words: (log10 prob, log10 backoff)})`` of an ARPA file (``.gz`` too).

    :class:`DsrUserError` naming the file and line for anything that is not ARPA.
    """
    if not path.is_file():
        raise DsrUserError(f"n-gram LM {path} does not exist; build one with dsr lm ngram")
    entries: dict[tuple[str, ...], tuple[float, float]] = {}
    declared: dict[int, int] = {}
    section = 0  # 0: before \data\, -1: in \data\, n: in \n-grams:
    for lineno, raw in enumerate(_open_text(path), start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = -1
        elif line == "\\end\\":
            break
        elif line.startswith("\\") and line.endswith("-grams:"):
            try:
                section = int(line[1:].split("-", 1)[0])
            except ValueError:
                raise DsrUserError(f"{path}:{lineno}: bad section header {line!r}; not an ARPA file") from None
        elif section == -1 and line.startswith("ngram "):
            n, _, count = line[6:].partition("=")
            try:
                declared[int(n)] = int(count)
            except ValueError:
                raise DsrUserError(f"{path}:{lineno}: bad count line {line!r}; not an ARPA file") from None
        elif section > 0:
            fields = line.split()
            if len(fields) not in (section + 1, section + 2):
                raise DsrUserError(
                    f"{path}:{lineno}: a {section}-gram line needs {section + 1} or {section + 2} fields"
                )
            try:
                logp = float(fields[0])
                backoff = float(fields[section + 1]) if len(fields) == section + 2 else 0.0
            except ValueError:
                raise DsrUserError(f"{path}:{lineno}: bad number in {line!r}; not an ARPA file") from None
            entries[tuple(fields[1 : section + 1])] = (logp, backoff)
        elif section == 0:
            continue  # text before \data\ is a comment in ARPA
    if not declared:
        raise DsrUserError(f"{path}: no \\data\\ section; not an ARPA file (build one with dsr lm ngram)")
    found = Counter(len(k) for k in entries)
    for order, expected in declared.items():
        if found[order] != expected:
            raise DsrUserError(
                f"{path}: \\data\\ declares {expected} {order}-grams but the file has {found[order]}; it is truncated"
            )
    return max(declared), entries


class NgramLm:
    """A token n-gram over a lang dir's BPE ids, for scoring next tokens in a beam search.

    Args:
        path: the ARPA file; its words must be pieces of ``tokenizer`` (plus ``<s>``, ``</s>``).
        tokenizer: the lang dir the model decodes with.

    Contexts are tuples of token ids, :data:`BOS_ID` for ``<s>``; :meth:`start` is the empty
    sentence's.  Ids of the vocabulary that the LM does not list score as its ``<unk>``
    (``-inf`` without one).
    """

    def __init__(self, path: Path | str, tokenizer: Tokenizer):
        self.path = Path(path)
        self.order, entries = read_arpa(self.path)
        piece_id = {tokenizer.id_to_piece(i): i for i in range(tokenizer.vocab_size)}
        self.vocab_size = tokenizer.vocab_size

        # Word -> id of every word an n-gram may hold; one dict lookup per word in C
        # (map) is what keeps loading a 2-million-entry ARPA to seconds.
        word_ids = {piece: i for piece, i in piece_id.items() if piece not in _NOT_WORDS}
        word_ids[BOS_WORD], word_ids[EOS_WORD] = BOS_ID, self.vocab_size  # </s>: the row's last column

        # ln-probs of the listed n-grams, by context, and the backoff of each context.
        self._listed: dict[tuple[int, ...], tuple[list[int], list[float]]] = {}
        self._backoff: dict[tuple[int, ...], float] = {}
        unigram = torch.full((self.vocab_size + 1,), -math.inf, dtype=torch.float64)
        for words, (logp, backoff) in entries.items():
            try:
                ids = tuple(map(word_ids.__getitem__, words))
            except KeyError:
                word = next(w for w in words if w not in word_ids)
                raise DsrUserError(
                    f"n-gram LM {self.path} has the word {word!r}, which is not a BPE piece of {tokenizer.lang_dir}: "
                    "it was built for another lang dir; rebuild it with dsr lm ngram --lang-dir "
                    f"{tokenizer.lang_dir}"
                ) from None
            if backoff:
                self._backoff[ids] = backoff * LN10
            if len(ids) == 1:
                if ids[0] != BOS_ID:
                    unigram[ids[0]] = logp * LN10
                continue
            listed = self._listed.get(ids[:-1])
            if listed is None:
                listed = self._listed[ids[:-1]] = ([], [])
            listed[0].append(ids[-1])
            listed[1].append(logp * LN10)
        self._contexts = set(self._backoff) | set(self._listed)
        unk = piece_id.get(UNK)
        if unk is not None and unigram[unk] > -math.inf:
            missing = torch.isinf(unigram)
            missing[-1] = False  # </s> keeps its own score
            unigram[missing] = unigram[unk]
        if torch.isinf(unigram[:-1]).all():
            raise DsrUserError(f"n-gram LM {self.path} lists no unigram of {tokenizer.lang_dir}'s pieces")
        self._rows: dict[tuple[int, ...], torch.Tensor] = {(): unigram}
        self._max_rows = max(ROW_CACHE_BYTES // (8 * (self.vocab_size + 1)), 16)

    def start(self) -> tuple[int, ...]:
        """The context of a sentence's first token."""
        return (BOS_ID,)

    def advance(self, context: tuple[int, ...], token: int) -> tuple[int, ...]:
        """The context after ``token``: its longest suffix of at most ``order - 1`` tokens that the
        LM knows as a context (the rest cannot change a score, and shorter keys share cache rows)."""
        ctx = (context + (token,))[-(self.order - 1) :] if self.order > 1 else ()
        while ctx and ctx not in self._contexts:
            ctx = ctx[1:]
        return ctx

    def row(self, context: tuple[int, ...]) -> torch.Tensor:
        """(V + 1,) float64 ln P(token | context) of every vocabulary id, and of ``</s>`` last."""
        row = self._rows.get(context)
        if row is None:
            row = self.row(context[1:]) + self._backoff.get(context, 0.0)
            listed = self._listed.get(context)
            if listed is not None:
                row = row.clone()
                row[listed[0]] = torch.tensor(listed[1], dtype=torch.float64)
            if len(self._rows) >= self._max_rows:
                self._rows = {(): self._rows[()]}
            self._rows[context] = row
        return row

    def score(self, tokens: list[int]) -> float:
        """ln P of a whole token sequence from ``<s>`` to ``</s>``."""
        ctx, total = self.start(), 0.0
        for tok in tokens:
            total += float(self.row(ctx)[tok])
            ctx = self.advance(ctx, tok)
        return total + float(self.row(ctx)[-1])
