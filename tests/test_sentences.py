"""The synthetic corpus' text source: deterministic, distinct, in-vocabulary, disjoint on request."""

from __future__ import annotations

import re

import pytest

from dsr.synth.sentences import (
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


def test_slot_sentences_put_new_words_into_the_grammar_frames() -> None:
    names, places = ["THADDEUS", "GWENDOLYN"], ["REYKJAVIK"]
    sentences = generate_slot_sentences(200, seed=0, slot_values={"person": names, "city": places})
    assert sentences == generate_slot_sentences(200, seed=0, slot_values={"person": names, "city": places})
    assert len(set(sentences)) == 200
    new = set(names + places)
    vocab = vocabulary()
    for s in sentences:
        words = s.split()
        # Every sentence says a new word; the rest is the grammar's own vocabulary.
        assert new & set(words), s
        assert set(words) - new <= vocab, s
        assert MIN_WORDS <= len(words) <= MAX_WORDS, s
    # The grammar's own names are replaced, not mixed in.
    assert not {w for s in sentences for w in s.split()} & {"ANNA", "DAVID", "LONDON", "PARIS"}
    # Both slots are reached, and exclude is honoured.
    assert any("REYKJAVIK" in s for s in sentences) and any("THADDEUS" in s for s in sentences)
    assert not set(generate_slot_sentences(50, 0, {"person": names}, exclude=set(sentences[:50]))) & set(sentences[:50])


def test_slot_sentences_reject_bad_slots() -> None:
    with pytest.raises(ValueError, match="unknown slot"):
        generate_slot_sentences(5, 0, {"nope": ["X"]})
    with pytest.raises(ValueError, match="unknown slot"):
        generate_slot_sentences(5, 0, {"S": ["X"]})
    with pytest.raises(ValueError, match="upper-case words"):
        generate_slot_sentences(5, 0, {"person": "THADDEUS"})
    with pytest.raises(ValueError, match="upper-case words"):
        generate_slot_sentences(5, 0, {"person": ["thaddeus"]})
    with pytest.raises(ValueError, match="at least one slot"):
        generate_slot_sentences(5, 0, {})


def test_digit_strings_are_only_digit_words() -> None:
    assert DIGIT_WORDS == ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
    isolated = generate_digit_strings(25, seed=1)
    # Isolated digits come in shuffled blocks of ten: every digit twice in the first 20.
    assert all(p in DIGIT_WORDS for p in isolated) and sorted(isolated[:20]) == sorted(DIGIT_WORDS * 2)
    assert isolated == generate_digit_strings(25, seed=1) and isolated != generate_digit_strings(25, seed=2)
    strings = generate_digit_strings(200, seed=1, max_digits=3)
    lengths = {len(p.split()) for p in strings}
    assert lengths == {1, 2, 3} and {w for p in strings for w in p.split()} == set(DIGIT_WORDS)
    with pytest.raises(ValueError):
        generate_digit_strings(-1, seed=0)
    with pytest.raises(ValueError):
        generate_digit_strings(3, seed=0, max_digits=0)
