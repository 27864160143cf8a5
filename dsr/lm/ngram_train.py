"""Train a token n-gram (interpolated Kneser-Ney) on text and write it as ARPA: ``dsr lm ngram``.

The words are the BPE pieces of a lang dir, so the n-gram scores exactly the tokens a
transducer emits (shallow fusion, :mod:`dsr.lm.ngram`).  The estimate is Chen and Goodman's
interpolated Kneser-Ney with one discount per order, ``D = n1 / (n1 + 2 n2)`` from the
count-of-counts (as icefall's ``shared/make_kn_lm.py``): the highest order counts n-grams,
lower orders count distinct left neighbours (an n-gram starting with ``<s>`` has none and
keeps its count), and every piece of the lang dir gets a share of the unigram's uniform part,
so no token scores ``-inf``.  No pruning: a few hundred thousand sentences fit.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from dsr.lang.bpe import BLANK, SOS_EOS, Tokenizer
from dsr.lm.ngram import BOS_WORD, EOS_WORD
from dsr.utils import atomic_path

logger = logging.getLogger("dsr")

Ngram = tuple[str, ...]


def _discount(counts: Iterable[int]) -> float:
    """``n1 / (n1 + 2 n2)``; 0.5 where the text is too small to tell (no singletons or no doubletons)."""
    of = Counter(c for c in counts if c <= 2)
    n1, n2 = of[1], of[2]
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def kneser_ney(
    sentences: Iterable[Sequence[str]], order: int, vocabulary: Sequence[str]
) -> list[dict[Ngram, tuple[float, float]]]:
    """Interpolated Kneser-Ney estimates of ``sentences`` (word sequences without markers).

    Returns one dict per order (index ``n - 1``): n-gram -> (log10 P(last | rest), log10 backoff),
    the backoff 0.0 for n-grams that are no one's context.  ``vocabulary`` are the words that get
    unigram mass even when unseen (``</s>`` is added; ``<s>`` is never predicted).
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    raw: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for words in sentences:
        padded = (BOS_WORD, *words, EOS_WORD)
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                raw[n - 1][padded[i : i + n]] += 1
    raw[0].pop((BOS_WORD,), None)  # <s> is a context, never a prediction
    # Kneser-Ney counts: distinct left neighbours below the highest order, except at <s>.
    counts: list[dict[Ngram, int]] = [dict(raw[order - 1])]
    for n in range(order - 1, 0, -1):
        left: Counter[Ngram] = Counter(g[1:] for g in raw[n])
        counts.insert(0, {g: (c if g[0] == BOS_WORD else left[g]) for g, c in raw[n - 1].items()})
    discounts = [_discount(c.values()) for c in counts]

    # Per context: the total count and the number of distinct continuations.
    totals: list[dict[Ngram, int]] = [defaultdict(int) for _ in range(order)]
    types: list[dict[Ngram, int]] = [defaultdict(int) for _ in range(order)]
    for n, cn in enumerate(counts):
        for g, c in cn.items():
            totals[n][g[:-1]] += c
            types[n][g[:-1]] += 1

    words = sorted({*vocabulary, EOS_WORD} - {BOS_WORD})
    uniform = 1.0 / len(words)
    probs: list[dict[Ngram, float]] = [dict() for _ in range(order)]
    gammas: list[dict[Ngram, float]] = [dict() for _ in range(order)]

    def gamma(n: int, ctx: Ngram) -> float:
        return discounts[n] * types[n][ctx] / totals[n][ctx]

    g0 = gamma(0, ()) if totals[0][()] else 1.0
    for w in words:
        c = counts[0].get((w,), 0)
        probs[0][(w,)] = max(c - discounts[0], 0.0) / max(totals[0][()], 1) + g0 * uniform
    for n in range(1, order):
        for g, c in counts[n].items():
            ctx = g[:-1]
            probs[n][g] = (c - discounts[n]) / totals[n][ctx] + gamma(n, ctx) * probs[n - 1][g[1:]]
    for n in range(order - 1):  # the backoff of an (n+1)-gram context predicting order n+2
        for ctx in totals[n + 1]:
            gammas[n][ctx] = gamma(n + 1, ctx)

    out: list[dict[Ngram, tuple[float, float]]] = []
    for n in range(order):
        table = {g: (math.log10(p), math.log10(gammas[n][g]) if g in gammas[n] else 0.0) for g, p in probs[n].items()}
        if n == 0:  # <s>: listed (ARPA convention, prob -99) for its backoff
            table[(BOS_WORD,)] = (-99.0, math.log10(gammas[0][(BOS_WORD,)]) if (BOS_WORD,) in gammas[0] else 0.0)
        out.append(table)
    return out


def write_arpa(path: Path, tables: Sequence[dict[Ngram, tuple[float, float]]]) -> None:
    """Write the tables of :func:`kneser_ney` as an ARPA file, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n, table in enumerate(tables, start=1):
            f.write(f"ngram {n}={len(table)}\n")
        for n, table in enumerate(tables, start=1):
            f.write(f"\n\\{n}-grams:\n")
            last = n == len(tables)
            for g in sorted(table):
                logp, backoff = table[g]
                f.write(f"{logp:.6f}\t{' '.join(g)}" + ("" if last else f"\t{backoff:.6f}") + "\n")
        f.write("\n\\end\\\n")


def train_token_ngram(texts: Sequence[str], tokenizer: Tokenizer, out: Path, order: int = 4) -> dict[str, int]:
    """Encode ``texts`` with a lang dir's BPE (``tokenizer``) and write their ``order``-gram over its
    pieces to ``out`` (ARPA).  Returns the counts written: sentences, tokens and n-grams per order."""
    sentences = []
    for text in texts:
        ids = tokenizer.encode(text)
        if ids:
            sentences.append([tokenizer.id_to_piece(i) for i in ids])
    vocabulary = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    vocabulary = [p for p in vocabulary if p not in (BLANK, SOS_EOS)]
    tables = kneser_ney(sentences, order, vocabulary)
    write_arpa(out, tables)
    info = {"sentences": len(sentences), "tokens": sum(len(s) for s in sentences)}
    info.update({f"{n}-grams": len(t) for n, t in enumerate(tables, start=1)})
    logger.info("token %d-gram of %s: %s", order, tokenizer.lang_dir, info)
    return info
