"""bench/decode.py on a model whose encoder is Whisper's (dsr train --pretrained): its
offline rows are timed and the streaming rows, which need a causal Conformer, are left out
instead of failing on an encoder that has no ``causal`` attribute.  Speed is not checked."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest
import torch
from bench_module import load_bench

from dsr.models.config import ModelConfig, build_model
from dsr.models.whisper.model import WhisperDims
from dsr.models.whisper.pretrained import whisper_model_config


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("decode")


def _tiny_whisper_transducer() -> torch.nn.Module:
    dims = WhisperDims(
        n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
        n_vocab=100, n_text_ctx=16, n_text_state=32, n_text_head=2, n_text_layer=1,
    )  # fmt: skip
    base = ModelConfig(vocab_size=20, decoder_dim=16, joiner_dim=16)
    torch.manual_seed(0)
    return build_model(whisper_model_config(base, dims, (), -1, whisper_decoder=False)).eval()


def test_whisper_encoder_gets_the_offline_rows_only(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    model = _tiny_whisper_transducer()
    lens = torch.tensor([60, 44])
    batches = [(torch.randn(1, int(n), 80), lens[i : i + 1]) for i, n in enumerate(lens)]
    args = argparse.Namespace(int8=False, repeats=1, chunk_ms=[320.0])
    with torch.inference_mode():
        bench.bench_model("trained", model, batches, audio_s=1.04, args=args)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [" ".join(r[2:-5]) for r in rows] == [
        "offline greedy",
        "offline greedy frame-by-frame",
        "offline beam-4",
    ]
    for row in rows:
        rtf, enc, search = map(float, row[-5:-2])
        assert rtf == pytest.approx(enc + search, abs=2e-4) and rtf > 0
