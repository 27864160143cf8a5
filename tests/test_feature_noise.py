"""Noise mixing (MUSAN) in the features stage: SNR, determinism, and the CLI on a tiny corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import typer
from corpus_fixtures import audio, librispeech, musan
from lhotse import Recording, load_manifest
from typer.testing import CliRunner

from dsr.cli import data as data_cli
from dsr.cli.features import features as features_cmd
from dsr.errors import DsrUserError
from dsr.features.noise import NoiseMixing, add_noise, load_noise

SR = 16000


def _speech(seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


@pytest.mark.parametrize("noise_seconds", [3.0, 0.3])  # longer than the speech: a stretch; shorter: repeated
def test_noise_is_mixed_at_the_drawn_snr(tmp_path: Path, noise_seconds: float) -> None:
    rec = Recording.from_file(audio(tmp_path / "n.wav", seconds=noise_seconds, seed=3))
    mixing = NoiseMixing((rec,), snr_db=(5.0, 15.0), prob=1.0)
    speech = _speech()
    noisy, info = add_noise(speech, SR, "utt-1", mixing)
    assert noisy.shape == speech.shape and info is not None and info["recording"] == "n"
    added = noisy - speech
    snr = 10 * np.log10(np.mean(speech**2) / np.mean(added**2))
    assert 5.0 <= info["snr_db"] <= 15.0 and snr == pytest.approx(info["snr_db"], abs=0.05)
    again, _ = add_noise(speech, SR, "utt-1", mixing)
    other, _ = add_noise(speech, SR, "utt-2", mixing)
    assert np.array_equal(again, noisy) and not np.array_equal(other, noisy)


def test_noise_probability_and_arguments(tmp_path: Path) -> None:
    rec = Recording.from_file(audio(tmp_path / "n.wav", seed=3))
    speech = _speech()
    assert add_noise(speech, SR, "utt", NoiseMixing((rec,), prob=0.0)) == (speech, None)
    mixed = sum(add_noise(speech, SR, f"u{i}", NoiseMixing((rec,), prob=0.5))[1] is not None for i in range(40))
    assert 10 <= mixed <= 30
    with pytest.raises(ValueError, match="low <= high"):
        NoiseMixing((rec,), snr_db=(20.0, 10.0))
    with pytest.raises(ValueError, match="prob"):
        NoiseMixing((rec,), prob=1.5)
    with pytest.raises(
        DsrUserError, match=r"noise manifest .*missing.jsonl.gz does not exist; fix: run 'dsr prepare musan'"
    ):
        load_noise([tmp_path / "missing.jsonl.gz"])


def test_cli_features_mixes_musan_into_librispeech_train(tmp_path: Path) -> None:
    """prepare librispeech + musan, then features: only the train part is perturbed and noised."""
    app = typer.Typer()
    app.add_typer(data_cli.app, name="prepare")
    app.command("features")(features_cmd)
    m, f = str(tmp_path / "m"), str(tmp_path / "f")
    for args in (
        ["prepare", "librispeech", "--corpus-dir", str(librispeech(tmp_path)), "--manifest-dir", m, "-j", "1"],
        ["prepare", "musan", "--corpus-dir", str(musan(tmp_path)), "--part", "noise", "--manifest-dir", m, "-j", "1"],
        [
            "features",
            "--corpus",
            "librispeech",
            "--split",
            "train-clean-5",
            "--split",
            "dev-clean-2",
            "--manifest-dir",
            m,
            "--out-dir",
            f,
            "-j",
            "1",
            "--speed-perturb",
            "--noise",
            f"{m}/musan_recordings_noise.jsonl.gz",
            "--noise-prob",
            "1",
            "--noise-snr",
            "0",
            "5",
        ],
    ):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    train = load_manifest(tmp_path / "f/librispeech_cuts_train-clean-5.jsonl.gz")
    assert len(train) == 12  # 4 utterances x speeds 0.9, 1.0, 1.1
    assert all(0.0 <= c.custom["noise"]["snr_db"] <= 5.0 for c in train)
    assert {c.custom["noise"]["recording"] for c in train} <= {"noise-free-sound-0000", "noise-free-sound-0001"}
    dev = load_manifest(tmp_path / "f/librispeech_cuts_dev-clean-2.jsonl.gz")
    assert len(dev) == 2 and not any("noise" in c.custom for c in dev)
