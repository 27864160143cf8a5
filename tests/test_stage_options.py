"""``dsr features`` and ``dsr rescore`` from their options objects: FeaturesOptions / RescoreOptions
reject bad values naming the field, the CLI names the flag in one line (exit 2), ``--help`` lists
the same flags as before the options existed, and a tiny run of each stage through the CLI works."""

from __future__ import annotations

import io
import json
import re
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from dsr.errors import OptionError
from dsr.features.options import FeaturesOptions
from dsr.lm.options import RescoreOptions, output_dir

# The flags of each command as they were when the commands were written by hand (commit 01ca073).
FEATURES_FLAGS = [
    "--corpus", "--split", "--manifest-dir", "--out-dir", "--num-jobs", "-j", "--speed-perturb", "--noise",
    "--noise-snr", "--noise-prob", "--feature-type", "--num-mel-bins", "--force", "--help",
]  # fmt: skip
RESCORE_FLAGS = [
    "--nbest", "--llm", "--out-dir", "--lm-weight", "--length-bonus", "--ctc-weight", "--attention-weight",
    "--tune-on", "--weights", "--tune-lm-weights", "--tune-length-bonuses", "--tune-ctc-weights",
    "--text-transform", "--bos-token", "--eos-token", "--batch-size", "--dtype", "--device", "--num-threads", "--help",
]  # fmt: skip


def dsr(*args: object) -> tuple[int, str]:
    """``dsr ARGS`` through the CLI's own entry point (its one-line error handler included):
    (exit code, everything printed, with a traceback if one escaped)."""
    from dsr.cli import main

    buf, argv, rc = io.StringIO(), sys.argv, 0
    sys.argv = ["dsr", *map(str, args)]
    try:
        with redirect_stdout(buf), redirect_stderr(buf):
            try:
                main.run()
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                buf.write(traceback.format_exc())
                rc = 1
    finally:
        sys.argv = argv
    return rc, buf.getvalue()


def one_line_error(rc: int, out: str, flag: str) -> str:
    assert "Traceback" not in out and rc == 2, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and flag in errors[0], out
    return errors[0]


def help_flags(command: str) -> list[str]:
    from typer.testing import CliRunner

    from dsr.cli.main import app

    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250", "TERMINAL_WIDTH": "250"})
    assert res.exit_code == 0, res.output
    # The first flag-looking words of each row of the options table: "--x", "-j".
    flags = []
    for line in res.output.splitlines():
        m = re.match(r"^│\s*\*?\s+((?:--?[a-z][a-z0-9-]*\s+)+)", line + " ")
        if m:
            flags += m.group(1).split()
    return flags


# ---------------------------------------------------------------------------------------------
# FeaturesOptions


@pytest.mark.parametrize(
    "kw,field,match",
    [
        (dict(corpus=""), "corpus", "without '/'"),
        (dict(corpus="a/b"), "corpus", "without '/'"),
        (dict(splits=()), "splits", "one or more"),
        (dict(num_jobs=0), "num_jobs", ">= 1"),
        (dict(noise_snr=(20.0, 10.0)), "noise_snr", "LOW <= HIGH"),
        (dict(noise_prob=1.5), "noise_prob", "between 0 and 1"),
        (dict(feature_type="mfcc"), "feature_type", "'mfcc' is unknown; choose from kaldi-fbank, whisper-fbank"),
        (dict(num_mel_bins=0), "num_mel_bins", ">= 1"),
    ],
)
def test_features_options_reject_bad_values_naming_the_field(kw, field, match):
    with pytest.raises(OptionError, match=f"^{field}: .*{re.escape(match)}") as e:
        FeaturesOptions(**{"corpus": "synth", **kw})
    assert e.value.field == field and isinstance(e.value, ValueError)


def test_features_options_derive_what_each_split_gets():
    o = FeaturesOptions(
        corpus="c", splits="train-clean-100", speed_perturb=True, noise=["n.jsonl.gz"], noise_snr=(5, 15)
    )
    assert o.splits == ("train-clean-100",) and o.noise == (Path("n.jsonl.gz"),)
    assert o.speed_factors("train-clean-100") == (0.9, 1.0, 1.1) and o.speed_factors("dev") == (1.0,)
    assert set(o.inputs("train-clean-100")) == {"recordings", "supervisions", "noise0"}
    assert set(o.inputs("dev")) == {"recordings", "supervisions"}
    assert o.marker_options("train-clean-100")["noise"] == {"snr": [5.0, 15.0], "prob": 0.5}
    assert o.marker_options("dev") == {"speed_factors": [1.0], "noise": None}
    assert type(o.frontend()).__name__ == "FbankConfig"
    w = FeaturesOptions(corpus="c", feature_type="whisper-fbank", num_mel_bins=128).frontend()
    assert type(w).__name__ == "WhisperFbankConfig" and w.num_mel_bins == 128


def test_features_help_lists_the_same_flags_as_before():
    assert help_flags("features") == FEATURES_FLAGS


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--feature-type", "mfcc"], "--feature-type"),
        (["--noise-snr", "20", "10"], "--noise-snr"),
        (["--split", "a/b"], "--split"),
    ],
)
def test_features_cli_names_the_flag_in_one_line(tmp_path, args, flag):
    rc, out = dsr("features", "--corpus", "c", "--manifest-dir", tmp_path, "--out-dir", tmp_path / "f", *args)
    one_line_error(rc, out, flag)
    assert not (tmp_path / "f").exists()  # rejected before anything was written


def _tiny_manifests(root: Path, n: int = 3) -> Path:
    """A lhotse recordings + supervisions manifest pair of ``n`` one-second 16 kHz tones."""
    import soundfile as sf
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    (root / "audio").mkdir(parents=True)
    recs, sups = [], []
    for i in range(n):
        t = np.arange(16000) / 16000
        path = root / "audio" / f"u{i}.wav"
        sf.write(path, 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t), 16000)
        recs.append(Recording.from_file(path, recording_id=f"u{i}"))
        sups.append(SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0.0, duration=1.0, text=f"WORD {i}"))
    m = root / "m"
    m.mkdir()
    RecordingSet.from_recordings(recs).to_file(m / "c_recordings_train.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(m / "c_supervisions_train.jsonl.gz")
    return m


def test_features_cli_runs_a_tiny_split_and_skips_it_the_second_time(tmp_path):
    from lhotse import load_manifest

    m = _tiny_manifests(tmp_path)
    args = [
        "features",
        "--corpus",
        "c",
        "--split",
        "train",
        "--manifest-dir",
        m,
        "--out-dir",
        tmp_path / "f",
        "-j",
        "1",
    ]
    rc, out = dsr(*args, "--speed-perturb")
    assert rc == 0 and "Traceback" not in out, out
    cuts = load_manifest(tmp_path / "f" / "c_cuts_train.jsonl.gz")
    assert len(cuts) == 9  # 3 utterances x speeds 0.9, 1.0, 1.1
    assert {c.features.num_features for c in cuts} == {80}
    rc, out = dsr(*args, "--speed-perturb")
    assert rc == 0 and "already done" in out, out
    rc, out = dsr(*args)  # other speed factors: the marker's options differ, so the split is redone
    assert rc == 0 and "redo" in out, out
    assert len(load_manifest(tmp_path / "f" / "c_cuts_train.jsonl.gz")) == 3


def test_compute_split_uses_the_options(tmp_path):
    from dsr.features.extract import compute_split

    m = _tiny_manifests(tmp_path, n=2)
    o = FeaturesOptions(corpus="c", splits=("train",), manifest_dir=m, out_dir=tmp_path / "f", num_jobs=1)
    report = compute_split(o, "train", progress=False)
    assert report.num_cuts == 2 and not report.skipped


# ---------------------------------------------------------------------------------------------
# RescoreOptions


def _exp(tmp_path: Path, *splits: str) -> list[Path]:
    return [tmp_path / "exp" / "decode" / "beam" / s / "nbest.jsonl" for s in splits]


@pytest.mark.parametrize(
    "kw,field,match",
    [
        (dict(nbest=()), "nbest", "at least one"),
        (dict(tune_on=Path("dev.jsonl"), weights=Path("w.json")), "tune_on", "cannot go with `weights`"),
        (dict(tune_ctc_weights="0,0.1"), "tune_ctc_weights", "needs `tune_on`"),
        (dict(tune_on=Path("d"), tune_lm_weights="a,b"), "tune_lm_weights", "'a,b': give comma-separated numbers"),
        (dict(tune_on=Path("d"), tune_length_bonuses=" , "), "tune_length_bonuses", "give comma-separated"),
        (dict(tune_on=Path("d"), tune_ctc_weights="0;1"), "tune_ctc_weights", "give comma-separated"),
        (dict(batch_size=0), "batch_size", ">= 1"),
        (dict(num_threads=-1), "num_threads", ">= 0"),
    ],
)
def test_rescore_options_reject_bad_values_naming_the_field(tmp_path, kw, field, match):
    with pytest.raises(OptionError, match=f"^{field}: .*{re.escape(match)}") as e:
        RescoreOptions(**{"nbest": tuple(_exp(tmp_path, "test")), **kw})
    assert e.value.field == field and isinstance(e.value, ValueError)


def test_rescore_options_reject_two_nbests_with_one_output_dir(tmp_path):
    a = tmp_path / "exp" / "decode" / "beam" / "test" / "nbest.jsonl"
    b = tmp_path / "exp2" / "decode" / "beam" / "test" / "nbest.jsonl"
    with pytest.raises(OptionError, match="^nbest: two files would write to the same directory"):
        RescoreOptions(nbest=(a, b), out_dir=tmp_path / "o")
    o = RescoreOptions(nbest=(a, b))  # without --out-dir each goes beside its own first pass
    assert o.output_dirs() == [output_dir(a, None), output_dir(b, None)]
    assert o.output_dirs()[0] == (tmp_path / "exp" / "decode" / "beam+llm" / "test").resolve()


def test_rescore_options_parse_the_grids_and_accept_str_paths(tmp_path):
    o = RescoreOptions(nbest=str(_exp(tmp_path, "test")[0]), tune_on=str(tmp_path / "dev"), tune_ctc_weights="0,.5")
    assert o.nbest == (_exp(tmp_path, "test")[0],) and o.tune_on == tmp_path / "dev"
    lm, bonus, ctc = o.grids()
    assert lm[:3] == (0.0, 0.02, 0.05) and bonus[0] == -1.0 and ctc == (0.0, 0.5)
    assert RescoreOptions(nbest=_exp(tmp_path, "test")).grids()[2] is None


def test_rescore_default_batch_is_the_scorers():
    pytest.importorskip("transformers", reason="the LLM scorer needs the optional 'lm' packages")
    from dsr.lm.scorer import DEFAULT_BATCH

    assert RescoreOptions(nbest=(Path("n.jsonl"),)).batch_size == DEFAULT_BATCH


def test_rescore_text_transform_is_checked():
    pytest.importorskip("transformers", reason="the LLM scorer needs the optional 'lm' packages")
    with pytest.raises(OptionError, match="^text_transform: 'upper' is unknown; choose from sentence"):
        RescoreOptions(nbest=(Path("n.jsonl"),), text_transform="upper")


def test_rescore_help_lists_the_same_flags_as_before():
    assert help_flags("rescore") == RESCORE_FLAGS


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--tune-on", "dev.jsonl", "--tune-lm-weights", "a,b"], "--tune-lm-weights"),
        (["--tune-on", "dev.jsonl", "--weights", "w.json"], "--tune-on: cannot go with --weights"),
        (["--tune-ctc-weights", "0,0.1"], "--tune-ctc-weights: needs --tune-on"),
        (["--num-threads", "-1"], "--num-threads"),
    ],
)
def test_rescore_cli_names_the_flag_in_one_line(tmp_path, args, flag):
    rc, out = dsr("rescore", "--nbest", _exp(tmp_path, "test")[0], *args)
    one_line_error(rc, out, flag)


def test_rescore_cli_missing_nbest_is_one_line(tmp_path):
    rc, out = dsr("rescore", "--nbest", tmp_path / "nope.jsonl", "--llm", tmp_path)
    assert "nope.jsonl: no such n-best file" in one_line_error(rc, out, "nope.jsonl")


def test_rescore_cli_runs_with_a_tiny_llm(tmp_path):
    """The stage end to end through the CLI: tune on dev, apply to test (the tiny LM of test_rescore)."""
    pytest.importorskip("transformers", reason="LLM rescoring needs the optional 'lm' packages")
    import torch

    from dsr.lm.train_scratch import LmSize, train_lm

    sys.path.insert(0, str(Path(__file__).parent))
    from test_rescore import DOMAIN, _nbest

    torch.set_num_threads(1)
    (tmp_path / "texts.txt").write_text("\n".join(DOMAIN) + "\n")
    size = LmSize(hidden_size=32, num_layers=1, num_heads=2, max_positions=64)
    train_lm(tmp_path / "texts.txt", tmp_path / "lm", config="qwen2", vocab_size=300, epochs=30, lr=1e-2,
             batch_size=6, size=size)  # fmt: skip
    dev, test = _exp(tmp_path, "dev", "test")
    _nbest(dev, DOMAIN[::2], lm_helps=True)
    _nbest(test, DOMAIN[1::2], lm_helps=True)
    rc, out = dsr(
        "rescore", "--nbest", test, "--llm", tmp_path / "lm", "--tune-on", dev,
        "--tune-lm-weights", "0.5,1", "--tune-length-bonuses", "0", "--num-threads", "1",
    )  # fmt: skip
    assert rc == 0 and "Traceback" not in out, out
    r = json.loads((output_dir(test, None) / "result.json").read_text())
    assert r["weights"]["lm_weight"] > 0 and r["rescored_wer"] < r["first_pass_wer"]


def test_rescore_stage_steps_without_an_llm(tmp_path):
    pytest.importorskip("transformers", reason="LLM rescoring needs the optional 'lm' packages")
    from dsr.errors import DsrUserError
    from dsr.lm.rescore import Weights, check_nbest_files, choose_weights

    (test,) = _exp(tmp_path, "test")
    with pytest.raises(DsrUserError, match="nbest.jsonl: no such n-best file"):
        check_nbest_files(RescoreOptions(nbest=(test,)))
    test.parent.mkdir(parents=True)
    test.write_text("")
    check_nbest_files(RescoreOptions(nbest=(test,)))
    with pytest.raises(DsrUserError, match="dev.jsonl: no such n-best file"):
        check_nbest_files(RescoreOptions(nbest=(test,), tune_on=tmp_path / "dev.jsonl"))
    # Without tuning the scorer is not used: the options' weights, or a weights.json's.
    own = RescoreOptions(nbest=(test,), lm_weight=0.2, length_bonus=0.5, ctc_weight=0.1)
    assert choose_weights(own, None) == (Weights(0.2, 0.5, 0.1, 0.0), None)  # type: ignore[arg-type]
    w = tmp_path / "weights.json"
    w.write_text(json.dumps({"lm_weight": 0.4, "length_bonus": 1.0, "without_llm": {"length_bonus": 2.0}}))
    chosen, without = choose_weights(RescoreOptions(nbest=(test,), weights=w), None)  # type: ignore[arg-type]
    assert chosen.lm_weight == 0.4 and without is not None and without.lm_weight == 0 and without.length_bonus == 2.0
