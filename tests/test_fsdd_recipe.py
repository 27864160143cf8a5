"""egs/fsdd/run.sh's options: what its stages ask of dsr (read from ``bash -x``'s trace; with
no data prepared each dsr call fails at once, which is all these tests need) and its one-line
refusals.  The stages themselves are dsr's, tested elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]
RUN_SH = REPO / "egs" / "fsdd" / "run.sh"


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``bash -x run.sh ARGS`` on an empty corpus: (process, the dsr command lines it ran)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    (corpus / "transcripts.tsv").write_text("0_george_0\tzero\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-x", str(RUN_SH), "--corpus-dir", str(corpus), "--work-dir", str(tmp_path / "work"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # relative paths on the command line are the caller's
        timeout=120,
    )
    calls = [line.lstrip("+ ") for line in proc.stderr.splitlines() if line.lstrip("+ ").startswith("dsr ")]
    return proc, calls


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if not line.startswith("+")]


def test_pretrained_with_init_from_continues_that_fine_tune_on_the_recipe_s_bpe(tmp_path: Path) -> None:
    continued = ("--pretrained", "whisper-tiny.en", "--init-from", "exp/whisper-tiny.en")
    proc, calls = _run(tmp_path, *continued, "--stage", "2", "--stop-stage", "3")
    assert len(calls) == 1 and proc.returncode != 0  # the stage's dsr call fails: no manifests
    (lang,) = calls
    assert lang.startswith("dsr lang ") and "--lang-dir data/lang_bpe_30" in lang
    proc, calls = _run(tmp_path, *continued, "--stage", "3", "--stop-stage", "3")
    (train,) = calls
    assert train.startswith("dsr train ") and "--lang-dir data/lang_bpe_30" in train
    assert f"--pretrained whisper-tiny.en --init-from {tmp_path / 'exp' / 'whisper-tiny.en'}" in train
    assert "--train-cuts data/whisper_fbank/fsdd_cuts_train.jsonl.gz" in train


def test_init_lang_dir_with_pretrained_is_refused_in_one_line(tmp_path: Path) -> None:
    proc, calls = _run(
        tmp_path, "--pretrained", "whisper-tiny.en", "--init-from", "x.pt", "--init-lang-dir", "lang", "--stage", "3"
    )
    assert proc.returncode == 2 and not calls
    assert _errors(proc) == [
        "run.sh: --init-lang-dir is for a dsr Conformer's --init-from; with --pretrained the recipe's own BPE is used, "
        "so drop --init-lang-dir"
    ]


def test_init_from_a_conformer_still_needs_its_lang_dir(tmp_path: Path) -> None:
    proc, calls = _run(tmp_path, "--init-from", "x.pt", "--stage", "3")
    assert proc.returncode == 2 and not calls
    assert _errors(proc) == ["run.sh: --init-from needs --init-lang-dir DIR (the lang dir its model was trained with)"]


def test_paths_from_the_command_line_are_made_absolute_without_dot_dot(tmp_path: Path) -> None:
    """Manifests keep the corpus path they were given: ``a/../corpus`` would stop resolving once ``a`` is gone."""
    (tmp_path / "a").mkdir()
    proc, calls = _run(tmp_path, "--corpus-dir", "a/../corpus", "--stop-stage", "0", "--num-synth-digits", "0")
    (prepare,) = calls
    assert (
        f"--audio-dir {tmp_path / 'corpus' / 'audio'} --transcripts {tmp_path / 'corpus' / 'transcripts.tsv'}"
        in prepare
    )
