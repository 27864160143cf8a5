"""Hotword (contextual biasing) metrics: how many biased-phrase occurrences are recognised.

Counting is per utterance and per phrase, on normalised words: an occurrence in the
reference is *recognised* when the hypothesis holds the phrase at least as often
(``min(ref, hyp)`` occurrences recognised), and every hypothesis occurrence beyond
the reference's count is a *false alarm*.  This ignores where in the sentence the
phrase is, which is what biasing is about (did the name come out), and makes every
occurrence on a set that never says a hotword a false alarm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dsr.data.normalize import normalize_text


def count_phrase(words: Sequence[str], phrase: Sequence[str]) -> int:
    """Occurrences of the word sequence ``phrase`` in ``words`` (overlapping ones too)."""
    if not phrase:
        raise ValueError("phrase must have at least one word")
    n = len(phrase)
    return sum(1 for i in range(len(words) - n + 1) if tuple(words[i : i + n]) == tuple(phrase))


@dataclass
class HotwordStats:
    """Hotword counts over a set of utterances.

    Attributes:
        ref_occurrences: hotword occurrences in the references.
        recognised: of those, how many the hypotheses also hold.
        hyp_occurrences: hotword occurrences in the hypotheses.
        false_alarms: hypothesis occurrences without a matching reference occurrence.
        by_phrase: phrase -> [ref occurrences, recognised, false alarms].
    """

    ref_occurrences: int = 0
    recognised: int = 0
    hyp_occurrences: int = 0
    false_alarms: int = 0
    by_phrase: dict[str, list[int]] = field(default_factory=dict)

    @property
    def recall(self) -> float | None:
        """Recognised / reference occurrences; None when the references hold none."""
        return self.recognised / self.ref_occurrences if self.ref_occurrences else None

    @property
    def precision(self) -> float | None:
        """Recognised / hypothesis occurrences; None when the hypotheses hold none."""
        return self.recognised / self.hyp_occurrences if self.hyp_occurrences else None


def hotword_stats(results: Iterable[tuple[str, str, str]], phrases: Sequence[str]) -> HotwordStats:
    """Count ``phrases`` in ``(utt_id, reference, hypothesis)`` triples (see the module docstring).

    Texts and phrases are compared after :func:`~dsr.data.normalize.normalize_text`,
    as the WER is.
    """
    # A phrase listed twice (or twice after normalisation) is counted once.
    norm = list(dict.fromkeys(tuple(normalize_text(p).split()) for p in phrases))
    if any(not p for p in norm):
        raise ValueError(f"every phrase needs at least one word after normalisation, got {list(phrases)!r}")
    stats = HotwordStats(by_phrase={" ".join(p): [0, 0, 0] for p in norm})
    for _utt, ref, hyp in results:
        ref_words, hyp_words = normalize_text(ref).split(), normalize_text(hyp).split()
        for p in norm:
            r, h = count_phrase(ref_words, p), count_phrase(hyp_words, p)
            hit, fa = min(r, h), max(0, h - r)
            stats.ref_occurrences += r
            stats.hyp_occurrences += h
            stats.recognised += hit
            stats.false_alarms += fa
            row = stats.by_phrase[" ".join(p)]
            row[0] += r
            row[1] += hit
            row[2] += fa
    return stats
