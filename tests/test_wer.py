from dsr.evaluation.wer import score, write_errs


def test_wer_counts_and_normalisation(tmp_path):
    stats = score(
        [
            ("u1", "Turn on the lights.", "turn on the light"),  # 1 sub
            ("u2", "set a timer", "set timer please"),  # 1 del + 1 ins
            ("u3", "hello world", "HELLO, world!"),  # correct after normalisation
        ]
    )
    assert (stats.subs, stats.dels, stats.ins) == (1, 1, 1)
    assert stats.ref_words == 9 and stats.sent_errors == 2
    assert abs(stats.wer - 100 * 3 / 9) < 1e-9
    write_errs(tmp_path / "errs.txt", stats)
    text = (tmp_path / "errs.txt").read_text()
    assert text.startswith("%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]")
    assert "u1:\tTURN ON THE (LIGHTS->LIGHT)" in text


def test_cer():
    stats = score([("u", "abc", "abd")], char_level=True)
    assert stats.ref_words == 3 and stats.subs == 1
