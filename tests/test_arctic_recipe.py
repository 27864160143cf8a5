"""egs/arctic/run.sh on a tiny ARCTIC-style folder: the prepare stage splits by prompt, never by take."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import load_manifest

from dsr.data.manifests import supervisions_path
from dsr.data.splits import arctic_prompt_of

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "egs" / "arctic" / "run.sh"
NUM_PROMPTS = 40


def _arctic_folder(root: Path) -> Path:
    """40 prompts with 1-3 takes each (``arctic_aNNNN_<take>``), one second of noise per take."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    lines = []
    for p in range(1, NUM_PROMPTS + 1):
        for take in range(1 + p % 3):
            utt = f"arctic_a{p:04d}_{1592748000 + take}"
            sf.write(root / "audio" / f"{utt}.wav", 0.05 * rng.standard_normal(16000), 16000)
            lines.append(f"{utt}\tPrompt {p}, read aloud.")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return root


def _run(corpus: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(RUN_SH), "--corpus-dir", str(corpus), "--work-dir", str(work), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _prompts_by_split(work: Path) -> dict[str, dict[str, int]]:
    """split -> {prompt: number of takes} from the written manifests."""
    out: dict[str, dict[str, int]] = {}
    for split in ("train", "dev", "test"):
        takes: dict[str, int] = defaultdict(int)
        for s in load_manifest(supervisions_path(work / "data" / "manifests", "arctic", split)):
            takes[arctic_prompt_of(s.recording_id)] += 1
        out[split] = dict(takes)
    return out


def test_prepare_stage_splits_by_prompt_and_reruns_as_a_no_op(tmp_path: Path) -> None:
    corpus = _arctic_folder(tmp_path / "corpus")
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--dev-fraction", "0.2", "--test-fraction", "0.2")
    assert proc.returncode == 0, proc.stderr
    by_split = _prompts_by_split(tmp_path / "w")
    assert all(by_split.values()), f"an empty split: {by_split}"
    train, dev, test = (set(by_split[s]) for s in ("train", "dev", "test"))
    assert not (train & dev or train & test or dev & test), "a prompt in two splits"
    assert len(train | dev | test) == NUM_PROMPTS
    # every take of a prompt went with it
    assert all(n == 1 + int(p[-4:]) % 3 for split in by_split.values() for p, n in split.items())
    # the same split again from a fresh work dir (a hash of the prompt id, not a random draw)
    assert (
        _run(corpus, tmp_path / "w2", "--stop-stage", "0", "--dev-fraction", "0.2", "--test-fraction", "0.2").returncode
        == 0
    )
    assert _prompts_by_split(tmp_path / "w2") == by_split
    rerun = _run(corpus, tmp_path / "w", "--stop-stage", "0")
    assert rerun.returncode == 0 and "skip" in rerun.stderr


def test_bad_corpus_dir_and_fractions_fail_with_one_line(tmp_path: Path) -> None:
    proc = _run(tmp_path / "nowhere", tmp_path / "w", "--stop-stage", "0")
    assert proc.returncode == 2 and "transcripts.tsv not found" in proc.stderr
    corpus = _arctic_folder(tmp_path / "corpus")
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--dev-fraction", "0.6", "--test-fraction", "0.6")
    assert proc.returncode == 2 and "--dev-fraction 0.6 + --test-fraction 0.6 exceed 1" in proc.stderr
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--init-from", str(tmp_path / "m.pt"))
    assert proc.returncode == 2 and "--init-from needs --init-lang-dir" in proc.stderr
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--decoder-only", "unpadded")
    assert proc.returncode == 2 and "give --pretrained too" in proc.stderr
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--pretrained", "whisper-tiny.en", "--decoder-only", "yes")
    assert proc.returncode == 2 and "--decoder-only takes true, false or unpadded, got 'yes'" in proc.stderr
    missing = tmp_path / "tts_cuts.jsonl.gz"
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--extra-train-cuts", str(missing))
    assert proc.returncode == 2 and f"--extra-train-cuts file {missing} not found" in proc.stderr
    proc = _run(corpus, tmp_path / "w", "--stop-stage", "0", "--ngram-text", str(tmp_path / "pd.txt"))
    assert proc.returncode == 2 and f"--ngram-text file {tmp_path / 'pd.txt'} not found" in proc.stderr
    (tmp_path / "pd.txt").write_text("And the evening and the morning were the first day.\n")
    proc = _run(
        corpus, tmp_path / "w", "--stop-stage", "0", "--ngram-text", str(tmp_path / "pd.txt"),
        "--pretrained", "whisper-tiny.en", "--decoder-only", "unpadded",
    )  # fmt: skip
    assert proc.returncode == 2 and "--ngram-text joins the transducer's beam search" in proc.stderr


def test_lang_stage_builds_the_token_ngram_of_the_text_and_the_training_transcripts(tmp_path: Path) -> None:
    from dsr.lang.bpe import Tokenizer
    from dsr.lm.ngram import NgramLm

    corpus = _arctic_folder(tmp_path / "corpus")
    text = tmp_path / "pd.txt"
    text.write_text("And the evening and the morning were the first day.\nLet there be light.\n")
    work = tmp_path / "w"
    args = ["--vocab-size", "30", "--ngram-text", str(text), "--ngram-order", "3"]
    assert _run(corpus, work, "--stop-stage", "0").returncode == 0
    proc = _run(corpus, work, "--stage", "2", "--stop-stage", "2", *args)
    assert proc.returncode == 0, proc.stderr
    arpa = work / "data" / "lm_ngram3_lang_bpe_30" / "lm.arpa"
    lm = NgramLm(arpa, Tokenizer(work / "data" / "lang_bpe_30"))
    train_prompts = len(_prompts_by_split(work)["train"])  # one distinct transcript per prompt
    assert lm.order == 3 and f"token 3-gram of {2 + train_prompts} sentences" in proc.stdout + proc.stderr


def test_pretrain_refuses_a_stage_it_cannot_run_before_synthesising(tmp_path: Path) -> None:
    """Whisper features are for run.sh --extra-train-cuts: stage 3 (the FBANK Conformer) is refused up front."""
    corpus = _arctic_folder(tmp_path / "corpus")
    script = ROOT / "egs" / "arctic" / "pretrain.sh"
    for args, message in [
        (["--feature-type", "whisper-fbank"], "with --feature-type whisper-fbank add --stop-stage 2"),
        (["--feature-type", "mfcc", "--stop-stage", "2"], "--feature-type takes kaldi-fbank or whisper-fbank"),
    ]:
        proc = subprocess.run(
            ["bash", str(script), "--corpus-dir", str(corpus), "--work-dir", str(tmp_path / "pt"), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert not (tmp_path / "pt" / "data").exists()
