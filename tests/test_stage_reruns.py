"""Re-running ``dsr lang`` and ``dsr train`` after their inputs changed (issue 16).

``dsr lang``'s done-marker records the cuts it read and the vocabulary size, so edited
transcripts train a new BPE model.  ``dsr train``'s checkpoints and done-marker record the
content of the training cuts and of the BPE model and the model's options: an exp dir of
another run is neither skipped as done nor resumed (one line naming the flags), a run on the
same inputs resumes, and ``--force`` moves the earlier run aside and trains afresh.
"""

from __future__ import annotations

import importlib
import io
import sys
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from lhotse import SupervisionSegment, SupervisionSet
from tiny_corpus import TINY_MODEL, make_tiny_corpus

from dsr.errors import OptionError


def dsr(*args: object) -> tuple[int, str]:
    """``dsr ARGS`` through the CLI's entry point: (exit code, everything printed, a traceback if one escaped)."""
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


def ok(result: tuple[int, str]) -> str:
    rc, out = result
    assert rc == 0 and "Traceback" not in out, out
    return out


def one_line_error(result: tuple[int, str], *needles: str) -> str:
    rc, out = result
    assert rc == 2 and "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


# ---------------------------------------------------------------------------------------------
# dsr lang


def _supervisions(path: Path, texts: list[str]) -> Path:
    sups = [
        SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0.0, duration=1.0, text=t)
        for i, t in enumerate(texts)
    ]
    SupervisionSet.from_segments(sups).to_file(path)
    return path


TEXTS = ["turn on the kitchen lights", "set a timer for five minutes", "what is the weather in paris"] * 20


def test_lang_is_redone_when_its_transcripts_or_vocab_size_change(tmp_path):
    sups = _supervisions(tmp_path / "sups.jsonl.gz", TEXTS)
    lang = tmp_path / "lang"
    ok(dsr("lang", "--cuts", sups, "--lang-dir", lang, "--vocab-size", 30))
    assert "skip" in ok(dsr("lang", "--cuts", sups, "--lang-dir", lang, "--vocab-size", 30))
    first = (lang / "bpe.model").read_bytes()

    _supervisions(sups, [t.replace("paris", "zanzibar quokka") for t in TEXTS])
    out = ok(dsr("lang", "--cuts", sups, "--lang-dir", lang, "--vocab-size", 30))
    assert "redo" in out and "input cuts" in out and "skip" not in out, out
    assert (lang / "bpe.model").read_bytes() != first

    out = ok(dsr("lang", "--cuts", sups, "--lang-dir", lang, "--vocab-size", 34))
    assert "redo" in out and "option vocab_size" in out, out
    assert len((lang / "tokens.txt").read_text().splitlines()) == 34


# ---------------------------------------------------------------------------------------------
# dsr train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return make_tiny_corpus(tmp_path_factory.mktemp("tiny"), num_train=8, num_dev=2)


def _flags(options: dict) -> list[str]:
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def train(corpus: dict, exp: Path, *extra: object, **overrides: object) -> tuple[int, str]:
    """``dsr train`` of the tiny model for one epoch on the tiny corpus (a second or two)."""
    options = dict(
        **TINY_MODEL, max_duration=4.0, num_epochs=1, num_buckets=1, warmup_steps=2, model_warm_step=4,
        save_every_n=0, log_interval=1, average_period=2, num_threads=1, device="cpu",
    )  # fmt: skip
    options.update(train_cuts=corpus["train_cuts"], lang_dir=corpus["lang_dir"], exp_dir=exp)
    options.update(overrides)
    return dsr("train", "--dev-cuts", "", "--no-spec-augment", *_flags(options), *extra)


def _interrupted(exp: Path) -> Path:
    """``exp`` as after a crash: checkpoints, no done-marker."""
    (exp / ".done.train").unlink()
    return exp


@pytest.fixture(scope="module")
def finished(corpus: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    exp = tmp_path_factory.mktemp("finished") / "exp"
    ok(train(corpus, exp))
    return exp


def _copy(exp: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(exp, dest)
    return dest


def _other_cuts(corpus: dict, tmp_path: Path) -> str:
    """The training cuts without their first cut, in another file."""
    from lhotse import CutSet

    cuts = CutSet.from_file(corpus["train_cuts"])
    path = tmp_path / "fewer_cuts.jsonl.gz"
    CutSet.from_cuts(list(cuts)[1:]).to_file(path)
    return str(path)


def test_a_finished_run_is_skipped_with_the_same_inputs_moved_elsewhere(corpus, finished, tmp_path):
    # The same cuts under another name are the same input: content counts, not paths.
    import shutil

    moved = tmp_path / "same_cuts.jsonl.gz"
    shutil.copy(corpus["train_cuts"], moved)
    out = ok(train(corpus, finished, train_cuts=moved))
    assert "skip" in out and "already done" in out, out


def test_a_finished_run_on_other_cuts_is_not_reported_done(corpus, finished, tmp_path):
    exp = _copy(finished, tmp_path / "exp")
    line = one_line_error(train(corpus, exp, train_cuts=_other_cuts(corpus, tmp_path)), "--train-cuts", "--force")
    assert f"--exp-dir {exp} holds checkpoints of another run" in line and "--exp-dir," in line
    assert "train_cuts" not in line  # the fields are named as flags


def test_an_interrupted_run_with_other_model_options_is_not_resumed(corpus, finished, tmp_path):
    exp = _interrupted(_copy(finished, tmp_path / "exp"))
    config = (exp / "config.yaml").read_text()
    one_line_error(train(corpus, exp, encoder_dim=48), "--encoder-dim 32 -> 48")
    assert (exp / "config.yaml").read_text() == config  # the rejected run did not overwrite it


def test_an_interrupted_run_with_another_bpe_model_is_not_resumed(corpus, finished, tmp_path):
    from dsr.lang.bpe import train_bpe

    exp = _interrupted(_copy(finished, tmp_path / "exp"))
    train_bpe(["zanzibar quokka " * 3, "kitchen lights timer"] * 30, tmp_path / "lang", vocab_size=30)
    one_line_error(train(corpus, exp, lang_dir=tmp_path / "lang"), "--lang-dir holds another bpe.model")


def test_an_interrupted_run_with_the_same_inputs_resumes(corpus, finished, tmp_path):
    exp = _interrupted(_copy(finished, tmp_path / "exp"))
    out = ok(train(corpus, exp, num_epochs=2, base_lr=1e-3))  # other training settings are fine
    assert f"resuming from {exp / 'epoch-1.pt'}" in out and (exp / "epoch-2.pt").is_file(), out


def test_force_moves_the_earlier_run_aside_and_trains_afresh(corpus, finished, tmp_path):
    exp = _copy(finished, tmp_path / "exp")
    old = (exp / "epoch-1.pt").read_bytes()
    (exp / "export").mkdir()  # not the run's: stays where it is
    out = ok(train(corpus, exp, "--force", train_cuts=_other_cuts(corpus, tmp_path)))
    (aside,) = exp.glob("replaced-*")
    assert f"the earlier run in {exp} is now in {aside}" in out and "resuming" not in out, out
    assert (aside / "epoch-1.pt").read_bytes() == old and (aside / ".done.train").is_file()
    assert (aside / "config.yaml").is_file() and (exp / "epoch-1.pt").read_bytes() != old
    assert (exp / ".done.train").is_file() and (exp / "export").is_dir() and not (aside / "export").exists()


@pytest.mark.parametrize(
    "extra, line",
    [
        (["--freeze", "nomatch"], "error: --freeze 'nomatch' matches no parameter name"),
        (["--init-from", "nowhere.pt"], "error: --init-from nowhere.pt: no such checkpoint file"),
        (
            ["--teacher", "x", "--distill-heads", "attention"],
            "error: --distill-heads: must be ctc, joiner or ctc,joiner",
        ),
    ],
)
def test_the_trainer_s_errors_name_flags_on_the_command_line(corpus, tmp_path, extra, line):
    # The library names TrainConfig fields (freeze, init_from); dsr train prints them as flags.
    assert one_line_error(train(corpus, tmp_path / "exp", *extra)).startswith(line)


def test_an_option_error_no_command_renamed_is_printed_with_flags(monkeypatch, tmp_path):
    """The library names fields; a command that does not rename them gets ``--field-name``, the CLI's convention."""
    from dsr.device import resolve_device

    def too_big(*a: object) -> None:
        raise OptionError("{vocab_size} is too large for these texts; lower it or use {not:byte_fallback}")

    monkeypatch.setattr(importlib.import_module("dsr.lang.bpe"), "train_bpe_from_cuts", too_big)
    monkeypatch.chdir(tmp_path)
    line = one_line_error(dsr("lang", "--cuts", "c.jsonl.gz", "--lang-dir", "lang"))
    assert line == "error: --vocab-size is too large for these texts; lower it or use --no-byte-fallback"
    with pytest.raises(OptionError, match="^device 'nonsense' is not a valid torch device$"):
        resolve_device("nonsense")


def test_the_record_reads_every_manifest_of_a_list(corpus, tmp_path):
    from dsr.training.config import TrainConfig
    from dsr.training.resume import run_record

    def record(train_cuts: str) -> dict:
        return run_record(TrainConfig.from_dict({"train_cuts": train_cuts, "lang_dir": corpus["lang_dir"]}))

    both = f"{corpus['train_cuts']},{corpus['dev_cuts']}"
    assert record(both) == record(both) and "missing" not in record(both)["inputs"]["train_cuts"]
    assert record(both) != record(f"{corpus['dev_cuts']},{corpus['train_cuts']}") != record(corpus["train_cuts"])


def test_run_changes_name_fields_in_the_library():
    from dsr.training.resume import check_same_run

    recorded = {"inputs": {"train_cuts": "file a", "lang_dir": "file b"}, "options": {"encoder_dim": 32}}
    check_same_run({}, recorded, Path("exp"))  # a record from before run records: trusted
    check_same_run(recorded, recorded, Path("exp"))
    now = {"inputs": {"train_cuts": "file c", "lang_dir": "file b"}, "options": {"encoder_dim": 64}}
    with pytest.raises(OptionError) as e:
        check_same_run(recorded, now, Path("exp"))
    assert "train_cuts holds other cuts; encoder_dim 32 -> 64" in str(e.value)
    assert "--train-cuts holds other cuts; --encoder-dim 32 -> 64" in e.value.as_flags()
    # An option a later dsr added is not a change: its default builds what the run built.
    check_same_run(recorded, {**recorded, "options": {"encoder_dim": 32, "new_option": 1}}, Path("exp"))


# ---------------------------------------------------------------------------------------------
# Ctrl-C

INTERRUPTED = "interrupted; re-run the same command to resume"


@pytest.mark.parametrize(
    "target, args",
    [
        ("dsr.lang.bpe.train_bpe_from_cuts", ["lang", "--cuts", "c.jsonl.gz", "--lang-dir", "lang"]),
        ("dsr.training.trainer.train", ["train", "--dev-cuts", ""]),  # the lazily built command
        ("dsr.data.folder.prepare_folder", ["prepare", "folder", "--audio-dir", ".", "--transcripts", "t.tsv",
                                            "--corpus", "x", "--split", "train", "--manifest-dir", "m"]),  # a subgroup
    ],
)  # fmt: skip
def test_ctrl_c_in_any_command_says_how_to_resume(monkeypatch, tmp_path, target, args):
    module, name = target.rsplit(".", 1)

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.tsv").write_text("")
    if args[0] == "train":  # its log file goes under tmp_path too
        args = [*args, "--exp-dir", str(tmp_path / "exp")]
    rc, out = dsr(*args)
    assert rc == 130 and INTERRUPTED in out and "Traceback" not in out and "Aborted" not in out, out


def test_usage_errors_and_help_are_click_s_as_before():
    rc, out = dsr("lang", "--vocab-size", "x")
    assert rc == 2 and "Invalid value" in out and INTERRUPTED not in out, out
    rc, out = dsr("lang", "--help")
    assert rc == 0 and "--vocab-size" in out, out
    rc, out = dsr("no-such-command")
    assert rc == 2 and "No such command" in out, out


def test_sigint_to_a_running_command_prints_the_resume_line(tmp_path):
    """A real SIGINT to ``dsr lang`` (its BPE training replaced by a long sleep) in a child process."""
    import os
    import signal
    import subprocess

    import dsr as package

    script = (
        "import sys, time\n"
        "import dsr.lang.bpe as bpe\n"
        "def slow(*a):\n"
        "    print('started', flush=True)\n"
        "    time.sleep(60)\n"
        "bpe.train_bpe_from_cuts = slow\n"
        "from dsr.cli.main import run\n"
        "sys.argv = ['dsr', 'lang', '--cuts', 'c.jsonl.gz', '--lang-dir', 'lang']\n"
        "run()\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(package.__file__).parents[1]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130 and INTERRUPTED in out and "Traceback" not in out, out
