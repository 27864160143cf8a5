"""What ``dsr decode`` measures besides WER (CER, per-utterance latency, peak memory), how it
treats unreadable inputs (skipped, listed, every good one decoded; also ``dsr transcribe``),
decoding cuts that have only recordings, and the ``dsr results`` table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.utils import fastcopy
from tiny_corpus import write_feature_cuts

from dsr.models import ModelConfig, build_model

torch.set_num_threads(1)
TEXTS = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"]


@pytest.fixture(scope="module")
def exp(tmp_path_factory) -> dict[str, Path]:
    """A lang dir, a random-weight checkpoint and 3 cuts of random features."""
    from dsr.lang.bpe import Tokenizer, train_bpe
    from dsr.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("report")
    train_bpe(TEXTS * 30, root / "lang", vocab_size=40)
    config = ModelConfig(
        feature_dim=80,
        encoder_dim=32,
        num_encoder_layers=1,
        num_heads=4,
        ffn_dim=64,
        conv_kernel_size=5,
        subsampling_channels=(4, 8),
        decoder_dim=24,
        joiner_dim=40,
        vocab_size=Tokenizer(root / "lang").vocab_size,
    )
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():  # a sharper joiner emits a mix of blanks and tokens
        model.joiner.output_linear.weight.mul_(3.0)
    save_checkpoint(root / "exp" / "epoch-1.pt", {"model_config": config.to_dict(), "model": model.state_dict()})
    write_feature_cuts(root, TEXTS, (150, 110, 80))
    return {"root": root, "exp": root / "exp", "lang": root / "lang", "cuts": root / "toy_cuts_test.jsonl.gz"}


def run_decode(exp: dict[str, Path], cuts: Path, exp_dir: Path | None = None, **kw):
    """Decode ``cuts`` with the fixture's model; its outputs go to ``exp_dir`` when given."""
    from dsr.decoding.decode import decode

    if exp_dir is not None:
        exp_dir.mkdir()
        (exp_dir / "epoch-1.pt").symlink_to(exp["exp"] / "epoch-1.pt")
    return decode(exp_dir or exp["exp"], cuts, exp["lang"], device="cpu", progress=False, **kw)


def test_result_json_has_cer_latency_and_memory(exp: dict[str, Path]) -> None:
    results = run_decode(exp, exp["cuts"], methods=("greedy", "modified-beam-search"))
    for r in results:
        info = json.loads((r.out_dir / "result.json").read_text())
        assert info["num_utts"] == 3 and info["num_unreadable"] == 0 and info["unreadable"] == []
        # CER counts the characters of the normalised text, spaces ignored.
        assert info["ref_chars"] == sum(len(t.replace(" ", "")) for t in TEXTS)
        assert info["cer"] == pytest.approx(100 * info["char_errors"] / info["ref_chars"]) and r.cer == info["cer"]
        assert (r.out_dir / "cer.txt").read_text().split("\t")[1].startswith("%CER")
        lat = info["latency_ms"]
        assert set(lat) == {"mean", "p50", "p90", "max", "count"} and lat["count"] == 3
        assert 0 < lat["p50"] <= lat["p90"] <= lat["max"] <= 1000 * info["decode_seconds"]
        # One batch: every utterance waited for the whole batch, so they share one latency.
        assert lat["p50"] == lat["max"]
        assert isinstance(info["peak_rss_delta_mb"], float) and 0 <= info["peak_rss_delta_mb"] < 4096
        assert info["cuda_peak_mb"] is None and info["device"] == "cpu" and info["chunk_compute_ms"] is None


def test_decode_skips_and_lists_an_unreadable_feature_file(exp: dict[str, Path], tmp_path: Path, caplog) -> None:
    cuts = CutSet.from_file(exp["cuts"]).to_eager()
    bad = cuts[1]
    corrupt = tmp_path / "corrupt.lca"
    corrupt.write_bytes(b"not a lilcom file")
    repointed = fastcopy(bad, features=fastcopy(bad.features, storage_path=str(corrupt)))
    mixed = CutSet.from_cuts([repointed if c.id == bad.id else c for c in cuts])
    mixed.to_file(tmp_path / "mixed_cuts_test.jsonl.gz")
    good = CutSet.from_cuts([c for c in cuts if c.id != bad.id])
    good.to_file(tmp_path / "good_cuts_test.jsonl.gz")

    with caplog.at_level("WARNING", logger="dsr"):
        (res,) = run_decode(exp, tmp_path / "mixed_cuts_test.jsonl.gz", tmp_path / "exp_mixed")
    assert "1 unreadable cut(s) skipped" in caplog.text and bad.id in caplog.text
    info = json.loads((res.out_dir / "result.json").read_text())
    assert info["num_unreadable"] == 1 and res.num_unreadable == 1 and info["num_utts"] == 2
    (entry,) = info["unreadable"]
    assert entry["cut_id"] == bad.id and entry["source"] == str(corrupt) and entry["error"]
    # Every good cut was decoded, exactly as without the bad one.
    (ref,) = run_decode(exp, tmp_path / "good_cuts_test.jsonl.gz", tmp_path / "exp_good")
    assert (res.out_dir / "recogs.txt").read_text() == (ref.out_dir / "recogs.txt").read_text()
    assert info["audio_seconds"] == pytest.approx(sum(c.duration for c in good))
    # Nothing readable at all is a user error naming the manifest, not a 0 % WER.
    from dsr.errors import DsrUserError

    CutSet.from_cuts([repointed]).to_file(tmp_path / "bad_cuts_test.jsonl.gz")
    with pytest.raises(DsrUserError, match="none of the 1 cuts"):
        run_decode(exp, tmp_path / "bad_cuts_test.jsonl.gz", tmp_path / "exp_bad")


def write_wav_cuts(root: Path, corrupt_index: int | None) -> Path:
    """Cuts with recordings only (no features): 1-2 s of noise per text, 8 kHz stereo for the
    first (resampled and downmixed on the fly); the file of ``corrupt_index`` is then garbled."""
    rng = np.random.default_rng(0)
    cuts = []
    for i, text in enumerate(TEXTS):
        sr, channels = (8000, 2) if i == 0 else (16000, 1)
        path = root / f"w{i}.wav"
        sf.write(path, 0.1 * rng.standard_normal((int(sr * (1 + i / 2)), channels)).astype(np.float32), sr)
        rec = Recording.from_file(path, recording_id=f"w{i}")
        sup = SupervisionSegment(
            id=f"w{i}", recording_id=f"w{i}", start=0.0, duration=rec.duration, text=text, channel=rec.channel_ids
        )
        cuts.append(
            MonoCut(
                id=f"w{i}",
                start=0.0,
                duration=rec.duration,
                channel=rec.channel_ids[0],
                recording=rec,
                supervisions=[sup],
            )
        )
        if i == corrupt_index:
            path.write_bytes(b"RIFF" + bytes(100))
    out = root / "wav_cuts_test.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(out)
    return out


def test_recording_cuts_are_decoded_from_audio_and_a_corrupt_wav_is_listed(exp: dict[str, Path], tmp_path: Path):
    from dsr.data.batches import cut_features
    from dsr.features.audio import load_audio_mono
    from dsr.features.fbank import compute_fbank

    clean = write_wav_cuts(tmp_path, corrupt_index=None)
    # The on-the-fly FBANK is dsr transcribe's (same downmix, resampling and front end).
    first = next(iter(CutSet.from_file(clean)))
    expected = compute_fbank(load_audio_mono(tmp_path / "w0.wav"))
    assert torch.allclose(cut_features(first), torch.from_numpy(expected))

    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    (res,) = run_decode(exp, write_wav_cuts(broken_dir, corrupt_index=2), tmp_path / "exp_wav")
    info = json.loads((res.out_dir / "result.json").read_text())
    assert info["num_utts"] == 2 and [u["cut_id"] for u in info["unreadable"]] == ["w2"]
    assert info["unreadable"][0]["source"] == str(broken_dir / "w2.wav")


def test_transcribe_skips_and_reports_unreadable_files(exp: dict[str, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.decoding.transcribe import transcribe
    from dsr.errors import DsrUserError

    good = tmp_path / "good.wav"
    sf.write(good, 0.1 * np.random.default_rng(1).standard_normal(16000).astype(np.float32), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(64))
    missing = tmp_path / "missing.wav"
    with pytest.raises(DsrUserError, match="corrupt.wav"):  # the library call without a list keeps raising
        transcribe([good, corrupt], exp["exp"], exp["lang"], device="cpu")
    skipped: list[tuple[Path, str]] = []
    out = transcribe([corrupt, good, missing], exp["exp"], exp["lang"], device="cpu", unreadable=skipped)
    assert [f for f, _ in out] == [good] and [f for f, _ in skipped] == [corrupt, missing]

    args = ["transcribe", "--exp-dir", str(exp["exp"]), "--lang-dir", str(exp["lang"]), "--device", "cpu"]
    proc = CliRunner().invoke(app, args + [str(corrupt), str(good), str(missing)])
    assert proc.exit_code == 0, proc.output
    text = " ".join(proc.output.split())
    assert f"{good}\t".split()[0] in text and "2 of 3 file(s) could not be read" in text
    assert str(corrupt) in text and str(missing) in text
    assert CliRunner().invoke(app, args + [str(corrupt)]).exit_code == 1  # nothing readable


def test_results_table_shows_the_new_columns_and_tolerates_old_results(tmp_path: Path) -> None:
    from rich.console import Console

    from dsr.evaluation.report import collect_results, rich_table, write_results

    new = {
        "method": "greedy",
        "split": "x_test",
        "checkpoint": "epoch-1",
        "wer": 10.0,
        "errors": 1,
        "ref_words": 10,
        "num_utts": 2,
        "rtf": 0.01234,
        "cer": 5.5,
        "latency_ms": {"p50": 12.3, "p90": 45.6},
        "num_unreadable": 1,
        "peak_rss_delta_mb": 7.4,
        "cuda_peak_mb": None,
    }
    # A result.json written before CER/latency/memory were measured.
    old = {
        "method": "ctc-greedy",
        "split": "x_test",
        "checkpoint": "epoch-1",
        "wer": 20.0,
        "errors": 2,
        "ref_words": 10,
        "num_utts": 2,
        "rtf": 0.5,
    }
    for row in (new, old):
        (tmp_path / "decode" / row["method"] / "x_test").mkdir(parents=True)
        (tmp_path / "decode" / row["method"] / "x_test" / "result.json").write_text(json.dumps(row))
    rows = collect_results(tmp_path)
    md = write_results(tmp_path, rows).read_text().splitlines()
    assert md[0] == (
        "| method | split | checkpoint | WER % | CER % | errors / words | utts | RTF | p50 ms | p90 ms | peak RSS +MB |"
    )
    assert md[2] == "| ctc-greedy | x_test | epoch-1 | 20.00 | - | 2 / 10 | 2 | 0.5000 | - | - | - |"
    assert md[3] == "| greedy | x_test | epoch-1 | 10.00 | 5.50 | 1 / 10 | 2 (+1 unreadable) | 0.0123 | 12 | 46 | 7 |"
    console = Console(width=200, record=True)
    console.print(rich_table(rows, "Results"))
    printed = console.export_text()
    assert "Results (epoch-1)" in printed and "p90 ms" in printed and "5.50" in printed
    # CUDA memory gets a column once some run used CUDA.
    cuda = dict(new, method="greedy-cuda", cuda_peak_mb=300.0)
    assert write_results(tmp_path, rows + [cuda]).read_text().splitlines()[-1].endswith("| 7 | 300 |")


def test_results_of_other_exp_dirs_join_the_table_labelled_by_exp_dir(tmp_path: Path) -> None:
    from dsr.evaluation.report import collect_results, row_label, write_results

    def result(exp: Path, method: str, split: str, wer: float) -> None:
        out = exp / "decode" / method / split
        out.mkdir(parents=True)
        row = dict(method=method, split=split, checkpoint="epoch-1", wer=wer, errors=1, ref_words=10, num_utts=2)
        (out / "result.json").write_text(json.dumps({**row, "rtf": 0.1}))

    hybrid, stage1, stage2 = (tmp_path / "exp" / name for name in ("whisper", "speech-llm-stage1", "speech-llm-stage2"))
    for split in ("a_dev", "a_test"):
        result(hybrid, "modified-beam-search", split, 45.0)
        result(hybrid, "greedy", split, 50.0)
        for exp in (stage2, stage1):
            result(exp, "speech-llm-greedy", split, 115.0)
    alone = collect_results(hybrid)
    assert {r["exp_dir"] for r in alone} == {str(hybrid)}
    md = write_results(hybrid, alone).read_text().splitlines()
    assert md[0].startswith("| method | split |")  # one exp dir: no exp column
    rows = collect_results(hybrid, [stage1, stage2])
    # By split, then exp dir in the order given, then method.
    assert [(Path(r["exp_dir"]).name, r["method"], r["split"]) for r in rows][:4] == [
        ("whisper", "greedy", "a_dev"),
        ("whisper", "modified-beam-search", "a_dev"),
        ("speech-llm-stage1", "speech-llm-greedy", "a_dev"),
        ("speech-llm-stage2", "speech-llm-greedy", "a_dev"),
    ]
    assert row_label(rows[2], rows) == "speech-llm-stage1: speech-llm-greedy" and row_label(rows[2], alone) == (
        "speech-llm-greedy"
    )
    md = write_results(hybrid, rows).read_text().splitlines()
    assert md[0].startswith("| exp | method | split |") and len(md) == 2 + 8
    assert md[4] == f"| {stage1} | speech-llm-greedy | a_dev | epoch-1 | 115.00 | - | 1 / 10 | 2 | 0.1000 | - | - | - |"
    assert json.loads((hybrid / "results.json").read_text())[2]["exp_dir"] == str(stage1)
    # The CLI: an --also-exp-dir without results is a one-line error naming it.
    from typer.testing import CliRunner

    from dsr.cli.main import app

    args = ["results", "--exp-dir", str(hybrid), "--no-plot", "--also-exp-dir", str(stage1)]
    ok = CliRunner().invoke(app, [*args, "--also-exp-dir", str(stage2)])
    assert ok.exit_code == 0 and "speech-llm-stage2" in ok.output
    bad = CliRunner().invoke(app, [*args, "--also-exp-dir", str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and f"error: --also-exp-dir {tmp_path / 'nowhere'}: no decoding results" in bad.output


def test_int8_decode_quantises_linears_and_writes_its_own_results(exp: dict[str, Path], tmp_path: Path) -> None:
    from dsr.decoding.loading import load_model
    from dsr.decoding.quantize import quantize_int8
    from dsr.errors import DsrUserError

    float_model, tag = load_model(exp["exp"], device="cpu")
    int8_model, int8_tag = load_model(exp["exp"], device="cpu", int8=True)
    assert int8_tag == tag + "-int8"
    assert any(isinstance(m, torch.nn.Linear) for m in float_model.modules())
    assert not any(type(m) is torch.nn.Linear for m in int8_model.modules())  # all replaced by quantised ones
    x = torch.randn(2, 120, 80)
    lens = torch.tensor([120, 90])
    with torch.inference_mode():
        ref, _ = float_model.encode(x, lens)
        out, _ = int8_model.encode(x, lens)
    # int8 arithmetic: close to the float encoder, not equal.
    assert not torch.equal(ref, out) and (out - ref).abs().max() < 0.1 * ref.abs().max()

    results = run_decode(exp, exp["cuts"], tmp_path / "exp", methods=("greedy",), int8=True)
    assert [r.method for r in results] == ["greedy-int8"]
    info = json.loads((tmp_path / "exp" / "decode" / "greedy-int8" / "toy_test" / "result.json").read_text())
    assert info["checkpoint"].endswith("-int8") and info["num_utts"] == 3
    with pytest.raises(DsrUserError, match="int8 runs on the CPU only"):
        quantize_int8(float_model, torch.device("cuda"))
