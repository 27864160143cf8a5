import pytest

from dsr.data.normalize import normalize_text
from dsr.errors import DsrUserError
from dsr.lang.bpe import Tokenizer, train_bpe


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("Author of the danger trail, Philip Steels, etc.", "AUTHOR OF THE DANGER TRAIL PHILIP STEELS ETC"),
        ("  don't   stop-now!  ", "DON'T STOP NOW"),
        ("'quoted' words", "QUOTED WORDS"),
        ("It\u2019s 9 o'clock", "IT'S 9 O'CLOCK"),
        ("", ""),
    ],
)
def test_normalize(raw, norm):
    assert normalize_text(raw) == norm


def test_bpe_round_trip_and_layout(tmp_path):
    texts = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"] * 30
    train_bpe(texts, tmp_path, vocab_size=40)
    tok = Tokenizer(tmp_path)
    assert (tok.blank_id, tok.sos_eos_id, tok.unk_id) == (0, 1, 2)
    ids = tok.encode("Turn on, the LIGHTS!")
    assert 0 not in ids and tok.decode(ids) == "TURN ON THE LIGHTS"
    lines = (tmp_path / "tokens.txt").read_text().splitlines()
    assert len(lines) == tok.vocab_size and lines[0] == "<blk> 0"


def test_bpe_errors(tmp_path):
    with pytest.raises(DsrUserError, match="no non-empty"):
        train_bpe(["", "  ", "!!"], tmp_path, vocab_size=10)
    with pytest.raises(DsrUserError, match="bpe.model"):
        Tokenizer(tmp_path / "missing")


def test_chinese_text_needs_a_piece_per_character(tmp_path):
    """AISHELL-style text (characters, no spaces): too small a vocabulary asks for a bigger one."""
    texts = ["而对楼市成交抑制作用最大的限购", "也成为地方政府的眼中钉"] * 10
    with pytest.raises(DsrUserError, match=r"use vocab_size >= 28,"):
        train_bpe(texts, tmp_path / "small", vocab_size=20)
    train_bpe(texts, tmp_path / "ok", vocab_size=40)
    assert "".join(Tokenizer(tmp_path / "ok").sp.encode("也成为地方政府", out_type=str)).lstrip("▁") == "也成为地方政府"
