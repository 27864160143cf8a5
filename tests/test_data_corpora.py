"""LibriSpeech, AISHELL and MUSAN import on tiny corpora written in lhotse's recipes' layouts."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import typer
from corpus_fixtures import aishell, audio, corrupt, librispeech, musan
from lhotse import load_manifest
from typer.testing import CliRunner

from dsr.cli import data as data_cli
from dsr.data.aishell import download_aishell, normalize_aishell_text, prepare_aishell
from dsr.data.librispeech import download_librispeech, prepare_librispeech, resolve_parts
from dsr.data.manifests import recordings_path, supervisions_path
from dsr.data.musan import download_musan, prepare_musan
from dsr.errors import DsrUserError


def _load(manifest_dir: Path, corpus: str, split: str):
    return load_manifest(recordings_path(manifest_dir, corpus, split)), load_manifest(
        supervisions_path(manifest_dir, corpus, split)
    )


def test_librispeech_parts_become_splits(tmp_path: Path) -> None:
    corpus = librispeech(tmp_path)
    reports = prepare_librispeech(corpus, tmp_path / "m")
    assert [(r.split, r.kept, len(r.skipped)) for r in reports] == [("dev-clean-2", 2, 0), ("train-clean-5", 4, 0)]
    recs, sups = _load(tmp_path / "m", "librispeech", "train-clean-5")
    sup = sups["19-198-0001"]
    assert (sup.text, sup.speaker, sup.language) == ("CHAPTER ONE", "19", "English")
    assert recs["19-198-0001"].duration == pytest.approx(1.0)
    assert Path(recs["19-198-0001"].sources[0].source).is_absolute()


def test_librispeech_agrees_with_lhotse_recipe(tmp_path: Path) -> None:
    """Same ids, texts, speakers and durations as lhotse's own prepare_librispeech on the same folder."""
    from lhotse.recipes import prepare_librispeech as lhotse_prepare

    corpus = librispeech(tmp_path)
    prepare_librispeech(corpus, tmp_path / "m", ["dev-clean-2"])
    ref = lhotse_prepare(corpus, dataset_parts=["dev-clean-2"])["dev-clean-2"]
    recs, sups = _load(tmp_path / "m", "librispeech", "dev-clean-2")
    ours = sorted((s.id, s.text, s.speaker, s.duration) for s in sups)
    theirs = sorted((s.id, s.text, s.speaker, s.duration) for s in ref["supervisions"])
    assert ours == theirs
    assert sorted(r.id for r in recs) == sorted(r.id for r in ref["recordings"])


def test_librispeech_bad_audio_is_skipped_and_named(tmp_path: Path) -> None:
    corpus = librispeech(tmp_path)
    corrupt(corpus / "train-clean-5/19/198/19-198-0000.flac")
    flac = corpus / "train-clean-5/26/495/26-495-0001.flac"
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])  # header intact, samples cut
    (report,) = prepare_librispeech(corpus, tmp_path / "m", ["train-clean-5"], num_jobs=2)
    assert report.kept == 2
    assert [u for u, _ in report.skipped] == ["19-198-0000", "26-495-0001"]
    assert report.reason_counts().keys() <= {"unreadable audio", "corrupt audio", "truncated audio"}
    assert "skipped 2" in report.summary()
    _, sups = _load(tmp_path / "m", "librispeech", "train-clean-5")
    assert sorted(s.id for s in sups) == ["19-198-0001", "26-495-0000"]


def test_librispeech_layout_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DsrUserError, match=r"LibriSpeech corpus dir .*/nowhere does not exist; fix: .*--download"):
        prepare_librispeech(tmp_path / "nowhere", tmp_path / "m")
    corpus = librispeech(tmp_path)
    with pytest.raises(DsrUserError, match=r"holds no LibriSpeech part folder; fix: give corpus_dir .*LibriSpeech"):
        prepare_librispeech(tmp_path, tmp_path / "m")
    with pytest.raises(DsrUserError, match=r"part folder .*dev-clean does not exist"):
        prepare_librispeech(corpus, tmp_path / "m", ["dev-clean"])
    with pytest.raises(DsrUserError, match="'dev-cleen' is unknown"):
        resolve_parts(["dev-cleen"])
    assert resolve_parts(["mini_librispeech", "dev-clean-2", "test-clean"]) == [
        "dev-clean-2",
        "train-clean-5",
        "test-clean",
    ]
    (corpus / "dev-clean-2/1272/128104/1272-128104-0001.flac").unlink()
    with pytest.raises(DsrUserError, match=r"1272-128104-0001.flac does not exist \(listed in .*trans.txt line 2\)"):
        prepare_librispeech(corpus, tmp_path / "m", ["dev-clean-2"])
    assert not recordings_path(tmp_path / "m", "librispeech", "dev-clean-2").exists()


def test_download_offline_is_one_line(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/no-mirror"
    with pytest.raises(
        DsrUserError, match=rf"cannot download {url}/31/dev-clean-2.tar.gz .*fix: .*base_url .*give it as corpus_dir$"
    ):
        download_librispeech(tmp_path / "dl", ["dev-clean-2"], base_url=url)
    with pytest.raises(DsrUserError, match=rf"cannot download {url}/33/data_aishell.tgz "):
        download_aishell(tmp_path / "dl", base_url=url)
    with pytest.raises(DsrUserError, match=rf"cannot download {url}/17/musan.tar.gz "):
        download_musan(tmp_path / "dl", base_url=url)


def _cli(*args: str):
    app = typer.Typer()
    app.add_typer(data_cli.app, name="prepare")
    return CliRunner().invoke(app, ["prepare", *args])


def test_cli_download_from_mirror_then_rerun_is_a_no_op(tmp_path: Path) -> None:
    """--download through lhotse's downloader from a file:// mirror, then a re-run touches nothing."""
    corpus = librispeech(tmp_path / "src")
    mirror = tmp_path / "mirror" / "31"
    mirror.mkdir(parents=True)
    with tarfile.open(mirror / "dev-clean-2.tar.gz", "w:gz") as tar:
        tar.add(corpus / "dev-clean-2", arcname="LibriSpeech/dev-clean-2")
    args = [
        "librispeech",
        "--download",
        "--download-dir",
        str(tmp_path / "dl"),
        "--base-url",
        f"file://{tmp_path}/mirror",
        "--dataset-parts",
        "dev-clean-2",
        "--manifest-dir",
        str(tmp_path / "m"),
        "-j",
        "1",
    ]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dl/LibriSpeech/dev-clean-2/1272/128104/1272-128104-0000.flac").is_file()
    written = recordings_path(tmp_path / "m", "librispeech", "dev-clean-2")
    stamp = written.stat().st_mtime_ns
    (mirror / "dev-clean-2.tar.gz").unlink()  # a re-run must not even need the mirror
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    assert "already done" in res.output and written.stat().st_mtime_ns == stamp
    res = _cli(
        "librispeech",
        "--corpus-dir",
        str(corpus),
        "--dataset-parts",
        "dev-clean-2",
        "--manifest-dir",
        str(tmp_path / "m"),
        "--force",
    )
    assert res.exit_code == 0, res.output
    assert written.stat().st_mtime_ns != stamp


def test_cli_needs_exactly_one_source(tmp_path: Path) -> None:
    res = _cli("musan", "--manifest-dir", str(tmp_path))
    assert isinstance(res.exception, DsrUserError) and "--corpus-dir DIR" in str(res.exception)
    res = _cli("aishell", "--corpus-dir", str(tmp_path), "--download")
    assert isinstance(res.exception, DsrUserError) and "not both" in str(res.exception)
    res = _cli("librispeech", "--download", "--download-dir", str(tmp_path))
    assert isinstance(res.exception, DsrUserError) and "--dataset-parts" in str(res.exception)


def test_aishell_text_is_characters(tmp_path: Path) -> None:
    corpus = aishell(tmp_path)
    audio(corpus / "data_aishell/wav/train/S0002/BAC009S0002W0999.wav", seed=9)  # not in the transcript
    corrupt(corpus / "data_aishell/wav/test/S0764/BAC009S0764W0122.wav")
    reports = prepare_aishell(corpus, tmp_path / "m")
    assert [(r.split, r.kept) for r in reports] == [("train", 2), ("dev", 1), ("test", 1)]
    assert reports[0].skipped == [
        ("BAC009S0002W0999", "no transcript: BAC009S0002W0999 is not in aishell_transcript_v0.8.txt")
    ]
    assert [u for u, _ in reports[2].skipped] == ["BAC009S0764W0122"]
    _, sups = _load(tmp_path / "m", "aishell", "train")
    sup = sups["BAC009S0002W0122"]
    assert (sup.text, sup.speaker, sup.language) == ("而对楼市成交抑制作用最大的限购", "S0002", "Chinese")
    assert normalize_aishell_text("ｋ 线，走势！") == "K线 走势"


def test_aishell_agrees_with_lhotse_recipe(tmp_path: Path) -> None:
    from lhotse.recipes import prepare_aishell as lhotse_prepare

    corpus = aishell(tmp_path)
    prepare_aishell(corpus, tmp_path / "m")
    ref = lhotse_prepare(corpus)
    for split in ("train", "dev", "test"):
        _, sups = _load(tmp_path / "m", "aishell", split)
        assert sorted((s.id, s.text, s.speaker) for s in sups) == sorted(
            (s.id, s.text, s.speaker) for s in ref[split]["supervisions"]
        )


def test_aishell_layout_errors_are_one_line(tmp_path: Path) -> None:
    corpus = aishell(tmp_path)
    with pytest.raises(
        DsrUserError, match=r"aishell_transcript_v0.8.txt does not exist; fix: give corpus_dir .*aishell$"
    ):
        prepare_aishell(tmp_path, tmp_path / "m")
    for wav in (corpus / "data_aishell/wav/dev").rglob("*.wav"):
        wav.unlink()
    (corpus / "data_aishell/wav/dev/S0724").rmdir()
    (corpus / "data_aishell/wav/S0724.tar.gz").write_bytes(b"")
    with pytest.raises(DsrUserError, match=r"dev audio folder .* is missing or empty; fix: unpack .*S0724.tar.gz"):
        prepare_aishell(corpus, tmp_path / "m")


def test_musan_recordings_only(tmp_path: Path) -> None:
    from lhotse.recipes import prepare_musan as lhotse_prepare

    corpus = musan(tmp_path)
    corrupt(corpus / "noise/free-sound/noise-free-sound-0001.wav")
    reports = prepare_musan(corpus, tmp_path / "m", ["noise", "music"])
    assert [(r.split, r.kept, [u for u, _ in r.skipped]) for r in reports] == [
        ("noise", 1, ["noise-free-sound-0001"]),
        ("music", 1, []),
    ]
    noise = load_manifest(recordings_path(tmp_path / "m", "musan", "noise"))
    assert [r.id for r in noise] == ["noise-free-sound-0000"] and noise[0].duration == pytest.approx(3.0)
    assert not supervisions_path(tmp_path / "m", "musan", "noise").exists()
    (corpus / "noise/free-sound/noise-free-sound-0001.wav").unlink()
    ref = lhotse_prepare(corpus, parts=["noise", "music"])
    assert [r.id for r in ref["noise"]["recordings"]] == [r.id for r in noise]
    with pytest.raises(DsrUserError, match=r"holds no MUSAN part folder; fix: give corpus_dir .*musan$"):
        prepare_musan(tmp_path, tmp_path / "m")
    with pytest.raises(DsrUserError, match="'babble' is unknown"):
        prepare_musan(corpus, tmp_path / "m", ["babble"])


def test_musan_errors_name_arguments_in_python_and_flags_in_the_cli(tmp_path: Path) -> None:
    """The library names prepare_musan's arguments (``corpus_dir``, ``parts``); dsr prepare musan
    says the same in one line naming its flags (``--corpus-dir``, ``--part``)."""
    corpus = musan(tmp_path)
    for path in sorted((corpus / "speech").rglob("*"), reverse=True) + [corpus / "speech"]:
        path.unlink() if path.is_file() else path.rmdir()
    cases = [  # (corpus_dir, part, the message with {} for the argument, library name, flag)
        (tmp_path, "noise", f"{tmp_path} holds no MUSAN part folder; fix: give {{}} {corpus}", "corpus_dir", "--corpus-dir"),
        (corpus, "speech", f"MUSAN part folder {corpus / 'speech'} does not exist; fix: unpack musan.tar.gz "
         "completely, or drop speech from {}", "parts", "--part"),
    ]  # fmt: skip
    for corpus_dir, part, message, name, flag in cases:
        with pytest.raises(DsrUserError) as raised:
            prepare_musan(corpus_dir, tmp_path / "m", [part])
        assert str(raised.value) == message.format(name)
        res = _cli("musan", "--corpus-dir", str(corpus_dir), "--part", part, "--manifest-dir", str(tmp_path / "m"))
        assert isinstance(res.exception, DsrUserError), res.output
        assert str(res.exception) == message.format(flag)
