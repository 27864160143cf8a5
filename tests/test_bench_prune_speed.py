"""bench/prune_speed.py: its --model spec and its ratios (reference first, per runtime)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import prune_speed  # noqa: E402


def test_model_spec_parses_and_rejects() -> None:
    spec = prune_speed.parse_model("pruned=exp/p:2:1:exp/p/onnx")
    assert (spec.name, spec.exp_dir, spec.epoch, spec.avg, spec.onnx_dir) == (
        "pruned",
        Path("exp/p"),
        2,
        1,
        Path("exp/p/onnx"),
    )
    assert prune_speed.parse_model("full=exp/c:4:1").onnx_dir is None
    for bad in ("exp/c:4:1", "full=exp/c:4", "full=exp/c:x:1"):
        with pytest.raises(argparse.ArgumentTypeError):
            prune_speed.parse_model(bad)


def test_ratios_are_against_the_first_system_of_the_same_runtime() -> None:
    def system(label: str, runtime: str, texts: list[str], seconds: list[float]) -> prune_speed.System:
        s = prune_speed.System(label, runtime, label, lambda a: "")
        s.texts, s.seconds = texts, seconds
        return s

    refs = ["turn on the light", "stop"]
    rows = prune_speed.summarise(
        [
            system("dsr full", "dsr", refs, [0.2, 0.2]),
            system("dsr pruned", "dsr", ["turn on the night", "stop"], [0.1, 0.15]),
            system("sherpa-onnx full", "sherpa-onnx", refs, [0.1, 0.1]),
            system("sherpa-onnx pruned", "sherpa-onnx", refs, [0.05, 0.05]),
        ],
        refs,
        audio_seconds=2.0,
    )
    assert [round(r["speed_ratio"], 3) for r in rows] == [1.0, round(0.4 / 0.25, 3), 1.0, 2.0]
    assert [r["wer"] for r in rows] == [0.0, 20.0, 0.0, 0.0]
    assert rows[1]["rtf"] == pytest.approx(0.125)


def test_rounds_keep_each_utterance_fastest_time_and_first_texts() -> None:
    calls: list[int] = []

    def transcribe(a: np.ndarray) -> str:
        calls.append(len(a))
        return f"n{len(a)}"

    s = prune_speed.System("dsr x", "dsr", "x", transcribe)
    prune_speed.run_rounds([s], [np.zeros(3), np.zeros(5)], rounds=2)
    assert s.texts == ["n3", "n5"] and len(s.seconds) == 2 and calls == [3, 3, 5, 3, 5]


def test_batched_mode_decodes_what_dsr_decode_decodes(tmp_path: Path) -> None:
    """--cuts: dsr decode's batches of precomputed features, every cut once, its greedy texts."""
    import torch
    from tiny_corpus import write_feature_cuts

    from dsr.decoding.decode import decode
    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.models import ModelConfig, build_model
    from dsr.models.checkpoint import save_checkpoint

    texts = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]
    train_bpe(texts * 30, tmp_path / "lang", vocab_size=40)
    config = ModelConfig(
        feature_dim=80, encoder_dim=32, num_encoder_layers=1, num_heads=4, ffn_dim=64, conv_kernel_size=5,
        subsampling_channels=(4, 8), decoder_dim=24, joiner_dim=40, vocab_size=Tokenizer(tmp_path / "lang").vocab_size,
    )  # fmt: skip
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        model = build_model(config)
        with torch.no_grad():  # a sharper joiner emits a mix of blanks and tokens
            model.joiner.output_linear.weight.mul_(3.0)
        save_checkpoint(tmp_path / name / "epoch-1.pt", {"model_config": config.to_dict(), "model": model.state_dict()})
    cuts = write_feature_cuts(tmp_path, texts, (150, 110, 80))
    rows = prune_speed.main(
        ["--model", f"a={tmp_path / 'a'}:1:1", "--model", f"b={tmp_path / 'b'}:1:1", "--lang-dir",
         str(tmp_path / "lang"), "--cuts", str(cuts), "--max-duration", "2", "--rounds", "2"]
    )  # fmt: skip
    assert [r["system"] for r in rows] == ["dsr a (batched)", "dsr b (batched)"]
    assert rows[0]["speed_ratio"] == 1.0 and rows[1]["speed_ratio"] > 0
    for row, name in zip(rows, "ab"):
        (res,) = decode(tmp_path / name, cuts, tmp_path / "lang", methods=("greedy",), device="cpu", progress=False)
        assert row["wer"] == pytest.approx(res.wer)
    assert rows[0]["wer"] != rows[1]["wer"]  # two different models, so the rows are not one model's twice
    with pytest.raises(SystemExit):
        prune_speed.main(["--model", f"a={tmp_path / 'a'}:1:1", "--model", f"b={tmp_path / 'b'}:1:1",
                          "--lang-dir", str(tmp_path / "lang")])  # fmt: skip
