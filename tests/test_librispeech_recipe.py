"""egs/librispeech/run.sh on the tiny LibriSpeech + MUSAN fixture, up to the BPE stage (what runs offline and fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from corpus_fixtures import librispeech, musan
from lhotse import load_manifest

RUN_SH = Path(__file__).resolve().parents[1] / "egs" / "librispeech" / "run.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # the dsr of this interpreter
    return subprocess.run(["bash", str(RUN_SH), *args], capture_output=True, text=True, env=env, timeout=300)


def test_recipe_prepares_features_and_lang(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = [
        "--work-dir",
        str(work),
        "--corpus-dir",
        str(librispeech(tmp_path)),
        "--musan-dir",
        str(musan(tmp_path)),
        "--train-part",
        "train-clean-5",
        "--dev-part",
        "dev-clean-2",
        "--test-parts",
        "dev-clean-2",
        "--vocab-size",
        "30",
        "--num-jobs",
        "1",
        "--stop-stage",
        "2",
    ]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    train = load_manifest(work / "data/fbank/librispeech_cuts_train-clean-5.jsonl.gz")
    assert len(train) == 12 and sum("noise" in c.custom for c in train) > 0  # speed-perturbed, half noised
    assert len(load_manifest(work / "data/fbank/librispeech_cuts_dev-clean-2.jsonl.gz")) == 2
    assert (work / "data/lang_bpe_30/bpe.model").is_file()


def test_recipe_needs_a_corpus(tmp_path: Path) -> None:
    proc = _run("--work-dir", str(tmp_path))
    assert proc.returncode == 2 and "pass --corpus-dir DIR" in proc.stderr
