"""``dsr train --pretrained WHISPER --speech-llm LLM`` and ``dsr decode -m speech-llm-*`` on a tiny
random Whisper (written by tests/whisper_fixtures.py, converted by ``dsr whisper convert``) and a
tiny random DeepSeek-V3 LLM, on whisper-fbank features computed by ``dsr features``: the path the
ARCTIC recipe takes with whisper-tiny.en and SmolLM2.  A few seconds on one thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers", reason="the speech-LLM needs the optional 'lm' packages (transformers, ...)")
pytest.importorskip("tokenizers", reason="the tiny Whisper's and LLM's tokenizers need 'tokenizers'")

import torch  # noqa: E402
import whisper_fixtures as fx  # noqa: E402
from test_speech_llm import tiny_llm, tiny_tokenizer  # noqa: E402
from test_speech_llm_train import dsr_ok, dsr_user_error  # noqa: E402
from test_whisper_finetune import random_whisper, write_manifests  # noqa: E402

from dsr.lang.bpe import train_bpe  # noqa: E402

TEXTS = ["the cat sat", "hello world", "the end", "the cat sat on the mat", "hello the cat", "world end"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("speech_llm_whisper")
    tok_json = fx.tiny_tokenizer_json()
    dims, sd = random_whisper(tok_json)
    (root / "tokenizer.json").write_text(tok_json)
    fx.write_openai_pt(root / "tiny.pt", dims, sd, half=False)
    dsr_ok("whisper", "convert", root / "tiny.pt", root / "whisper", "--tokenizer", root / "tokenizer.json")
    write_manifests(root, "train", TEXTS, seed=0)
    write_manifests(root, "test", TEXTS[:3], seed=50)
    dsr_ok(
        "features",
        "--corpus",
        "tiny",
        "--split",
        "train",
        "--split",
        "test",
        "--manifest-dir",
        root / "manifests",
        "--out-dir",
        root / "fbank",
        "-j",
        1,
        "--feature-type",
        "whisper-fbank",
    )
    train_bpe(TEXTS * 20, root / "lang", vocab_size=20)
    tok = tiny_tokenizer(chat=True)
    tiny_llm("deepseek_v3", tok).save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return {
        "root": root,
        "whisper": root / "whisper",
        "whisper_sd": sd,
        "lang": root / "lang",
        "llm": root / "llm",
        "train": root / "fbank" / "tiny_cuts_train.jsonl.gz",
        "test": root / "fbank" / "tiny_cuts_test.jsonl.gz",
    }


def train_args(work: dict[str, Any], exp: Path, *extra: Any) -> list[Any]:
    return [
        "train",
        "--pretrained",
        work["whisper"],
        "--speech-llm",
        work["llm"],
        "--train-cuts",
        work["train"],
        "--dev-cuts",
        work["test"],
        "--lang-dir",
        work["lang"],
        "--exp-dir",
        exp,
        "--max-duration",
        2.5,
        "--num-buckets",
        1,
        "--num-epochs",
        1,
        "--max-steps",
        3,
        "--warmup-steps",
        1,
        "--log-interval",
        1,
        "--num-threads",
        1,
        "--device",
        "cpu",
        "--no-spec-augment",
        "--projector-stack",
        3,
        *extra,
    ]


def test_whisper_encoder_speech_llm_trains_and_decodes(work, capsys):
    exp = work["root"] / "exp"
    dsr_ok(*train_args(work, exp, "--ctc-loss-scale", 0.5))
    ckpt = torch.load(exp / "epoch-1.pt", map_location="cpu", weights_only=False)
    # Stage 1: Whisper's encoder weights, untouched, travel with the checkpoint; no LLM weights do.
    encoder = {k: v for k, v in work["whisper_sd"].items() if k.startswith("encoder.")}
    assert encoder and all(torch.equal(ckpt["model"][k], v) for k, v in encoder.items())
    assert not any(k.startswith("llm.") for k in ckpt["model"])
    assert ckpt["frontend"]["type"] == "whisper-fbank" and ckpt["ctc_vocab_size"] == 20
    assert ckpt["speech_llm_config"]["encoder"]["encoder_type"] == "whisper"
    dsr_ok(
        "decode",
        "--exp-dir",
        exp,
        "--cuts",
        work["test"],
        "-m",
        "speech-llm-greedy",
        "-m",
        "speech-llm-beam-search",
        "--beam-size",
        2,
        "--device",
        "cpu",
        "--num-threads",
        1,
    )
    for method in ("speech-llm-greedy", "speech-llm-beam-search"):
        result = json.loads((exp / "decode" / method / "tiny_test" / "result.json").read_text())
        assert result["num_utts"] == 3 and result["rtf"] > 0
    # Kaldi FBANK cuts for a Whisper encoder: one line naming both front ends.
    from tiny_corpus import make_tiny_corpus

    kaldi = make_tiny_corpus(work["root"] / "kaldi")
    line = dsr_user_error(
        capsys,
        "train",
        "--pretrained",
        work["whisper"],
        "--speech-llm",
        work["llm"],
        "--train-cuts",
        kaldi["train_cuts"],
        "--dev-cuts",
        "",
        "--ctc-loss-scale",
        0,
        "--exp-dir",
        work["root"] / "exp-kaldi",
        "--device",
        "cpu",
    )
    assert "whisper-fbank" in line and "kaldi-fbank" in line
