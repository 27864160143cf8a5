"""Text normalisation shared by the tokenizer, training, decoding and scoring.

One function, used everywhere, so that a WER never counts casing or punctuation
differences between a reference and a hypothesis.
"""

from __future__ import annotations

import re
import unicodedata

# Keep letters, digits and in-word apostrophes ("DON'T"); everything else separates words.
_DROP = re.compile(r"[^\w' ]+", flags=re.UNICODE)
_APOSTROPHE_EDGES = re.compile(r"(^|\s)'+|'+(\s|$)")
_SPACES = re.compile(r"\s+")


# The pronoun "I" (and its contractions) is upper-case in every English text an LLM has
# read; a lower-case "i" costs several nats and would penalise any hypothesis holding it.
_PRONOUN_I = re.compile(r"\bi(?=$|\s|'(?:m|ll|ve|d)\b)")


def sentence_case(text: str) -> str:
    """``"THE CAT SAT"`` -> ``"The cat sat"``, ``"IF I EVER"`` -> ``"If I ever"``: lower-case,
    then capitalise the first letter and the pronoun I."""
    low = _PRONOUN_I.sub("I", text.lower())
    return low[:1].upper() + low[1:]


def normalize_text(text: str) -> str:
    """Upper-case, strip punctuation (hyphens become spaces), collapse whitespace.

    >>> normalize_text("Author of the danger trail, Philip Steels, etc.")
    'AUTHOR OF THE DANGER TRAIL PHILIP STEELS ETC'
    """
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").upper()
    text = _DROP.sub(" ", text.replace("_", " "))
    text = _APOSTROPHE_EDGES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


_ONES = (
    "ZERO ONE TWO THREE FOUR FIVE SIX SEVEN EIGHT NINE TEN ELEVEN TWELVE THIRTEEN FOURTEEN FIFTEEN "
    "SIXTEEN SEVENTEEN EIGHTEEN NINETEEN"
).split()
_TENS = "_ _ TWENTY THIRTY FORTY FIFTY SIXTY SEVENTY EIGHTY NINETY".split()
_SCALES = ((10**9, "BILLION"), (10**6, "MILLION"), (1000, "THOUSAND"), (100, "HUNDRED"))
_ORDINAL_WORDS = {
    "ONE": "FIRST",
    "TWO": "SECOND",
    "THREE": "THIRD",
    "FIVE": "FIFTH",
    "EIGHT": "EIGHTH",
    "NINE": "NINTH",
    "TWELVE": "TWELFTH",
}
# 1,000 and 3.5 are read as numbers; "18th", "2nd" as ordinals; anything longer than 12 digits stays.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d{1,12})(?:\.(\d+))?(st|nd|rd|th)?(?![\w])", re.IGNORECASE)


def number_words(n: int) -> str:
    """``n`` >= 0 as upper-case English words: ``1908`` -> ``ONE THOUSAND NINE HUNDRED EIGHT``."""
    if n < 0:
        raise ValueError(f"n must be >= 0 (got {n})")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("Y"):
        last = last[:-1] + "IETH"
    else:
        last += "TH"
    return f"{head} {last}".strip()


def _spell(match: re.Match) -> str:
    whole, fraction, suffix = match.group(1), match.group(2), match.group(3)
    words = number_words(int(whole.replace(",", "")))
    if suffix:
        return " " + _ordinal(words) + " "
    if fraction:
        words += " POINT " + " ".join(_ONES[int(d)] for d in fraction)
    return " " + words + " "


def spell_numerals(text: str) -> str:
    """Write the digits of ``text`` as words: ``"17, no 18th."`` -> ``" SEVENTEEN , no EIGHTEENTH ."``.

    Scoring applies it to references and hypotheses alike, so a recogniser that writes
    numerals (Whisper: "8.") and one that spells them (dsr's BPE heads) are compared on
    the same words.  Cardinals and ordinals only: a year such as 1908 becomes
    ONE THOUSAND NINE HUNDRED EIGHT, not NINETEEN OH EIGHT.
    """
    return _NUMBER.sub(_spell, text)


def normalize_for_scoring(text: str) -> str:
    """:func:`spell_numerals`, then :func:`normalize_text`: what every WER in dsr compares."""
    return normalize_text(spell_numerals(text))
