"""N-best rescoring and weight tuning with a tiny in-domain LM (trained in the fixture)."""

import json

import pytest

pytest.importorskip("transformers", reason="LLM rescoring needs the optional 'lm' packages (transformers, ...)")

import torch  # noqa: E402
import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from dsr.cli.rescore import output_dir  # noqa: E402
from dsr.cli.rescore import rescore as rescore_cmd  # noqa: E402
from dsr.errors import DsrUserError  # noqa: E402
from dsr.lm.nbest import read_nbest  # noqa: E402
from dsr.lm.rescore import Weights, rescore, tune  # noqa: E402
from dsr.lm.scorer import LlmScorer  # noqa: E402
from dsr.lm.train_scratch import LmSize, train_lm  # noqa: E402

DOMAIN = [
    f"{v} THE {r} {o}"
    for v in ("TURN ON", "TURN OFF", "DIM")
    for r in ("KITCHEN", "BEDROOM", "HALL")
    for o in ("LIGHTS", "LAMP")
]


def _swap(text: str) -> str:
    """The first two words swapped: same words and length, so only an LM can tell it is wrong."""
    w = text.split()
    return " ".join([w[1], w[0], *w[2:]])


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("lm")
    (d / "texts.txt").write_text("\n".join(DOMAIN) + "\n")
    train_lm(
        d / "texts.txt",
        d / "model",
        config="qwen2",
        vocab_size=300,
        epochs=30,
        lr=1e-2,
        batch_size=6,
        size=LmSize(hidden_size=32, num_layers=1, num_heads=2, max_positions=64),
    )
    return d / "model"


@pytest.fixture
def scorer(lm_dir):
    torch.set_num_threads(1)
    return LlmScorer.from_path(lm_dir)


def _hyp(text: str, am: float, ctc: float | None = None, att: float | None = None) -> dict:
    hyp = {"text": text, "tokens": [1, 2], "am_score": am, "ctc_score": ctc, "context_score": 0.0, "timestamps": [0, 4]}
    return hyp if att is None else {**hyp, "attention_score": att}


def _write(path, utts: list[dict]):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(u) + "\n" for u in utts))
    return path


def _nbest(path, refs: list[str], lm_helps: bool):
    """Half the utterances have the first pass wrong (a word-swapped hypothesis ranked first).

    ``lm_helps=False`` makes the swapped text the reference, so the LM's preference hurts.
    """
    utts = []
    for i, s in enumerate(refs):
        good, bad = (s, _swap(s)) if lm_helps else (_swap(s), s)
        first = [bad, good] if i % 2 == 0 else [good, bad]
        hyps = [_hyp(first[0], -1.0), _hyp(first[1], -1.4), _hyp(s.split()[-1], -6.0)]
        utts.append({"utt_id": f"u{i}", "ref": good, "hyps": hyps})
    return _write(path, utts)


def test_zero_weights_reproduce_first_pass_exactly(tmp_path, scorer):
    utts = [
        {
            "utt_id": "tie",
            "ref": "DIM THE HALL LAMP",  # equal am scores: the first-pass order decides
            "hyps": [_hyp("THE DIM HALL LAMP", -2.0), _hyp("DIM THE HALL LAMP", -2.0)],
        },
        {"utt_id": "none", "ref": "TURN ON", "hyps": []},
        {"utt_id": "one", "ref": "DIM THE HALL LIGHTS", "hyps": [_hyp("DIM THE HALL LIGHTS", -0.5, -1.0)]},
    ]
    nb = _write(tmp_path / "dec" / "beam" / "dev" / "nbest.jsonl", utts)
    r = rescore(nb, scorer, tmp_path / "out", Weights(0.0, 0.0, 0.0))
    recogs = (tmp_path / "out" / "recogs.txt").read_text()
    assert "tie:\thyp=['THE', 'DIM', 'HALL', 'LAMP']" in recogs and "none:\thyp=[]" in recogs
    assert r["rescored_wer"] == r["first_pass_wer"] and r["oracle_wer"] < r["first_pass_wer"]
    assert r["num_hyps"] == 3 and r["split"] == "dev" and r["method"] == "beam+llm"
    # the LM prefers the in-domain hypothesis once it has a weight
    r = rescore(nb, scorer, tmp_path / "out", Weights(1.0, 0.0, 0.0))
    assert r["rescored_wer"] < r["first_pass_wer"]


def test_zero_weights_rank_by_what_the_first_pass_ranked_by(tmp_path, scorer):
    """The search's hotword bonus and a Whisper beam's length normalisation are part of its
    ranking: without them, zero weights would pick the hypotheses the first pass put second."""
    ref = "TURN ON THE KITCHEN LIGHTS"
    utts = [
        {
            "utt_id": "hotword",  # search: -3 + 2 > -2
            "ref": "DIM THE HALL LAMP",
            "hyps": [{**_hyp("DIM THE HALL LAMP", -3.0), "context_score": 2.0}, _hyp("DIM THE HALL LIGHTS", -2.0)],
        },
        {
            "utt_id": "whisper",  # search: -5 / 5 tokens > -3 / 2 tokens
            "ref": ref,
            "hyps": [{**_hyp(ref, -5.0), "rank_norm": 5.0}, {**_hyp("TURN ON", -3.0), "rank_norm": 2.0}],
        },
    ]
    nb = _write(tmp_path / "dec" / "beam" / "dev" / "nbest.jsonl", utts)
    r = rescore(nb, scorer, tmp_path / "out", Weights(0.0, 0.0, 0.0))
    assert r["first_pass_wer"] == r["rescored_wer"] == 0.0


def test_rescore_outputs_and_score_reuse(tmp_path, scorer, lm_dir):
    nb = _nbest(tmp_path / "test" / "nbest.jsonl", DOMAIN, lm_helps=True)
    rescore(nb, scorer, tmp_path / "out", Weights(1.0, 0.5, 0.0))
    for name in ("recogs.txt", "errs.txt", "wer.txt", "result.json", "llm_scores.jsonl"):
        assert (tmp_path / "out" / name).is_file(), name
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert saved["weights"] == {"lm_weight": 1.0, "length_bonus": 0.5, "ctc_weight": 0.0, "attention_weight": 0.0}
    assert saved["first_pass_wer"] > saved["rescored_wer"] >= saved["oracle_wer"] == 0.0
    assert saved["llm_texts_scored"] == 2 * len(DOMAIN) + 2 and saved["llm_seconds"] > 0
    assert [s["n"] for s in saved["by_nbest_size"]] == [1, 2, 3]
    assert saved["by_nbest_size"][0]["rescored_wer"] == saved["first_pass_wer"]
    assert (tmp_path / "out" / "wer.txt").read_text().startswith("lm_weight=1_length_bonus=0.5_ctc_weight=0\t%WER")
    lines = [json.loads(x) for x in (tmp_path / "out" / "llm_scores.jsonl").read_text().splitlines()]
    assert len(lines) == len(DOMAIN) and len(lines[0]["llm_scores"]) == 3
    # a new process with the same LLM reuses the saved scores: no forward pass at all
    fresh = LlmScorer.from_path(lm_dir)
    again = rescore(nb, fresh, tmp_path / "out", Weights(0.5, 0.0, 0.0))
    assert fresh.num_scored == 0 and again["llm_texts_scored"] == 0
    # a different scorer signature must not reuse them
    other = LlmScorer.from_path(lm_dir, text_transform="none")
    rescore(nb, other, tmp_path / "out", Weights(0.5, 0.0, 0.0))
    assert other.num_scored == 2 * len(DOMAIN) + 2


def test_ctc_weight_used_only_when_present(tmp_path, scorer):
    utts = [
        {
            "utt_id": "a",
            "ref": "DIM THE HALL LAMP",
            "hyps": [_hyp("DIM THE HALL LIGHTS", -1.0, -9.0), _hyp("DIM THE HALL LAMP", -1.5, -1.0)],
        },
        {
            "utt_id": "b",
            "ref": "DIM THE HALL LAMP",
            "hyps": [_hyp("DIM THE HALL LAMP", -1.0, None), _hyp("DIM THE HALL LIGHTS", -1.2, None)],
        },
    ]
    nb = _write(tmp_path / "n.jsonl", utts)
    assert rescore(nb, scorer, tmp_path / "o0", Weights(0.0, 0.0, 0.0))["errors"] == 1
    assert rescore(nb, scorer, tmp_path / "o1", Weights(0.0, 0.0, 0.5))["errors"] == 0


def test_tune_searches_a_ctc_grid(tmp_path, scorer):
    utts = [
        {
            "utt_id": "a",
            "ref": "DIM THE HALL LAMP",
            "hyps": [_hyp("DIM THE HALL LIGHTS", -1.0, -9.0), _hyp("DIM THE HALL LAMP", -1.5, -1.0)],
        }
    ]
    nb = _write(tmp_path / "n.jsonl", utts)
    fixed = tune(nb, scorer, tmp_path / "fixed", lm_weights=[0.0], length_bonuses=[0.0])
    assert fixed.ctc_weight == 0.0
    w = tune(nb, scorer, tmp_path / "t", lm_weights=[0.0], length_bonuses=[0.0], ctc_weights=[0.5, 1.0])
    assert w.ctc_weight == 0.5  # the smallest weight that fixes it; 0 was tried too
    grid = json.loads((tmp_path / "t" / "tune.json").read_text())["grid"]
    assert sorted(g["ctc_weight"] for g in grid) == [0.0, 0.5, 1.0]
    assert Weights.load(tmp_path / "t" / "weights.json").ctc_weight == 0.5


def test_expanded_hypotheses_keep_the_first_pass_and_its_oracle(tmp_path, scorer, caplog):
    # a lexicon expansion appended a hypothesis that outscores the search's second one
    utts = [
        {
            "utt_id": "a",
            "ref": "DIM THE HALL LAMP",
            "hyps": [
                _hyp("DIM THE HALL LIGHTS", -1.0),
                _hyp("DIM THE HALL LIGHT", -3.0),
                {**_hyp("DIM THE HALL LAMP", -2.0), "source": "lexicon"},
            ],
        }
    ]
    nb = _write(tmp_path / "n.jsonl", utts)
    assert read_nbest(nb)[0].hyps[2].source == "lexicon" and read_nbest(nb)[0].hyps[0].source == "search"
    with caplog.at_level("WARNING", logger="dsr"):
        r = rescore(nb, scorer, tmp_path / "o", Weights(0.0, 0.0))
    assert "not in decreasing am_score order" not in caplog.text  # the expansion is not ranked with the search
    assert r["first_pass_wer"] == r["rescored_wer"] == 25.0  # zero weights: still the first pass
    assert r["oracle_wer"] == 0.0 and r["search_oracle_wer"] == 25.0
    from dsr.evaluation.report import rescoring_table

    assert "| 0.00 (25.00 before expansion) | 25.00 |" in "\n".join(rescoring_table([r]))


def test_attention_weight_used_only_when_present(tmp_path, scorer):
    utts = [
        {
            "utt_id": "a",
            "ref": "DIM THE HALL LAMP",
            "hyps": [_hyp("DIM THE HALL LIGHTS", -1.0, att=-8.0), _hyp("DIM THE HALL LAMP", -1.5, att=-2.0)],
        },
        {
            "utt_id": "b",
            "ref": "DIM THE HALL LAMP",
            "hyps": [_hyp("DIM THE HALL LAMP", -1.0), _hyp("DIM THE HALL LIGHTS", -1.2)],
        },
    ]
    nb = _write(tmp_path / "n.jsonl", utts)
    assert rescore(nb, scorer, tmp_path / "o0", Weights(0.0, 0.0))["errors"] == 1
    r = rescore(nb, scorer, tmp_path / "o1", Weights(0.0, 0.0, attention_weight=0.3))
    assert r["errors"] == 0 and r["weights"]["attention_weight"] == 0.3
    assert "_attention_weight=0.3\t" in (tmp_path / "o1" / "wer.txt").read_text()
    tune(nb, scorer, tmp_path / "t", lm_weights=[0.0], length_bonuses=[0.0], attention_weight=0.3)
    assert Weights.load(tmp_path / "t" / "weights.json").attention_weight == 0.3


def test_tune_helps_when_the_lm_helps(tmp_path, scorer):
    dev = _nbest(tmp_path / "dev" / "nbest.jsonl", DOMAIN[::2], lm_helps=True)
    w = tune(dev, scorer, tmp_path / "tune", lm_weights=[0.1, 0.5, 1.0], length_bonuses=[0.5])
    lam, beta = w.lm_weight, w.length_bonus
    grid = json.loads((tmp_path / "tune" / "tune.json").read_text())
    base = next(g for g in grid["grid"] if g["lm_weight"] == 0 and g["length_bonus"] == 0)
    best = next(g for g in grid["grid"] if (g["lm_weight"], g["length_bonus"]) == (lam, beta))
    assert lam > 0 and best["wer"] < base["wer"] == grid["first_pass_wer"]
    saved = Weights.load(tmp_path / "tune" / "weights.json")
    assert (saved.lm_weight, saved.length_bonus) == (lam, beta)
    test = _nbest(tmp_path / "test" / "nbest.jsonl", DOMAIN[1::2], lm_helps=True)
    no_llm = Weights.load_without_llm(tmp_path / "tune" / "weights.json")
    assert no_llm is not None and no_llm.lm_weight == 0
    r = rescore(test, scorer, tmp_path / "test_out", saved, without_llm=no_llm)
    # only the LLM can tell the swapped words apart: without it, re-ranking gains nothing
    assert r["rescored_wer"] < r["without_llm_wer"] == r["first_pass_wer"]
    from dsr.evaluation.report import rescoring_table

    assert f"| {r['rescored_wer']:.2f} ({r['first_pass_wer']:.2f} without the LLM) |" in rescoring_table([r])[-1]


def test_tune_never_worse_than_no_lm(tmp_path, scorer):
    dev = _nbest(tmp_path / "dev" / "nbest.jsonl", DOMAIN, lm_helps=False)
    # 0 is not in the grid given: tune adds it, and ties prefer the smaller weight
    w = tune(dev, scorer, tmp_path / "tune", lm_weights=[0.5, 1.0, 2.0], length_bonuses=[0.0])
    lam, beta = w.lm_weight, w.length_bonus
    assert (lam, beta) == (0.0, 0.0)
    grid = json.loads((tmp_path / "tune" / "tune.json").read_text())
    assert min(g["wer"] for g in grid["grid"]) == grid["first_pass_wer"] < max(g["wer"] for g in grid["grid"])


def test_nbest_and_weights_errors(tmp_path):
    with pytest.raises(DsrUserError, match="no such n-best"):
        read_nbest(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"utt_id": "a", "ref": "X", "hyps": []}\n{"utt_id": "a", "ref"')
    with pytest.raises(DsrUserError, match=r"bad.jsonl:2: not valid JSON"):
        read_nbest(bad)
    bad.write_text('{"utt_id": "a", "ref": "X", "hyps": []}\n{"utt_id": "a", "ref": "X", "hyps": []}\n')
    with pytest.raises(DsrUserError, match="appears twice"):
        read_nbest(bad)
    bad.write_text('{"utt_id": "a", "ref": "X", "hyps": [{"text": "X"}]}\n')
    with pytest.raises(DsrUserError, match="'tokens'"):
        read_nbest(bad)
    for norm in ("0", '"x"', "-2"):
        bad.write_text(
            json.dumps({"utt_id": "a", "ref": "X", "hyps": [_hyp("X", -1.0)]})[:-3] + f', "rank_norm": {norm}}}]}}\n'
        )
        with pytest.raises(DsrUserError, match="bad.jsonl:1: malformed hypothesis"):
            read_nbest(bad)
    with pytest.raises(DsrUserError, match="no such weights"):
        Weights.load(tmp_path / "w.json")
    (tmp_path / "w.json").write_text('{"lm_weight": 0.1}')
    with pytest.raises(DsrUserError, match="length_bonus"):
        Weights.load(tmp_path / "w.json")
    (tmp_path / "w.json").write_text('{"lm_weight": 0.1, "length_bonus": 0, "without_llm": {"ctc_weight": "x"}}')
    with pytest.raises(DsrUserError, match="not a weights file"):
        Weights.load_without_llm(tmp_path / "w.json")


def test_cli_tunes_then_applies(tmp_path, lm_dir):
    app = typer.Typer()
    app.command()(rescore_cmd)
    dev = _nbest(tmp_path / "exp" / "decode" / "beam" / "dev" / "nbest.jsonl", DOMAIN[::2], lm_helps=True)
    test = _nbest(tmp_path / "exp" / "decode" / "beam" / "test" / "nbest.jsonl", DOMAIN[1::2], lm_helps=True)
    args = [
        "--nbest",
        str(test),
        "--nbest",
        str(dev),
        "--llm",
        str(lm_dir),
        "--tune-on",
        str(dev),
        "--tune-lm-weights",
        "0.5,1",
        "--tune-length-bonuses",
        "0",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = tmp_path / "exp" / "decode" / "beam+llm"
    assert output_dir(test, None) == out / "test" and (out / "dev" / "weights.json").is_file()
    r = json.loads((out / "test" / "result.json").read_text())
    assert r["weights"]["lm_weight"] > 0 and r["rescored_wer"] < r["first_pass_wer"]
    res = CliRunner().invoke(
        app,
        [
            "--nbest",
            str(test),
            "--llm",
            str(lm_dir),
            "--out-dir",
            str(tmp_path / "o"),
            "--weights",
            str(out / "dev" / "weights.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "o" / "test" / "result.json").read_text())
    assert again["weights"] == r["weights"] and (r["method"], again["method"]) == ("beam+llm", "o")
    assert again["without_llm_weights"]["lm_weight"] == 0  # read back from the weights file
    res = CliRunner().invoke(app, ["--nbest", str(tmp_path / "nope.jsonl"), "--llm", str(lm_dir)])
    assert isinstance(res.exception, DsrUserError) and "nope.jsonl" in str(res.exception)
    res = CliRunner().invoke(app, args[:4] + ["--tune-on", str(dev), "--tune-lm-weights", "a,b"])
    assert isinstance(res.exception, DsrUserError) and "--tune-lm-weights" in str(res.exception)


def test_results_table_shows_first_pass_oracle_rescored_and_times(tmp_path, scorer):
    from dsr.evaluation.report import collect_results, write_results

    exp = tmp_path / "exp"
    nb = _nbest(exp / "decode" / "beam" / "test" / "nbest.jsonl", DOMAIN, lm_helps=True)
    (nb.parent / "result.json").write_text(
        json.dumps(
            {
                "method": "beam",
                "split": "test",
                "checkpoint": "e1",
                "wer": 0.0,
                "errors": 0,
                "ref_words": 1,
                "num_utts": 1,
                "rtf": 0.1,
                "decode_seconds": 12.5,
                "audio_seconds": 125,
            }
        )
    )
    r = rescore(nb, scorer, exp / "decode" / "beam+llm" / "test", Weights(1.0, 0.5, 0.0))
    md = write_results(exp, collect_results(exp)).read_text()
    row = next(
        line for line in md.splitlines() if line.startswith(f"| beam+llm | model | test | {r['first_pass_wer']:.2f} |")
    )
    rel = 100 * (r["first_pass_wer"] - r["rescored_wer"]) / r["first_pass_wer"]
    assert f"| {r['oracle_wer']:.2f} | {r['rescored_wer']:.2f} | {rel:.1f} | λ=1 β=0.5 | 12.5 |" in row
    assert r["decode_seconds"] == 12.5 and row.endswith(f"| {r['llm_seconds']:.1f} |")


def test_llm_label_names_the_model_and_explicit_boundary_tokens():
    from dsr.evaluation.report import llm_label

    assert llm_label("/x/lm/deepseek|123-4|float32|transform=sentence|bos=1|eos=1") == "deepseek"
    assert (
        llm_label("/m/S.gguf|1-2|float32|transform=sentence|bos=1|eos=1:<|im_start|>,<|im_end|>")
        == "S.gguf (<\\|im_start\\|>,<\\|im_end\\|>)"
    )
