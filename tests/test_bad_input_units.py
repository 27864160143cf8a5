"""The library checks behind the bad-input matrix, on generated audio (no shared data needed).

tests/test_bad_input_matrix.py runs the whole matrix through the CLI on real recordings
(and skips without them); these pin the pieces it relies on.

    OMP_NUM_THREADS=1 python -m pytest tests/test_bad_input_units.py -q
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dsr.errors import DsrUserError

SR = 16000


def tone(seconds: float = 2.0, level: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(0)
    return (level * np.sin(2 * np.pi * 220 * t) + 0.1 * level * rng.standard_normal(t.size)).astype(np.float32)


def test_truncated_wav_is_skipped_not_kept_at_half_length(tmp_path: Path) -> None:
    from dsr.data.validate import SkipUtterance, check_audio

    sf.write(tmp_path / "full.wav", tone(), SR, subtype="PCM_16")
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    assert check_audio(tmp_path / "full.wav").num_samples == 2 * SR
    with pytest.raises(SkipUtterance, match=f"truncated audio: WAV header says {2 * SR} samples"):
        check_audio(tmp_path / "cut.wav")


def test_streaming_wav_of_unknown_length_is_not_called_truncated(tmp_path: Path) -> None:
    """A data chunk size of 0xFFFFFFFF means "until the end of the file" (streaming writers)."""
    from dsr.data.validate import check_audio

    sf.write(tmp_path / "a.wav", tone(), SR, subtype="PCM_16")
    data = bytearray((tmp_path / "a.wav").read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = (0xFFFFFFFF).to_bytes(4, "little")
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    assert check_audio(tmp_path / "stream.wav").num_samples == 2 * SR


def test_mp3_named_wav_is_a_wrong_container_and_mp3_length_is_decoded(tmp_path: Path) -> None:
    from dsr.data.validate import SkipUtterance, check_audio

    sf.write(tmp_path / "a.mp3", tone(), SR, format="MP3")
    (tmp_path / "b.wav").write_bytes((tmp_path / "a.mp3").read_bytes())
    with pytest.raises(SkipUtterance, match="wrong container: b.wav holds MP3 data, not WAV; fix: rename"):
        check_audio(tmp_path / "b.wav")
    info = check_audio(tmp_path / "a.mp3")
    assert info.num_samples == sf.read(tmp_path / "a.mp3")[0].shape[0]


def test_near_silent_audio_is_kept_with_a_warning(tmp_path: Path) -> None:
    from dsr.data.validate import audio_warning, check_audio

    rng = np.random.default_rng(1)
    sf.write(
        tmp_path / "dither.wav", (rng.standard_normal(SR) * 10 ** (-90 / 20)).astype(np.float32), SR, subtype="FLOAT"
    )
    sf.write(tmp_path / "speech.wav", tone(level=0.01), SR)  # -43 dBFS: quiet, not silent
    quiet = check_audio(tmp_path / "dither.wav")
    assert quiet.near_silent and "near-silent audio" in (audio_warning(quiet) or "")
    assert audio_warning(check_audio(tmp_path / "speech.wav")) is None


def test_user_os_errors_are_one_line_and_others_stay_bugs() -> None:
    from dsr.cli.main import user_os_error

    line = user_os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "afile/m"))
    assert line is not None and line.startswith("afile/m: Not a directory; fix: ") and "\n" not in line
    assert user_os_error(OSError(errno.EBADF, "Bad file descriptor")) is None  # no path: a bug
    assert user_os_error(OSError(errno.EINVAL, "Invalid argument", "x")) is None


def test_input_fingerprint_and_changed_inputs(tmp_path: Path) -> None:
    from dsr.utils import changed_inputs, input_fingerprint, mark_done

    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.wav").write_bytes(b"1")
    inputs = {"text": tmp_path / "a.txt", "audio": tmp_path / "d"}
    mark_done(tmp_path, "stage", {"inputs": input_fingerprint(inputs), "options": {"k": [1, 2]}})
    assert changed_inputs(tmp_path, "stage", input_fingerprint(inputs), {"k": (1, 2)}) == []
    (tmp_path / "a.txt").write_text("two")
    (tmp_path / "d" / "y.wav").write_bytes(b"2")
    assert changed_inputs(tmp_path, "stage", input_fingerprint(inputs), {"k": [1, 3]}) == [
        "input audio",
        "input text",
        "option k",
    ]
    mark_done(tmp_path, "old", {"summary": "before inputs were recorded"})
    assert changed_inputs(tmp_path, "old", input_fingerprint(inputs), {}) == []


def test_check_vocabulary_names_both_sides(tmp_path: Path) -> None:
    from dsr.lang.vocabulary import check_vocabulary, vocabulary_info

    for name, piece in (("trained", b"a"), ("other", b"b")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "bpe.model").write_bytes(piece)
        (tmp_path / name / "tokens.txt").write_bytes(piece)
    recorded = vocabulary_info(tmp_path / "trained", 30)
    check_vocabulary(recorded, 30, tmp_path / "trained", 30, "the model in exp")
    with pytest.raises(
        DsrUserError,
        match=r"^lang_dir .*other has 40 tokens but the model in exp was trained "
        r"with 30 tokens of .*trained; fix: give the lang_dir the model was trained with$",
    ):
        check_vocabulary(recorded, 30, tmp_path / "other", 40, "the model in exp")
    with pytest.raises(DsrUserError, match="has another bpe.model"):
        check_vocabulary(recorded, 30, tmp_path / "other", 30, "the model in exp")
    with pytest.raises(DsrUserError, match="has 20 tokens but the model in exp was trained with 30"):
        check_vocabulary(None, 30, tmp_path / "other", 20, "the model in exp")


def test_feature_paths_resolve_from_the_manifest_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lhotse import CutSet
    from tiny_corpus import make_tiny_corpus

    from dsr.data.cut_paths import check_feature_storage
    from dsr.data.cuts import load_cuts

    work = tmp_path / "work"
    corpus = make_tiny_corpus(work, num_train=3, num_dev=1)
    cuts = Path(corpus["train_cuts"])
    rows = [json.loads(line) for line in gzip.open(cuts, "rt")]
    for row in rows:  # as older `dsr features` wrote them: relative to where it ran
        row["features"]["storage_path"] = os.path.relpath(row["features"]["storage_path"], work)
    with gzip.open(cuts, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    monkeypatch.chdir(tmp_path)
    loaded = load_cuts(cuts)
    assert all(Path(c.features.storage_path).is_absolute() for c in loaded)
    assert loaded[0].load_features().shape[1] == 80
    check_feature_storage(loaded, cuts)
    storage = Path(loaded[0].features.storage_path)
    storage.write_bytes(storage.read_bytes()[:100])
    with pytest.raises(DsrUserError, match=f"feature file {storage} is truncated"):
        check_feature_storage(CutSet.from_cuts(loaded), cuts)


def test_a_manifest_recording_that_cannot_be_read_is_one_line_naming_it(tmp_path: Path) -> None:
    """What decoding, reference systems and benches read through: a recording whose file is
    gone or is not audio (the manifest outlived it) gives one line with the id, the path and
    the fix, not lhotse's several-backend report."""
    from lhotse import Recording

    from dsr.features.audio import load_recording_mono

    sf.write(tmp_path / "a.wav", tone(1.0), SR)
    rec = Recording.from_file(tmp_path / "a.wav", recording_id="rec1")
    assert load_recording_mono(rec, 0.0, rec.duration, SR).shape == (SR,)
    (tmp_path / "a.wav").write_bytes(b"not audio at all" * 100)
    with pytest.raises(DsrUserError) as bad:
        load_recording_mono(rec, 0.0, rec.duration, SR)
    assert str(bad.value).startswith(f"recording rec1 ({tmp_path / 'a.wav'}): cannot read its audio (")
    assert "\n" not in str(bad.value) and str(bad.value).endswith("convert it to wav/flac and re-run the prepare stage")
    (tmp_path / "a.wav").unlink()
    with pytest.raises(DsrUserError) as gone:
        load_recording_mono(rec, 0.0, rec.duration, SR)
    assert str(gone.value) == (
        f"recording rec1 ({tmp_path / 'a.wav'}): no such audio file; "
        "fix the path in the recordings manifest or re-run the prepare stage"
    )


def test_transcribing_a_directory_says_so(tmp_path: Path) -> None:
    from dsr.features.audio import load_audio_mono

    with pytest.raises(DsrUserError, match="is a directory, not an audio file; fix: pass its audio files"):
        load_audio_mono(tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker")
def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """A grandchild started with die_with_parent exits when its parent is SIGKILLed."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, os, sys, time\n"
        "from dsr.utils import die_with_parent\n"
        "def work(parent):\n"
        "    die_with_parent(parent)\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('fork').Process(target=work, args=(os.getpid(),))\n"
        "    p.start()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__import__("dsr").__file__).parents[1]))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    worker = int(proc.stdout.readline())
    time.sleep(0.5)  # let the worker run die_with_parent
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and alive(worker):
        time.sleep(0.1)
    survived = alive(worker)
    if survived:  # do not leave it running
        os.kill(worker, 9)
    assert not survived, "the worker outlived its SIGKILLed parent"


def alive(pid: int) -> bool:
    """``pid`` runs (exists and is not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
