"""The bad-input matrix (../shared/bad-input-matrix.md): 45 cases through prepare -> features -> train -> decode.

Every case runs the real ``dsr`` command line (``dsr.cli.main.run``, the function behind
``python -m dsr.cli.main``) in this process, with its stdout and stderr captured: an
exception that escapes ``run`` is recorded as the traceback Python would print.  A case
passes when every good utterance is kept, the bad one is skipped and named (or the stage
stops with one ``error:`` line naming the file and the fix), no traceback is shown and
nothing is lost silently.  The two interruption cases (14c, 14d) run ``python -m
dsr.cli.main`` as a child process, since they need a process to signal.

Good utterances are 20 real recordings of ../shared/data/arctic_cathy, copied into
tmp_path (the module is skipped when that data is absent); the bad files are generated
here.  One tiny model (0.09 M parameters, 3 short epochs) is trained once per module.
Test ids are the matrix's case numbers.

    OMP_NUM_THREADS=1 python -m pytest tests/test_bad_input_matrix.py -q
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ARCTIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "arctic_cathy"
NUM_GOOD = 20

pytestmark = pytest.mark.skipif(
    not (ARCTIC / "transcripts.tsv").is_file(),
    reason=f"shared test data {ARCTIC} is absent (expected ../shared/data/arctic_cathy next to the repo)",
)

TINY = """\
encoder-dim: 32
num-encoder-layers: 2
num-heads: 2
ffn-dim: 64
conv-kernel-size: 5
decoder-dim: 32
joiner-dim: 32
max-duration: 30
warmup-steps: 2
model-warm-step: 4
save-every-n: 0
log-interval: 10
average-period: 2
num-threads: 1
device: cpu
"""
VOCAB = 64
MANY = 400  # utterances of the interrupted `features` runs: several worker chunks of 64, long enough (~600 s of audio) that the signal lands mid-run


# ---------------------------------------------------------------------------------------------
# Running the CLI


@dataclass
class Run:
    """What one ``dsr`` command printed (stdout and stderr together) and its exit code."""

    rc: int
    out: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.out.splitlines() if line.startswith("error:")]


def dsr(*args: object, cwd: Path | None = None) -> Run:
    """Run ``dsr ARGS`` through the CLI's own entry point and capture what a user would see."""
    from dsr.cli import main

    buf = io.StringIO()
    argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["dsr", *map(str, args)]
    rc = 0
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(buf), redirect_stderr(buf):
            try:
                main.run()
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # what the interpreter would print for an escaped exception
                buf.write(traceback.format_exc())
                rc = 1
    finally:
        sys.argv = argv
        os.chdir(old_cwd)
    return Run(rc, buf.getvalue())


def no_traceback(run: Run) -> None:
    assert "Traceback (most recent call last)" not in run.out, run.out[-3000:]


def ok(run: Run) -> Run:
    no_traceback(run)
    assert run.rc == 0, run.out[-3000:]
    return run


def one_line_error(run: Run, *needles: str) -> str:
    """The single ``error:`` line of a failed run, which must contain every needle."""
    no_traceback(run)
    assert run.rc != 0, run.out[-3000:]
    assert len(run.errors) == 1, run.out[-3000:]
    for needle in needles:
        assert needle in run.errors[0], run.errors[0]
    return run.errors[0]


# ---------------------------------------------------------------------------------------------
# Audio


def good_ids() -> list[str]:
    lines = (ARCTIC / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[:NUM_GOOD]
    return [line.split("\t")[0] for line in lines]


def good_texts() -> dict[str, str]:
    lines = (ARCTIC / "transcripts.tsv").read_text(encoding="utf-8").splitlines()[:NUM_GOOD]
    return dict(line.split("\t", 1) for line in lines)


def speech(i: int = 0) -> tuple[np.ndarray, int]:
    x, sr = sf.read(ARCTIC / "audio" / f"{good_ids()[i]}.flac", dtype="float32")
    return x, sr


def resampled(x: np.ndarray, sr: int, to: int) -> np.ndarray:
    from dsr.features.audio import resample

    return resample(x, sr, to)


def streamed_mp3(path: Path, x: np.ndarray, sr: int) -> Path:
    """An MP3 as streaming encoders write it: no Xing/LAME frame, so its length is only an
    estimate from the first frame's bitrate (here, of leading silence: far too long)."""
    tmp = path.with_suffix(".tmp.mp3")
    sf.write(tmp, np.concatenate([np.zeros(sr, dtype=np.float32), x]), sr, format="MP3")
    data = tmp.read_bytes()
    tmp.unlink()
    header = data[:4]
    assert header[:2] == b"\xff\xf3" and b"Xing" in data[:64], "libsndfile wrote an unexpected first frame"
    # MPEG-2 layer III frame length: 72 * bitrate / sample rate + padding.
    bitrate = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160][header[2] >> 4] * 1000
    first = 72 * bitrate // sr + ((header[2] >> 1) & 1)
    path.write_bytes(data[first:])
    return path


def write_bad_corpus(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """``root/my audio/`` (a folder with a space: case 11b) with the 20 good recordings and one
    file per bad-audio case, and a CRLF transcripts file (case 10).  Returns (audio dir,
    transcripts, {utt id: text})."""
    audio = root / "my audio"
    audio.mkdir(parents=True)
    texts = good_texts()
    for utt in texts:
        shutil.copy(ARCTIC / "audio" / f"{utt}.flac", audio / f"{utt}.flac")
    x, sr = speech(0)
    sentence = texts[good_ids()[0]]
    rng = np.random.default_rng(0)

    def add(utt: str, text: str) -> None:
        texts[utt] = text

    # 1: random bytes; 2: zero length; 3a/3b: truncated FLAC / WAV; 4a-c: wrong containers.
    (audio / "c01_random.flac").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (audio / "c01_random_wav.wav").write_bytes(rng.integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (audio / "c02_empty.wav").write_bytes(b"")
    sf.write(root / "full.flac", x, sr)
    (audio / "c03a_trunc.flac").write_bytes(
        (root / "full.flac").read_bytes()[: (root / "full.flac").stat().st_size // 2]
    )
    sf.write(root / "full.wav", x, sr, subtype="PCM_16")
    (audio / "c03b_trunc.wav").write_bytes((root / "full.wav").read_bytes()[: (root / "full.wav").stat().st_size // 2])
    streamed_mp3(audio / "c04a_mp3_named_wav.wav", x, sr)
    streamed_mp3(audio / "c04b_real.mp3", x, sr)
    (audio / "c04c_text.wav").write_text("this is a text file, not audio\n" * 40)
    for utt in (
        "c01_random",
        "c01_random_wav",
        "c02_empty",
        "c03a_trunc",
        "c03b_trunc",
        "c04a_mp3_named_wav",
        "c04b_real",
        "c04c_text",
    ):
        add(utt, sentence)
    # 5-7: other rates, stereo, 24-bit and float WAV: kept.
    for rate in (8000, 44100, 48000):
        sf.write(audio / f"c05_rate{rate}.wav", resampled(x, sr, rate), rate)
        add(f"c05_rate{rate}", sentence)
    sf.write(audio / "c06_stereo.wav", np.stack([x, 0.5 * x], axis=1), sr)
    sf.write(audio / "c07_pcm24.wav", x, sr, subtype="PCM_24")
    sf.write(audio / "c07_float.wav", x, sr, subtype="FLOAT")
    add("c06_stereo", sentence), add("c07_pcm24", sentence), add("c07_float", sentence)
    # 8a: 50 ms (one letter, so that the transcript fits its length); 8c: five minutes.
    sf.write(audio / "c08a_short.wav", x[8000:8800], sr)
    add("c08a_short", "a")
    long = np.concatenate([speech(i)[0] for i in range(NUM_GOOD)] * 12)[: 300 * sr]
    sf.write(audio / "c08c_long.flac", long, sr)
    add("c08c_long", " ".join(texts[u] for u in good_ids()))
    # 9a: all zeros; 9b: dither at -90 dBFS with a sentence.
    sf.write(audio / "c09a_zeros.wav", np.zeros(2 * sr, dtype=np.float32), sr)
    sf.write(
        audio / "c09b_dither.wav",
        (rng.standard_normal(3 * sr) * 10 ** (-90 / 20)).astype(np.float32),
        sr,
        subtype="FLOAT",
    )
    add("c09a_zeros", sentence), add("c09b_dither", sentence)
    # 10: transcripts (audio is a good recording each).
    for utt, text in (
        ("c10_empty", ""),
        ("c10_idonly", None),
        ("c10_5000", " ".join(["word"] * 5000)),
        ("c10_unicode", "It's 42 degrees, 3 dogs & naïve cafés!"),
    ):
        shutil.copy(ARCTIC / "audio" / f"{good_ids()[1]}.flac", audio / f"{utt}.flac")
        texts[utt] = text  # type: ignore[assignment]
    shutil.copy(ARCTIC / "audio" / f"{good_ids()[2]}.flac", audio / "c10_orphan.flac")  # audio without a line
    # 11b: a unicode file name.
    shutil.copy(ARCTIC / "audio" / f"{good_ids()[3]}.flac", audio / "c11b_café_ü.flac")
    add("c11b_café_ü", texts[good_ids()[3]])

    transcripts = root / "transcripts.tsv"
    lines = [utt if text is None else f"{utt}\t{text}" for utt, text in texts.items()]
    transcripts.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))  # CRLF: case 10
    return audio, transcripts, texts


# ---------------------------------------------------------------------------------------------
# The pipeline, built once


@dataclass
class Pipeline:
    root: Path
    audio: Path
    transcripts: Path
    texts: dict[str, str]
    prepare: Run
    features: Run
    cuts: Path
    lang: Path
    exp: Path


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("matrix")
    audio, transcripts, texts = write_bad_corpus(root)
    prepare = dsr(
        "prepare",
        "folder",
        "--audio-dir",
        audio,
        "--transcripts",
        transcripts,
        "--corpus",
        "bad",
        "--split",
        "train",
        "--manifest-dir",
        root / "manifests",
    )
    ok(prepare)
    features = ok(
        dsr(
            "features",
            "--corpus",
            "bad",
            "--split",
            "train",
            "--manifest-dir",
            root / "manifests",
            "--out-dir",
            root / "fbank",
            "-j",
            "1",
        )
    )
    cuts = root / "fbank" / "bad_cuts_train.jsonl.gz"
    ok(dsr("lang", "--cuts", cuts, "--lang-dir", root / "lang", "--vocab-size", VOCAB))
    (root / "tiny.yaml").write_text(TINY)
    ok(
        dsr(
            "train",
            "--config",
            root / "tiny.yaml",
            "--exp-dir",
            root / "exp",
            "--lang-dir",
            root / "lang",
            "--train-cuts",
            cuts,
            "--dev-cuts",
            "",
            "--num-epochs",
            "3",
            "--max-utt-duration",
            "20",
        )
    )
    return Pipeline(root, audio, transcripts, texts, prepare, features, cuts, root / "lang", root / "exp")


def skipped_lines(run: Run) -> dict[str, str]:
    """``{utt id: reason}`` of the ``skipped ID: reason`` lines a stage printed."""
    out = {}
    for line in run.out.splitlines():
        line = line.strip()
        if line.startswith("skipped "):
            utt, _, reason = line[len("skipped ") :].partition(": ")
            out[utt] = reason
    return out


def cut_ids(path: Path) -> set[str]:
    return {c["id"] for c in read_jsonl_gz(path)}


def supervisions(pipe: Pipeline) -> dict[str, str]:
    return {s["id"]: s["text"] for s in read_jsonl_gz(pipe.root / "manifests" / "bad_supervisions_train.jsonl.gz")}


# ---------------------------------------------------------------------------------------------
# Cases decided by `prepare folder` and `features` on the combined folder

SKIPPED_AT_PREPARE = [
    pytest.param("c01_random", "unreadable audio", id="1-random-flac"),
    pytest.param("c01_random_wav", "unreadable audio", id="1-random-wav"),
    pytest.param("c02_empty", "unreadable audio", id="2"),
    pytest.param("c03a_trunc", "", id="3a"),
    pytest.param("c03b_trunc", "truncated audio", id="3b"),
    pytest.param("c04a_mp3_named_wav", "wrong container", id="4a"),
    pytest.param("c04c_text", "unreadable audio", id="4c"),
    pytest.param("c09a_zeros", "silent audio", id="9a"),
    pytest.param("c10_empty", "empty transcript", id="10-empty-text"),
    pytest.param("c10_idonly", "empty transcript", id="10-id-only"),
    pytest.param("c10_5000", "transcript too long", id="10-5000-words"),
]


@pytest.mark.parametrize("utt, reason", SKIPPED_AT_PREPARE)
def test_skipped_named_and_counted(pipe: Pipeline, utt: str, reason: str) -> None:
    skipped = skipped_lines(pipe.prepare)
    assert utt in skipped, pipe.prepare.out[-4000:]
    assert reason in skipped[utt]
    assert utt not in supervisions(pipe)
    # Counted in the summary line, and no good utterance lost on its account.
    assert f"{len(SKIPPED_AT_PREPARE)} skipped" in pipe.prepare.out
    assert set(good_ids()) <= cut_ids(pipe.cuts)


def test_3b_truncated_wav_is_not_kept_at_half_length(pipe: Pipeline) -> None:
    """The truncated WAV is never kept with half its audio and the full transcript."""
    assert "c03b_trunc" not in cut_ids(pipe.cuts)
    assert "WAV header says" in skipped_lines(pipe.prepare)["c03b_trunc"]


def test_4a_mp3_named_wav_names_the_container(pipe: Pipeline) -> None:
    reason = skipped_lines(pipe.prepare)["c04a_mp3_named_wav"]
    assert "MP3" in reason and "truncated" not in reason and "rename" in reason


KEPT = [
    pytest.param("c04b_real", id="4b"),
    pytest.param("c05_rate8000", id="5-8k"),
    pytest.param("c05_rate44100", id="5-44.1k"),
    pytest.param("c05_rate48000", id="5-48k"),
    pytest.param("c06_stereo", id="6"),
    pytest.param("c07_pcm24", id="7-24bit"),
    pytest.param("c07_float", id="7-float"),
    pytest.param("c08c_long", id="8c"),
    pytest.param("c10_unicode", id="10-digits-punctuation-unicode"),
    pytest.param("c11b_café_ü", id="11b"),
]


@pytest.mark.parametrize("utt", KEPT)
def test_kept_with_features(pipe: Pipeline, utt: str) -> None:
    assert utt not in skipped_lines(pipe.prepare)
    cuts = {c["id"]: c for c in read_jsonl_gz(pipe.cuts)}
    assert utt in cuts, pipe.features.out[-3000:]
    # Resampled to 16 kHz and downmixed: about 100 frames per second of the file's true length.
    info = sf.info(str(next(pipe.audio.glob(f"{utt}.*"))))
    true_s = sf.read(str(next(pipe.audio.glob(f"{utt}.*"))))[0].shape[0] / info.samplerate
    assert abs(cuts[utt]["duration"] - true_s) < 0.05
    assert cuts[utt]["features"]["num_features"] == 80


def test_4b_real_mp3_keeps_its_decoded_length(pipe: Pipeline) -> None:
    recs = {r["id"]: r for r in read_jsonl_gz(pipe.root / "manifests" / "bad_recordings_train.jsonl.gz")}
    decoded = sf.read(str(pipe.audio / "c04b_real.mp3"))[0].shape[0]
    assert recs["c04b_real"]["num_samples"] == decoded


def test_8a_short_file_skipped_by_features_and_transcribe(pipe: Pipeline) -> None:
    assert "c08a_short" in supervisions(pipe)
    assert "c08a_short" not in cut_ids(pipe.cuts)
    assert "c08a_short" in pipe.features.out and "too short" in pipe.features.out
    run = dsr(
        "transcribe",
        "--exp-dir",
        pipe.exp,
        "--lang-dir",
        pipe.lang,
        "--device",
        "cpu",
        pipe.audio / "c08a_short.wav",
        pipe.audio / f"{good_ids()[0]}.flac",
    )
    no_traceback(run)
    assert run.rc == 0 and "too short" in run.out
    assert str(pipe.audio / f"{good_ids()[0]}.flac") + "\t" in run.out


def test_9b_near_silent_is_kept_with_a_warning(pipe: Pipeline) -> None:
    assert "c09b_dither" in supervisions(pipe)
    warned = [line for line in pipe.prepare.out.splitlines() if "c09b_dither" in line and "near-silent" in line]
    assert warned, pipe.prepare.out[-3000:]
    assert "1 kept with a warning (near-silent audio: 1)" in pipe.prepare.out


def test_10_crlf_and_orphan_audio(pipe: Pipeline) -> None:
    """CRLF line ends leave no carriage return in a transcript; audio without a line is named."""
    assert all("\r" not in text for text in supervisions(pipe).values())
    assert supervisions(pipe)[good_ids()[0]] == good_texts()[good_ids()[0]]
    assert "have no line" in pipe.prepare.out and "c10_orphan" in pipe.prepare.out


def test_every_good_utterance_is_kept(pipe: Pipeline) -> None:
    assert set(good_ids()) <= cut_ids(pipe.cuts)
    no_traceback(pipe.prepare)
    no_traceback(pipe.features)


# ---------------------------------------------------------------------------------------------
# Transcript layout errors: the stage stops with one line naming file, line and fix


def small_folder(root: Path, n: int = 4) -> tuple[Path, dict[str, str]]:
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    texts = {utt: good_texts()[utt] for utt in good_ids()[:n]}
    for utt in texts:
        shutil.copy(ARCTIC / "audio" / f"{utt}.flac", audio / f"{utt}.flac")
    return audio, texts


@pytest.mark.parametrize("case, needles", [
    pytest.param("latin1", ["not UTF-8", "re-encode"], id="10-latin-1"),
    pytest.param("notab", ["line 2", "no TAB"], id="10-no-tab"),
    pytest.param("duplicate", ["lines 1 and 3", "remove the duplicate"], id="10-duplicate-id"),
    pytest.param("noaudio", ["line 5", "no audio file", "add the audio file or remove that line"],
                 id="10-id-without-audio"),
])  # fmt: skip
def test_10_transcript_layout_errors(tmp_path: Path, case: str, needles: list[str]) -> None:
    audio, texts = small_folder(tmp_path)
    ids = list(texts)
    lines = [f"{u}\t{t}" for u, t in texts.items()]
    if case == "latin1":
        data = ("\n".join(lines[:1] + [f"{ids[1]}\tcafé"] + lines[2:]) + "\n").encode("latin-1")
    elif case == "notab":
        data = ("\n".join(lines[:1] + [f"{ids[1]} {texts[ids[1]]}"] + lines[2:]) + "\n").encode()
    elif case == "duplicate":
        data = ("\n".join(lines[:2] + [lines[0]] + lines[3:]) + "\n").encode()
    else:
        data = ("\n".join(lines + ["nosuchfile\tsome words"]) + "\n").encode()
    (tmp_path / "t.tsv").write_bytes(data)
    run = dsr(
        "prepare",
        "folder",
        "--audio-dir",
        audio,
        "--transcripts",
        tmp_path / "t.tsv",
        "--corpus",
        "x",
        "--split",
        "train",
        "--manifest-dir",
        tmp_path / "m",
    )
    one_line_error(run, *needles)
    assert not (tmp_path / "m" / "x_supervisions_train.jsonl.gz").exists()


def test_11a_file_name_with_spaces_says_rename(tmp_path: Path) -> None:
    audio, texts = small_folder(tmp_path)
    shutil.copy(ARCTIC / "audio" / f"{good_ids()[5]}.flac", audio / "my take 1.flac")
    lines = [f"{u}\t{t}" for u, t in texts.items()] + [f"my take 1\t{good_texts()[good_ids()[5]]}"]
    (tmp_path / "t.tsv").write_text("\n".join(lines) + "\n")
    run = dsr(
        "prepare",
        "folder",
        "--audio-dir",
        audio,
        "--transcripts",
        tmp_path / "t.tsv",
        "--corpus",
        "x",
        "--split",
        "train",
        "--manifest-dir",
        tmp_path / "m",
    )
    one_line_error(run, "line 5", "'my take 1'", "rename the audio file", "'my_take_1'")


# ---------------------------------------------------------------------------------------------
# Output folders


def test_12_read_only_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audio, texts = small_folder(tmp_path)
    (tmp_path / "t.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:
        # root writes into a 0555 folder anyway: let the file system refuse as it would for a user.
        real = tempfile.mkstemp

        def refuse(*args, **kwargs):
            folder = kwargs.get("dir", args[2] if len(args) > 2 else None)
            if folder is not None and Path(folder).resolve().is_relative_to(out.resolve()):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(folder) / "x"))
            return real(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        run = dsr(
            "prepare",
            "folder",
            "--audio-dir",
            audio,
            "--transcripts",
            tmp_path / "t.tsv",
            "--corpus",
            "x",
            "--split",
            "train",
            "--manifest-dir",
            out,
        )
    finally:
        out.chmod(0o755)
    one_line_error(run, str(out), "Permission denied", "fix:")


def test_13a_manifest_dir_with_missing_parent_is_created(tmp_path: Path) -> None:
    audio, texts = small_folder(tmp_path)
    (tmp_path / "t.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    ok(
        dsr(
            "prepare",
            "folder",
            "--audio-dir",
            audio,
            "--transcripts",
            tmp_path / "t.tsv",
            "--corpus",
            "x",
            "--split",
            "train",
            "--manifest-dir",
            tmp_path / "new" / "deeper",
        )
    )
    assert (tmp_path / "new" / "deeper" / "x_supervisions_train.jsonl.gz").is_file()


def test_13b_manifest_dir_whose_parent_is_a_file(tmp_path: Path) -> None:
    audio, texts = small_folder(tmp_path)
    (tmp_path / "t.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    (tmp_path / "afile").write_text("not a folder")
    run = dsr(
        "prepare",
        "folder",
        "--audio-dir",
        audio,
        "--transcripts",
        tmp_path / "t.tsv",
        "--corpus",
        "x",
        "--split",
        "train",
        "--manifest-dir",
        tmp_path / "afile" / "m",
    )
    one_line_error(run, str(tmp_path / "afile"), "not a folder")


def test_os_errors_outside_user_paths_keep_their_traceback() -> None:
    """The CLI's OSError handler only speaks for errors about a path; others are bugs."""
    from dsr.cli.main import user_os_error

    assert user_os_error(OSError(errno.EBADF, "Bad file descriptor")) is None
    assert user_os_error(OSError(errno.EINVAL, "Invalid argument", "x")) is None
    assert user_os_error(PermissionError(errno.EACCES, "Permission denied", "/out")).startswith("/out: ")


# ---------------------------------------------------------------------------------------------
# Stages run again


def prepare_small(root: Path, texts: dict[str, str], audio: Path, *extra: str) -> Run:
    (root / "t.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    return dsr(
        "prepare",
        "folder",
        "--audio-dir",
        audio,
        "--transcripts",
        root / "t.tsv",
        "--corpus",
        "x",
        "--split",
        "train",
        "--manifest-dir",
        root / "m",
        *extra,
    )


def features_small(root: Path, *extra: str) -> Run:
    return dsr(
        "features", "--corpus", "x", "--split", "train", "--manifest-dir", root / "m", "--out-dir", root / "f", *extra
    )


def test_14a_same_stage_twice_is_skipped(tmp_path: Path) -> None:
    audio, texts = small_folder(tmp_path, 3)
    ok(prepare_small(tmp_path, texts, audio))
    ok(features_small(tmp_path, "-j", "1"))
    again = ok(features_small(tmp_path, "-j", "1"))
    assert "skip" in again.out and "already done" in again.out


def test_14b_changed_transcripts_redo_features(tmp_path: Path) -> None:
    audio, texts = small_folder(tmp_path, 4)
    ok(prepare_small(tmp_path, texts, audio))
    ok(features_small(tmp_path, "-j", "1"))
    ids = list(texts)
    edited = {u: t for u, t in texts.items() if u != ids[0]}
    edited[ids[1]] = "an edited transcript"
    ok(prepare_small(tmp_path, edited, audio, "--force"))
    run = ok(features_small(tmp_path, "-j", "1"))
    assert "already done" not in run.out and "redo" in run.out
    cuts = {c["id"]: c["supervisions"][0]["text"] for c in read_jsonl_gz(tmp_path / "f" / "x_cuts_train.jsonl.gz")}
    assert set(cuts) == set(edited) and cuts[ids[1]] == "an edited transcript"


def test_14b_edited_transcripts_redo_prepare_without_force(tmp_path: Path) -> None:
    audio, texts = small_folder(tmp_path, 3)
    ok(prepare_small(tmp_path, texts, audio))
    edited = dict(texts, **{next(iter(texts)): "changed words"})
    run = ok(prepare_small(tmp_path, edited, audio))
    assert "redo" in run.out
    sups = read_jsonl_gz(tmp_path / "m" / "x_supervisions_train.jsonl.gz")
    assert "changed words" in {s["text"] for s in sups}


def many_recordings(root: Path, n: int = MANY) -> Path:
    """A prepared split of ``n`` utterances (the first 1.5 s of the 20 recordings, linked):
    more than one worker chunk, so ``features -j 2`` runs a process pool."""
    audio = root / "audio"
    audio.mkdir(parents=True)
    (root / "heads").mkdir()
    for i in range(NUM_GOOD):
        x, sr = speech(i)
        sf.write(root / "heads" / f"h{i}.flac", x[: int(1.5 * sr)], sr)
    texts = {}
    for i in range(n):
        (audio / f"u{i:03d}.flac").symlink_to(root / "heads" / f"h{i % NUM_GOOD}.flac")
        texts[f"u{i:03d}"] = "words"
    ok(prepare_small(root, texts, audio))
    return audio


def children(pid: int) -> set[int]:
    """Forked children of ``pid``: the same command line (pool workers), not helpers such as
    the shells ``ctypes.util.find_library`` starts at import time."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return set()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            try:
                same = (entry / "cmdline").read_bytes() == cmdline
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and same:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_features(root: Path) -> tuple[subprocess.Popen, set[int]]:
    """``python -m dsr.cli.main features -j 2`` as a child process, once its two workers run."""
    import dsr as package  # the child runs the dsr this test imported

    env = dict(os.environ, PYTHONPATH=str(Path(package.__file__).parents[1]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsr.cli.main",
            "features",
            "--corpus",
            "x",
            "--split",
            "train",
            "--manifest-dir",
            str(root / "m"),
            "--out-dir",
            str(root / "f"),
            "-j",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    workers: set[int] = set()
    while time.time() < deadline and proc.poll() is None:
        workers = children(proc.pid)
        if len(workers) >= 2:
            # Let the parent leave its after-fork hooks: a SIGINT inside one is swallowed by Python.
            time.sleep(0.5)
            return proc, workers
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"features never ran two workers: {proc.communicate()[0][-2000:]}")


def test_14c_sigint_during_features_then_rerun(tmp_path: Path) -> None:
    many_recordings(tmp_path)
    proc, _ = start_features(tmp_path)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    # One line says what to do, exit code 130 as for any program Ctrl-C stopped.
    assert proc.returncode == 130 and "Traceback" not in out, out[-2000:]
    assert "interrupted; re-run the same command to resume" in out, out[-2000:]
    assert not (tmp_path / "f" / "x_cuts_train.jsonl.gz").exists()
    assert not list((tmp_path / "f").glob(".done.*"))
    ok(features_small(tmp_path, "-j", "1"))
    assert len(cut_ids(tmp_path / "f" / "x_cuts_train.jsonl.gz")) == MANY


def test_14d_sigkill_during_features_leaves_no_workers(tmp_path: Path) -> None:
    many_recordings(tmp_path)
    proc, workers = start_features(tmp_path)
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    left = [w for w in workers if alive(w)]
    for w in left:  # do not leave them to the next test
        os.kill(w, signal.SIGKILL)
    assert not left, f"orphaned feature workers {left} outlived the killed parent"
    assert not (tmp_path / "f" / "x_cuts_train.jsonl.gz").exists()
    ok(features_small(tmp_path, "-j", "1"))
    assert len(cut_ids(tmp_path / "f" / "x_cuts_train.jsonl.gz")) == MANY


# ---------------------------------------------------------------------------------------------
# Checkpoints and feature files damaged


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def copy_exp(pipe: Pipeline, dest: Path) -> Path:
    shutil.copytree(pipe.exp, dest)
    for marker in dest.glob(".done.*"):  # as after a crash: training did not finish
        marker.unlink()
    return dest


@pytest.mark.parametrize("bad, resumed", [
    pytest.param((3,), "epoch-2.pt", id="15a"),
    pytest.param((2, 3), "epoch-1.pt", id="15b"),
    pytest.param((1, 2, 3), None, id="15c"),
])  # fmt: skip
def test_15abc_truncated_checkpoints_resume_from_newest_readable(
    pipe: Pipeline, tmp_path: Path, bad: tuple[int, ...], resumed: str | None
) -> None:
    exp = copy_exp(pipe, tmp_path / "exp")
    for epoch in bad:
        truncate(exp / f"epoch-{epoch}.pt")
    run = ok(
        dsr(
            "train",
            "--config",
            pipe.root / "tiny.yaml",
            "--exp-dir",
            exp,
            "--lang-dir",
            pipe.lang,
            "--train-cuts",
            pipe.cuts,
            "--dev-cuts",
            "",
            "--num-epochs",
            "3",
            "--max-utt-duration",
            "20",
        )
    )
    for epoch in bad:
        assert f"ignoring unreadable checkpoint {exp / f'epoch-{epoch}.pt'}" in run.out.replace("\n", " ")
    if resumed:
        assert f"resuming from {exp / resumed}" in run.out
    else:
        assert "resuming" not in run.out and "epoch 1 done" in run.out
    assert "epoch 3 done" in run.out


def test_15d_decode_with_truncated_checkpoint(pipe: Pipeline, tmp_path: Path) -> None:
    exp = copy_exp(pipe, tmp_path / "exp")
    truncate(exp / "epoch-3.pt")
    run = dsr(
        "decode",
        "--exp-dir",
        exp,
        "--lang-dir",
        pipe.lang,
        "--cuts",
        pipe.cuts,
        "-m",
        "greedy",
        "--device",
        "cpu",
        "--epoch",
        "3",
        "--avg",
        "1",
        "--no-use-averaged-model",
    )
    one_line_error(run, "epoch-3.pt")


def copy_cuts_with_storage(pipe: Pipeline, dest: Path) -> Path:
    """A copy of the pipeline's cuts and feature files under ``dest`` (paths pointing at the copy)."""
    shutil.copytree(pipe.root / "fbank", dest)
    storage = str(pipe.root / "fbank")
    cuts = read_jsonl_gz(dest / "bad_cuts_train.jsonl.gz")
    for c in cuts:
        c["features"]["storage_path"] = c["features"]["storage_path"].replace(storage, str(dest))
    with gzip.open(dest / "bad_cuts_train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(c) + "\n" for c in cuts)
    return dest / "bad_cuts_train.jsonl.gz"


def test_15e_train_on_truncated_feature_file(pipe: Pipeline, tmp_path: Path) -> None:
    cuts = copy_cuts_with_storage(pipe, tmp_path / "fbank")
    (lca,) = (tmp_path / "fbank" / "bad_feats_train").glob("*.lca")
    truncate(lca)
    run = dsr(
        "train",
        "--config",
        pipe.root / "tiny.yaml",
        "--exp-dir",
        tmp_path / "exp",
        "--lang-dir",
        pipe.lang,
        "--train-cuts",
        cuts,
        "--dev-cuts",
        "",
        "--num-epochs",
        "1",
    )
    one_line_error(run, str(lca), "truncated", "dsr features")


def lang_dir(pipe: Pipeline, dest: Path, vocab: int, extra_text: str = "") -> Path:
    if extra_text:
        src = dest.parent / f"texts_{vocab}.jsonl.gz"
        sups = [
            {"id": f"s{i}", "recording_id": f"s{i}", "start": 0, "duration": 1, "channel": 0, "text": t}
            for i, t in enumerate(list(pipe.texts.values()) + [extra_text] * 50)
            if t
        ]
        with gzip.open(src, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in sups)
    else:
        src = pipe.cuts
    ok(dsr("lang", "--cuts", src, "--lang-dir", dest, "--vocab-size", vocab))
    return dest


@pytest.mark.parametrize("vocab, extra, needle", [
    pytest.param(VOCAB - 8, "", f"has {VOCAB - 8} tokens", id="16a-smaller"),
    pytest.param(VOCAB + 8, "", f"has {VOCAB + 8} tokens", id="16b-larger"),
    pytest.param(VOCAB, "zebra quartz jukebox whiskey", "another bpe.model", id="16a-same-size-other-pieces"),
])  # fmt: skip
def test_16ab_lang_dir_of_another_vocabulary(
    pipe: Pipeline, tmp_path: Path, vocab: int, extra: str, needle: str
) -> None:
    other = lang_dir(pipe, tmp_path / "lang_other", vocab, extra)
    decode = dsr(
        "decode", "--exp-dir", pipe.exp, "--lang-dir", other, "--cuts", pipe.cuts, "-m", "greedy", "--device", "cpu"
    )
    # Both sides named: the lang dir given, and the one the model was trained with.
    one_line_error(decode, str(other), needle, str(pipe.lang), "--lang-dir the model was trained with")
    transcribe = dsr(
        "transcribe",
        "--exp-dir",
        pipe.exp,
        "--lang-dir",
        other,
        "--device",
        "cpu",
        pipe.audio / f"{good_ids()[0]}.flac",
    )
    one_line_error(transcribe, str(other), needle, str(pipe.lang))


def test_16_old_checkpoint_without_vocabulary_warns(pipe: Pipeline, tmp_path: Path) -> None:
    import torch

    exp = copy_exp(pipe, tmp_path / "exp")
    for ckpt in exp.glob("epoch-*.pt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        state.pop("vocabulary")
        torch.save(state, ckpt)
    run = ok(
        dsr(
            "transcribe",
            "--exp-dir",
            exp,
            "--lang-dir",
            pipe.lang,
            "--device",
            "cpu",
            pipe.audio / f"{good_ids()[0]}.flac",
        )
    )
    assert "records no vocabulary checksum" in run.out
    other = lang_dir(pipe, tmp_path / "lang_big", VOCAB + 8)
    one_line_error(
        dsr(
            "transcribe", "--exp-dir", exp, "--lang-dir", other, "--device", "cpu", pipe.audio / f"{good_ids()[0]}.flac"
        ),
        f"has {VOCAB + 8} tokens",
        f"trained with {VOCAB}",
    )


@pytest.mark.parametrize("which", ["missing-exp", "empty-exp", "missing-lang", "empty-lang"])
def test_16c_missing_or_empty_dirs(pipe: Pipeline, tmp_path: Path, which: str) -> None:
    exp, lang = pipe.exp, pipe.lang
    if which.endswith("exp"):
        exp = tmp_path / "exp"
    else:
        lang = tmp_path / "lang"
    if which.startswith("empty"):
        (tmp_path / which.split("-")[1]).mkdir()
    run = dsr("decode", "--exp-dir", exp, "--lang-dir", lang, "--cuts", pipe.cuts, "-m", "greedy", "--device", "cpu")
    one_line_error(run, str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Decoding damaged or moved inputs


def recording_cuts(pipe: Pipeline, dest: Path, ids: list[str]) -> Path:
    """Cuts of the prepared recordings (no features: ``dsr decode`` computes them), as lhotse builds
    them from the prepare manifests, for the utterances ``ids`` (their audio copied to ``dest``)."""
    from lhotse import CutSet, RecordingSet, load_manifest
    from lhotse.utils import fastcopy

    dest.mkdir(parents=True)
    recs = load_manifest(pipe.root / "manifests" / "bad_recordings_train.jsonl.gz").filter(lambda r: r.id in ids)
    sups = load_manifest(pipe.root / "manifests" / "bad_supervisions_train.jsonl.gz").filter(lambda s: s.id in ids)
    moved = []
    for rec in recs:
        src = Path(rec.sources[0].source)
        shutil.copy(src, dest / src.name)
        moved.append(fastcopy(rec, sources=[fastcopy(rec.sources[0], source=str(dest / src.name))]))

    path = dest / "rec_cuts_test.jsonl.gz"
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(moved), supervisions=sups)
    cuts.modify_ids(lambda cut_id: cut_id.rsplit("-", 1)[0]).to_file(path)  # "<utt>-0" -> "<utt>"
    return path


def result_json(exp: Path, cuts: Path) -> dict:
    name = cuts.name.split(".")[0].replace("_cuts_", "_")
    return json.loads((exp / "decode" / "greedy" / name / "result.json").read_text())


def test_8b_17a_short_cut_and_damaged_audio_in_decode(pipe: Pipeline, tmp_path: Path) -> None:
    """8b: a 50 ms cut and 17a: audio damaged after prepare, inside a manifest: both skipped and
    listed in result.json; every other cut decoded."""
    ids = good_ids()[:4] + ["c08a_short"]
    cuts = recording_cuts(pipe, tmp_path / "audio", ids)
    (tmp_path / "audio" / f"{good_ids()[1]}.flac").write_bytes(b"damaged after prepare" * 100)
    exp = copy_exp(pipe, tmp_path / "exp")
    run = ok(
        dsr("decode", "--exp-dir", exp, "--lang-dir", pipe.lang, "--cuts", cuts, "-m", "greedy", "--device", "cpu")
    )
    assert "2 unreadable skipped" in run.out
    result = result_json(exp, cuts)
    listed = {u["cut_id"]: u["error"] for u in result["unreadable"]}
    assert set(listed) == {"c08a_short", good_ids()[1]}
    assert "too short" in listed["c08a_short"]
    assert result["num_utts"] == 3


def test_17b_decode_with_truncated_feature_file(pipe: Pipeline, tmp_path: Path) -> None:
    cuts = copy_cuts_with_storage(pipe, tmp_path / "fbank")
    (lca,) = (tmp_path / "fbank" / "bad_feats_train").glob("*.lca")
    truncate(lca)
    exp = copy_exp(pipe, tmp_path / "exp")
    run = ok(
        dsr("decode", "--exp-dir", exp, "--lang-dir", pipe.lang, "--cuts", cuts, "-m", "greedy", "--device", "cpu")
    )
    result = result_json(exp, cuts)
    assert result["unreadable"] and all(u["source"] == str(lca) for u in result["unreadable"])
    assert result["num_utts"] + len(result["unreadable"]) == len(cut_ids(cuts))
    assert "unreadable skipped" in run.out


@pytest.mark.parametrize("layout", ["new", "older-relative"])
def test_17c_cuts_used_from_another_working_directory(pipe: Pipeline, tmp_path: Path, layout: str) -> None:
    """Features computed in one directory, then trained on and decoded from another."""
    work = tmp_path / "work"
    work.mkdir()
    audio, texts = small_folder(work, 6)
    (work / "t.tsv").write_text("".join(f"{u}\t{t}\n" for u, t in texts.items()))
    ok(
        dsr(
            "prepare",
            "folder",
            "--audio-dir",
            "audio",
            "--transcripts",
            "t.tsv",
            "--corpus",
            "x",
            "--split",
            "train",
            "--manifest-dir",
            "data/m",
            cwd=work,
        )
    )
    ok(
        dsr(
            "features",
            "--corpus",
            "x",
            "--split",
            "train",
            "--manifest-dir",
            "data/m",
            "--out-dir",
            "data/fbank",
            "-j",
            "1",
            cwd=work,
        )
    )
    cuts = work / "data" / "fbank" / "x_cuts_train.jsonl.gz"
    if layout == "older-relative":  # as dsr features wrote them before: relative to where it ran
        rows = read_jsonl_gz(cuts)
        for c in rows:
            c["features"]["storage_path"] = os.path.relpath(c["features"]["storage_path"], work)
        with gzip.open(cuts, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(c) + "\n" for c in rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rel_cuts = os.path.relpath(cuts, elsewhere)
    ok(
        dsr(
            "train",
            "--config",
            pipe.root / "tiny.yaml",
            "--exp-dir",
            "exp",
            "--lang-dir",
            pipe.lang,
            "--train-cuts",
            rel_cuts,
            "--dev-cuts",
            "",
            "--num-epochs",
            "1",
            cwd=elsewhere,
        )
    )
    ok(
        dsr(
            "decode",
            "--exp-dir",
            "exp",
            "--lang-dir",
            pipe.lang,
            "--cuts",
            rel_cuts,
            "-m",
            "greedy",
            "--device",
            "cpu",
            cwd=elsewhere,
        )
    )
    result = result_json(elsewhere / "exp", cuts)
    assert result["unreadable"] == [] and result["num_utts"] == 6


def test_18_transcribe_a_directory(pipe: Pipeline) -> None:
    run = dsr("transcribe", "--exp-dir", pipe.exp, "--lang-dir", pipe.lang, "--device", "cpu", ".", cwd=pipe.audio)
    no_traceback(run)
    assert "is a directory" in run.out and "does not exist" not in run.out
