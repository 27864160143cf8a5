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


def normalize_text(text: str) -> str:
    """Upper-case, strip punctuation (hyphens become spaces), collapse whitespace.

    >>> normalize_text("Author of the danger trail, Philip Steels, etc.")
    'AUTHOR OF THE DANGER TRAIL PHILIP STEELS ETC'
    """
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'").upper()
    text = _DROP.sub(" ", text.replace("_", " "))
    text = _APOSTROPHE_EDGES.sub(" ", text)
    return _SPACES.sub(" ", text).strip()
