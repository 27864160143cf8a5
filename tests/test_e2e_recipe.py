"""End-to-end: the embedded recipe on a tiny corpus, through run.sh and the dsr CLI.

Also checks the recipe-level guarantees: re-running a finished stage is a no-op,
and ``kill -9`` during training followed by a re-run resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "egs" / "synth" / "run.sh"

pytestmark = pytest.mark.skipif(
    not (shutil.which("espeak-ng") or shutil.which("flite")),
    reason="no TTS engine (espeak-ng/flite) installed; run tools/setup.sh as root",
)

TINY_CONFIG = """\
encoder-dim: 64
num-encoder-layers: 2
num-heads: 2
ffn-dim: 128
decoder-dim: 64
joiner-dim: 64
max-duration: 40
num-epochs: 1
warmup-steps: 5
model-warm-step: 10
save-every-n: 2
log-interval: 2
average-period: 2
num-threads: 1
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def run_recipe(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        "bash",
        str(RUN_SH),
        "--work-dir",
        str(work),
        "--config",
        str(work / "tiny.yaml"),
        "--num-train",
        "24",
        "--num-train-words",
        "6",
        "--num-dev",
        "4",
        "--num-test",
        "6",
        "--vocab-size",
        "48",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, f"run.sh {args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("synth")
    (work / "tiny.yaml").write_text(TINY_CONFIG)
    run_recipe(work, "--stop-stage", "2")
    return work


def test_full_tiny_recipe_reports_wer(work):
    proc = run_recipe(work, "--stage", "3")
    results = json.loads((work / "exp/conformer/results.json").read_text())
    assert {(r["method"], r["split"]) for r in results} == {
        (m, s) for m in ("greedy", "modified-beam-search", "ctc-greedy") for s in ("synth_dev", "synth_test")
    }
    for r in results:
        assert r["num_utts"] > 0 and r["ref_words"] > 0 and 0 <= r["wer"] and r["rtf"] > 0
    assert "WER %" in proc.stdout
    errs = (work / "exp/conformer/decode/greedy/synth_test/errs.txt").read_text()
    assert errs.startswith("%WER ")
    by_speaker = (work / "exp/conformer/decode/greedy/synth_test/wer_by_speaker.txt").read_text().splitlines()
    assert by_speaker[0].startswith("speaker\t") and len(by_speaker) > 1
    assert (work / "exp/conformer/config.yaml").is_file() and (work / "exp/conformer/epoch-1.pt").is_file()
    assert list((work / "exp/conformer/tensorboard").iterdir())

    # Re-running finished stages is a no-op.
    again = run_recipe(work, "--stop-stage", "3")
    assert again.stderr.count("skip") >= 4, again.stderr
    assert not list((work / "data/manifests").glob(".*.tmp*"))


def test_tiny_hybrid_recipe_reports_every_head(work):
    """--config with an attention decoder: run.sh decodes with all five methods of the three heads."""
    (work / "tiny_hybrid.yaml").write_text(
        TINY_CONFIG + "attention-decoder-layers: 1\nattention-decoder-dim: 32\nattention-decoder-heads: 2\n"
        "attention-decoder-ffn-dim: 64\n"
    )
    run_recipe(work, "--stage", "3", "--config", str(work / "tiny_hybrid.yaml"), "--exp-dir", "exp/hybrid")
    results = json.loads((work / "exp/hybrid/results.json").read_text())
    methods = (
        "greedy",
        "modified-beam-search",
        "ctc-greedy",
        "ctc-attention-rescoring",
        "transducer-attention-rescoring",
    )
    assert {(r["method"], r["split"]) for r in results} == {
        (m, s) for m in methods for s in ("synth_dev", "synth_test")
    }
    nbest = (work / "exp/hybrid/decode/ctc-attention-rescoring/synth_test/nbest.jsonl").read_text().splitlines()
    assert all(h["attention_score"] is not None for line in nbest for h in json.loads(line)["hyps"])


def test_rescoring_stage_runs_only_when_asked(work):
    """Stage 6 (LLM rescoring) is not part of the default run; --stage 6 tunes on dev and rescores test."""
    pytest.importorskip("transformers", reason="the rescoring stage needs the 'lm' extras")
    from dsr.lm.train_scratch import LmSize, train_lm

    run_recipe(work, "--stage", "3", "--stop-stage", "100")  # the default stop stage: no rescoring
    assert not (work / "exp/conformer/decode/modified-beam-search+llm").exists()
    (work / "lm.txt").write_text("TURN ON THE LIGHTS\nWHAT TIME IS IT\n")
    train_lm(
        work / "lm.txt",
        work / "lm",
        config="qwen2",
        vocab_size=300,
        epochs=0,
        size=LmSize(hidden_size=16, num_layers=1, num_heads=2, max_positions=128),
    )
    proc = run_recipe(work, "--stage", "6", "--llm", str(work / "lm"))
    assert (work / "exp/conformer/decode/modified-beam-search+llm/synth_dev/weights.json").is_file()
    result = json.loads((work / "exp/conformer/decode/modified-beam-search+llm/synth_test/result.json").read_text())
    assert result["rescored_wer"] <= 100 and result["decode_seconds"] > 0
    assert "N-best rescoring" in (work / "exp/conformer/results.md").read_text() and "Stage 6" in proc.stdout
    bad = subprocess.run(
        ["bash", str(RUN_SH), "--work-dir", str(work), "--stage", "6", "--llm", str(work / "nope")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert bad.returncode == 2 and "no such LLM" in bad.stderr


def test_kill_9_during_training_resumes(work):
    exp = work / "exp/killed"
    cmd = [
        sys.executable,
        "-m",
        "dsr.cli.main",
        "train",
        "--config",
        str(work / "tiny.yaml"),
        "--exp-dir",
        str(exp),
        "--lang-dir",
        str(work / "data/lang_bpe_48"),
        "--train-cuts",
        str(work / "data/fbank/synth_cuts_train.jsonl.gz"),
        "--dev-cuts",
        "",
        "--num-epochs",
        "3",
        "--max-duration",
        "10",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=work)
    deadline = time.time() + 300
    while time.time() < deadline and not list(exp.glob("checkpoint-*.pt")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.stem.split("-")[1]) for p in exp.glob("checkpoint-*.pt"))
    assert steps, "no checkpoint was written before the kill"
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=work, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    logs = sorted((exp / "log").glob("log-train-*.txt"))
    assert any(f"resuming from {exp}/" in p.read_text() for p in logs), "the re-run did not resume"
    assert (exp / "epoch-3.pt").is_file()
    import torch

    final = torch.load(exp / "epoch-3.pt", map_location="cpu", weights_only=False)
    assert final["global_step"] > steps[-1]
    # The running model average resumed too: one sample every 2 steps, none lost or repeated.
    assert final["model_avg"]["num_averaged"] == final["global_step"] // 2


def test_transcribe_stereo_44k_matches_mono_16k(work):
    """A stereo 44.1 kHz copy of an utterance decodes exactly like the 16 kHz mono original."""
    import numpy as np
    import soundfile as sf

    from dsr.features.audio import resample

    if not (work / "exp/conformer/epoch-1.pt").is_file():
        run_recipe(work, "--stage", "3", "--stop-stage", "3")
    wav = sorted((work / "data/synth/test").glob("*.wav"))[0]
    mono, sr = sf.read(wav, dtype="float32")
    stereo = np.stack([mono, mono], axis=1)
    stereo = np.stack([resample(stereo[:, 0], sr, 44100)] * 2, axis=1)
    stereo_path = work / "stereo_44k.wav"
    sf.write(stereo_path, stereo, 44100)
    cmd = [
        sys.executable,
        "-m",
        "dsr.cli.main",
        "transcribe",
        "--exp-dir",
        str(work / "exp/conformer"),
        "--lang-dir",
        str(work / "data/lang_bpe_48"),
        "-m",
        "ctc-greedy",
        str(wav),
        str(stereo_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    # "FILE<TAB>TEXT" per line; TEXT may be empty for a barely trained model.
    lines = [line.split("\t", 1) for line in proc.stdout.splitlines() if line]
    assert [Path(p).name for p, _ in lines] == [wav.name, "stereo_44k.wav"]
    assert lines[0][1] == lines[1][1]


def test_non_finite_loss_and_gradient_batches_are_skipped_and_counted(work, monkeypatch):
    """A NaN loss and a NaN gradient each skip their batch (no update) and are counted."""
    import torch

    from dsr.training import trainer
    from dsr.training.config import resolve_config

    real = trainer.compute_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            loss = loss * float("nan")
        elif calls["n"] == 4:
            loss = loss.clone()
            loss.register_hook(lambda g: g * float("nan"))  # finite value, NaN gradient
        return loss, parts

    monkeypatch.setattr(trainer, "compute_loss", flaky)
    monkeypatch.chdir(work)
    cfg = resolve_config(work / "tiny.yaml", {
        "exp_dir": str(work / "exp/nan"), "lang_dir": str(work / "data/lang_bpe_48"),
        "train_cuts": str(work / "data/fbank/synth_cuts_train.jsonl.gz"), "dev_cuts": "",
        "max_duration": 10.0, "save_every_n": 0,
    })  # fmt: skip
    result = trainer.train(cfg)
    assert result.skipped_batches == 2
    assert result.global_step == calls["n"] - 2
    from dsr.models.checkpoint import load_checkpoint

    assert all(torch.isfinite(v).all() for v in load_checkpoint(work / "exp/nan/epoch-1.pt")["model"].values())


def test_training_with_a_teacher_exp_dir(work, monkeypatch, caplog):
    """dsr train --teacher EXP_DIR: a student of another size distils CTC and joiner posteriors."""
    import logging

    from dsr.training import trainer
    from dsr.training.config import resolve_config

    monkeypatch.chdir(work)
    common = {
        "lang_dir": str(work / "data/lang_bpe_48"),
        "dev_cuts": "",
        "max_steps": 2,
        "save_every_n": 0,
        "train_cuts": str(work / "data/fbank/synth_cuts_train.jsonl.gz"),
        "log_interval": 1,
    }
    trainer.train(resolve_config(work / "tiny.yaml", {**common, "exp_dir": str(work / "exp/teacher")}))
    caplog.set_level(logging.INFO, logger="dsr")
    cfg = resolve_config(
        work / "tiny.yaml",
        {
            **common,
            "exp_dir": str(work / "exp/student"),
            "encoder_dim": 32,
            "teacher": str(work / "exp/teacher"),
            "distill_heads": "ctc,joiner",
        },
    )
    result = trainer.train(cfg)
    assert result.global_step == 2
    assert "teacher: " in caplog.text and "distilling ctc+joiner" in caplog.text
    assert "distill_ctc_loss" in caplog.text and "distill_joiner_loss" in caplog.text
