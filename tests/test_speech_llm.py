"""Speech-LLM (dsr/models/speech_llm.py): projector, prompt and loss, batched KV-cached search, length guard.

Tiny random LLMs built here (DeepSeek-V3, Qwen2 and Llama configurations, hidden size 32,
two layers) on a byte-level BPE tokenizer trained on a few sentences, with and without a
ChatML chat template; a tiny Conformer is the encoder.  All on one thread in a few seconds.
"""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers", reason="the speech-LLM needs the optional 'lm' packages (transformers, ...)")
pytest.importorskip("tokenizers", reason="the tiny LLM's tokenizer needs 'tokenizers'")

import torch  # noqa: E402

from dsr.decoding.speech_llm_search import (  # noqa: E402
    SpeechLLMSearchOptions,
    speech_llm_beam_search,
    speech_llm_greedy_search,
)
from dsr.errors import DsrUserError  # noqa: E402
from dsr.models.config import ModelConfig  # noqa: E402
from dsr.models.speech_llm import (  # noqa: E402
    IGNORE_INDEX,
    FrameStackProjector,
    SpeechLLMConfig,
    build_prompt,
    build_speech_llm,
    llm_target,
)

TEXTS = ["the cat sat on the mat", "hello world", "turn on the kitchen lights", "set a timer"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
#: A tiny Conformer (80-dim features, 4x subsampling).
TINY_ENCODER = dict(
    feature_dim=80,
    encoder_dim=16,
    num_encoder_layers=1,
    num_heads=2,
    ffn_dim=32,
    conv_kernel_size=5,
    subsampling_channels=(4, 8),
    dropout=0.0,
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_tokenizer(chat: bool):
    from dsr.lm.train_scratch import train_bpe_tokenizer

    tok = train_bpe_tokenizer(TEXTS * 3, 300)
    if chat:
        tok.chat_template = CHATML
    return tok


def tiny_llm(kind: str, tok, seed: int = 0):
    """A random causal LM of family ``kind`` for ``tok`` (eval mode)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from dsr.lm.train_scratch import LmSize, build_config

    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=256,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    else:
        cfg = build_config(
            kind, len(tok), LmSize(32, 2, 2, 4, 256), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()


def tiny_speech_llm(
    kind: str = "qwen2", chat: bool = True, stack: int = 2, lora_rank: int = 0, hotwords: tuple[str, ...] = ()
):
    tok = tiny_tokenizer(chat)
    llm = tiny_llm(kind, tok)
    cfg = SpeechLLMConfig(
        encoder=ModelConfig(**TINY_ENCODER).to_dict(),
        llm_path="-",
        llm_fingerprint="-",
        llm_dim=32,
        projector_stack=stack,
        lora_rank=lora_rank,
    )
    torch.manual_seed(1)
    return build_speech_llm(cfg, llm, tok, hotwords=hotwords).eval(), tok


def features(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), 80, generator=g)
    return x, torch.tensor(lengths)


# ---------------------------------------------------------------- projector


def test_projector_stacks_k_frames_and_masks_padding():
    proj = FrameStackProjector(encoder_dim=4, llm_dim=6, stack=3, hidden_dim=5)
    x = torch.randn(2, 7, 4)
    lens = torch.tensor([7, 4])
    out, out_lens = proj(x, lens)
    assert out.shape == (2, 3, 6) and out_lens.tolist() == [3, 2]
    # Embedding j of a row is the MLP of its frames 3j..3j+2 concatenated (zeros past its length).
    manual = torch.cat([x[1, 3:4], torch.zeros(2, 4)]).reshape(1, 12)
    expected = proj.linear2(torch.relu(proj.linear1(manual)))[0]
    assert torch.allclose(out[1, 1], expected, atol=1e-6)
    assert torch.allclose(out[0, 0], proj.linear2(torch.relu(proj.linear1(x[0, :3].reshape(1, 12))))[0], atol=1e-6)
    # Padding frames do not leak into the last group.
    y = x.clone()
    y[1, 4:] = 100.0
    assert torch.equal(proj(y, lens)[0][1, :2], out[1, :2])
    assert proj.output_lengths(torch.tensor([1, 3, 4, 6])).tolist() == [1, 1, 2, 2]
    for bad in (
        dict(encoder_dim=0, llm_dim=6, stack=3),
        dict(encoder_dim=4, llm_dim=6, stack=0),
        dict(encoder_dim=4, llm_dim=6, stack=2, hidden_dim=-1),
    ):
        with pytest.raises(ValueError):
            FrameStackProjector(**bad)
    with pytest.raises(ValueError):
        proj(torch.randn(2, 7, 5), lens)


# ---------------------------------------------------------------- prompt and loss


def test_prompt_uses_chat_template_and_hotwords():
    tok = tiny_tokenizer(chat=True)
    prompt = build_prompt(tok, "Transcribe the speech.", hotwords=["kitchen", "timer"])
    before = tok.decode(prompt.prefix)
    assert before.startswith("<|im_start|>system\nTranscribe the speech. Words that may occur: kitchen, timer.")
    assert before.endswith("<|im_start|>user\n")
    assert tok.decode(prompt.suffix) == "<|im_end|>\n<|im_start|>assistant\n"
    assert prompt.eos == tok.eos_token_id
    plain = build_prompt(tiny_tokenizer(chat=False), "Transcribe the speech.")
    assert plain.prefix[0] == tok.bos_token_id and "<|im_start|>" not in plain.text
    assert llm_target("THE CAT SAT") == "The cat sat" and llm_target("Hello,  world.") == "Hello, world."


@pytest.mark.parametrize("kind", ["deepseek_v3", "qwen2", "llama"])
def test_only_transcript_and_eos_are_trained(kind):
    model, tok = tiny_speech_llm(kind)
    feats, lens = features([40, 29, 17])
    targets = [tok.encode(t, add_special_tokens=False) for t in ("the cat sat", "hello", "")]
    enc, enc_lens = model.encode(feats, lens)
    speech, speech_lens = model.speech_embeddings(enc, enc_lens)
    inputs = model.make_inputs(speech, speech_lens, targets)
    p, q = len(model.prompt.prefix), len(model.prompt.suffix)
    for i, t in enumerate(targets):
        row = inputs.targets[i]
        trained = row[row != IGNORE_INDEX].tolist()
        assert trained == t + [model.eos_id]  # transcript and EOS, nothing of the prompt or speech
        real = int(inputs.mask[i].sum())
        assert real == p + int(speech_lens[i]) + q + len(t)
        # The first trained position is the prompt's last one; positions count the row's own tokens.
        first = inputs.targets.size(1) - real + p + int(speech_lens[i]) + q - 1
        assert row[first] == (t + [model.eos_id])[0] and (row[:first] == IGNORE_INDEX).all()
        assert inputs.positions[i, -1] == real - 1
    # The loss is -sum log p(transcript + EOS | prompt, speech) of a plain forward pass, per row.
    with torch.no_grad():
        out = model(feats, lens, targets)
    assert int(out["num_tokens"]) == sum(len(t) + 1 for t in targets)
    manual = torch.zeros(())
    for i, t in enumerate(targets):
        one = model.make_inputs(speech[i : i + 1, : speech_lens[i]], speech_lens[i : i + 1], [t])
        with torch.no_grad():
            logits = model.llm(inputs_embeds=one.embeds, attention_mask=one.mask, position_ids=one.positions).logits[0]
        keep = one.targets[0] != IGNORE_INDEX
        manual -= torch.log_softmax(logits[keep].float(), -1).gather(1, one.targets[0][keep][:, None]).sum()
    assert float(out["llm_loss"]) == pytest.approx(float(manual), rel=1e-4)
    # ... and the score of a hypothesis is its negative, row by row.
    scores = model.score(enc, enc_lens, [[t] for t in targets])
    assert sum(s[0] for s in scores) == pytest.approx(-float(out["llm_loss"]), rel=1e-4)


def test_ctc_head_adds_its_loss():
    tok = tiny_tokenizer(chat=False)
    cfg = SpeechLLMConfig(
        encoder=ModelConfig(**TINY_ENCODER).to_dict(), llm_path="-", llm_fingerprint="-", llm_dim=32, use_ctc=True
    )
    model = build_speech_llm(cfg, tiny_llm("qwen2", tok), tok, ctc_vocab_size=10, blank_id=0)
    feats, lens = features([40, 30])
    out = model(feats, lens, [[5, 6], [7]], ctc_targets=[[1, 2], [3]])
    assert set(out) == {"llm_loss", "num_tokens", "num_frames", "ctc_loss"} and torch.isfinite(out["ctc_loss"])
    with pytest.raises(ValueError):
        model(feats, lens, [[5, 6], [7]])


# ---------------------------------------------------------------- search


@pytest.mark.parametrize("kind", ["deepseek_v3", "qwen2", "llama"])
def test_batch_decoding_equals_one_by_one(kind):
    model, _ = tiny_speech_llm(kind, lora_rank=4 if kind == "llama" else 0)
    feats, lens = features([48, 33, 20, 41], seed=3)
    durations = [0.3, 0.5, 0.2, 0.4]
    enc, enc_lens = model.encode(feats, lens)
    greedy = speech_llm_greedy_search(model, enc, enc_lens, durations)
    beam = speech_llm_beam_search(model, enc, enc_lens, durations, SpeechLLMSearchOptions(beam_size=3))
    assert all(len(hs) == 3 for hs in beam)
    for i in range(len(durations)):
        n = int(enc_lens[i])
        one = speech_llm_greedy_search(model, enc[i : i + 1, :n], enc_lens[i : i + 1], durations[i : i + 1])[0]
        assert one.tokens == greedy[i].tokens and one.finished == greedy[i].finished
        assert one.score == pytest.approx(greedy[i].score, abs=1e-4)
        one_beam = speech_llm_beam_search(
            model, enc[i : i + 1, :n], enc_lens[i : i + 1], durations[i : i + 1], SpeechLLMSearchOptions(beam_size=3)
        )[0]
        assert [h.tokens for h in one_beam] == [h.tokens for h in beam[i]]
        assert [h.score for h in one_beam] == pytest.approx([h.score for h in beam[i]], abs=1e-4)
        # The beam's best is at least as likely as greedy's when both finished.
        best = beam[i][0]
        assert best.score >= greedy[i].score - 1e-4 or not (best.finished and greedy[i].finished)
    # Scores are the model's teacher-forced log-probabilities of the hypotheses (EOS included when finished).
    finished = [[h.tokens for h in hs if h.finished] for hs in beam]
    rescored = model.score(enc, enc_lens, finished)
    for hs, ss in zip(beam, rescored):
        assert [h.score for h in hs if h.finished] == pytest.approx(ss, abs=1e-3)


def test_length_guard_stops_a_model_that_never_emits_eos():
    model, _ = tiny_speech_llm("qwen2")
    eos = model.eos_id

    def no_eos(module, args, output):
        output = output.clone()
        output[..., eos] = -1e9  # the end token is never likely
        return output

    model.base_llm().get_output_embeddings().register_forward_hook(no_eos)
    feats, lens = features([40, 24])
    enc, enc_lens = model.encode(feats, lens)
    opts = SpeechLLMSearchOptions(beam_size=2, max_tokens_per_second=10.0, max_new_tokens=50)
    durations = [0.4, 5.0]
    limits = [opts.limit(d) for d in durations]
    assert limits == [8, 50]
    greedy = speech_llm_greedy_search(model, enc, enc_lens, durations, opts)
    assert [len(h.tokens) for h in greedy] == limits and not any(h.finished for h in greedy)
    beam = speech_llm_beam_search(model, enc, enc_lens, durations, opts)
    for hs, limit in zip(beam, limits):
        assert len(hs) == 2 and all(len(h.tokens) == limit and not h.finished for h in hs)
    with pytest.raises(ValueError):
        SpeechLLMSearchOptions(beam_size=0)


def test_checkpoint_names_and_checks_its_llm(tmp_path):
    from dsr.lm.load import fingerprint
    from dsr.models.speech_llm import speech_llm_from_checkpoint

    tok = tiny_tokenizer(chat=True)
    llm = tiny_llm("qwen2", tok)
    llm_dir = tmp_path / "llm"
    llm.save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    cfg = SpeechLLMConfig(
        encoder=ModelConfig(**TINY_ENCODER).to_dict(),
        llm_path=str(llm_dir),
        llm_fingerprint=fingerprint(llm_dir),
        llm_dim=32,
        lora_rank=4,
    )
    model = build_speech_llm(cfg, llm, tok)
    state = model.trainable_state_dict()
    # Projector, encoder, adapters; never the LLM's own weights.
    assert any(k.startswith("projector.") for k in state) and any(k.startswith("encoder.") for k in state)
    assert any("lora_" in k for k in state) and all("lora_" in k for k in state if k.startswith("llm."))
    ckpt = {"model": state, "speech_llm_config": cfg.to_dict()}
    loaded, _, loaded_cfg = speech_llm_from_checkpoint(ckpt, "ckpt")
    assert loaded_cfg == cfg
    for k, v in state.items():
        assert torch.equal(loaded.trainable_state_dict()[k], v), k
    # Another LLM (here: the same directory, retrained) is a one-line error naming both.
    tiny_llm("qwen2", tok, seed=7).save_pretrained(llm_dir)
    with pytest.raises(DsrUserError, match=r"belongs to the LLM .*fingerprint"):
        speech_llm_from_checkpoint(ckpt, "ckpt")
    with pytest.raises(DsrUserError, match="not a speech-LLM checkpoint"):
        speech_llm_from_checkpoint({"model": {}}, "ckpt")


def test_rerank_nbest_by_speech_llm_likelihood():
    from dsr.decoding.speech_llm_decode import rerank_nbest

    model, tok = tiny_speech_llm("qwen2")
    feats, lens = features([40, 28], seed=5)
    enc, enc_lens = model.encode(feats, lens)
    nbest = [
        [
            {"text": "THE CAT SAT", "am_score": -1.0},
            {"text": "HELLO WORLD", "am_score": -2.0},
            {"text": "SET A", "am_score": None},
        ],
        # The first pass ranked by (am + hotword bonus + fused LM) / rank_norm: -2 / 2 > -3.5 / 1 > -1.5 / 0.25.
        [
            {"text": "TURN ON", "am_score": -3.0, "context_score": 1.0, "rank_norm": 2.0},
            {"text": "THE MAT", "am_score": -3.5},
            {"text": "ON THE", "am_score": -3.0, "lm_score": 1.5, "rank_norm": 0.25},
        ],
    ]
    own = model.score(
        enc, enc_lens, [[tok.encode(llm_target(h["text"]), add_special_tokens=False) for h in hs] for hs in nbest]
    )
    # Scale 0: the first pass's order (an impossible first-pass score last); the speech-LLM scores recorded.
    kept = rerank_nbest(model, tok, enc, enc_lens, nbest, scale=0.0)
    assert [[h["text"] for h in hs] for hs in kept] == [[h["text"] for h in hs] for hs in nbest]
    assert [h["speech_llm_score"] for h in kept[1]] == pytest.approx(own[1], abs=1e-5)
    # A large scale: the speech-LLM's order among hypotheses with a first-pass score.
    by_llm = rerank_nbest(model, tok, enc, enc_lens, nbest, scale=1e6)
    for hs, ss, orig in zip(by_llm, own, nbest):
        finite = [(s / h.get("rank_norm", 1.0), h["text"]) for h, s in zip(orig, ss) if h["am_score"] is not None]
        assert [h["text"] for h in hs if h["am_score"] is not None] == [t for _, t in sorted(finite, reverse=True)]
        for h in hs:
            am = h["am_score"]
            first = -math.inf if am is None else am + h.get("context_score", 0.0) + h.get("lm_score", 0.0)
            assert h["total_score"] == (first + 1e6 * h["speech_llm_score"]) / h.get("rank_norm", 1.0)


def test_per_utterance_prompts_with_hotwords():
    model, tok = tiny_speech_llm("qwen2")
    hot = build_prompt(tok, "Transcribe the speech.", hotwords=["kitchen lights", "timer"])
    assert len(hot.prefix) > len(model.prompt.prefix)
    feats, lens = features([40, 29])
    targets = [tok.encode(t, add_special_tokens=False) for t in ("turn on the kitchen lights", "set a timer")]
    enc, enc_lens = model.encode(feats, lens)
    speech, speech_lens = model.speech_embeddings(enc, enc_lens)
    inputs = model.make_inputs(speech, speech_lens, targets, prompts=[model.prompt, hot])
    for i, t in enumerate(targets):
        row = inputs.targets[i]
        assert row[row != IGNORE_INDEX].tolist() == t + [model.eos_id]
    assert int(inputs.mask[1].sum()) == len(hot.prefix) + int(speech_lens[1]) + len(hot.suffix) + len(targets[1])
    # Each row's loss is its own prompt's: the batch equals the rows alone.
    with torch.no_grad():
        both = model(feats, lens, targets, prompts=[model.prompt, hot])["llm_loss"]
        alone = [
            model(feats[i : i + 1, : lens[i]], lens[i : i + 1], targets[i : i + 1], prompts=[p])["llm_loss"]
            for i, p in enumerate([model.prompt, hot])
        ]
    assert float(both) == pytest.approx(float(alone[0] + alone[1]), rel=1e-4)
    with pytest.raises(ValueError):
        model.make_inputs(speech, speech_lens, targets, prompts=[hot])


def test_training_hotwords_come_from_the_batch():
    import random

    from dsr.training.speech_llm import sample_hotwords

    texts = ["Turn on the kitchen lights.", "SET A TIMER FOR FIVE MINUTES", "Hello, world!"]
    rng = random.Random(0)
    for _ in range(50):
        i = rng.randrange(3)
        words = sample_hotwords(texts, i, rng)
        assert 1 <= len(words) <= 3 and len(set(words)) == len(words)
        vocab = [set(llm_target(t).replace(",", "").replace(".", "").replace("!", "").split()) for t in texts]
        assert any(set(w.split()) <= vocab[i] for w in words)  # a phrase of its own transcript
        assert all(any(set(w.split()) <= v for v in vocab) for w in words)  # the rest from the batch
    assert sample_hotwords(["only one"], 0, random.Random(1)) in (("only",), ("one",), ("only one",))
