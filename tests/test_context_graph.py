"""Hotword context graph: Aho-Corasick matching, bonus cancellation, per-phrase scores."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dsr.decoding.context_graph import ContextGraph, load_context_graph, read_hotwords
from dsr.errors import DsrUserError


def chars(s: str) -> list[int]:
    return [ord(c) for c in s]


def run(graph: ContextGraph, tokens: list[int]) -> tuple[float, list[float], list[str | None]]:
    """Total context score after finalize, per-step deltas and matched phrase texts."""
    state, total, deltas, matched = graph.root, 0.0, [], []
    for tok in tokens:
        delta, state, phrase = graph.forward_one_step(state, tok)
        total += delta
        deltas.append(delta)
        matched.append(phrase.text if phrase is not None else None)
    return total + graph.finalize(state), deltas, matched


# The overlapping-phrase cases of icefall's context_graph.py: with a bonus of 1 per
# token, the final score is the total length of every phrase occurrence.
PHRASES = ["S", "HE", "SHE", "SHELL", "HIS", "HERS", "HELLO", "THIS", "THEM"]
QUERIES = {
    "HEHERSHE": 14,  # HE, HE, HERS, S, SHE, HE
    "HERSHE": 12,  # HE, HERS, S, SHE, HE
    "HISHE": 9,  # HIS, S, SHE, HE
    "SHED": 6,  # S, SHE, HE
    "SHELF": 6,  # S, SHE, HE (SHELL broken: its bonus is given back)
    "HELL": 2,  # HE (HELLO unfinished)
    "HELLO": 7,  # HE, HELLO
    "DHRHISQ": 4,  # HIS, S
    "THEN": 2,  # HE
}


@pytest.mark.parametrize("query,expected", QUERIES.items())
def test_overlapping_phrases_score_every_occurrence(query: str, expected: int) -> None:
    graph = ContextGraph([chars(p) for p in PHRASES], texts=PHRASES, default_score=1.0)
    total, _, _ = run(graph, chars(query))
    assert total == expected == graph.sentence_score(chars(query))


def test_full_match_reports_longest_phrase_at_its_last_token() -> None:
    graph = ContextGraph([chars(p) for p in PHRASES], texts=PHRASES, default_score=1.0)
    _, _, matched = run(graph, chars("SHERS"))
    # "SHE" ends at E (and contains "HE"); "HERS" is found through the failure link SHE -> HE.
    assert matched == ["S", None, "SHE", None, "HERS"]


def test_broken_partial_match_gives_its_bonus_back() -> None:
    graph = ContextGraph([[1, 2, 3]], default_score=2.0)
    total, deltas, matched = run(graph, [1, 2, 4])
    assert deltas == [2.0, 2.0, -4.0] and total == 0.0 and matched == [None] * 3
    # A match still pending at the end of the hypothesis is cancelled by finalize.
    total, deltas, _ = run(graph, [1, 2])
    assert deltas == [2.0, 2.0] and total == 0.0
    # Failing into another partial match keeps that match's bonus: 1 2 1 2 3 matches once.
    total, _, matched = run(graph, [1, 2, 1, 2, 3])
    assert total == 6.0 and matched[-1] == "1 2 3"


def test_per_phrase_scores_and_shared_prefix_takes_the_larger_bonus() -> None:
    graph = ContextGraph([[1, 2], [3, 4], [1, 5]], scores=[3.0, None, 0.5], default_score=1.0)
    assert run(graph, [1, 2, 9, 3, 4])[0] == 2 * 3.0 + 2 * 1.0
    # Token 1 is shared by [1, 2] (3.0) and [1, 5] (0.5): it is worth 3.0 on both.
    assert run(graph, [1, 5])[0] == 3.0 + 0.5
    assert graph.forward_one_step(graph.root, 1)[0] == 3.0


def test_random_sequences_match_brute_force_occurrence_count() -> None:
    rng = random.Random(0)
    for _ in range(200):
        phrases = {tuple(rng.choices(range(3), k=rng.randint(1, 4))) for _ in range(rng.randint(1, 5))}
        graph = ContextGraph([list(p) for p in phrases], default_score=1.5)
        seq = rng.choices(range(4), k=rng.randint(0, 12))
        expected = sum(
            1.5 * len(p) for p in phrases for i in range(len(seq) - len(p) + 1) if tuple(seq[i : i + len(p)]) == p
        )
        assert run(graph, seq)[0] == pytest.approx(expected)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="no tokens"):
        ContextGraph([[1], []])
    with pytest.raises(ValueError, match="negative"):
        ContextGraph([[1, -2]])
    with pytest.raises(ValueError, match="2 scores for 1"):
        ContextGraph([[1]], scores=[1.0, 2.0])


def test_hotwords_file(tmp_path: Path) -> None:
    f = tmp_path / "hot.txt"
    f.write_text("# names\nHELLO WORLD\t3.5\n\nSHE\n")
    assert read_hotwords(f) == [("HELLO WORLD", 3.5), ("SHE", None)]
    graph = load_context_graph(f, lambda text: chars(text.replace(" ", "")), default_score=1.0)
    assert [(p.text, p.score) for p in graph.phrases] == [("HELLO WORLD", 3.5), ("SHE", 1.0)]
    assert run(graph, chars("SHE"))[0] == 3.0

    f.write_text("HELLO\tloud\n")
    with pytest.raises(DsrUserError, match=r"hot.txt:1: score 'loud'"):
        read_hotwords(f)
    with pytest.raises(DsrUserError, match="does not exist"):
        read_hotwords(tmp_path / "missing.txt")
    f.write_text("HELLO\n")
    with pytest.raises(DsrUserError, match="tokenises to nothing"):
        load_context_graph(f, lambda text: [])


def test_token_deltas_agree_with_forward_one_step() -> None:
    graph = ContextGraph([chars(p) for p in PHRASES], texts=PHRASES, default_score=1.5)
    rng = random.Random(1)
    alphabet = sorted({c for p in PHRASES for c in chars(p)}) + [ord("Z")]
    state = graph.root
    for _ in range(300):
        default, special = graph.token_deltas(state)
        for tok in alphabet:
            expected = graph.forward_one_step(state, tok)[0]
            assert special.get(tok, default) == pytest.approx(expected)
        assert graph.token_deltas(state) is graph.token_deltas(state)  # cached
        state = graph.forward_one_step(state, rng.choice(alphabet))[1]
