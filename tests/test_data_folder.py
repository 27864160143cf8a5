"""Folder import (audio/<utt-id>.<ext> + utt-id<TAB>text) on real speech and on bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, load_manifest

from dsr.data.folder import (
    arctic_prompt_of,
    arctic_split,
    fsdd_speaker_of,
    fsdd_split,
    prepare_folder,
    prepare_folder_splits,
    split_by_hash,
    split_by_key,
)
from dsr.data.manifests import recordings_path, supervisions_path
from dsr.errors import DsrUserError

SHARED = Path(__file__).parents[2] / "shared" / "data"


def _shared(name: str) -> Path:
    root = SHARED / name
    if not (root / "transcripts.tsv").is_file():
        pytest.skip(f"shared test data {root} is absent (expected ../shared/data/{name} next to the repo)")
    return root


def _load(manifest_dir: Path, corpus: str, split: str) -> CutSet:
    recs = load_manifest(recordings_path(manifest_dir, corpus, split))
    sups = load_manifest(supervisions_path(manifest_dir, corpus, split))
    return CutSet.from_manifests(recordings=recs, supervisions=sups)


def _speech_folder(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    """A folder with ``n`` real FSDD files copied into tmp_path (nothing lands in the repo)."""
    fsdd = _shared("fsdd")
    audio = tmp_path / "audio"
    audio.mkdir()
    ids = ["0_george_0", "1_jackson_1", "2_nicolas_2", "3_yweweler_3", "4_george_4"][:n]
    for utt in ids:
        shutil.copy(fsdd / "audio" / f"{utt}.flac", audio / f"{utt}.flac")
    return audio, ids


def test_fsdd_speaker_split(tmp_path: Path) -> None:
    fsdd = _shared("fsdd")
    reports = prepare_folder_splits(
        fsdd / "audio", fsdd / "transcripts.tsv", tmp_path, "fsdd", fsdd_split(), speaker_of=fsdd_speaker_of
    )
    assert [r.split for r in reports] == ["train", "dev", "test"]
    assert sum(r.kept for r in reports) == 2000 and not any(r.skipped for r in reports)
    speakers = {r.split: {c.supervisions[0].speaker for c in _load(tmp_path, "fsdd", r.split)} for r in reports}
    assert speakers["test"] == {"yweweler"}
    assert "yweweler" not in speakers["train"] | speakers["dev"]
    cut = next(iter(_load(tmp_path, "fsdd", "test")))
    assert cut.sampling_rate == 8000
    assert cut.supervisions[0].text in {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}
    assert abs(cut.duration - cut.load_audio().shape[-1] / 8000) < 1e-3


def test_arctic_prompt_split_never_splits_a_prompt(tmp_path: Path) -> None:
    arctic = _shared("arctic_cathy")
    reports = prepare_folder_splits(
        arctic / "audio", arctic / "transcripts.tsv", tmp_path, "arctic", arctic_split(0.1, 0.1)
    )
    assert sum(r.kept for r in reports) == 917
    prompts = {r.split: {arctic_prompt_of(c.recording_id) for c in _load(tmp_path, "arctic", r.split)} for r in reports}
    assert set(prompts) == {"train", "dev", "test"}
    assert not prompts["train"] & prompts["dev"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["dev"] & prompts["test"]
    # Several takes of one prompt exist, so a take-level split would have leaked.
    assert len({c.recording_id for c in _load(tmp_path, "arctic", "train")}) > len(prompts["train"])
    texts = [c.supervisions[0].text for c in _load(tmp_path, "arctic", "test")]
    assert all(t == t.strip() and t for t in texts)


def test_corrupt_audio_and_empty_transcript_are_skipped_and_named(tmp_path: Path) -> None:
    audio, ids = _speech_folder(tmp_path, 4)
    (audio / "corrupt.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    # A FLAC whose header is intact but whose body is cut off.
    whole = (audio / f"{ids[0]}.flac").read_bytes()
    (audio / "truncated.flac").write_bytes(whole[: len(whole) // 2])
    transcripts = tmp_path / "transcripts.tsv"
    lines = [
        f"{ids[0]}\t  zero  ",
        f"{ids[1]}\tone",
        f"{ids[2]}\t   ",
        f"{ids[3]}\tthree",
        "corrupt\thello",
        "truncated\tzero",
    ]
    transcripts.write_text("\n".join(lines) + "\n\n")

    report = prepare_folder(audio, transcripts, tmp_path / "m", "bad", "train")

    assert report.kept == 3
    reasons = dict(report.skipped)
    assert set(reasons) == {ids[2], "corrupt", "truncated"}
    assert reasons[ids[2]].startswith("empty transcript")
    assert reasons["corrupt"].startswith("unreadable audio")
    assert reasons["truncated"].startswith(("corrupt audio", "truncated audio"))
    assert "skipped 3" in report.summary() and "kept 3" in report.summary()
    texts = {c.recording_id: c.supervisions[0].text for c in _load(tmp_path / "m", "bad", "train")}
    assert texts == {ids[0]: "zero", ids[1]: "one", ids[3]: "three"}  # stripped, case kept


def test_missing_audio_is_a_user_error_naming_the_path(tmp_path: Path) -> None:
    audio, ids = _speech_folder(tmp_path, 2)
    transcripts = tmp_path / "transcripts.tsv"
    transcripts.write_text(f"{ids[0]}\tzero\nno_such_utt\thello\n")
    with pytest.raises(DsrUserError) as err:
        prepare_folder(audio, transcripts, tmp_path / "m", "bad", "train")
    message = str(err.value)
    assert str(audio / "no_such_utt") in message and "line 2" in message and "\n" not in message
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_stereo_44k_is_kept_as_is(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(44100 * 2) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(audio / "st.wav", stereo, 44100, subtype="PCM_16")
    (tmp_path / "t.tsv").write_text("st\tHello there\n")
    report = prepare_folder(audio, tmp_path / "t.tsv", tmp_path / "m", "st", "train")
    assert report.kept == 1 and report.duration_s == pytest.approx(2.0)
    rec = load_manifest(recordings_path(tmp_path / "m", "st", "train"))[0]
    assert rec.num_channels == 2 and rec.sampling_rate == 44100
    assert rec.load_audio().shape == (2, 88200)
    assert load_manifest(supervisions_path(tmp_path / "m", "st", "train"))[0].channel == [0, 1]


def test_overlong_transcript_and_max_duration(tmp_path: Path) -> None:
    audio, ids = _speech_folder(tmp_path, 3)
    transcripts = tmp_path / "t.tsv"
    transcripts.write_text(
        f"{ids[0]}\tzero\n{ids[1]}\t{'one two three four five six seven eight nine ten ' * 3}\n{ids[2]}\ttwo\n"
    )
    report = prepare_folder(audio, transcripts, tmp_path / "m", "x", "train")
    assert report.kept == 2
    assert dict(report.skipped)[ids[1]].startswith("transcript too long")
    durations = sorted((sf.info(audio / f"{u}.flac").duration, u) for u in ids)
    limit = (durations[0][0] + durations[1][0]) / 2  # keeps only the shortest file
    report = prepare_folder(audio, transcripts, tmp_path / "m2", "x", "train", max_duration=limit)
    assert report.kept == 1
    assert {u for u, reason in report.skipped if reason.startswith("too long")} == {u for _, u in durations[1:]}


def test_layout_errors(tmp_path: Path) -> None:
    audio, ids = _speech_folder(tmp_path, 1)
    dup = tmp_path / "dup.tsv"
    dup.write_text(f"{ids[0]}\tzero\n{ids[0]}\tzero\n")
    with pytest.raises(DsrUserError, match="both define"):
        prepare_folder(audio, dup, tmp_path / "m", "x", "train")
    with pytest.raises(DsrUserError, match="does not exist"):
        prepare_folder(audio, tmp_path / "absent.tsv", tmp_path / "m", "x", "train")
    only_bad = tmp_path / "bad.tsv"
    only_bad.write_text(f"{ids[0]}\t\n")
    with pytest.raises(DsrUserError, match="every utterance"):
        prepare_folder(audio, only_bad, tmp_path / "m", "x", "train")
    with pytest.raises(ValueError):
        prepare_folder(audio, dup, tmp_path / "m", "bad/name", "train")
    with pytest.raises(ValueError):
        prepare_folder(audio, dup, tmp_path / "m", "x", "train", max_duration=0)


def test_split_policies() -> None:
    assert fsdd_speaker_of("7_yweweler_12") == "yweweler"
    assert arctic_prompt_of("arctic_a0001_1592748574") == "arctic_a0001"
    with pytest.raises(ValueError):
        fsdd_speaker_of("arctic_a0001_1")
    with pytest.raises(ValueError):
        arctic_prompt_of("7_yweweler_12")
    policy = split_by_key(fsdd_speaker_of, {"test": ["yweweler"], "dev": ["george"]})
    assert [policy(u) for u in ("1_yweweler_0", "1_george_0", "1_jackson_0")] == ["test", "dev", "train"]
    with pytest.raises(ValueError):
        split_by_key(fsdd_speaker_of, {"test": ["a"], "dev": ["a"]})
    hashed = split_by_hash(str, {"dev": 0.2, "test": 0.3}, seed=1)
    counts = {s: sum(hashed(f"u{i}") == s for i in range(4000)) for s in ("train", "dev", "test")}
    assert abs(counts["dev"] - 800) < 120 and abs(counts["test"] - 1200) < 150
    assert hashed("u17") == split_by_hash(str, {"test": 0.3, "dev": 0.2}, seed=1)("u17")  # order-independent
    with pytest.raises(ValueError):
        split_by_hash(str, {"dev": 0.7, "test": 0.5})


def test_audio_is_found_in_subfolders_and_duplicates_are_errors(tmp_path: Path) -> None:
    audio, ids = _speech_folder(tmp_path, 2)
    (audio / "spk").mkdir()
    (audio / ids[1]).with_suffix(".flac").rename(audio / "spk" / f"{ids[1]}.flac")
    (audio / f".{ids[0]}.tmp123.flac").write_bytes(b"partial write")  # hidden temp files are ignored
    transcripts = tmp_path / "t.tsv"
    transcripts.write_text(f"{ids[0]}\tzero\n{ids[1]}\tone\n")
    assert prepare_folder(audio, transcripts, tmp_path / "m", "x", "train").kept == 2
    shutil.copy(audio / f"{ids[0]}.flac", audio / "spk" / f"{ids[0]}.flac")
    with pytest.raises(DsrUserError, match="several files"):
        prepare_folder(audio, transcripts, tmp_path / "m", "x", "train")
