"""The synthetic corpus' text source: deterministic, distinct, in-vocabulary, disjoint on request."""

from __future__ import annotations

import re

import pytest

from dsr.data.sentences import (
    DIGIT_WORDS,
    MAX_WORDS,
    MIN_WORDS,
    generate_digit_strings,
    generate_sentences,
    generate_slot_sentences,
    number_words,
    ordinal_words,
    vocabulary,
)


def test_deterministic_for_seed_and_differs_across_seeds() -> None:
    assert generate_sentences(200, seed=7) == generate_sentences(200, seed=7)
    assert generate_sentences(200, seed=7) != generate_sentences(200, seed=8)


def test_sentences_are_distinct_well_formed_and_in_vocabulary() -> None:
    sentences = generate_sentences(3000, seed=0)
    vocab = vocabulary()
    assert len(set(sentences)) == 3000
    for s in sentences:
        assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", s), s
        assert MIN_WORDS <= len(s.split()) <= MAX_WORDS, s
        assert set(s.split()) <= vocab, s


def test_vocabulary_size_and_coverage() -> None:
    vocab = vocabulary()
    assert 250 <= len(vocab) <= 400
    used = {w for s in generate_sentences(20000, seed=1) for w in s.split()}
    # Every word of the grammar is reachable, so the vocabulary is not padded.
    assert used == vocab


def test_tens_of_thousands_of_distinct_sentences() -> None:
    assert len(set(generate_sentences(30000, seed=3))) == 30000


def test_exclude_gives_disjoint_sets() -> None:
    test = generate_sentences(300, seed=1)
    train = generate_sentences(3000, seed=2, exclude=set(test))
    assert not set(test) & set(train)
    # Same seed with an exclusion set still never returns an excluded sentence.
    again = generate_sentences(300, seed=1, exclude=set(test[:100]))
    assert not set(again) & set(test[:100])


def test_covers_the_domains_with_numbers_as_words() -> None:
    text = "\n".join(generate_sentences(2000, seed=4))
    for marker in ("TIMER", "ALARM", "WEATHER", "PLAY", "NAVIGATE", "CALENDAR", "LIGHTS", "DEGREES", "MINUTES"):
        assert marker in text, marker
    assert not re.search(r"\d", text)


def test_number_words() -> None:
    assert number_words(0) == "ZERO"
    assert number_words(42) == "FORTY TWO"
    assert number_words(90) == "NINETY"
    assert number_words(100) == "ONE HUNDRED"
    assert ordinal_words(23) == "TWENTY THIRD"
    assert ordinal_words(30) == "THIRTIETH"
    with pytest.raises(ValueError):
        number_words(101)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        generate_sentences(-1, seed=0)
    assert generate_sentences(0, seed=0) == []


    DIGIT_WORDS,
    MAX_WORDS,
    MIN_WORDS,
    generate_digit_strings,
    generate_sentences,
    generate_slot_sentences,
