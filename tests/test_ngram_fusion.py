"""Token n-gram LMs (ARPA reading, Kneser-Ney training) and their shallow fusion into the
transducer's beam search: scores, the search, ``dsr lm ngram`` / ``dsr decode --ngram-lm``,
and n-best rescoring that keeps the fused score."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_beam_search import model_config, small_model
from tiny_corpus import write_feature_cuts
from typer.testing import CliRunner

from dsr.cli.main import app
from dsr.decoding.beam_search import ShallowFusion, modified_beam_search
from dsr.errors import DsrUserError
from dsr.lang.bpe import Tokenizer, train_bpe
from dsr.lm.ngram import LN10, NgramLm, read_arpa
from dsr.lm.ngram_train import train_token_ngram

torch.set_num_threads(1)

TEXTS = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]


class PieceTokenizer:
    """The part of :class:`~dsr.lang.bpe.Tokenizer` that :class:`NgramLm` reads: piece ``t<i>`` is id i."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.lang_dir = Path("pieces")

    def id_to_piece(self, i: int) -> str:
        return ["<blk>", "<sos/eos>", "<unk>"][i] if i < 3 else f"t{i}"


def write_arpa(path: Path, grams: list[list[tuple[float, str, float | None]]]) -> Path:
    """An ARPA file from (log10 prob, words, log10 backoff or None) per order."""
    lines = ["\\data\\"] + [f"ngram {n}={len(g)}" for n, g in enumerate(grams, start=1)]
    for n, g in enumerate(grams, start=1):
        lines += ["", f"\\{n}-grams:"]
        lines += [f"{p}\t{w}" + ("" if b is None else f"\t{b}") for p, w, b in g]
    path.write_text("\n".join(lines + ["", "\\end\\", ""]))
    return path


def test_arpa_scores_follow_the_backoff_rule(tmp_path) -> None:
    arpa = write_arpa(
        tmp_path / "lm.arpa",
        [
            [(-99, "<s>", -0.3), (-0.5, "t3", -0.2), (-0.7, "t4", None), (-1.0, "</s>", None)],
            [(-0.1, "<s> t3", None), (-0.4, "t3 t4", None)],
        ],
    )
    lm = NgramLm(arpa, PieceTokenizer(5))
    assert lm.order == 2
    start = lm.start()
    assert float(lm.row(start)[3]) == pytest.approx(-0.1 * LN10)  # listed
    assert float(lm.row(start)[4]) == pytest.approx((-0.3 - 0.7) * LN10)  # backoff(<s>) + P(t4)
    ctx = lm.advance(start, 3)
    assert float(lm.row(ctx)[4]) == pytest.approx(-0.4 * LN10)
    assert float(lm.row(ctx)[-1]) == pytest.approx((-0.2 - 1.0) * LN10)  # </s> after t3
    # t4 is no context: the state drops to the empty context, which scores unigrams
    assert lm.advance(ctx, 4) == ()
    assert float(lm.row(())[3]) == pytest.approx(-0.5 * LN10)
    # <unk> is not listed and there is no <unk> unigram: the id cannot be scored
    assert lm.row(start)[2] == -math.inf
    expected = (-0.1 - 0.4 - 1.0) * LN10  # t3 | <s>, t4 | t3, then </s> from the empty context
    assert lm.score([3, 4]) == pytest.approx(expected)


def test_arpa_errors_name_the_file_and_the_fix(tmp_path) -> None:
    tok = PieceTokenizer(5)
    with pytest.raises(DsrUserError, match="does not exist; build one with dsr lm ngram"):
        NgramLm(tmp_path / "missing.arpa", tok)
    foreign = write_arpa(tmp_path / "foreign.arpa", [[(-0.5, "t3", None), (-0.5, "HELLO", None)]])
    with pytest.raises(DsrUserError, match="'HELLO', which is not a BPE piece of pieces.*rebuild"):
        NgramLm(foreign, tok)
    truncated = tmp_path / "truncated.arpa"
    truncated.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-0.5\tt3\n")
    with pytest.raises(DsrUserError, match="declares 3 1-grams but the file has 1; it is truncated"):
        read_arpa(truncated)
    junk = tmp_path / "junk.arpa"
    junk.write_text("hello world\n")
    with pytest.raises(DsrUserError, match="not an ARPA file"):
        read_arpa(junk)


@pytest.fixture(scope="module")
def lang(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ngram")
    train_bpe(TEXTS * 30, root / "lang", vocab_size=40)
    return root / "lang"


@pytest.mark.parametrize("order", [1, 2, 4])
def test_kneser_ney_distributions_sum_to_one(lang, tmp_path, order) -> None:
    tok = Tokenizer(lang)
    info = train_token_ngram(TEXTS + ["the lights in paris"], tok, tmp_path / "lm.arpa", order)
    assert info["sentences"] == 4 and info["1-grams"] == 40  # 38 pieces (no <blk>, <sos/eos>), </s>, <s>
    lm = NgramLm(tmp_path / "lm.arpa", tok)
    seen = tok.encode("turn on the kitchen")
    contexts = [(), lm.start(), lm.advance(lm.start(), seen[0])]
    ctx = lm.start()
    for t in seen:
        ctx = lm.advance(ctx, t)
        contexts.append(ctx)
    contexts.append(lm.advance(lm.advance(lm.start(), seen[-1]), seen[0]))  # an unseen pair
    for c in contexts:
        probs = lm.row(c)[2:].exp()  # every piece but <blk> and <sos/eos>, and </s>
        assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4), c
        assert bool((probs > 0).all())
    # Above unigrams, text it was trained on is likelier than the same pieces reversed.
    assert lm.score(seen) > lm.score(seen[::-1]) or order == 1


def _peaked_lm(tmp_path: Path, vocab: int, favourite: int) -> NgramLm:
    """A unigram LM that puts almost all mass on ``favourite``."""
    grams = [(-99, "<s>", 0.0), (-3.0, "</s>", None)]
    grams += [(-0.001 if i == favourite else -6.0, f"t{i}", None) for i in range(3, vocab)]
    return NgramLm(write_arpa(tmp_path / "peaked.arpa", [grams]), PieceTokenizer(vocab))


@pytest.fixture(scope="module")
def encoded():
    model = small_model(vocab_size=8, blank_bias=0.0)
    feats = torch.randn(2, 160, 20, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        enc, lens = model.encode(feats, torch.tensor([160, 100]))
    return model, enc, lens


def test_fusion_at_scale_zero_is_the_plain_search(encoded, tmp_path) -> None:
    model, enc, lens = encoded
    plain = modified_beam_search(model, enc, lens, beam_size=4)
    fused = modified_beam_search(model, enc, lens, 4, fusion=ShallowFusion(_peaked_lm(tmp_path, 8, 5), 0.0))
    assert [[h.tokens for h in hs] for hs in fused] == [[h.tokens for h in hs] for hs in plain]
    assert [[h.am_score for h in hs] for hs in fused] == [[h.am_score for h in hs] for hs in plain]
    assert all(h.lm_score == 0.0 for hs in fused for h in hs)


def test_fusion_pulls_the_search_towards_the_lm_and_scores_consistently(encoded, tmp_path) -> None:
    model, enc, lens = encoded
    lm = _peaked_lm(tmp_path, 8, 5)
    plain = modified_beam_search(model, enc, lens, beam_size=4)
    fusion = ShallowFusion(lm, 2.0, token_bonus=4.0)
    fused = modified_beam_search(model, enc, lens, 4, fusion=fusion)

    def share_of_5(nbest) -> float:
        tokens = [t for hs in nbest for t in hs[0].tokens]
        return tokens.count(5) / len(tokens)

    assert share_of_5(fused) > share_of_5(plain) + 0.2
    for hs in fused:
        assert [h.score for h in hs] == sorted((h.score for h in hs), reverse=True)
        for h in hs:
            # lm_score is the weighted LM score of the tokens and </s>, plus the bonus per token
            assert h.lm_score == pytest.approx(fusion.sentence_score(h.tokens))
            assert h.score == pytest.approx(h.am_score + h.lm_score)
    with pytest.raises(ValueError, match="n-gram LM has 9 tokens, the model 8"):
        modified_beam_search(model, enc, lens, 4, fusion=ShallowFusion(_peaked_lm(tmp_path, 9, 5), 1.0))
    with pytest.raises(ValueError, match="LM scale must be >= 0"):
        ShallowFusion(lm, -1.0)


@pytest.fixture(scope="module")
def exp(tmp_path_factory, lang) -> dict[str, Path]:
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("fusion")
    vocab = Tokenizer(lang).vocab_size
    model = small_model(vocab_size=vocab, blank_bias=0.0, feature_dim=80)
    save_checkpoint(
        root / "exp" / "epoch-1.pt", {"model_config": model_config(vocab, 80).to_dict(), "model": model.state_dict()}
    )
    write_feature_cuts(root, TEXTS, (150, 110, 80))
    (root / "text.txt").write_text("\n".join(TEXTS * 3) + "\n")
    (root / "words.txt").write_text("\n".join(sorted({w for t in TEXTS for w in t.split()})) + "\n")
    return {"root": root, "exp": root / "exp", "cuts": root / "toy_cuts_test.jsonl.gz"}


def test_lm_ngram_then_decode_with_fusion_end_to_end(exp, lang) -> None:
    runner = CliRunner()
    lm_dir = exp["root"] / "lm"
    args = ["lm", "ngram", "--texts", str(exp["root"] / "text.txt"), "--lang-dir", str(lang), "--out-dir", str(lm_dir)]
    proc = runner.invoke(app, [*args, "--order", "3"])
    assert proc.exit_code == 0, proc.output
    assert "token 3-gram of 9 sentences" in proc.output
    proc = runner.invoke(app, [*args, "--order", "3"])
    assert "skip" in proc.output  # done, same inputs
    arpa = lm_dir / "lm.arpa"

    decode = ["decode", "--exp-dir", str(exp["exp"]), "--cuts", str(exp["cuts"]), "--lang-dir", str(lang)]
    fused = ["--ngram-lm", str(arpa), "--ngram-scale", "0.5", "--ngram-token-bonus", "1"]
    lexicon = ["--expand-lexicon", str(exp["root"] / "words.txt")]
    proc = runner.invoke(app, [*decode, "-m", "greedy", "-m", "modified-beam-search", *fused])
    assert proc.exit_code == 0, proc.output
    out = exp["exp"] / "decode"
    assert (out / "greedy/toy_test/result.json").is_file()  # greedy is not fused: its own name
    info = json.loads((out / "modified-beam-search+ngram0.5-bonus1/toy_test/result.json").read_text())
    assert (info["ngram_lm"], info["ngram_scale"], info["ngram_token_bonus"]) == (str(arpa), 0.5, 1.0)
    assert json.loads((out / "greedy/toy_test/result.json").read_text())["ngram_lm"] is None

    proc = runner.invoke(app, [*decode, "-m", "modified-beam-search", *fused, *lexicon])
    assert proc.exit_code == 0, proc.output
    nbest = out / "modified-beam-search+ngram0.5-bonus1+lexicon/toy_test/nbest.jsonl"
    fusion = ShallowFusion(NgramLm(arpa, Tokenizer(lang)), 0.5, 1.0)
    sources = set()
    for line in nbest.read_text().splitlines():
        for h in json.loads(line)["hyps"]:
            # search hypotheses and lexicon variants alike carry the fused score of their tokens
            assert h["lm_score"] == pytest.approx(fusion.sentence_score(h["tokens"]))
            sources.add(h["source"])
    assert "search" in sources


def test_fusion_option_errors_are_one_line(exp, lang, tmp_path) -> None:
    decode = ["decode", "--exp-dir", str(exp["exp"]), "--cuts", str(exp["cuts"]), "--lang-dir", str(lang)]

    def error(*args: str) -> str:
        """The line dsr prints (dsr.cli.main.run), the options named as flags."""
        proc = CliRunner().invoke(app, [*decode, *args])
        assert isinstance(proc.exception, DsrUserError), proc.output
        return str(proc.exception)

    missing = str(tmp_path / "x.arpa")
    assert error("-m", "greedy", "--ngram-lm", missing).startswith("--ngram-lm: joins the beam search of modified-")
    assert "x.arpa does not exist; build one with dsr lm ngram" in error(
        "-m", "modified-beam-search", "--ngram-lm", missing
    )
    assert error("-m", "modified-beam-search", "--ngram-scale", "-1") == "--ngram-scale: must be >= 0, got -1.0"


def test_rescoring_ranks_by_the_fused_first_pass_score(tmp_path) -> None:
    from dsr.lm.nbest import read_nbest
    from dsr.lm.rescore import NbestTable, Weights

    hyp = {"tokens": [3], "ctc_score": None, "context_score": 0.0, "timestamps": [0]}
    utt = {
        "utt_id": "u",
        "ref": "B",
        # the acoustically better A lost the search to B on the n-gram's score
        "hyps": [
            {**hyp, "text": "B", "am_score": -2.0, "lm_score": -1.0},
            {**hyp, "text": "A", "am_score": -1.0, "lm_score": -3.0},
        ],
    }
    path = tmp_path / "nbest.jsonl"
    path.write_text(json.dumps(utt) + "\n")
    table = NbestTable.build(read_nbest(path), [[0.0, 0.0]])
    assert table.am.tolist() == [[-3.0, -4.0]]
    assert table.choose(Weights(0.0, 0.0, 0.0)).tolist() == [0]
