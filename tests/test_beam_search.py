"""Modified beam search (n-best properties, beam 1 == greedy, exact scores, hotwords) and the
``dsr decode`` / ``dsr transcribe`` integration of all decoding methods."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from tiny_corpus import write_feature_cuts

from dsr.decoding.beam_search import modified_beam_search
from dsr.decoding.context_graph import ContextGraph
from dsr.decoding.greedy import transducer_greedy_search
from dsr.models import HybridTransducer, ModelConfig, build_model

torch.set_num_threads(1)


def model_config(vocab_size: int, feature_dim: int = 20) -> ModelConfig:
    return ModelConfig(
        feature_dim=feature_dim,
        encoder_dim=32,
        num_encoder_layers=1,
        num_heads=4,
        ffn_dim=64,
        conv_kernel_size=5,
        subsampling_channels=(4, 8),
        decoder_dim=24,
        joiner_dim=40,
        vocab_size=vocab_size,
        context_size=2,
    )


def small_model(
    vocab_size: int = 8, sharpen: float = 3.0, blank_bias: float = 1.0, seed: int = 0, feature_dim: int = 20
) -> HybridTransducer:
    """A random tiny model.  ``sharpen`` scales the output layer and ``blank_bias`` favours
    blank, so that the random joiner mixes blanks and several tokens with clear preferences
    (a flat random joiner emits a token at every frame and makes greedy == beam trivial)."""
    torch.manual_seed(seed)
    model = build_model(model_config(vocab_size, feature_dim)).eval()
    with torch.no_grad():
        model.joiner.output_linear.weight.mul_(sharpen)
        model.joiner.output_linear.bias[model.blank_id] += blank_bias
    return model


@pytest.fixture(scope="module")
def encoded() -> tuple[HybridTransducer, torch.Tensor, torch.Tensor]:
    model = small_model()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 160, 20, generator=g)
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, torch.tensor([160, 110, 70]))
    return model, enc, enc_lens


def test_beam_one_equals_greedy(encoded) -> None:
    model, enc, enc_lens = encoded
    greedy = transducer_greedy_search(model, enc, enc_lens)
    assert all(len(g) > 2 for g in greedy), "the random model must emit tokens for the test to mean anything"
    assert any(len(g) < n for g, n in zip(greedy, enc_lens.tolist())), "and blanks too"
    beam = modified_beam_search(model, enc, enc_lens, beam_size=1)
    assert [hyps[0].tokens for hyps in beam] == greedy


def test_nbest_is_sorted_unique_and_batching_does_not_change_it(encoded) -> None:
    model, enc, enc_lens = encoded
    batched = modified_beam_search(model, enc, enc_lens, beam_size=4, nbest=3)
    for i, hyps in enumerate(batched):
        assert len(hyps) == 3
        assert len({tuple(h.tokens) for h in hyps}) == 3
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            # At most one symbol per frame: strictly increasing frames within the utterance.
            assert len(h.timestamps) == len(h.tokens)
            assert all(a < b for a, b in zip(h.timestamps, h.timestamps[1:]))
            assert all(0 <= s < int(enc_lens[i]) for s in h.timestamps)
            assert h.am_score < 0 and h.context_score == 0.0 and h.ctc_score is None
        n = int(enc_lens[i])
        (alone,) = modified_beam_search(model, enc[i : i + 1, :n], enc_lens[i : i + 1], beam_size=4, nbest=3)
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        assert [h.am_score for h in alone] == pytest.approx([h.am_score for h in hyps], abs=1e-4)


def test_search_builds_no_autograd_graph() -> None:
    """Called with gradients enabled (a caller outside inference_mode), the search still records
    no graph: its rows and scores hold no history."""
    model = small_model(seed=3)
    enc, lens = model.encode(torch.randn(1, 60, 20), torch.tensor([60]))
    assert enc.requires_grad
    calls = []
    original = model.joiner.forward

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out.requires_grad)
        return out

    model.joiner.forward = spy
    modified_beam_search(model, enc, lens, beam_size=4)
    assert calls and not any(calls)


def test_unpruned_scores_equal_brute_force_over_alignments() -> None:
    """With a beam that prunes nothing, each hypothesis' am_score is the exact log-sum
    over all one-symbol-per-frame alignments of its tokens."""
    model = small_model(vocab_size=3, sharpen=1.0, blank_bias=0.0)
    t_len, blank = 3, model.blank_id
    enc = torch.randn(1, t_len, 32, generator=torch.Generator().manual_seed(3))
    exact: dict[tuple[int, ...], float] = {}
    with torch.no_grad():
        enc_proj = model.joiner.encoder_proj(enc[0])
        for path in itertools.product(range(3), repeat=t_len):
            tokens: list[int] = []
            lp = 0.0
            for t, s in enumerate(path):
                ctx = torch.tensor([([blank, blank] + tokens)[-2:]])
                dec = model.joiner.decoder_proj(model.predictor(ctx, need_pad=False))[0, 0]
                lp += float(model.joiner(enc_proj[t], dec, project_input=False).log_softmax(-1)[s])
                if s != blank:
                    tokens.append(s)
            key = tuple(tokens)
            prev = exact.get(key, -math.inf)
            m = max(prev, lp)
            exact[key] = m + math.log(math.exp(prev - m) + math.exp(lp - m))
    beam = 27  # >= every (hypothesis, token) pair: nothing is pruned
    (hyps,) = modified_beam_search(model, enc, torch.tensor([t_len]), beam_size=beam, nbest=len(exact))
    assert {tuple(h.tokens) for h in hyps} == set(exact)
    for h in hyps:
        assert h.am_score == pytest.approx(exact[tuple(h.tokens)], abs=1e-5)
    assert hyps[0].tokens == list(max(exact, key=exact.__getitem__))


def test_hotword_raises_the_score_of_a_hypothesis_containing_it(encoded) -> None:
    model, enc, enc_lens = encoded
    (plain,) = modified_beam_search(model, enc[1:2], enc_lens[1:2], beam_size=4)
    best = plain[0].tokens
    # The shortest phrase that some other hypothesis contains and the best one does not.
    phrase = min(
        (
            h.tokens[i : i + n]
            for h in plain[1:]
            for n in range(1, len(h.tokens) + 1)
            for i in range(len(h.tokens) - n + 1)
            if not any(best[j : j + n] == h.tokens[i : i + n] for j in range(len(best) - n + 1))
        ),
        key=len,
    )
    graph = ContextGraph([phrase], default_score=5.0)
    (biased,) = modified_beam_search(model, enc[1:2], enc_lens[1:2], beam_size=4, context_graph=graph)

    def occurrences(tokens: list[int]) -> int:
        return sum(tokens[i : i + len(phrase)] == phrase for i in range(len(tokens) - len(phrase) + 1))

    assert occurrences(biased[0].tokens) >= 1
    for h in biased:
        # Finalised: exactly the reward of the completed occurrences, no dangling prefix bonus.
        assert h.context_score == pytest.approx(5.0 * len(phrase) * occurrences(h.tokens))
    assert biased[0].score > plain[0].score


def _greedy_with_bonus(model: HybridTransducer, enc: torch.Tensor, graph: ContextGraph) -> list[int]:
    """Reference for beam 1: at each frame take the token with the best log-prob + hotword delta."""
    blank, ctx = model.blank_id, model.predictor.context_size
    tokens: list[int] = []
    state = graph.root
    for t in range(enc.size(0)):
        context = torch.tensor([((blank,) * ctx + tuple(tokens))[-ctx:]])
        dec = model.joiner.decoder_proj(model.predictor(context, need_pad=False)).squeeze(1)
        lp = model.joiner(model.joiner.encoder_proj(enc[t : t + 1]), dec, project_input=False).log_softmax(-1)[0]
        scores = [
            lp[v].item() + (0.0 if v == blank else graph.forward_one_step(state, v)[0]) for v in range(lp.numel())
        ]
        best = max(range(len(scores)), key=scores.__getitem__)
        if best != blank:
            tokens.append(best)
            state = graph.forward_one_step(state, best)[1]
    return tokens


def test_hotword_bonus_takes_part_in_choosing_the_beam(encoded) -> None:
    # With beam 1 the search must pick, at each frame, the token whose log-prob plus
    # the hotword score change (reward, or a broken match's bonus given back) is best;
    # ranking on the old score ignored both, so beam 1 stayed plain greedy search.
    model, enc, enc_lens = encoded
    greedy = transducer_greedy_search(model, enc[:1], enc_lens[:1])[0]
    graph = ContextGraph([[3, 5], [6]], default_score=1.5)
    with torch.no_grad():
        expected = _greedy_with_bonus(model, enc[0, : enc_lens[0]], graph)
        (hyps,) = modified_beam_search(model, enc[:1], enc_lens[:1], beam_size=1, context_graph=graph)
    assert expected != greedy, "the bonus must change a choice for the test to mean anything"
    assert hyps[0].tokens == expected


def test_nbest_search_adds_the_ctc_log_likelihood(encoded) -> None:
    from dsr.decoding.search import SearchOptions, nbest_search

    model, enc, enc_lens = encoded
    nbest = nbest_search(model, enc, enc_lens, "modified-beam-search", SearchOptions(beam_size=3))
    plain = modified_beam_search(model, enc, enc_lens, beam_size=3)
    assert [[h.tokens for h in hs] for hs in nbest] == [[h.tokens for h in hs] for hs in plain]
    with torch.no_grad():
        log_probs = model.ctc_log_probs(enc)
    finite = 0
    for i, hyps in enumerate(nbest):
        n = int(enc_lens[i])
        for h in hyps:
            # One utterance and one hypothesis at a time: checks the batching of the scores.
            nll = torch.nn.functional.ctc_loss(
                log_probs[i, :n, None],
                torch.tensor([h.tokens]),
                torch.tensor([n]),
                torch.tensor([len(h.tokens)]),
                reduction="sum",
            )
            assert h.ctc_score == pytest.approx(-float(nll), rel=1e-5)
            finite += math.isfinite(h.ctc_score)
    assert finite >= 3


def test_bad_arguments_raise(encoded) -> None:
    model, enc, enc_lens = encoded
    with pytest.raises(ValueError, match="beam_size"):
        modified_beam_search(model, enc, enc_lens, beam_size=0)
    with pytest.raises(ValueError, match="nbest"):
        modified_beam_search(model, enc, enc_lens, beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="encoder_lens"):
        modified_beam_search(model, enc, enc_lens[:1])


# ---------------------------------------------------------------- the dsr decode stage


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict[str, Path]:
    """A lang dir, a random-weight checkpoint and 3 cuts of random features: enough for
    the decode stage to run every method end to end in about a second."""

    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("decode")
    texts = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]
    train_bpe(texts * 30, root / "lang", vocab_size=40)
    vocab = Tokenizer(root / "lang").vocab_size
    # 80-dim features: dsr transcribe computes the standard FBANK.
    model = small_model(vocab_size=vocab, blank_bias=0.0, feature_dim=80)
    ckpt = {"model_config": model_config(vocab, 80).to_dict(), "model": model.state_dict()}
    save_checkpoint(root / "exp" / "epoch-1.pt", ckpt)
    write_feature_cuts(root, texts, (150, 110, 80))
    (root / "hotwords.txt").write_text("KITCHEN LIGHTS\t4\nPARIS\n")
    return {"root": root, "exp": root / "exp", "lang": root / "lang", "cuts": root / "toy_cuts_test.jsonl.gz"}


def test_decode_stage_writes_nbest_files(exp: dict[str, Path]) -> None:
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.decoding.decode import decode
    from dsr.decoding.methods import ATTENTION_METHODS, METHODS, NBEST_METHODS
    from dsr.lang.bpe import Tokenizer

    # Through the CLI: beam 1 must reproduce greedy search's recognitions.
    args = [
        "decode",
        "--exp-dir",
        str(exp["exp"]),
        "--cuts",
        str(exp["cuts"]),
        "--lang-dir",
        str(exp["lang"]),
        "--device",
        "cpu",
        "-m",
        "greedy",
        "-m",
        "modified-beam-search",
        "--beam-size",
        "1",
    ]
    proc = CliRunner().invoke(app, args)
    assert proc.exit_code == 0, proc.output
    out = exp["exp"] / "decode"
    greedy_recogs = (out / "greedy/toy_test/recogs.txt").read_text()
    assert (out / "modified-beam-search/toy_test/recogs.txt").read_text() == greedy_recogs

    hotwords = exp["root"] / "hotwords.txt"
    # Every method but attention rescoring (tests/test_attention_rescoring.py): this model has no decoder.
    whisper_only = ("whisper-greedy", "whisper-beam-search", "faster-whisper")
    methods = tuple(m for m in METHODS if m not in ATTENTION_METHODS and m not in whisper_only)
    results = decode(
        exp["exp"],
        exp["cuts"],
        exp["lang"],
        methods=methods,
        device="cpu",
        progress=False,
        beam_size=3,
        nbest=2,
        hotwords_file=hotwords,
        hotword_score=1.5,
    )
    assert [r.method for r in results] == list(methods)
    tok = Tokenizer(exp["lang"])
    ctc_scores = []
    for r in results:
        info = json.loads((r.out_dir / "result.json").read_text())
        assert info["num_utts"] == 3 and info["ref_words"] == 17
        nbest_file = r.out_dir / "nbest.jsonl"
        if r.method not in NBEST_METHODS:
            assert info["beam_size"] is None and not nbest_file.exists()
            continue
        assert (info["beam_size"], info["nbest"], info["hotword_score"]) == (3, 2, 1.5)
        assert info["hotwords_file"] == str(hotwords)
        recogs = (r.out_dir / "recogs.txt").read_text()
        records = [json.loads(line) for line in nbest_file.read_text().splitlines()]
        assert [rec["utt_id"] for rec in records] == ["u0", "u1", "u2"]
        for rec in records:
            hyps = rec["hyps"]
            assert len(hyps) == 2 and rec["ref"]
            # The first hypothesis is the 1-best that recogs.txt scored.
            assert f"{rec['utt_id']}:\thyp={hyps[0]['text'].split()}" in recogs
            assert hyps[0]["am_score"] + hyps[0]["context_score"] >= hyps[1]["am_score"] + hyps[1]["context_score"]
            for h in hyps:
                assert h["text"] == tok.decode(h["tokens"]) and len(h["timestamps"]) == len(h["tokens"])
                if r.method == "ctc-prefix-beam-search":
                    assert h["ctc_score"] == h["am_score"]
                else:
                    ctc_scores.append(h["ctc_score"])
    # Transducer hypotheses carry their CTC log-likelihood; this random model repeats
    # tokens on consecutive frames, which CTC cannot produce in time: those are null.
    assert len(ctc_scores) == 6 and all(c is None or c < 0 for c in ctc_scores)


def test_transcribe_with_beam_search_and_hotwords(exp: dict[str, Path]) -> None:
    import numpy as np
    import soundfile as sf

    from dsr.decoding.decode import decode
    from dsr.decoding.transcribe import transcribe
    from dsr.errors import DsrUserError

    wav = exp["root"] / "noise.wav"
    sf.write(wav, np.random.default_rng(0).normal(0, 0.1, 24000).astype(np.float32), 16000)
    hot = exp["root"] / "hotwords.txt"
    greedy = transcribe([wav], exp["exp"], exp["lang"], method="greedy", device="cpu")
    beam1 = transcribe([wav], exp["exp"], exp["lang"], method="modified-beam-search", device="cpu", beam_size=1)
    assert beam1 == greedy and greedy[0][1]
    biased = transcribe(
        [wav], exp["exp"], exp["lang"], method="ctc-prefix-beam-search", device="cpu", hotwords_file=hot
    )
    assert biased[0][0] == wav and isinstance(biased[0][1], str)  # hotwords load and run through transcribe
    with pytest.raises(DsrUserError, match="^hotwords_file: needs method"):
        transcribe([wav], exp["exp"], exp["lang"], method="greedy", device="cpu", hotwords_file=hot)
    with pytest.raises(DsrUserError, match="^nbest: must be between 1 and `beam_size`=2"):
        decode(
            exp["exp"],
            exp["cuts"],
            exp["lang"],
            methods=("modified-beam-search",),
            device="cpu",
            beam_size=2,
            nbest=3,
            progress=False,
        )


def test_decode_with_lexicon_expansion_keeps_the_first_pass(exp: dict[str, Path]) -> None:
    from dsr.decoding.decode import decode
    from dsr.decoding.options import ExpandOptions
    from dsr.errors import DsrUserError

    methods = ("modified-beam-search", "ctc-prefix-beam-search")
    plain = decode(exp["exp"], exp["cuts"], exp["lang"], methods=methods, device="cpu", progress=False, beam_size=3)
    # A word list one letter away from the 1-best's words, so that every long word has a respelling.
    words = {
        w
        for r in plain
        for line in (r.out_dir / "nbest.jsonl").read_text().splitlines()
        for w in json.loads(line)["hyps"][0]["text"].split()
    }
    swap = str.maketrans("AEIOUT", "EIOUAE")
    lexicon = exp["root"] / "words.txt"
    lexicon.write_text("".join(w.translate(swap) + "\n" for w in words if len(w) > 4))
    expanded = decode(
        exp["exp"],
        exp["cuts"],
        exp["lang"],
        methods=methods,
        device="cpu",
        progress=False,
        beam_size=3,
        expand_lexicon=lexicon,
        expand_options=ExpandOptions(max_am_drop=1e4, parents=1),
    )
    num_added = 0
    for p, e in zip(plain, expanded):
        assert e.method == f"{p.method}+lexicon" and e.wer == p.wer
        info = json.loads((e.out_dir / "result.json").read_text())
        assert info["expand_lexicon"] == str(lexicon) and info["expand_options"]["parents"] == 1
        assert (e.out_dir / "recogs.txt").read_text() == (p.out_dir / "recogs.txt").read_text()
        for a, b in zip(
            (p.out_dir / "nbest.jsonl").read_text().splitlines(), (e.out_dir / "nbest.jsonl").read_text().splitlines()
        ):
            first, more = json.loads(a)["hyps"], json.loads(b)["hyps"]
            assert more[: len(first)] == first and all(h["source"] == "search" for h in first)
            added = more[len(first) :]
            for h in added:
                assert h["source"] == "lexicon" and h["am_score"] is not None
                assert "ctc_score" in h and h["text"] not in {f["text"] for f in first}
            num_added += len(added)
            if p.method == "ctc-prefix-beam-search" and added:
                # The CTC search's acoustic score is the CTC log-likelihood, so every variant's
                # am_score is its exact CTC score shifted by one per-utterance constant (the
                # parent's search score minus its exact score).
                shifts = [h["am_score"] - h["ctc_score"] for h in added]
                assert max(shifts) - min(shifts) < 1e-3
    assert num_added > 0

    def count_added(results) -> int:
        return sum(
            sum(h["source"] == "lexicon" for h in json.loads(line)["hyps"])
            for r in results
            for line in (r.out_dir / "nbest.jsonl").read_text().splitlines()
        )

    assert count_added(expanded) == num_added
    three = decode(
        exp["exp"],
        exp["cuts"],
        exp["lang"],
        methods=methods,
        device="cpu",
        progress=False,
        beam_size=3,
        expand_lexicon=lexicon,
        expand_options=ExpandOptions(max_am_drop=1e4, parents=3),
    )
    assert count_added(three) > num_added  # the 2nd and 3rd hypotheses' non-words too
    with pytest.raises(DsrUserError, match="^expand_lexicon: needs n-best methods"):
        decode(
            exp["exp"],
            exp["cuts"],
            exp["lang"],
            methods=("greedy",),
            device="cpu",
            progress=False,
            expand_lexicon=lexicon,
        )
