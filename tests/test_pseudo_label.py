"""``dsr pseudo-label``: confidences, the kept manifest and its report, the CLI, and training on the labels.

Teachers: a random tiny hybrid checkpoint (transducer, CTC and attention heads: every
BPE method) and a random tiny zero-shot Whisper written by tests/whisper_fixtures.py and
converted by ``dsr whisper convert``, whose decoder is made to say " the" and end its
hypotheses after 11 tokens, so that short cuts hit the length guard and longer ones finish.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lhotse import CutSet, Features, MonoCut, SupervisionSegment
from lhotse.features.io import LilcomChunkyWriter
from lhotse.utils import fastcopy
from test_attention_rescoring import hybrid_config, hybrid_model
from tiny_corpus import make_tiny_corpus, tiny_train_options, write_feature_cuts

from dsr.data.normalize import normalize_for_scoring
from dsr.decoding.beam_search import Hypothesis
from dsr.decoding.greedy import TransducerGreedySearch
from dsr.decoding.pseudo_label import (
    Label,
    PseudoLabelOptions,
    ctc_greedy_confidences,
    decode_labels,
    drop_reason,
    load_teacher,
    nbest_posterior,
    pseudo_label,
    ranking_score,
    report_path,
    whisper_confidence,
)
from dsr.decoding.whisper_search import WhisperHypothesis
from dsr.errors import DsrUserError

torch.set_num_threads(1)

BPE_METHODS = ("greedy", "ctc-greedy", "modified-beam-search", "ctc-attention-rescoring")


# ------------------------------------------------------------------------------------------ confidences


def test_confidence_definitions() -> None:
    # n-best posterior: softmax of the ranking scores at the 1-best, impossible entries ignored.
    assert nbest_posterior([math.log(0.6), math.log(0.3), math.log(0.1)]) == pytest.approx(0.6)
    assert nbest_posterior([math.log(0.2), math.log(0.2), -math.inf]) == pytest.approx(0.5)
    assert nbest_posterior([-5000.0, -5001.0]) == pytest.approx(1 / (1 + math.exp(-1)))  # no underflow
    assert nbest_posterior([-3.0]) == 1.0 and nbest_posterior([-math.inf, -1.0]) == 0.0
    # Whisper: exp(mean log-prob per token), eot counted only when it was emitted.
    assert whisper_confidence(WhisperHypothesis([5, 6, 7], 4 * math.log(0.5), True)) == pytest.approx(0.5)
    assert whisper_confidence(WhisperHypothesis([5, 6], 2 * math.log(0.25), False)) == pytest.approx(0.25)
    # CTC greedy: geometric mean of the best posterior over the frames whose best label is not blank.
    probs = torch.tensor(
        [
            [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.6, 0.2], [0.7, 0.1, 0.2], [0.1, 0.1, 0.8]],
            [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]],
        ]
    )
    confs = ctc_greedy_confidences(probs.log(), torch.tensor([4, 3]), blank=0)
    assert confs == pytest.approx([math.sqrt(0.8 * 0.6), 0.0])  # the padding frames are ignored
    # The rescoring methods rank, and so normalise, by first pass + scale * attention.
    h = Hypothesis([1], am_score=-2.0, timestamps=[0], context_score=0.5, attention_score=-3.0)
    assert ranking_score(h, "ctc-attention-rescoring", 2.0) == -7.5
    assert ranking_score(h, "modified-beam-search", 2.0) == -1.5


def test_drop_reasons_in_order() -> None:
    assert drop_reason(Label("HELLO", 1, 0.5), 0.5) is None
    assert drop_reason(Label("HELLO", 1, 0.49), 0.5) == "low_confidence"
    assert drop_reason(Label("", 0, 0.9), 0.5) == "empty"
    assert drop_reason(Label(" ... !", 2, 0.9), 0.5) == "empty"  # nothing left after normalisation
    assert drop_reason(Label("", 0, 0.1), 0.5) == "empty"
    assert drop_reason(Label("HELLO HELLO", 20, 0.1, finished=False), 0.5) == "unfinished"


def test_greedy_search_records_each_tokens_log_prob() -> None:
    """The search's token log-probs equal a frame-by-frame recomputation of the joiner's."""
    model = hybrid_model()
    enc = torch.randn(3, 30, 32, generator=torch.Generator().manual_seed(3))
    lens = torch.tensor([30, 21, 9])
    search = TransducerGreedySearch(model, 3, enc.device)
    with torch.no_grad():
        search.advance(enc, lens)
        for i, n in enumerate(lens.tolist()):
            context, tokens, log_probs = [model.blank_id] * model.predictor.context_size, [], []
            for t in range(n):
                dec = model.predictor(torch.tensor([context]), need_pad=False)
                lp = model.joiner(enc[i : i + 1, t : t + 1], dec).reshape(-1).log_softmax(-1)
                token = int(lp.argmax())
                if token != model.blank_id:
                    tokens.append(token)
                    log_probs.append(float(lp[token]))
                    context = context[1:] + [token]
            assert search.hyps[i] == tokens and len(tokens) >= 2
            assert search.token_log_probs[i] == pytest.approx(log_probs, abs=1e-5)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"method": "nope"}, "method: 'nope' cannot pseudo-label"),
        ({"method": "faster-whisper"}, "gives no scores"),
        ({"min_confidence": 1.01}, r"probability in \[0, 1\]"),
        ({"min_confidence": -0.1}, r"probability in \[0, 1\]"),
        ({"min_confidence": float("nan")}, r"probability in \[0, 1\]"),
        ({"method": "modified-beam-search", "beam_size": 1}, "beam_size >= 2"),
        ({"beam_size": 0}, "beam_size: must be an int >= 1"),
        ({"attention_scale": -1.0}, "attention_scale"),
        ({"max_tokens_per_second": 0.0}, "max_tokens_per_second"),
        ({"confidence_bins": 0}, "confidence_bins"),
    ],
)
def test_options_are_validated(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PseudoLabelOptions(**{"method": "greedy", "min_confidence": 0.5, **kw})


@pytest.mark.parametrize(
    "extra, line",
    [
        (["-m", "modified-beam-search", "--beam-size", "1"], "-m modified-beam-search measures confidence within"),
        (["--out", "labels.txt"], "--out labels.txt must be a cuts manifest named *.jsonl.gz"),
        ([], "give the teacher as --exp-dir DIR (a dsr checkpoint, with --lang-dir) or --pretrained NAME"),
    ],
)
def test_cli_names_the_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], line: str) -> None:
    """The library names its arguments (``min_confidence``, ``out_file``); the command its flags."""
    from typer.testing import CliRunner

    from dsr.cli.main import app

    monkeypatch.chdir(tmp_path)
    write_feature_cuts(tmp_path, ["a b"], (120,))
    args = ["pseudo-label", "--cuts", "toy_cuts_test.jsonl.gz", "--out", "labels.jsonl.gz", "-m", "greedy",
            "--min-confidence", "0.5", *extra]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert isinstance(res.exception, DsrUserError), res.output
    assert str(res.exception).startswith(line), str(res.exception)


# ------------------------------------------------------------------------------------------ BPE teacher


@pytest.fixture(scope="module")
def bpe(tmp_path_factory) -> dict[str, Path]:
    """The tiny corpus, a random hybrid checkpoint on its lang dir, and cuts to label: the
    12 training cuts, one without supervision and one whose features cannot be read."""
    from dsr.lang.bpe import Tokenizer
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("pseudo")
    corpus = make_tiny_corpus(root, num_train=12, num_dev=2)
    vocab = Tokenizer(corpus["lang_dir"]).vocab_size
    save_checkpoint(
        root / "exp" / "epoch-1.pt",
        {"model_config": hybrid_config(vocab, 80).to_dict(), "model": hybrid_model(vocab, 80).state_dict()},
    )
    cuts = list(CutSet.from_file(corpus["train_cuts"]))
    nosup = fastcopy(cuts[0], id="nosup", supervisions=[])
    broken = fastcopy(cuts[1], id="broken", features=fastcopy(cuts[1].features, storage_path=str(root / "gone.lca")))
    CutSet.from_cuts([*cuts, nosup, broken]).to_file(root / "unlab_cuts.jsonl.gz")
    return {
        "root": root,
        "exp": root / "exp",
        "lang": Path(corpus["lang_dir"]),
        "cuts": root / "unlab_cuts.jsonl.gz",
        "train_cuts": Path(corpus["train_cuts"]),
    }


def run_bpe(bpe: dict[str, Path], out: Path, method: str, min_confidence: float = 0.0, **kw: Any):
    return pseudo_label(
        bpe["cuts"],
        out,
        PseudoLabelOptions(method, min_confidence, **kw),
        exp_dir=bpe["exp"],
        lang_dir=bpe["lang"],
        device="cpu",
        use_averaged_model=False,
    )


@pytest.fixture(scope="module")
def labelled(bpe) -> dict[str, tuple[Any, list]]:
    """Every BPE method's report and written cuts at threshold 0."""
    out = {}
    for m in BPE_METHODS:
        report = run_bpe(bpe, bpe["root"] / "labels" / f"{m}.jsonl.gz", m)
        out[m] = (report, list(CutSet.from_file(report.out_file)))
    return out


def confidence(cut) -> float:
    return cut.supervisions[0].custom["pseudo_label"]["confidence"]


@pytest.mark.parametrize("method", BPE_METHODS)
def test_threshold_zero_keeps_every_readable_cut_with_a_hypothesis(bpe, labelled, method: str) -> None:
    report, kept = labelled[method]
    source = {c.id: c for c in CutSet.from_file(bpe["cuts"])}
    assert report.num_cuts == 14 and report.dropped == {
        "unreadable": 1,
        "unfinished": 0,
        "empty": 0,
        "low_confidence": 0,
    }
    assert [c.id for c in kept] == [c for c in source if c != "broken"]  # input order, every decoded cut
    assert report.num_kept == 13 and report.unreadable[0]["cut_id"] == "broken"
    for cut in kept:
        sup = cut.supervisions[0]
        info = sup.custom["pseudo_label"]
        assert 0.0 <= info["confidence"] <= 1.0 and info["method"] == method and str(bpe["exp"]) in info["model"]
        assert sup.text and sup.text == normalize_for_scoring(sup.text)
        np.testing.assert_array_equal(cut.load_features(), source[cut.id].load_features())
    assert {c.id: c.supervisions[0].duration for c in kept}["nosup"] == source["nosup"].duration
    assert len({confidence(c) for c in kept}) > 1, "a constant confidence would prove nothing"
    # The report: written beside the manifest, WER against the 12 readable references, all bins accounted for.
    on_disk = json.loads(report_path(Path(report.out_file)).read_text())
    assert on_disk["num_kept"] == 13 and on_disk["dropped"] == report.dropped
    assert report.num_references == 12 and report.wer_all["ref_words"] == report.wer_kept["ref_words"] > 0
    assert report.mean_confidence_kept == pytest.approx(np.mean([confidence(c) for c in kept]), abs=1e-5)
    assert sum(b.utts for b in report.confidence_bins) == 13 and report.confidence_bins[0].kept_at_threshold == 13


def test_kept_text_and_confidence_agree_with_dsr_decode(bpe, labelled) -> None:
    from dsr.decoding.decode import decode

    # dsr decode reads every cut's supervision: the cut without one is left out.
    cuts = bpe["root"] / "decode_cuts.jsonl.gz"
    CutSet.from_cuts([c for c in CutSet.from_file(bpe["cuts"]) if c.id != "nosup"]).to_file(cuts)
    results = decode(
        bpe["exp"], cuts, bpe["lang"], methods=BPE_METHODS, device="cpu", progress=False, use_averaged_model=False
    )
    for res in results:
        hyps = {}
        for line in (res.out_dir / "recogs.txt").read_text().splitlines():
            utt, _, rest = line.partition(":\t")
            if rest.startswith("hyp="):
                hyps[utt] = eval(rest[4:])  # noqa: S307 -- the list literal recogs.txt writes
        _, kept = labelled[res.method]
        kept = [c for c in kept if c.id != "nosup"]
        assert {c.id: c.supervisions[0].text.split() for c in kept} == hyps
        if res.method in ("modified-beam-search", "ctc-attention-rescoring"):
            scale = 1.0 if res.method == "ctc-attention-rescoring" else 0.0
            by_id = {c.id: confidence(c) for c in kept}
            for line in (res.out_dir / "nbest.jsonl").read_text().splitlines():
                rec = json.loads(line)
                scores = [
                    h["am_score"] + h["context_score"] + scale * (h["attention_score"] or 0.0) for h in rec["hyps"]
                ]
                expected = math.exp(scores[0]) / sum(math.exp(s) for s in scores)
                assert by_id[rec["utt_id"]] == pytest.approx(expected, abs=2e-6)


def test_threshold_keeps_exactly_the_confident_cuts(bpe, labelled, tmp_path) -> None:
    _, everything = labelled["modified-beam-search"]
    values = sorted({confidence(c) for c in everything})
    threshold = (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2
    report = run_bpe(bpe, tmp_path / "half.jsonl.gz", "modified-beam-search", threshold)
    expected = [c.id for c in everything if confidence(c) >= threshold]
    assert 0 < len(expected) < len(everything)
    assert [c.id for c in CutSet.from_file(tmp_path / "half.jsonl.gz")] == expected
    assert report.dropped["low_confidence"] == len(everything) - len(expected) and report.num_kept == len(expected)

    # Nothing above the highest confidence: a one-line error, the report kept, no (stale) manifest left.
    out = tmp_path / "none.jsonl.gz"
    out.write_text("stale")
    with pytest.raises(DsrUserError, match=r"no cut of .* reached min_confidence .*WER-by-confidence table"):
        run_bpe(bpe, out, "modified-beam-search", min(1.0, values[-1] + 1e-3))
    assert not out.exists() and json.loads(report_path(out).read_text())["num_kept"] == 0


def test_length_guard_drops_hypotheses_as_long_as_it_allows(bpe, labelled, tmp_path) -> None:
    options = PseudoLabelOptions("greedy", 0.0)
    teacher = load_teacher(options, bpe["exp"], None, bpe["lang"], torch.device("cpu"), use_averaged_model=False)
    cuts = CutSet.from_cuts([c for c in CutSet.from_file(bpe["cuts"]) if c.id != "broken"])
    labels, _ = decode_labels(teacher, cuts, 300.0, torch.device("cpu"))
    # A rate between the lowest each cut fits in, (tokens - 3) / seconds (this model emits at nearly every frame).
    rates = sorted((labels[c.id].num_tokens - 3) / c.duration for c in cuts)
    rate = (rates[len(rates) // 2 - 1] + rates[len(rates) // 2]) / 2
    # Whisper's count: ceil(rate * seconds) + 4 tokens, the end token included.
    fits = {c.id for c in cuts if labels[c.id].num_tokens + 1 <= math.ceil(rate * c.duration) + 4}
    assert 0 < len(fits) < len(labels), "the rate must split the cuts for the test to mean anything"
    report = run_bpe(bpe, tmp_path / "guarded.jsonl.gz", "greedy", max_tokens_per_second=rate)
    assert {c.id for c in CutSet.from_file(tmp_path / "guarded.jsonl.gz")} == fits
    assert report.dropped["unfinished"] == len(labels) - len(fits)


# ------------------------------------------------------------------------------------------ CLI and training


def test_cli_labels_skips_when_done_and_trains_on_the_labels(bpe, tmp_path) -> None:
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import train

    out = tmp_path / "pseudo_cuts_train.jsonl.gz"

    def args(threshold: str) -> list[str]:
        return [
            "pseudo-label",
            "--cuts",
            str(bpe["cuts"]),
            "--out",
            str(out),
            "--exp-dir",
            str(bpe["exp"]),
            "--lang-dir",
            str(bpe["lang"]),
            "-m",
            "ctc-greedy",
            "--min-confidence",
            threshold,
            "--device",
            "cpu",
            "--num-threads",
            "1",
            "--no-use-averaged-model",
        ]

    first = CliRunner().invoke(app, args("0"))
    assert first.exit_code == 0, first.output
    assert "done" in first.output and "kept 13/14 cuts" in first.output
    again = CliRunner().invoke(app, args("0"))
    assert again.exit_code == 0 and "skip" in again.output
    changed = CliRunner().invoke(app, args("0.2"))  # another threshold: labelled again
    assert changed.exit_code == 0 and "redo" in changed.output, changed.output
    assert len(CutSet.from_file(out)) == 13  # every ctc-greedy confidence of this model is above 0.2

    # dsr train reads the labels like any manifest.
    corpus = {"train_cuts": str(out), "dev_cuts": "", "lang_dir": str(bpe["lang"])}
    result = train(TrainConfig.from_dict(tiny_train_options(corpus, tmp_path / "student", max_steps=2)))
    assert result.global_step == 2 and (tmp_path / "student" / "epoch-1.pt").is_file()


@pytest.mark.parametrize("case", ["missing-cuts", "no-teacher", "two-teachers", "unknown-method", "above-one"])
def test_cli_user_errors_are_one_line_with_exit_2(bpe, tmp_path, monkeypatch, capsys, case: str) -> None:
    from dsr.cli import main

    base = [
        "dsr",
        "pseudo-label",
        "--cuts",
        str(bpe["cuts"]),
        "--out",
        str(tmp_path / "o.jsonl.gz"),
        "-m",
        "greedy",
        "--min-confidence",
        "0.5",
        "--device",
        "cpu",
    ]
    exp = ["--exp-dir", str(bpe["exp"]), "--lang-dir", str(bpe["lang"])]
    argv, message = {
        "missing-cuts": ([*base[:3], str(tmp_path / "nope.jsonl.gz"), *base[4:], *exp], "nope.jsonl.gz does not exist"),
        "no-teacher": (base, "exactly one of them"),
        "two-teachers": ([*base, *exp, "--pretrained", "whisper-tiny.en"], "exactly one of them"),
        "unknown-method": ([*base[:7], "beam", *base[8:], *exp], "-m: 'beam' cannot pseudo-label"),
        "above-one": ([*base[:9], "1.01", *base[10:], *exp], "--min-confidence: must be a probability in [0, 1]"),
    }[case]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main.run()
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("error:") and message in err, err
    assert "\n" not in err and not (tmp_path / "o.jsonl.gz").exists()


# ------------------------------------------------------------------------------------------ zero-shot Whisper


DURATIONS = (1.5, 1.1, 3.0, 0.4, 2.0, 0.3)  # the last but two and the last are too short to finish


def _feature_cuts(root: Path, name: str, feature_type: str, custom: dict[str, Any] | None) -> Path:
    from whisper_fixtures import TEXT

    rng = np.random.default_rng(0)
    cuts = []
    with LilcomChunkyWriter(root / f"{name}.lca") as writer:
        for i, dur in enumerate(DURATIONS):
            frames = round(dur * 100)
            key = writer.write(f"w{i}", rng.uniform(-1, 1, size=(frames, 80)).astype(np.float32))
            feats = Features(
                type=feature_type,
                num_frames=frames,
                num_features=80,
                frame_shift=0.01,
                sampling_rate=16000,
                start=0.0,
                duration=dur,
                storage_type=writer.name,
                storage_path=str(root / f"{name}.lca"),
                storage_key=key,
                recording_id=f"w{i}",
                channels=0,
            )
            sup = SupervisionSegment(
                id=f"w{i}", recording_id=f"w{i}", start=0.0, duration=dur, channel=0, text=TEXT[i % 2]
            )
            cuts.append(
                MonoCut(
                    id=f"w{i}", start=0.0, duration=dur, channel=0, supervisions=[sup], features=feats, custom=custom
                )
            )
    CutSet.from_cuts(cuts).to_file(root / f"{name}_cuts.jsonl.gz")
    return root / f"{name}_cuts.jsonl.gz"


@pytest.fixture(scope="module")
def whisper(tmp_path_factory) -> dict[str, Path]:
    """A random tiny Whisper in dsr's format, whisper-fbank cuts and kaldi-fbank cuts of the same ids."""
    pytest.importorskip("tokenizers", reason="Whisper's tokenizer needs 'tokenizers' (bash tools/setup.sh --whisper)")
    import whisper_fixtures as fx
    from tokenizers import Tokenizer
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.features.frontend import frontend_to_dict
    from dsr.features.whisper_fbank import WhisperFbankConfig
    from dsr.models.whisper.model import Whisper, WhisperDims

    root = tmp_path_factory.mktemp("whisper")
    tok = fx.tiny_tokenizer_json()
    ids = fx.token_ids(tok)
    dims = WhisperDims(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=fx.D_MODEL,
        n_audio_head=fx.HEADS,
        n_audio_layer=fx.LAYERS,
        n_vocab=ids["vocab"],
        n_text_ctx=fx.TEXT_CTX,
        n_text_state=fx.D_MODEL,
        n_text_head=fx.HEADS,
        n_text_layer=fx.LAYERS,
    )
    torch.manual_seed(0)
    sd = Whisper(dims).state_dict()
    # Push the decoder's output, through its position embeddings, towards " the" at positions 1-11 (left
    # alone it repeats the prompt's last token, a special one: empty texts) and to eot from 12 on:
    # hypotheses of 11 tokens, that the length guard cuts short below 1 s.
    emb = sd["decoder.token_embedding.weight"]
    the, eot = emb[Tokenizer.from_str(tok).token_to_id("Ġthe")], emb[ids["<|endoftext|>"]]
    sd["decoder.positional_embedding"][1:12] += 5.0 * the / the.norm()
    sd["decoder.positional_embedding"][12:] += 10.0 * eot / eot.norm()
    fx.write_openai_pt(root / "tiny.pt", dims.to_dict(), sd, half=False)
    (root / "tokenizer.json").write_text(tok)
    res = CliRunner().invoke(
        app,
        ["whisper", "convert", str(root / "tiny.pt"), str(root / "model"), "--tokenizer", str(root / "tokenizer.json")],
    )
    assert res.exit_code == 0, res.output
    whisper_frontend = {"frontend": frontend_to_dict(WhisperFbankConfig())}
    return {
        "root": root,
        "model": root / "model",
        "kaldi": _feature_cuts(root, "fbank", "kaldi-fbank", None),
        "cuts": _feature_cuts(root, "wfbank", "whisper-fbank", whisper_frontend),
    }


def test_zero_shot_whisper_labels_onto_the_students_features(whisper) -> None:
    from dsr.decoding.decode import decode

    out = whisper["root"] / "pseudo_cuts.jsonl.gz"
    report = pseudo_label(
        whisper["cuts"],
        out,
        PseudoLabelOptions("whisper-beam-search", 0.0, beam_size=2),
        pretrained=str(whisper["model"]),
        device="cpu",
        onto_cuts=whisper["kaldi"],
    )
    assert report.dropped == {"unreadable": 0, "unfinished": 2, "empty": 0, "low_confidence": 0}
    kept = list(CutSet.from_file(out))
    assert [c.id for c in kept] == ["w0", "w1", "w2", "w4"]
    onto = {c.id: c for c in CutSet.from_file(whisper["kaldi"])}
    for cut in kept:  # the student's features, the teacher's label
        assert cut.features.type == "kaldi-fbank" and cut.features.storage_key == onto[cut.id].features.storage_key
        assert cut.supervisions[0].custom["pseudo_label"]["model"] == str(whisper["model"])
    assert report.wer_all is not None and report.num_references == 6

    # dsr decode's 1-best text and score give the same label and confidence.
    (res,) = decode(
        whisper["root"] / "exp",
        whisper["cuts"],
        None,
        methods=("whisper-beam-search",),
        device="cpu",
        progress=False,
        beam_size=2,
        pretrained=str(whisper["model"]),
    )
    best = {r["utt_id"]: r["hyps"][0] for r in map(json.loads, (res.out_dir / "nbest.jsonl").read_text().splitlines())}
    for cut in kept:
        sup = cut.supervisions[0]
        assert sup.text == normalize_for_scoring(best[cut.id]["text"]) and sup.custom["pseudo_label"]["raw_text"]
        expected = math.exp(best[cut.id]["am_score"] / (len(best[cut.id]["tokens"]) + 1))
        assert sup.custom["pseudo_label"]["confidence"] == pytest.approx(expected, abs=2e-6)

    # Greedy too; and Whisper reads whisper-fbank features only.
    greedy = pseudo_label(
        whisper["cuts"],
        whisper["root"] / "greedy.jsonl.gz",
        PseudoLabelOptions("whisper-greedy", 0.0),
        pretrained=str(whisper["model"]),
        device="cpu",
    )
    assert greedy.num_kept == 4 and 0 < greedy.mean_confidence_kept <= 1
    with pytest.raises(DsrUserError, match="kaldi-fbank .* but zero-shot .* reads whisper-fbank"):
        pseudo_label(
            whisper["kaldi"],
            whisper["root"] / "x.jsonl.gz",
            PseudoLabelOptions("whisper-greedy", 0.0),
            pretrained=str(whisper["model"]),
            device="cpu",
        )
    with pytest.raises(DsrUserError, match="use method whisper-greedy or method whisper-beam-search"):
        pseudo_label(
            whisper["cuts"],
            whisper["root"] / "x.jsonl.gz",
            PseudoLabelOptions("greedy", 0.0),
            pretrained=str(whisper["model"]),
            device="cpu",
        )
