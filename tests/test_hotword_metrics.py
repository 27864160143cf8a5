"""Hotword recall / precision / false-alarm counting of the hotword benchmark."""

from __future__ import annotations

import pytest

from dsr.evaluation.hotwords import count_phrase, hotword_stats


def test_count_phrase_counts_whole_word_sequences() -> None:
    words = "CALL ANNA AND ANNA MARIA".split()
    assert count_phrase(words, ["ANNA"]) == 2
    assert count_phrase(words, ["ANNA", "MARIA"]) == 1
    assert count_phrase(words, ["ANN"]) == 0  # a prefix of a word is no occurrence
    assert count_phrase("A A A".split(), ["A", "A"]) == 2
    with pytest.raises(ValueError):
        count_phrase(words, [])


def test_recall_precision_and_false_alarms() -> None:
    triples = [
        ("u1", "call thaddeus now", "CALL THADDEUS NOW"),  # hit
        ("u2", "weather in reykjavik", "WEATHER IN REYKJAVIK REYKJAVIK"),  # hit + one false alarm
        ("u3", "text thaddeus and reykjavik", "TEXT THE DEUS AND REYKJAVIK"),  # miss + hit
        ("u4", "turn on the lights", "TURN ON THADDEUS"),  # false alarm on a sentence without hotwords
    ]
    s = hotword_stats(triples, ["THADDEUS", "Reykjavik", "REYKJAVIK"])
    assert (s.ref_occurrences, s.recognised, s.hyp_occurrences, s.false_alarms) == (4, 3, 5, 2)
    assert s.recall == 3 / 4 and s.precision == 3 / 5
    # The duplicate (after normalisation) phrase is counted once.
    assert s.by_phrase == {"THADDEUS": [2, 1, 1], "REYKJAVIK": [2, 2, 1]}


def test_no_occurrences_give_no_ratio() -> None:
    s = hotword_stats([("u", "turn on the lights", "TURN ON THE LIGHTS")], ["THADDEUS"])
    assert s.recall is None and s.precision is None and s.false_alarms == 0
    with pytest.raises(ValueError, match="at least one word"):
        hotword_stats([], ["..."])
