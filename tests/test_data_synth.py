"""The embedded synthetic corpus: held-out voices and sentences, 16 kHz mono, deterministic, resumable."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import load_manifest

from dsr.data.manifests import recordings_path, supervisions_path
from dsr.errors import DsrUserError, OptionError
from dsr.synth.corpus import DEFAULT_VOICE_SPLIT, VoiceSplit, prepare_synth
from dsr.synth.sentences import DIGIT_WORDS, vocabulary
from dsr.synth.tts import Voice, available_voices

pytestmark = pytest.mark.skipif(
    not any(shutil.which(e) for e in ("espeak-ng", "flite", "festival")),
    reason="no TTS engine installed (apt-get install espeak-ng flite festival, or tools/setup.sh)",
)

SIZES = {"num_train": 20, "num_dev": 5, "num_test": 5}


def _supervisions(manifest_dir: Path, split: str) -> list:
    return list(load_manifest(supervisions_path(manifest_dir, "synth", split)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    root = tmp_path_factory.mktemp("synth")
    reports = prepare_synth(root / "corpus", root / "manifests", seed=3, **SIZES)
    return root / "corpus", root / "manifests", reports


def test_reports_and_files(corpus: tuple[Path, Path, list]) -> None:
    corpus_dir, manifest_dir, reports = corpus
    assert [(r.corpus, r.split, r.kept) for r in reports] == [
        ("synth", "train", 20),
        ("synth", "dev", 5),
        ("synth", "test", 5),
    ]
    assert all(not r.skipped and r.duration_s > 0 for r in reports)
    for split in ("train", "dev", "test"):
        recs = list(load_manifest(recordings_path(manifest_dir, "synth", split)))
        for rec in recs:
            path = Path(rec.sources[0].source)
            assert path.parent == corpus_dir / split and path.suffix == ".wav"
            info = sf.info(path)
            assert (info.samplerate, info.channels, rec.sampling_rate, rec.num_channels) == (16000, 1, 16000, 1)
            assert 0.3 < info.duration < 15


def test_test_voices_and_sentences_never_in_train(corpus: tuple[Path, Path, list]) -> None:
    _, manifest_dir, _ = corpus
    sups = {split: _supervisions(manifest_dir, split) for split in ("train", "dev", "test")}
    texts = {split: {s.text for s in ss} for split, ss in sups.items()}
    speakers = {split: {s.speaker for s in ss} for split, ss in sups.items()}
    assert not texts["test"] & texts["train"] and not texts["dev"] & texts["train"] and not texts["dev"] & texts["test"]
    assert not speakers["test"] & speakers["train"] and not speakers["dev"] & speakers["train"]
    by_id = {v.id: v for v in available_voices()}
    for split, ids in speakers.items():
        assert {DEFAULT_VOICE_SPLIT.split_of(by_id[i]) for i in ids} == {split}
    for s in sups["train"]:
        assert s.id.startswith(s.speaker + "-train") and s.language == "English"
        assert set(s.text.split()) <= vocabulary()


def test_default_voice_split_holds_out_variants_and_a_real_speaker() -> None:
    voices = available_voices()
    if not any(v.engine == "espeak-ng" for v in voices):
        pytest.skip("espeak-ng not installed")
    assert len({v.id for v in voices}) == len(voices)  # ids stay distinct after sanitising
    split = DEFAULT_VOICE_SPLIT.assign(voices)
    variants = {name: {v.variant for v in vs if v.engine == "espeak-ng"} for name, vs in split.items()}
    assert len(variants["test"]) >= 4 and not variants["test"] & variants["train"]
    assert variants["dev"] and not variants["dev"] & variants["train"]
    non_espeak = {name: {v.key for v in vs if v.engine != "espeak-ng"} for name, vs in split.items()}
    if {"flite", "festival"} & {v.engine for v in voices}:
        assert non_espeak["test"] and non_espeak["train"]
    assert not any(v.variant == "" for v in split["test"] if v.engine == "espeak-ng")  # plain base voices stay in train


def test_voice_split_refuses_to_split_one_speaker() -> None:
    voices = [Voice("flite", "kal"), Voice("festival", "kal_diphone"), Voice("flite", "rms")]
    assert VoiceSplit(test=("flite/rms",)).assign(voices)["test"] == [Voice("flite", "rms")]
    with pytest.raises(ValueError, match="same speaker"):
        VoiceSplit(test=("flite/kal",)).assign(voices)
    with pytest.raises(ValueError):
        VoiceSplit(test="flite/rms")  # type: ignore[arg-type]


def test_deterministic_and_resumable(corpus: tuple[Path, Path, list], tmp_path: Path) -> None:
    corpus_dir, manifest_dir, _ = corpus
    other = tmp_path / "again"
    prepare_synth(other / "corpus", other / "manifests", seed=3, **SIZES)
    for split in ("train", "dev", "test"):
        first = {s.id: s.text for s in _supervisions(manifest_dir, split)}
        second = {s.id: s.text for s in _supervisions(other / "manifests", split)}
        assert first == second
        for utt in list(first)[:3]:
            assert (corpus_dir / split / f"{utt}.wav").read_bytes() == (
                other / "corpus" / split / f"{utt}.wav"
            ).read_bytes()
    # Resume: delete one file, re-run; only that file is synthesised again.
    wavs = sorted((other / "corpus" / "train").glob("*.wav"))
    stamps = {p: p.stat().st_mtime_ns for p in wavs[1:]}
    wavs[0].unlink()
    prepare_synth(other / "corpus", other / "manifests", seed=3, **SIZES)
    assert wavs[0].is_file() and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # Another seed gives other sentences.
    prepare_synth(other / "c2", other / "m2", seed=4, num_train=0, num_dev=0, num_test=5)
    assert {s.text for s in _supervisions(other / "m2", "test")} != {
        s.text for s in _supervisions(manifest_dir, "test")
    }


def test_custom_voice_split_and_bad_arguments(tmp_path: Path) -> None:
    if not shutil.which("flite"):
        pytest.skip("flite not installed")
    only = VoiceSplit(test=("flite/slt", "festival/cmu_us_slt_arctic_hts"), dev=())
    reports = prepare_synth(
        tmp_path / "c", tmp_path / "m", num_train=0, num_dev=0, num_test=3, voice_split=only,
        engine_weights={"flite": 1.0},
    )  # fmt: skip
    assert [r.split for r in reports] == ["test"]
    assert {s.speaker for s in _supervisions(tmp_path / "m", "test")} == {Voice("flite", "slt").id}
    with pytest.raises(ValueError):
        prepare_synth(tmp_path / "c", tmp_path / "m", num_train=-1)
    with pytest.raises(ValueError):
        prepare_synth(tmp_path / "c", tmp_path / "m", num_jobs=0)


def test_digit_text_source_at_8khz(tmp_path: Path) -> None:
    """--text-source digits --sample-rate 8000: only digit words, 8 kHz wavs, own utterance ids."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    reports = prepare_synth(
        tmp_path / "c", tmp_path / "m", num_train=12, num_dev=0, num_test=0, seed=3, engine_weights={"espeak-ng": 1.0},
        text_source="digits", sample_rate=8000,
    )  # fmt: skip
    assert [(r.split, r.kept) for r in reports] == [("train", 12)]
    sups = _supervisions(tmp_path / "m", "train")
    assert {s.text for s in sups} <= set(DIGIT_WORDS) and len({s.text for s in sups}) == 10
    for rec in load_manifest(recordings_path(tmp_path / "m", "synth", "train")):
        assert rec.sampling_rate == 8000 and sf.info(rec.sources[0].source).samplerate == 8000
    # The rate is part of the audio's identity: a 16 kHz build must not reuse these files.
    again = prepare_synth(
        tmp_path / "c", tmp_path / "m16", num_train=12, num_dev=0, num_test=0, seed=3, engine_weights={"espeak-ng": 1.0},
        text_source="digits",
    )  # fmt: skip
    assert again[0].kept == 12
    assert not {s.id for s in sups} & {s.id for s in _supervisions(tmp_path / "m16", "train")}
    with pytest.raises(ValueError):
        prepare_synth(tmp_path / "c", tmp_path / "m", num_train=1, text_source="poems")
    with pytest.raises(ValueError):
        prepare_synth(tmp_path / "c", tmp_path / "m", num_train=1, sample_rate=22050)
    with pytest.raises(ValueError):
        prepare_synth(tmp_path / "c", tmp_path / "m", num_train=1, text_source="digits", num_train_words=5)


def test_file_text_source_speaks_the_file_minus_excluded(tmp_path: Path) -> None:
    """--text-source file: sentences of the text file, never one near an excluded text."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    text = tmp_path / "book.txt"
    text.write_text(
        "The old man walked slowly down the road. He sat by the quiet river bank. "
        "Birds sang in the tall green trees. The evening light was soft and warm.\n"
    )
    reports = prepare_synth(
        tmp_path / "c", tmp_path / "m", num_train=2, num_dev=1, num_test=0, seed=3, engine_weights={"espeak-ng": 1.0},
        text_source="file", text_file=text, exclude_texts=["Birds sang in the tall green trees, said she."],
    )  # fmt: skip
    assert [(r.split, r.kept) for r in reports] == [("train", 2), ("dev", 1)]
    spoken = {s.text for split in ("train", "dev") for s in _supervisions(tmp_path / "m", split)}
    assert spoken == {
        "THE OLD MAN WALKED SLOWLY DOWN THE ROAD",
        "HE SAT BY THE QUIET RIVER BANK",
        "THE EVENING LIGHT WAS SOFT AND WARM",
    }
    with pytest.raises(ValueError):
        prepare_synth(tmp_path / "c", tmp_path / "m", num_train=1, text_source="file")
    # A missing file names the argument (dsr prepare synth: its flag, --text-file).
    with pytest.raises(OptionError) as missing:
        prepare_synth(tmp_path / "c", tmp_path / "m", num_train=1, text_source="file", text_file=tmp_path / "no.txt")
    assert str(missing.value).startswith(f"text_file {tmp_path / 'no.txt'}: no such text file; write one with")
    assert missing.value.as_flags().startswith(f"--text-file {tmp_path / 'no.txt'}: no such text file")
    with pytest.raises(DsrUserError, match="book.txt: 3 usable sentences"):
        prepare_synth(
            tmp_path / "c",
            tmp_path / "m2",
            num_train=4,
            num_dev=0,
            num_test=0,
            text_source="file",
            text_file=text,
            exclude_texts=["Birds sang in the tall green trees."],
        )
