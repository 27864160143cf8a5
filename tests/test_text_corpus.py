"""Sentences from a text file for TTS pretraining: filters, decontamination, seeded disjoint splits."""

from __future__ import annotations

import pytest

from dsr.data.text_corpus import decontaminate, read_exclude_texts, sentences_of, split_file_sentences
from dsr.errors import DsrUserError


def test_sentences_are_cut_normalised_and_filtered():
    lines = [
        "In the beginning God created the heaven and the earth. And God said, Let there be light: and there was light.",
        "He paid 20 pounds for it.",  # digits: TTS would expand them its own way
        "The USA is large, they said.",  # an acronym: spelled letter by letter
        "Too short.",
        "In the beginning God created the heaven and the earth.",
    ]  # a repeat
    assert sentences_of(lines, min_words=4, max_words=16) == [
        "IN THE BEGINNING GOD CREATED THE HEAVEN AND THE EARTH",
        "AND GOD SAID LET THERE BE LIGHT",
        "AND THERE WAS LIGHT",
    ]
    assert sentences_of(lines, min_words=5, max_words=8) == ["AND GOD SAID LET THERE BE LIGHT"]
    with pytest.raises(ValueError):
        sentences_of(lines, min_words=5, max_words=4)


def test_decontaminate_drops_exact_and_shared_five_grams_only():
    sents = [
        "THE DOG RAN ACROSS THE WIDE GREEN FIELD",
        "A CAT SAT ON THE MAT",
        "THE WIDE GREEN FIELD WAS EMPTY",
        "SHE RAN ACROSS THE ROAD",
    ]
    exclude = ["The dog ran across the wide road!", "A cat sat on the mat."]
    # shares "THE DOG RAN ACROSS THE" with the first excluded prompt; the second is an exact match
    assert decontaminate(sents, exclude) == ["THE WIDE GREEN FIELD WAS EMPTY", "SHE RAN ACROSS THE ROAD"]
    assert decontaminate(sents, exclude, ngram=3) == ["THE WIDE GREEN FIELD WAS EMPTY"]


def test_splits_are_disjoint_seeded_and_test_does_not_move(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(
        "\n".join(
            f"this is sentence number {w} of the file"
            for w in "one two three four five six seven eight nine ten eleven twelve".split()
        )
        + "\n"
    )
    a = split_file_sentences(text, {"train": 6, "dev": 2, "test": 3}, seed=1)
    assert [len(a[s]) for s in ("train", "dev", "test")] == [6, 2, 3]
    assert len(set(a["train"]) | set(a["dev"]) | set(a["test"])) == 11
    assert split_file_sentences(text, {"train": 6, "dev": 2, "test": 3}, seed=1) == a
    assert split_file_sentences(text, {"train": 2, "dev": 0, "test": 3}, seed=1)["test"] == a["test"]
    excluded = split_file_sentences(
        text, {"train": 5, "dev": 0, "test": 0}, seed=1, exclude=["This is sentence number one of the file."]
    )
    assert "THIS IS SENTENCE NUMBER ONE OF THE FILE" not in excluded["train"]
    with pytest.raises(DsrUserError, match="t.txt: 12 usable sentences"):
        split_file_sentences(text, {"train": 13}, seed=1)
    with pytest.raises(DsrUserError, match="nope.txt"):
        split_file_sentences(tmp_path / "nope.txt", {"train": 1}, seed=1)


def test_exclude_texts_read_plain_and_tsv(tmp_path):
    (tmp_path / "a.tsv").write_text("arctic_a0001\tAuthor of the danger trail.\nu2\tSecond one\n")
    assert read_exclude_texts(tmp_path / "a.tsv") == ["Author of the danger trail.", "Second one"]
    (tmp_path / "b.txt").write_text("just a line\n")
    assert read_exclude_texts(tmp_path / "b.txt") == ["just a line"]
    with pytest.raises(DsrUserError, match="missing.tsv"):
        read_exclude_texts(tmp_path / "missing.tsv")
