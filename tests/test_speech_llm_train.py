"""``dsr train --speech-llm`` (stages 1 and 2) and ``dsr decode -m speech-llm-*``, end to end on tiny models.

The encoder comes from a tiny dsr Conformer checkpoint (``--init-from``), the LLM is a
random two-layer Qwen2 with a ChatML template saved as a Hugging Face directory, the data
is tests/tiny_corpus.py's random features.  Stage 1 must leave the encoder and the LLM
bit-identical; stage 2 must change only the projector, CTC head, LoRA adapters and the top
encoder layer; checkpoints must hold no LLM weights and name their LLM.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("transformers", reason="the speech-LLM needs the optional 'lm' packages (transformers, ...)")
pytest.importorskip("peft", reason="stage 2 needs peft (LoRA)")

import torch  # noqa: E402
from test_speech_llm import tiny_llm, tiny_tokenizer  # noqa: E402
from tiny_corpus import make_tiny_corpus, tiny_train_options  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from dsr.cli.main import app, run  # noqa: E402
from dsr.features.fbank import FbankConfig  # noqa: E402
from dsr.features.frontend import frontend_to_dict  # noqa: E402
from dsr.lang.bpe import Tokenizer  # noqa: E402
from dsr.lm.load import fingerprint  # noqa: E402
from dsr.lm.nbest import read_nbest  # noqa: E402
from dsr.models.config import ModelConfig, build_model  # noqa: E402
from dsr.training import speech_llm as sl  # noqa: E402
from dsr.training.config import TrainConfig  # noqa: E402
from dsr.training.trainer import train  # noqa: E402

ENCODER = dict(
    feature_dim=80,
    encoder_dim=16,
    num_encoder_layers=2,
    num_heads=2,
    ffn_dim=32,
    conv_kernel_size=5,
    subsampling_channels=(4, 8),
    dropout=0.0,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Any]:
    """A tiny corpus, a dsr Conformer checkpoint to take the encoder from, and a tiny LLM directory."""
    root = tmp_path_factory.mktemp("speech_llm")
    corpus = make_tiny_corpus(root / "corpus")
    bpe = Tokenizer(corpus["lang_dir"])
    mcfg = ModelConfig(**ENCODER, vocab_size=bpe.vocab_size, blank_id=bpe.blank_id)
    torch.manual_seed(0)
    model = build_model(mcfg)
    init = root / "conformer.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "model_config": mcfg.to_dict(),
            "frontend": frontend_to_dict(FbankConfig()),
            "global_step": 10,
            "epoch": 1,
        },
        init,
    )
    tok = tiny_tokenizer(chat=True)
    llm_dir = root / "llm"
    tiny_llm("qwen2", tok).save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    return {"corpus": corpus, "init": init, "llm": llm_dir, "root": root, "encoder_sd": model.state_dict()}


def options(setup: dict[str, Any], exp: Path, **overrides: Any) -> dict[str, Any]:
    values = dict(
        speech_llm=str(setup["llm"]),
        init_from=str(setup["init"]),
        max_steps=3,
        base_lr=0.05,
        warmup_steps=1,
        ctc_loss_scale=0.2,
        projector_stack=2,
    )
    return tiny_train_options(setup["corpus"], exp, **{**values, **overrides})


def train_capturing(cfg: TrainConfig) -> tuple[Any, dict[str, torch.Tensor]]:
    """Train; returns the trained model and a copy of its weights as built (before any step)."""
    captured: dict[str, Any] = {}
    build = sl.build_for_training

    def spy(*args: Any, **kwargs: Any):
        built = build(*args, **kwargs)
        captured["model"], captured["before"] = built[0], {k: v.clone() for k, v in built[0].state_dict().items()}
        return built

    with mock.patch.object(sl, "build_for_training", spy):
        train(cfg)
    return captured["model"], captured["before"]


def same(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    names = [k for k in after if k.startswith(prefix)]
    assert names, prefix
    return all(torch.equal(before[k], after[k]) for k in names)


@pytest.fixture(scope="module")
def stage1(setup) -> dict[str, Any]:
    exp = setup["root"] / "stage1"
    model, before = train_capturing(TrainConfig.from_dict(options(setup, exp)))
    return {"exp": exp, "model": model, "before": before}


def test_stage1_trains_the_projector_only(setup, stage1):
    model, before = stage1["model"], stage1["before"]
    after = model.state_dict()
    # Encoder (as loaded from the Conformer checkpoint) and LLM: bit-identical after training.
    assert same(before, after, "encoder.") and same(before, after, "llm.")
    assert all(torch.equal(after[k], v) for k, v in setup["encoder_sd"].items() if k.startswith("encoder."))
    from transformers import AutoModelForCausalLM

    on_disk = AutoModelForCausalLM.from_pretrained(setup["llm"]).state_dict()
    assert all(torch.equal(after["llm." + k], v) for k, v in on_disk.items())
    assert not same(before, after, "projector.") and not same(before, after, "ctc_output.")
    # The checkpoint: projector, CTC head and encoder; no LLM weights; the LLM named and fingerprinted.
    ckpt = torch.load(stage1["exp"] / "epoch-1.pt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("llm.") for k in ckpt["model"])
    assert ckpt["speech_llm_config"]["llm_path"] == str(setup["llm"].resolve())
    assert ckpt["speech_llm_config"]["llm_fingerprint"] == fingerprint(setup["llm"])
    assert ckpt["global_step"] == 3 and ckpt["speech_llm_config"]["lora_rank"] == 0
    assert ckpt["trainable_parameters"] == sum(
        v.numel() for k, v in after.items() if k.startswith(("projector.", "ctc_output."))
    )


def test_stage2_trains_lora_and_top_encoder_layer(setup, stage1):
    exp = setup["root"] / "stage2"
    cfg = TrainConfig.from_dict(
        options(
            setup,
            exp,
            init_from=str(stage1["exp"]),
            speech_llm_stage=2,
            lora_rank=4,
            speech_llm_encoder_top=1,
            activation_checkpointing=True,
        )
    )
    model, before = train_capturing(cfg)
    after = model.state_dict()
    stage1_sd = stage1["model"].state_dict()
    # Started from stage 1's projector.
    assert all(torch.equal(before[k], stage1_sd[k]) for k in stage1_sd if k.startswith("projector."))
    base = [k for k in after if k.startswith("llm.") and "lora_" not in k]
    lora = [k for k in after if "lora_B" in k]
    assert base and lora
    assert all(torch.equal(before[k], after[k]) for k in base)  # the LLM itself: frozen
    assert any(not torch.equal(before[k], after[k]) for k in lora)  # adapters: trained (lora_B starts at 0)
    assert not same(before, after, "encoder.layers.1.") and same(before, after, "encoder.layers.0.")
    assert same(before, after, "encoder.subsampling.")
    ckpt = torch.load(exp / "epoch-1.pt", map_location="cpu", weights_only=False)
    assert ckpt["speech_llm_config"]["lora_rank"] == 4
    assert any("lora_" in k for k in ckpt["model"]) and all("lora_" in k for k in ckpt["model"] if k.startswith("llm."))


# ---------------------------------------------------------------- CLI, end to end


def dsr_ok(*args: Any) -> str:
    logger = logging.getLogger("dsr")
    handlers = list(logger.handlers)
    try:
        res = CliRunner().invoke(app, [str(a) for a in args])
    finally:
        for h in [h for h in logger.handlers if h not in handlers]:
            if isinstance(h, logging.FileHandler):
                logger.removeHandler(h)
                h.close()
    assert res.exit_code == 0, f"dsr {' '.join(map(str, args))}:\n{res.output}\n{res.exception!r}"
    return res.output


def dsr_user_error(capsys, *args: Any) -> str:
    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["dsr", *map(str, args)]), pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and sum(line.startswith("error:") for line in lines) == 1, err
    return lines[-1]


def test_dsr_train_and_decode(setup, tmp_path, capsys):
    corpus = setup["corpus"]
    exp = tmp_path / "exp"
    common = [
        "--train-cuts",
        corpus["train_cuts"],
        "--dev-cuts",
        corpus["dev_cuts"],
        "--lang-dir",
        corpus["lang_dir"],
        "--exp-dir",
        exp,
        "--speech-llm",
        setup["llm"],
        "--init-from",
        setup["init"],
        "--projector-stack",
        2,
        "--max-duration",
        4,
        "--num-buckets",
        1,
        "--no-spec-augment",
        "--num-threads",
        1,
        "--device",
        "cpu",
        "--warmup-steps",
        1,
        "--log-interval",
        1,
        "--ctc-loss-scale",
        0,
        "--speech-llm-hotword-prob",
        0.5,
    ]
    dsr_ok("train", *common, "--num-epochs", 1, "--max-steps", 2)
    # Resuming: a second epoch continues from epoch-1.pt.
    dsr_ok("train", *common, "--num-epochs", 2, "--max-steps", 4)
    ckpt = torch.load(exp / "epoch-2.pt", map_location="cpu", weights_only=False)
    first = torch.load(exp / "epoch-1.pt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4 and ckpt["train_seconds"] > first["train_seconds"]
    hotwords = tmp_path / "hotwords.txt"
    hotwords.write_text("kitchen lights\t2.0\nparis\n")
    dsr_ok(
        "decode",
        "--exp-dir",
        exp,
        "--cuts",
        corpus["dev_cuts"],
        "-m",
        "speech-llm-greedy",
        "-m",
        "speech-llm-beam-search",
        "--beam-size",
        2,
        "--device",
        "cpu",
        "--hotwords-file",
        hotwords,
    )
    for method in ("speech-llm-greedy", "speech-llm-beam-search"):
        out = exp / "decode" / method / "cuts_dev"
        result = json.loads((out / "result.json").read_text())
        assert result["num_utts"] == 4 and result["checkpoint"] == "epoch-2-avg-1"
        assert "Words that may occur: kitchen lights, paris." in result["prompt"]
        assert result["trainable_parameters"] == ckpt["trainable_parameters"] > 0
        assert result["train_seconds"] == ckpt["train_seconds"] > 0
        assert len((out / "recogs.txt").read_text().splitlines()) >= 4
    nbest = [
        json.loads(line)
        for line in (exp / "decode" / "speech-llm-beam-search" / "cuts_dev" / "nbest.jsonl").read_text().splitlines()
    ]
    assert len(nbest) == 4 and all(1 <= len(r["hyps"]) <= 2 for r in nbest)
    # It is an nbest.jsonl that dsr rescore reads, like every n-best method's.
    nbest_path = exp / "decode" / "speech-llm-beam-search" / "cuts_dev" / "nbest.jsonl"
    assert [len(u.hyps) for u in read_nbest(nbest_path)] == [len(r["hyps"]) for r in nbest]
    # The speech-LLM reranks another method's n-best list of the same cuts.
    nbest_file = tmp_path / "nbest.jsonl"
    nbest_file.write_text(
        "".join(
            json.dumps(
                {
                    "utt_id": r["utt_id"],
                    "ref": r["ref"],
                    "hyps": [
                        {"text": "TURN ON THE LIGHTS", "am_score": -1.0},
                        {"text": r["ref"].upper(), "am_score": -1.5},
                    ],
                }
            )
            + "\n"
            for r in nbest
        )
    )
    dsr_ok(
        "decode",
        "--exp-dir",
        exp,
        "--cuts",
        corpus["dev_cuts"],
        "-m",
        "speech-llm-rescoring",
        "--nbest-file",
        nbest_file,
        "--speech-llm-scale",
        0.5,
        "--device",
        "cpu",
    )
    out = exp / "decode" / "speech-llm-rescoring" / "cuts_dev"
    reranked = [json.loads(line) for line in (out / "nbest.jsonl").read_text().splitlines()]
    assert len(reranked) == 4
    for r in reranked:
        totals = [h["total_score"] for h in r["hyps"]]
        assert totals == sorted(totals, reverse=True)
        assert all(h["total_score"] == pytest.approx(h["am_score"] + 0.5 * h["speech_llm_score"]) for h in r["hyps"])
    assert json.loads((out / "result.json").read_text())["speech_llm_scale"] == 0.5
    assert "--nbest-file" in dsr_user_error(
        capsys, "decode", "--exp-dir", exp, "--cuts", corpus["dev_cuts"], "-m", "speech-llm-rescoring"
    )
    # User errors: one line each.
    assert "needs a trained encoder" in dsr_user_error(
        capsys, "train", "--train-cuts", corpus["train_cuts"], "--exp-dir", tmp_path / "x", "--speech-llm", setup["llm"]
    )
    assert "speech-llm-greedy" in dsr_user_error(
        capsys,
        "decode",
        "--exp-dir",
        exp,
        "--cuts",
        corpus["dev_cuts"],
        "--lang-dir",
        corpus["lang_dir"],
        "-m",
        "greedy",
    )
    assert "drop --streaming, --int8" in dsr_user_error(
        capsys, "decode", "--exp-dir", exp, "--cuts", corpus["dev_cuts"], "-m", "speech-llm-greedy", "--int8"
    )
    # The LLM changed on disk since training: decoding refuses, naming it.
    other = tmp_path / "exp-other-llm"
    other.mkdir()
    ckpt["speech_llm_config"]["llm_fingerprint"] = "0-0"
    torch.save(ckpt, other / "epoch-1.pt")
    assert "belongs to the LLM" in dsr_user_error(
        capsys, "decode", "--exp-dir", other, "--cuts", corpus["dev_cuts"], "-m", "speech-llm-greedy"
    )


def test_autocast_only_on_cuda():
    assert sl.autocast_dtype("bfloat16", torch.device("cpu")) == "float32"
    assert sl.autocast_dtype("float16", torch.device("cpu")) == "float32"
    assert sl.autocast_dtype("float32", torch.device("cpu")) == "float32"


def test_cached_encoder_outputs_train_the_same(setup, tmp_path):
    """Two epochs of stage 1 with the frozen encoder's outputs cached after epoch 1 end with the
    projector (and CTC head) of the same run without the cache."""
    common = dict(max_steps=0, num_epochs=2, spec_augment=False, dev_cuts="")
    plain, _ = train_capturing(TrainConfig.from_dict(options(setup, tmp_path / "plain", **common)))
    caches: list[sl.EncoderCache] = []

    class Recorded(sl.EncoderCache):
        def __init__(self) -> None:
            super().__init__()
            caches.append(self)

    with mock.patch.object(sl, "EncoderCache", Recorded):
        cached, _ = train_capturing(
            TrainConfig.from_dict(options(setup, tmp_path / "cached", speech_llm_cache_encoder=True, **common))
        )
    # Epoch 1 encodes every batch, epoch 2 reads them all from memory.
    assert len(caches) == 1 and caches[0].hits == caches[0].misses > 0 and len(caches[0].outputs) == 16
    a, b = plain.state_dict(), cached.state_dict()
    trained = [k for k in a if k.startswith(("projector.", "ctc_output."))]
    assert trained and all(torch.allclose(a[k], b[k], atol=1e-5) for k in trained)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("encoder.", "llm.")))
    with pytest.raises(Exception, match="spec_augment=False"):
        TrainConfig.from_dict(
            options(setup, tmp_path / "x", speech_llm_cache_encoder=True, spec_augment=True)
        ).validate()


def test_encoder_cache_serves_known_cuts(setup):
    from test_speech_llm import tiny_speech_llm

    speech_llm, _ = tiny_speech_llm("qwen2")
    cache = sl.EncoderCache()
    feats = torch.randn(2, 50, 80)
    lens = torch.tensor([50, 33])
    first = cache.encode(speech_llm, feats, lens, ["a", "b"])
    assert cache.misses == 1 and set(cache.outputs) == {"a", "b"} and cache.megabytes > 0
    # Served from memory: the features are not read again.
    again = cache.encode(speech_llm, torch.zeros(2, 50, 80), lens, ["b", "a"])
    assert cache.hits == 1
    assert torch.equal(again[1], first[1].flip(0))
    assert torch.allclose(again[0][0, : int(first[1][1])], first[0][1, : int(first[1][1])])
    assert torch.allclose(again[0][1], first[0][0])


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(speech_llm_stage=3), "speech_llm_stage must be 1 or 2"),
        (dict(speech_llm_stage=2, lora_rank=0), "lora_rank >= 1"),
        (dict(speech_llm_encoder_top=1), "only with speech_llm_stage 2"),
        (dict(projector_stack=0), "projector_stack must be >= 1"),
        (dict(freeze="encoder"), "drop teacher"),
        (dict(init_from=""), "needs a trained encoder"),
        (dict(pretrained="whisper-tiny.en"), "takes its encoder from pretrained .* or from init_from .*, not both"),
        (dict(speech_llm_hotword_prob=1.5), "speech_llm_hotword_prob must be in"),
    ],
)
def test_speech_llm_options_are_checked(setup, tmp_path, bad, message):
    from dsr.errors import DsrUserError

    with pytest.raises(DsrUserError, match=message):
        TrainConfig.from_dict(options(setup, tmp_path / "exp", **bad)).validate()


def test_a_speech_llm_run_is_recorded_and_another_runs_exp_dir_refused(setup, stage1, tmp_path, capsys):
    """As dsr train's transducer runs (design note 40): checkpoints and the done-marker record the
    training cuts, the LLM, the CTC head's bpe.model and the options the checkpoints are shaped by;
    an exp dir of another run is neither reported done nor resumed (before the LLM is loaded,
    config.yaml untouched), in field names from Python and flag names from the CLI."""
    import shutil

    from lhotse import CutSet

    from dsr.errors import OptionError
    from dsr.utils import read_done_info

    exp = tmp_path / "exp"
    shutil.copytree(stage1["exp"], exp)
    record = torch.load(exp / "epoch-1.pt", map_location="cpu", weights_only=False)["run"]
    assert set(record["inputs"]) == {"train_cuts", "speech_llm", "lang_dir"}  # ctc_loss_scale 0.2: a CTC head
    assert record["inputs"]["speech_llm"] == fingerprint(setup["llm"])
    assert record["options"]["projector_stack"] == 2 and "lora_rank" not in record["options"]  # stage 1
    assert read_done_info(exp, "train")["inputs"] == record["inputs"]
    config = (exp / "config.yaml").read_text()
    fewer = tmp_path / "fewer_cuts.jsonl.gz"
    CutSet.from_cuts(list(CutSet.from_file(setup["corpus"]["train_cuts"]))[1:]).to_file(fewer)
    other_llm = tmp_path / "other_llm"
    shutil.copytree(setup["llm"], other_llm)
    (other_llm / "README.md").write_text("another model\n")

    # A finished run on other cuts is not reported done (dsr train's check of the done-marker).
    line = dsr_user_error(capsys, "train", "--config", exp / "config.yaml", "--exp-dir", exp, "--train-cuts", fewer)
    assert line == (
        f"error: --exp-dir {exp} holds checkpoints of another run (--train-cuts holds other cuts): resume it "
        "with what it was trained on, give a new --exp-dir, or --force to move its files aside and train afresh"
    )
    # An unfinished one is not resumed (the speech-LLM loop's check), naming what changed.
    changes = [
        (dict(train_cuts=str(fewer)), "train_cuts holds other cuts"),
        (dict(projector_stack=3), "projector_stack 2 -> 3"),
        (dict(ctc_loss_scale=0.0), "ctc_loss_scale '> 0 (a CTC head)' -> '0 (no CTC head)'"),
        (dict(speech_llm=str(other_llm)), "speech_llm is another LLM (other files, or changed since)"),
        (dict(speech_llm_stage=2), "speech_llm_stage 1 -> 2"),
    ]
    for overrides, change in changes:
        with pytest.raises(OptionError) as raised:
            train(TrainConfig.from_dict(options(setup, exp, num_epochs=2, **overrides)))
        assert str(raised.value).startswith(f"exp_dir {exp} holds checkpoints of another run ({change}):"), raised
        assert (exp / "config.yaml").read_text() == config
    line = dsr_user_error(
        capsys, "train", "--config", exp / "config.yaml", "--exp-dir", exp, "--num-epochs", 2, "--projector-stack", 3
    )
    assert f"--exp-dir {exp} holds checkpoints of another run (--projector-stack 2 -> 3)" in line
    # Nor does the transducer trainer take it (nor the speech-LLM loop a transducer run's).
    with pytest.raises(OptionError, match=r"another run \(it was trained with speech_llm\)"):
        train(TrainConfig.from_dict(tiny_train_options(setup["corpus"], exp, num_epochs=2)))
    assert (exp / "config.yaml").read_text() == config
    # The same inputs: done, and resumed.
    assert "already done" in dsr_ok("train", "--config", exp / "config.yaml", "--exp-dir", exp)
    train(TrainConfig.from_dict(options(setup, exp, num_epochs=2, max_steps=4)))
    assert torch.load(exp / "epoch-2.pt", map_location="cpu", weights_only=False)["global_step"] == 4
