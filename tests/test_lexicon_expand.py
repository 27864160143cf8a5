"""N-best expansion with a word list (:mod:`dsr.decoding.lexicon_expand`): lexicon lookup,
candidate edits, scoring of the variants, and the exact transducer log-likelihood."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from rapidfuzz.distance import Levenshtein
from test_beam_search import small_model

from dsr.decoding.beam_search import Hypothesis
from dsr.decoding.lexicon_expand import (
    Edit,
    ExpandOptions,
    Lexicon,
    candidate_edits,
    expand_hypothesis,
    transducer_log_likelihood,
)
from dsr.errors import DsrUserError

torch.set_num_threads(1)

LEX = Lexicon(
    [
        "his",
        "Face",
        "WAS",
        "streaming",
        "steaming",
        "screaming",
        "straining",
        "she",
        "had",
        "perhaps",
        "dream",
        "it's",
        "x1",
        "",
        "two words",
    ]
)
TARGET = "HIS FACE WAS STREAMING"


def test_lexicon_folds_case_skips_non_words_and_finds_neighbours() -> None:
    assert "STREAMING" in LEX and "IT'S" in LEX and "X1" not in LEX and "TWO WORDS" not in LEX
    assert len(LEX) == 12
    assert LEX.neighbours("STRAMING", 1) == [("STEAMING", 1), ("STREAMING", 1)]
    assert LEX.neighbours("STRAMING", 2) == [("STEAMING", 1), ("STREAMING", 1), ("SCREAMING", 2), ("STRAINING", 2)]
    assert LEX.neighbours("DREAM", 2) == []  # itself excluded
    with pytest.raises(ValueError, match="no words"):
        Lexicon(["", "42"])


def test_lexicon_file_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(DsrUserError, match="no such word list"):
        Lexicon.from_file(tmp_path / "missing.txt")
    (tmp_path / "junk.txt").write_text("123\n\n")
    with pytest.raises(DsrUserError, match="junk.txt: the lexicon has no words"):
        Lexicon.from_file(tmp_path / "junk.txt")
    (tmp_path / "words.txt").write_text("alpha\nBeta\n")
    assert "BETA" in Lexicon.from_file(tmp_path / "words.txt")


def test_candidate_edits_respell_split_and_join() -> None:
    words = ["SHEHAD", "PER", "HAP", "STRAMING", "HIS"]
    edits = candidate_edits(words, LEX, ExpandOptions())
    assert Edit(0, 1, "SHE HAD") in edits  # split into two lexicon words
    assert Edit(1, 3, "PERHAPS") in edits  # joined with the next word, then respelled
    assert Edit(3, 4, "STREAMING") in edits and Edit(3, 4, "STRAINING") in edits
    assert not any(e.start == 4 for e in edits)  # HIS is in the lexicon: left alone
    assert Edit(1, 3, "PERHAPS").apply(words) == ["SHEHAD", "PERHAPS", "STRAMING", "HIS"]
    # short words get one edit fewer: no 2-edit respelling of a 3-letter word
    assert candidate_edits(["HID"], LEX, ExpandOptions(max_edits=2)) == [Edit(0, 1, "HAD"), Edit(0, 1, "HIS")]
    assert candidate_edits(["HID"], LEX, ExpandOptions(max_edits=1)) == []


def _encode(text: str) -> list[int]:
    return list(text.encode())


def _acoustic(seqs: list[list[int]]) -> list[float]:
    """A stand-in acoustic model: the closer to TARGET, the likelier."""
    return [-float(Levenshtein.distance(bytes(s).decode(), TARGET)) for s in seqs]


def test_expansion_scores_variants_against_their_parent() -> None:
    parent = Hypothesis(_encode("HIS FACE WAS STRAMING"), am_score=-2.0, timestamps=[0, 1])
    added = expand_hypothesis(parent, "HIS FACE WAS STRAMING".split(), LEX, _encode, _acoustic, ExpandOptions())
    texts = [bytes(h.tokens).decode() for h in added]
    # STREAMING is TARGET (1 character closer than the parent); STEAMING and SCREAMING are as
    # far as the parent; STRAINING is 2 characters worse.
    assert texts[0] == TARGET and added[0].am_score == -1.0
    assert sorted(texts[1:3]) == ["HIS FACE WAS SCREAMING", "HIS FACE WAS STEAMING"]
    assert texts[3] == "HIS FACE WAS STRAINING" and added[3].am_score == -4.0
    assert all(h.source == "lexicon" and h.timestamps == [] and h.ctc_score is None for h in added)
    # the audio-unsupported variant is dropped, an existing text is not repeated, an unspellable one is skipped
    strict = expand_hypothesis(
        parent,
        "HIS FACE WAS STRAMING".split(),
        LEX,
        lambda t: None if "SCREAM" in t else _encode(t),
        _acoustic,
        ExpandOptions(max_am_drop=1.5),
        existing={"HIS FACE WAS STEAMING"},
    )
    assert [bytes(h.tokens).decode() for h in strict] == [TARGET]
    assert expand_hypothesis(parent, ["HIS", "FACE"], LEX, _encode, _acoustic, ExpandOptions()) == []


def test_expansion_combines_edits_and_rescores_the_combination() -> None:
    words = "HIS FAXE WAS STRAMING".split()
    parent = Hypothesis(_encode(" ".join(words)), am_score=-5.0, timestamps=[])
    added = expand_hypothesis(parent, words, LEX, _encode, _acoustic, ExpandOptions(per_word=1, max_hyps=3))
    texts = [bytes(h.tokens).decode() for h in added]
    assert texts[0] == TARGET and added[0].am_score == -3.0  # both words fixed: 2 closer than the parent
    assert set(texts[1:]) == {"HIS FACE WAS STRAMING", "HIS FAXE WAS STREAMING"}
    assert len(added) == 3


def _brute_force_rnnt(model, enc: torch.Tensor, y: list[int]) -> float:
    """log P(y | x): log-sum over every path of the (T, U) lattice (any symbols per frame,
    the path ends with a blank on the last frame)."""
    t_len, u_len, blank = enc.size(0), len(y), model.blank_id
    enc_proj = model.joiner.encoder_proj(enc)
    logps = []
    for u in range(u_len + 1):
        ctx = torch.tensor([([blank, blank] + y[:u])[-2:]])
        dec = model.joiner.decoder_proj(model.predictor(ctx, need_pad=False))[0, 0]
        logps.append(model.joiner(enc_proj, dec.expand(t_len, -1), project_input=False).log_softmax(-1))
    total = -math.inf
    moves = t_len + u_len - 1  # the final blank is fixed
    for sym_pos in itertools.combinations(range(moves), u_len):
        t = u = 0
        lp = 0.0
        for m in range(moves):
            if m in sym_pos:
                lp += float(logps[u][t, y[u]])
                u += 1
            else:
                lp += float(logps[u][t, blank])
                t += 1
        lp += float(logps[u][t, blank])
        total = max(total, lp) + math.log1p(math.exp(-abs(total - lp))) if total > -math.inf else lp
    return total


def test_transducer_log_likelihood_is_the_full_sum_over_alignments() -> None:
    model = small_model(vocab_size=5, sharpen=1.0, blank_bias=0.0)
    enc = torch.randn(4, 32, generator=torch.Generator().manual_seed(5))
    seqs = [[1, 2], [3], [4, 4, 1], []]
    with torch.no_grad():
        got = transducer_log_likelihood(model, enc, seqs, batch_size=3)  # two batches, padded
        chunked = transducer_log_likelihood(model, enc, seqs, batch_size=2, contexts_per_chunk=2)
        want = [_brute_force_rnnt(model, enc, y) for y in seqs]
    assert got == pytest.approx(want, abs=1e-4) and chunked == pytest.approx(want, abs=1e-4)
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        transducer_log_likelihood(model, enc.unsqueeze(0), seqs)


def test_expand_options_validate() -> None:
    for bad in ({"max_edits": 0}, {"per_word": 0}, {"max_hyps": 0}, {"parents": 0}, {"max_am_drop": 0.0}):
        with pytest.raises(ValueError):
            ExpandOptions(**bad)
    assert ExpandOptions().edits_for("HID") == 1 and ExpandOptions().edits_for("HOTEL") == 2


def test_variants_get_the_hotword_bonus_the_search_would_give_them() -> None:
    """A respelled variant is ranked against the search's hypotheses, whose totals hold the
    finalised hotword bonus: the variant gets its own (here for a hotword it completes)."""
    from dsr.decoding.context_graph import ContextGraph
    from dsr.decoding.decode import _score_variant
    from dsr.decoding.search import SearchOptions

    graph = ContextGraph([[3, 4]], default_score=1.5)
    opts = SearchOptions(beam_size=2, context_graph=graph)
    searched = Hypothesis([3, 5], -2.0, [0, 1], context_score=0.0)
    variant = Hypothesis([3, 4], -2.5, [], source="lexicon")
    assert _score_variant(searched, opts, fusable=True) is searched
    scored = _score_variant(variant, opts, fusable=True)
    assert scored.context_score == graph.sentence_score([3, 4]) == 3.0
    assert scored.lm_score == 0.0 and scored.am_score == -2.5
    assert _score_variant(variant, SearchOptions(beam_size=2), fusable=True).context_score == 0.0
