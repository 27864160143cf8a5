"""WER/CER with per-utterance alignments (kaldialign), icefall-style ``errs`` files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import kaldialign

from dsr.data.normalize import normalize_for_scoring
from dsr.utils import write_text_atomic

EPS = "*"


@dataclass
class ErrorStats:
    """Edit-distance counts over a set of utterances."""

    ref_words: int = 0
    ins: int = 0
    dels: int = 0
    subs: int = 0
    sent_errors: int = 0
    num_sents: int = 0
    alignments: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    confusions: Counter = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        """Error rate in percent (100 * errors / reference tokens)."""
        return 100.0 * self.errors / max(self.ref_words, 1)

    def summary(self, unit: str = "WER") -> str:
        return (
            f"%{unit} {self.wer:.2f} [ {self.errors} / {self.ref_words}, {self.ins} ins, {self.dels} del, "
            f"{self.subs} sub ] %SER {100.0 * self.sent_errors / max(self.num_sents, 1):.2f} "
            f"[ {self.sent_errors} / {self.num_sents} ]"
        )


def _units(text: str, char_level: bool) -> list[str]:
    norm = normalize_for_scoring(text)
    return list(norm.replace(" ", "")) if char_level else norm.split()


def score(results: list[tuple[str, str, str]], char_level: bool = False) -> ErrorStats:
    """Score ``(utt_id, reference, hypothesis)`` triples after
    :func:`~dsr.data.normalize.normalize_for_scoring` (numerals spelled out, upper case, no punctuation).

    ``char_level=True`` gives CER (spaces ignored), for languages without word spaces.
    """
    stats = ErrorStats()
    for utt, ref, hyp in results:
        r, h = _units(ref, char_level), _units(hyp, char_level)
        _add_alignment(stats, utt, kaldialign.align(r, h, EPS))
    return stats


def _add_alignment(stats: ErrorStats, utt: str, ali: list[tuple[str, str]]) -> None:
    """Count one utterance's alignment (``EPS`` marks an insertion or deletion) into ``stats``."""
    stats.alignments.append((utt, ali))
    stats.ref_words += sum(a != EPS for a, _ in ali)
    stats.num_sents += 1
    had_error = False
    for a, b in ali:
        if a == b:
            continue
        had_error = True
        if a == EPS:
            stats.ins += 1
        elif b == EPS:
            stats.dels += 1
        else:
            stats.subs += 1
        stats.confusions[(a, b)] += 1
    stats.sent_errors += had_error


def write_recogs(path: Path, results: list[tuple[str, str, str]]) -> None:
    lines = []
    for utt, ref, hyp in sorted(results):
        lines.append(f"{utt}:\tref={normalize_for_scoring(ref).split()}")
        lines.append(f"{utt}:\thyp={normalize_for_scoring(hyp).split()}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_errs(path: Path, stats: ErrorStats, unit: str = "WER") -> None:
    """Summary line, then per-utterance alignments as ``A (B->C) D (->E) (F->)``, then top confusions."""
    out = [stats.summary(unit), "", "PER-UTT DETAILS: correct (ref->hyp)"]
    for utt, ali in sorted(stats.alignments):
        words = [a if a == b else f"({a}->{b})".replace(EPS, "") for a, b in ali]
        out.append(f"{utt}:\t{' '.join(words)}")
    out += ["", "MOST FREQUENT ERRORS: count ref->hyp"]
    for (a, b), n in stats.confusions.most_common(50):
        out.append(f"{n}\t{a.replace(EPS, '')}->{b.replace(EPS, '')}")
    write_text_atomic(path, "\n".join(out) + "\n")


def score_by_group(stats: ErrorStats, group_of: dict[str, str]) -> list[tuple[str, ErrorStats]]:
    """Split scored utterances into groups (e.g. speakers), reusing their alignments; worst WER first.

    ``group_of`` maps utterance id to group name; utterances it lacks form the group "-".
    """
    groups: dict[str, ErrorStats] = {}
    for utt, ali in stats.alignments:
        _add_alignment(groups.setdefault(group_of.get(utt, "-"), ErrorStats()), utt, ali)
    return sorted(groups.items(), key=lambda gs: (-gs[1].wer, gs[0]))


def write_wer_by_group(path: Path, scored: list[tuple[str, ErrorStats]], group: str = "speaker") -> None:
    """A tab-separated table: group, utterances, reference words, errors, WER %."""
    lines = [f"{group}\tutts\twords\terrors\tWER%"]
    lines += [f"{name}\t{s.num_sents}\t{s.ref_words}\t{s.errors}\t{s.wer:.2f}" for name, s in scored]
    write_text_atomic(path, "\n".join(lines) + "\n")
