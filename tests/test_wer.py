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


def test_score_by_group_worst_first_and_table(tmp_path):
    from dsr.evaluation.wer import score, score_by_group, write_wer_by_group

    results = [("a1", "ONE TWO", "ONE TWO"), ("a2", "THREE", "THREE"), ("b1", "FOUR FIVE", "FOUR SIX"), ("c1", "X", "")]
    scored = score_by_group(score(results), {"a1": "alice", "a2": "alice", "b1": "bob"})
    assert [(name, s.num_sents, s.ref_words, s.errors) for name, s in scored] == [
        ("-", 1, 1, 1),
        ("bob", 1, 2, 1),
        ("alice", 2, 3, 0),
    ]
    write_wer_by_group(tmp_path / "w.txt", scored)
    lines = (tmp_path / "w.txt").read_text().splitlines()
    assert lines[0] == "speaker\tutts\twords\terrors\tWER%" and lines[2] == "bob\t1\t2\t1\t50.00"


def test_numerals_are_spelled_out_for_every_system():
    from dsr.data.normalize import normalize_for_scoring, number_words

    assert number_words(0) == "ZERO"
    assert number_words(1908) == "ONE THOUSAND NINE HUNDRED EIGHT"
    assert number_words(2_000_017) == "TWO MILLION SEVENTEEN"
    assert normalize_for_scoring("Seventeen, no 18 days ago.") == "SEVENTEEN NO EIGHTEEN DAYS AGO"
    assert normalize_for_scoring("the 18th, 21st and 2nd") == "THE EIGHTEENTH TWENTY FIRST AND SECOND"
    assert normalize_for_scoring("8.") == "EIGHT"
    assert normalize_for_scoring("1,000 at 3.5") == "ONE THOUSAND AT THREE POINT FIVE"
    assert normalize_for_scoring("room 101b") == "ROOM 101B"  # not a number on its own
    # Whisper writes digits where the reference spells them: no error once both are words.
    stats = score([("u", "SEVENTEEN NO EIGHTEEN DAYS AGO", "17, no 18 days ago.")])
    assert stats.errors == 0
