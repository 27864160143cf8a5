"""Kaldi data-dir import: wav.scp + text + segments + utt2spk built in tmp_path from generated audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, load_manifest

from dsr.data.kaldi_dir import prepare_kaldi_dir
from dsr.data.manifests import recordings_path, supervisions_path
from dsr.errors import DsrUserError


def _tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> None:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    sf.write(path, np.stack([mono] * channels, axis=1) if channels > 1 else mono, rate, subtype="PCM_16")


def _cuts(manifest_dir: Path, corpus: str = "kd", split: str = "train") -> CutSet:
    recs = load_manifest(recordings_path(manifest_dir, corpus, split))
    sups = load_manifest(supervisions_path(manifest_dir, corpus, split))
    return CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(keep_overlapping=False)


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """Two recordings (16 kHz mono 4 s, 8 kHz mono 3 s) split into five utterances, one of them bad."""
    audio = tmp_path / "audio"
    audio.mkdir()
    _tone(audio / "recA.wav", 4.0)
    _tone(audio / "recB.flac", 3.0, rate=8000)
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    # recA by absolute path, recB relative to the data dir.
    (d / "wav.scp").write_text(f"recA {audio / 'recA.wav'}\nrecB ../../audio/recB.flac\n")
    (d / "segments").write_text(
        "spk1-a1 recA 0.00 1.50\nspk1-a2 recA 1.50 4.00\nspk2-b1 recB 0.25 -1\n"
        "spk2-b2 recB 1.00 9.00\nspk2-b3 recB 0.00 1.00\n"
    )
    (d / "text").write_text(
        "spk1-a1 turn on the lights\nspk1-a2   What is the weather  \nspk2-b1 set a timer\n"
        "spk2-b2 far past the end\nspk2-b3\n"
    )
    (d / "utt2spk").write_text("spk1-a1 spk1\nspk1-a2 spk1\nspk2-b1 spk2\nspk2-b2 spk2\nspk2-b3 spk2\n")
    return d


def test_segments_texts_speakers_and_durations(data_dir: Path, tmp_path: Path) -> None:
    report = prepare_kaldi_dir(data_dir, tmp_path / "m", "kd", "train")
    assert report.kept == 3
    assert report.duration_s == pytest.approx(1.5 + 2.5 + 2.75)
    reasons = dict(report.skipped)
    assert set(reasons) == {"spk2-b2", "spk2-b3"}
    assert reasons["spk2-b2"].startswith("bad segment") and reasons["spk2-b3"].startswith("empty transcript")

    cuts = {c.supervisions[0].id: c for c in _cuts(tmp_path / "m")}
    assert set(cuts) == {"spk1-a1", "spk1-a2", "spk2-b1"}
    a2, b1 = cuts["spk1-a2"], cuts["spk2-b1"]
    assert a2.supervisions[0].text == "What is the weather" and a2.supervisions[0].speaker == "spk1"
    assert a2.start == pytest.approx(1.5) and a2.duration == pytest.approx(2.5)
    assert b1.sampling_rate == 8000 and b1.duration == pytest.approx(2.75)  # end -1 = end of file
    assert b1.load_audio().shape == (1, 22000)
    recs = load_manifest(recordings_path(tmp_path / "m", "kd", "train"))
    assert {r.id: r.duration for r in recs} == {"recA": 4.0, "recB": 3.0}


def test_without_segments_each_utterance_is_a_recording(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    _tone(d / "u1.wav", 1.0)
    _tone(d / "u2.wav", 2.0, rate=22050, channels=2)
    (d / "wav.scp").write_text(f"u1 {d / 'u1.wav'}\nu2 {d / 'u2.wav'}\n")
    (d / "text").write_text("u1 hello\nu2 good morning\n")
    report = prepare_kaldi_dir(d, tmp_path / "m", "kd", "train")
    assert report.kept == 2 and report.duration_s == pytest.approx(3.0)
    sups = {s.id: s for s in load_manifest(supervisions_path(tmp_path / "m", "kd", "train"))}
    assert sups["u2"].channel == [0, 1] and sups["u2"].speaker is None and sups["u1"].text == "hello"


def test_piped_wav_scp_is_rejected(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "wav.scp").write_text("recA sox in.wav -t wav - |\n")
    with pytest.raises(DsrUserError, match="needs file paths"):
        prepare_kaldi_dir(data_dir, tmp_path / "m", "kd", "train")


def test_missing_audio_is_a_user_error_naming_the_path(data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "recA.wav"
    (data_dir / "wav.scp").write_text(f"recA {missing}\nrecB ../../audio/recB.flac\n")
    with pytest.raises(DsrUserError) as err:
        prepare_kaldi_dir(data_dir, tmp_path / "m", "kd", "train")
    assert str(missing) in str(err.value) and "wav.scp line 1" in str(err.value)


def test_unknown_recording_and_corrupt_audio(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "segments").write_text("spk1-a1 recZ 0 1\n")
    (data_dir / "text").write_text("spk1-a1 hi\n")
    with pytest.raises(DsrUserError, match="recZ"):
        prepare_kaldi_dir(data_dir, tmp_path / "m", "kd", "train")
    # A corrupt recording skips all of its utterances, the others are kept.
    bad = tmp_path / "audio" / "bad.wav"
    bad.write_bytes(b"RIFF" + bytes(100))
    (data_dir / "wav.scp").write_text(f"recA {tmp_path / 'audio' / 'recA.wav'}\nrecX {bad}\n")
    (data_dir / "segments").write_text("a recA 0 1\nx1 recX 0 1\nx2 recX 1 2\n")
    (data_dir / "text").write_text("a one\nx1 two\nx2 three\n")
    report = prepare_kaldi_dir(data_dir, tmp_path / "m", "kd", "train")
    assert report.kept == 1 and [u for u, _ in report.skipped] == ["x1", "x2"]
    assert all(r.startswith("unreadable audio") for _, r in report.skipped)
