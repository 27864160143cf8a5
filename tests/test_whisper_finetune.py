"""End to end: fine-tune every head of a model built on a (tiny, random) pretrained Whisper.

One module-scoped run of ``dsr train --pretrained`` on whisper-fbank features computed by
``dsr features`` trains the transducer, CTC and Whisper-decoder heads on a tiny Whisper
written by ``dsr whisper convert`` (from an OpenAI-layout .pt file); its checkpoints are
decoded with every method by ``dsr decode`` and ``dsr transcribe``, and resumed.  Smaller
runs cover ``--no-whisper-decoder`` and zero-shot decoding.  The user errors are checked
through ``dsr.cli.main.run``, as the ``dsr`` script runs: one ``error:`` line, exit status
2, no traceback.  Everything runs through the CLI, on one thread, in about 15 s.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
import whisper_fixtures as fx
from corpus_fixtures import audio
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from tiny_corpus import write_feature_cuts
from typer.testing import CliRunner

from dsr.cli.main import app, run
from dsr.evaluation.wer import normalize_for_scoring
from dsr.lm.nbest import read_nbest

pytest.importorskip("tokenizers", reason="Whisper's tokenizer needs 'tokenizers' (bash tools/setup.sh --whisper)")

TRAIN_TEXTS = [
    "the cat sat",
    "hello world",
    "the end",
    "the cat sat on the mat",
    "hello the cat",
    "world end",
    "the mat",
    "on the mat",
    "cat sat on the end",
]
TEST_TEXTS = ["the cat", "hello world the end", "sat on the mat"]
METHODS = (
    "greedy",
    "ctc-greedy",
    "modified-beam-search",
    "ctc-prefix-beam-search",
    "transducer-attention-rescoring",
    "ctc-attention-rescoring",
    "whisper-greedy",
    "whisper-beam-search",
)
MAX_STEPS, FREEZE_STEPS = 6, 2
#: Heads that start random on the recipe's BPE (the transducer's and CTC's).
NEW_HEADS = ("predictor.", "joiner.", "simple_am_proj.", "simple_lm_proj.", "ctc_output.")
#: Parameters that start from Whisper's weights (with its decoder as the attention head).
PRETRAINED = ("encoder.", "attention_decoder.")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- helpers


def dsr_ok(*args: Any) -> str:
    """``dsr ARGS`` through typer's runner; asserts exit status 0, returns the output.

    ``dsr train`` adds a log file handler to the "dsr" logger, for the life of its process:
    here it is closed after the command, so that each exp dir's log has its own run only.
    """
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
    """``dsr ARGS`` as the ``dsr`` script runs it: must end with a user error (exit status 2,
    one ``error:`` line, no traceback); returns that line."""
    capsys.readouterr()
    with mock.patch.object(sys, "argv", ["dsr", *map(str, args)]), pytest.raises(SystemExit) as exit_info:
        run()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    return errors[0]


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def recogs(exp: Path, method: str, split: str = "tiny_test") -> str:
    return (exp / "decode" / method / split / "recogs.txt").read_text()


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """Names under ``prefix`` whose tensors differ; asserts the prefix has some."""
    names = [k for k in after if k.startswith(prefix)]
    assert names, prefix
    return [k for k in names if not torch.equal(before[k], after[k])]


def pretrained_in_model(whisper_sd: dict[str, torch.Tensor], decoder: bool = True) -> dict[str, torch.Tensor]:
    """The pretrained Whisper tensors under the dsr model's names."""
    out = {k: v for k, v in whisper_sd.items() if k.startswith("encoder.")}
    if decoder:
        out.update(
            {"attention_decoder." + k[len("decoder.") :]: v for k, v in whisper_sd.items() if k.startswith("decoder.")}
        )
    return out


# ---------------------------------------------------------------- fixtures


def random_whisper(tokenizer_json: str) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """OpenAI dims and a random float32 state dict of a tiny Whisper for ``tokenizer_json``."""
    from dsr.models.whisper.load import expected_shapes
    from dsr.models.whisper.model import WhisperDims

    dims = WhisperDims(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=fx.D_MODEL,
        n_audio_head=fx.HEADS,
        n_audio_layer=fx.LAYERS,
        n_vocab=fx.token_ids(tokenizer_json)["vocab"],
        n_text_ctx=48,
        n_text_state=fx.D_MODEL,
        n_text_head=fx.HEADS,
        n_text_layer=fx.LAYERS,
    )
    g = torch.Generator().manual_seed(0)
    sd = {}
    for name, shape in sorted(expected_shapes(dims).items()):
        if name.endswith("_ln.weight") or name.endswith("ln_post.weight") or name == "decoder.ln.weight":
            sd[name] = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name == "decoder.token_embedding.weight":
            sd[name] = 0.5 * torch.randn(shape, generator=g)
        else:
            sd[name] = 0.1 * torch.randn(shape, generator=g)
    return dims.to_dict(), sd


def write_manifests(root: Path, split: str, texts: list[str], seed: int) -> None:
    (root / "manifests").mkdir(exist_ok=True)
    recs, sups = [], []
    for i, text in enumerate(texts):
        rid = f"{split}{i}"
        rec = Recording.from_file(
            audio(root / "wav" / f"{rid}.wav", seconds=0.6 + 0.1 * (i % 5), seed=seed + i), recording_id=rid
        )
        recs.append(rec)
        sups.append(
            SupervisionSegment(
                id=rid, recording_id=rid, start=0.0, duration=rec.duration, text=text, speaker=f"s{i % 2}"
            )
        )
    RecordingSet.from_recordings(recs).to_file(root / "manifests" / f"tiny_recordings_{split}.jsonl.gz")
    SupervisionSet.from_segments(sups).to_file(root / "manifests" / f"tiny_supervisions_{split}.jsonl.gz")


TRAIN_OPTIONS = dict(
    decoder_dim=16, joiner_dim=16, max_duration=2.5, num_buckets=1, num_epochs=2, max_steps=MAX_STEPS,
    warmup_steps=2, model_warm_step=4, save_every_n=2, keep_last_k=10, log_interval=1, average_period=2,
    num_threads=1, device="cpu", base_lr=2e-3, freeze_encoder_steps=FREEZE_STEPS, pretrained_lr_scale=0.5,
)  # fmt: skip


def options(**values: Any) -> list[Any]:
    """``--flag value`` pairs; True / False give ``--flag`` / ``--no-flag``."""
    out: list[Any] = []
    for k, v in values.items():
        flag = k.replace("_", "-")
        out += [f"--{flag}"] if v is True else [f"--no-{flag}"] if v is False else [f"--{flag}", v]
    return out


def train_args(work: dict[str, Any], exp: Path, **overrides: Any) -> list[Any]:
    """``dsr train --pretrained`` on the tiny corpus (TRAIN_OPTIONS, then ``overrides``)."""
    values = dict(
        pretrained=work["whisper"],
        exp_dir=exp,
        lang_dir=work["lang"],
        train_cuts=work["train"],
        dev_cuts=work["test"],
        spec_augment=False,
        **TRAIN_OPTIONS,
    )
    values.update(overrides)
    return ["train", *options(**values)]


def decode_args(work: dict[str, Any], exp: Path, *methods: str, **overrides: Any) -> list[Any]:
    values = dict(exp_dir=exp, cuts=work["test"], lang_dir=work["lang"], device="cpu", num_threads=1)
    values.update(overrides)
    args = ["decode", *options(**{k: v for k, v in values.items() if v is not None})]
    for m in methods:
        args += ["-m", m]
    return args


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, Path]:
    """A tiny random Whisper in dsr's format, whisper-fbank train/test cuts and a BPE lang dir."""
    from dsr.lang.bpe import train_bpe

    root = tmp_path_factory.mktemp("whisper_finetune")
    tok = fx.tiny_tokenizer_json()
    dims, sd = random_whisper(tok)
    (root / "tokenizer.json").write_text(tok)
    fx.write_openai_pt(root / "tiny.pt", dims, sd, half=False)
    dsr_ok("whisper", "convert", root / "tiny.pt", root / "whisper", "--tokenizer", root / "tokenizer.json")
    write_manifests(root, "train", TRAIN_TEXTS, seed=0)
    write_manifests(root, "test", TEST_TEXTS, seed=50)
    dsr_ok(
        "features",
        "--corpus",
        "tiny",
        "--split",
        "train",
        "--split",
        "test",
        "--manifest-dir",
        root / "manifests",
        "--out-dir",
        root / "fbank",
        "-j",
        1,
        "--feature-type",
        "whisper-fbank",
    )
    train_bpe(TRAIN_TEXTS * 20, root / "lang", vocab_size=20)
    return {
        "root": root,
        "whisper": root / "whisper",
        "lang": root / "lang",
        "whisper_sd": sd,
        "train": root / "fbank" / "tiny_cuts_train.jsonl.gz",
        "test": root / "fbank" / "tiny_cuts_test.jsonl.gz",
    }


@pytest.fixture(scope="module")
def trained(work) -> Path:
    """``dsr train --pretrained`` with every head: MAX_STEPS updates over two epochs, the encoder
    frozen for the first FREEZE_STEPS, a checkpoint every 2 steps."""
    exp = work["root"] / "exp"
    dsr_ok(*train_args(work, exp))
    return exp


@pytest.fixture(scope="module")
def decoded(work, trained) -> Path:
    """The trained model decoded with every method in one ``dsr decode``, attention scale 0."""
    dsr_ok(*decode_args(work, trained, *METHODS, attention_scale=0, beam_size=3))
    return trained / "decode"


@pytest.fixture(scope="module")
def kaldi_exp(work) -> Path:
    """A random Conformer checkpoint trained (so to speak) on kaldi-fbank: no Whisper head."""
    from dsr.lang.bpe import Tokenizer
    from dsr.models import ModelConfig, build_model
    from dsr.models.checkpoint import save_checkpoint

    cfg = ModelConfig(
        encoder_dim=16,
        num_encoder_layers=1,
        num_heads=2,
        ffn_dim=32,
        conv_kernel_size=3,
        subsampling_channels=(4, 8),
        decoder_dim=16,
        joiner_dim=16,
        vocab_size=Tokenizer(work["lang"]).vocab_size,
    )
    exp = work["root"] / "kaldi_exp"
    save_checkpoint(
        exp / "epoch-1.pt", {"model_config": cfg.to_dict(), "model": build_model(cfg).state_dict(), "global_step": 1}
    )
    return exp


@pytest.fixture(scope="module")
def kaldi_cuts(work) -> Path:
    root = work["root"] / "kaldi"
    root.mkdir()
    return write_feature_cuts(root, TEST_TEXTS, (60, 70, 80))


def model_parameter_names(ckpt: dict[str, Any]) -> list[str]:
    """The checkpoint's model's parameter names, in ``named_parameters`` order (the optimizer's)."""
    from dsr.models import ModelConfig, build_model

    return [n for n, _ in build_model(ModelConfig.from_dict(ckpt["model_config"])).named_parameters()]


def optimizer_order(names: list[str]) -> list[str]:
    """Parameter names in the optimizer's order: the new heads' group, then the pretrained group."""
    pretrained = [n for n in names if n.startswith(PRETRAINED)]
    return [n for n in names if n not in pretrained] + pretrained


def initial_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The random weights the checkpoint's training started from (the trainer seeds, then builds the model)."""
    from dsr.models import ModelConfig, build_model

    torch.manual_seed(ckpt["train_config"]["seed"])
    return build_model(ModelConfig.from_dict(ckpt["model_config"])).state_dict()


def step_log(exp: Path) -> list[dict[str, float]]:
    """The loss parts of every ``epoch E step S: loss L (k v ...)`` line of the newest training log."""
    text = sorted((exp / "log").glob("log-train-*.txt"))[-1].read_text()
    return [
        {k: float(v) for k, v in re.findall(r"(\w+_loss) (\S+)", m.group(1))}
        for m in re.finditer(r"epoch \d+ step \d+: loss \S+ \(([^)]*)\)", text)
    ]


# ---------------------------------------------------------------- 1. training runs every head


def test_training_runs_every_head(work, trained) -> None:
    from dsr.features.frontend import frontend_to_dict
    from dsr.features.whisper_fbank import WhisperFbankConfig
    from dsr.models.whisper.load import load_whisper

    ckpt = load(trained / "epoch-2.pt")
    assert ckpt["global_step"] == MAX_STEPS
    mcfg = ckpt["model_config"]
    assert mcfg["encoder_type"] == "whisper" and mcfg["whisper_decoder"] is True
    assert mcfg["whisper_dims"]["n_text_ctx"] == 48 and mcfg["attention_decoder_layers"] == 0
    # Every step trained all four losses, each finite.
    steps = step_log(trained)
    assert len(steps) == MAX_STEPS
    for parts in steps:
        assert set(parts) == {"simple_loss", "pruned_loss", "ctc_loss", "attention_loss"}, parts
        assert all(0 < v < 1e4 for v in parts.values()), parts
    # What decoding needs without the pretrained files.
    assert ckpt["pretrained"] == str(work["whisper"])
    assert ckpt["frontend"] == frontend_to_dict(WhisperFbankConfig())
    loaded = load_whisper(work["whisper"])
    assert ckpt["whisper_tokenizer"] == loaded.tokenizer_json == (work["root"] / "tokenizer.json").read_text()
    assert ckpt["whisper_search"] == {
        "suppress_tokens": list(loaded.suppress_tokens),
        "suppress_at_begin": list(loaded.suppress_blank),
        "suppress_from": loaded.tokenizer().eot + 1,
    }
    # Whisper reads its own normalised log-mel: the identity normalisation, never feature statistics.
    assert torch.equal(ckpt["model"]["feature_mean"], torch.zeros(80))
    assert torch.equal(ckpt["model"]["feature_std"], torch.ones(80))


def test_every_weight_trains_after_the_freeze(work, trained) -> None:
    """After FREEZE_STEPS the encoder is still the pretrained one; at the end every parameter has
    moved from its pretrained value and since then (encoder, Whisper decoder head, transducer and
    CTC heads), while the buffers (the encoder's sinusoids) are the pretrained ones."""
    start = load(trained / f"checkpoint-{FREEZE_STEPS}.pt")["model"]
    final = load(trained / "epoch-2.pt")
    params = set(model_parameter_names(final))
    for name, value in pretrained_in_model(work["whisper_sd"], decoder=False).items():
        assert torch.equal(start[name], value), name
    for name, value in pretrained_in_model(work["whisper_sd"]).items():
        assert torch.equal(final["model"][name], value) == (name not in params), name
    for prefix in ("encoder.", "attention_decoder.", *NEW_HEADS):
        moved = changed(start, final["model"], prefix)
        assert set(moved) == {n for n in params if n.startswith(prefix)}, prefix


# ---------------------------------------------------------------- 2. freezing and learning rates


def test_frozen_encoder_is_bit_identical_while_the_heads_train(work, trained) -> None:
    """``--freeze-encoder-steps N``: the checkpoint after N updates has the pretrained encoder bit
    for bit and no optimizer state for it, while every head has moved."""
    ckpt = load(trained / f"checkpoint-{FREEZE_STEPS}.pt")
    assert ckpt["global_step"] == FREEZE_STEPS
    model = ckpt["model"]
    for name, value in pretrained_in_model(work["whisper_sd"], decoder=False).items():
        assert torch.equal(model[name], value), name
    # The Whisper decoder head is not frozen: it trained from the first step.
    assert changed(pretrained_in_model(work["whisper_sd"]), model, "attention_decoder.")
    # The new heads moved from their random start by a few Adam steps of at most ~lr each.
    initial = initial_weights(ckpt)
    for prefix in NEW_HEADS:
        for name in (n for n in model if n.startswith(prefix)):
            step = (model[name] - initial[name]).abs().max().item()
            assert 0 < step <= 2 * FREEZE_STEPS * TRAIN_OPTIONS["base_lr"], (name, step)
    names = model_parameter_names(ckpt)
    state = ckpt["optimizer"]["state"]
    every = {i for group in ckpt["optimizer"]["param_groups"] for i in group["params"]}
    frozen = {i for i, n in enumerate(optimizer_order(names)) if n.startswith("encoder.")}
    assert frozen and not frozen & set(state), "frozen encoder parameters must not have been updated"
    assert set(state) == every - frozen


def test_pretrained_parameters_have_their_own_learning_rate(trained) -> None:
    ckpt = load(trained / "epoch-2.pt")
    names = model_parameter_names(ckpt)
    new, old = ckpt["optimizer"]["param_groups"]
    order = optimizer_order(names)
    assert [order[i] for i in new["params"]] == [n for n in names if n.startswith(NEW_HEADS)]
    assert [order[i] for i in old["params"]] == [n for n in names if n.startswith(PRETRAINED)]
    assert old["initial_lr"] == pytest.approx(0.5 * new["initial_lr"])
    assert old["lr"] == pytest.approx(0.5 * new["lr"])
    # The groups hold what the names say: Adam's moments have the parameters' shapes.
    for i, name in enumerate(order):
        assert ckpt["optimizer"]["state"][i]["exp_avg"].shape == ckpt["model"][name].shape, name


# ---------------------------------------------------------------- 3. decoding with every method


def test_decode_with_every_method(decoded) -> None:
    for method in METHODS:
        info = json.loads((decoded / method / "tiny_test/result.json").read_text())
        assert info["num_utts"] == len(TEST_TEXTS) and info["ref_words"] > 0, method
        assert recogs(decoded.parent, method).count("hyp=") == len(TEST_TEXTS), method
    # Scale 0: each rescoring keeps its first pass's ranking, so its recognitions.
    assert recogs(decoded.parent, "transducer-attention-rescoring") == recogs(decoded.parent, "modified-beam-search")
    assert recogs(decoded.parent, "ctc-attention-rescoring") == recogs(decoded.parent, "ctc-prefix-beam-search")
    # ... with the Whisper head's score of every hypothesis (BPE text -> Whisper tokens).
    for method in ("transducer-attention-rescoring", "ctc-attention-rescoring"):
        for line in (decoded / method / "tiny_test/nbest.jsonl").read_text().splitlines():
            assert all(h["attention_score"] is not None and h["attention_score"] < 0 for h in json.loads(line)["hyps"])
    lines = (decoded / "whisper-beam-search/tiny_test/nbest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["utt_id"] for r in records] == sorted(f"test{i}" for i in range(len(TEST_TEXTS)))
    for r in records:
        assert 1 <= len(r["hyps"]) <= 3 and all(h["am_score"] is not None for h in r["hyps"])
        best = normalize_for_scoring(r["hyps"][0]["text"]).split()
        assert f"{r['utt_id']}:\thyp={best}" in recogs(decoded.parent, "whisper-beam-search")
        # The list is best-first by the length-normalised score, which rescoring reads back as rank_norm.
        assert all(h["rank_norm"] == max(len(h["tokens"]), 1) for h in r["hyps"])
    for u in read_nbest(decoded / "whisper-beam-search/tiny_test/nbest.jsonl"):
        ranks = [h.rank_score for h in u.hyps if h.source == "search"]
        assert ranks == sorted(ranks, reverse=True)
    assert not (decoded / "whisper-greedy/tiny_test/nbest.jsonl").exists()


# ---------------------------------------------------------------- 4. zero-shot


def test_zero_shot_whisper_needs_no_lang_dir(work, capsys) -> None:
    exp = work["root"] / "zero_shot"
    dsr_ok(*decode_args(work, exp, "whisper-greedy", lang_dir=None, pretrained=work["whisper"]))
    info = json.loads((exp / "decode/whisper-greedy/tiny_test/result.json").read_text())
    assert info["num_utts"] == len(TEST_TEXTS) and info["checkpoint"] == f"zero-shot {work['whisper']}"
    assert recogs(exp, "whisper-greedy").count("hyp=") == len(TEST_TEXTS)
    line = dsr_user_error(capsys, *decode_args(work, exp, "greedy", lang_dir=None, pretrained=work["whisper"]))
    assert "--pretrained: decodes zero-shot Whisper: use --method whisper-greedy" in line


# ---------------------------------------------------------------- 5. user errors


USER_ERRORS = {
    "decode whisper-fbank cuts with a kaldi-fbank model": (
        lambda w: decode_args(w, w["kaldi_exp"], "greedy"),
        r"features of .*tiny_cuts_test.jsonl.gz are whisper-fbank \(num_mel_bins 80\) but the model in .*kaldi_exp "
        r"was trained on kaldi-fbank",
    ),
    "decode kaldi-fbank cuts with the fine-tuned Whisper": (
        lambda w: decode_args(w, w["exp"], "ctc-greedy", cuts=w["kaldi_cuts"]),
        r"features of .*toy_cuts_test.jsonl.gz are kaldi-fbank .* but the model in .*exp was trained on whisper-fbank",
    ),
    "train --pretrained on kaldi-fbank cuts": (
        lambda w: train_args(w, w["root"] / "bad", train_cuts=w["kaldi_cuts"], dev_cuts=""),
        r"features of .*toy_cuts_test.jsonl.gz are kaldi-fbank .* but --pretrained .* reads whisper-fbank",
    ),
    "train --pretrained PATH that does not exist": (
        lambda w: train_args(w, w["root"] / "bad", pretrained=w["root"] / "nowhere"),
        r"nowhere: no such file or directory",
    ),
    "decode --pretrained PATH that does not exist": (
        lambda w: decode_args(w, w["root"] / "bad", "whisper-greedy", lang_dir=None, pretrained=w["root"] / "nowhere"),
        r"nowhere: no such file or directory",
    ),
    "-m whisper-greedy without a Whisper head": (
        lambda w: decode_args(w, w["kaldi_exp"], "whisper-greedy", cuts=w["kaldi_cuts"]),
        r"--method: whisper-greedy needs Whisper's decoder head",
    ),
    "transcribe -m faster-whisper": (
        lambda w: [
            "transcribe",
            "--exp-dir",
            w["exp"],
            "--lang-dir",
            w["lang"],
            "-m",
            "faster-whisper",
            w["root"] / "wav" / "test0.wav",
        ],
        r"--method: faster-whisper is a reference row of dsr decode with --pretrained",
    ),
    "decode --streaming with a Whisper encoder": (
        lambda w: decode_args(w, w["exp"], "greedy", streaming=True, chunk_ms=320),
        r"--streaming: needs a Conformer trained with dsr train --causal .* Whisper encoder attends to whole utterances",
    ),
    "--pretrained with --attention-decoder-layers": (
        lambda w: train_args(w, w["root"] / "bad", whisper_decoder=False, attention_decoder_layers=2),
        r"--pretrained: the attention head is Whisper's own decoder \(--whisper-decoder\); drop --attention-decoder",
    ),
    "--pretrained with --init-from a Conformer": (
        lambda w: train_args(w, w["root"] / "bad", init_from=w["kaldi_exp"]),
        r"--init-from .+ is a dsr Conformer model, not one on Whisper: drop --pretrained",
    ),
    "--init-from a Whisper model without --pretrained": (
        lambda w: train_args(w, w["root"] / "bad", pretrained="", init_from=w["exp"]),
        r"--init-from .+ is a model on a pretrained Whisper encoder: add --pretrained \S+",
    ),
    "--pretrained with --chunk-sizes": (
        lambda w: train_args(w, w["root"] / "bad", chunk_sizes="8,16"),
        r"--pretrained Whisper attends to whole utterances: drop --chunk-sizes",
    ),
}


def test_init_from_continues_a_whisper_model(work, trained) -> None:
    """--pretrained with --init-from: Whisper builds the architecture, the fine-tuned checkpoint's
    weights replace Whisper's (e.g. heads trained on TTS speech, continued on in-domain audio)."""
    from dsr.models.checkpoint import resolve_model_checkpoint

    exp = work["root"] / "continued"
    # One update at a negligible learning rate: the saved weights are the ones the run started from.
    dsr_ok(*train_args(work, exp, init_from=trained, max_steps=1, base_lr=1e-9, freeze_encoder_steps=0))
    start = resolve_model_checkpoint(trained)[0]["model"]
    ckpt = load(sorted(exp.glob("*.pt"))[-1])
    random_start = initial_weights(ckpt)
    whisper = pretrained_in_model(work["whisper_sd"])
    for name in ("joiner.output_linear.weight", "ctc_output.1.weight", "encoder.blocks.0.mlp.0.weight"):
        got = ckpt["model"][name]
        assert torch.allclose(got, start[name], atol=1e-6), name
        assert not torch.allclose(got, random_start[name], atol=1e-3), name
        # The fine-tuned encoder, not Whisper's own weights loaded over it.
        assert name not in whisper or not torch.allclose(got, whisper[name], atol=1e-5), name
    assert "initialised" in sorted((exp / "log").glob("log-train-*.txt"))[-1].read_text()


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_are_one_line(work, trained, kaldi_exp, kaldi_cuts, capsys, case: str) -> None:
    args, pattern = USER_ERRORS[case]
    line = dsr_user_error(capsys, *args({**work, "exp": trained, "kaldi_exp": kaldi_exp, "kaldi_cuts": kaldi_cuts}))
    assert re.search(pattern, line), line


# ---------------------------------------------------------------- 6. batches


def test_whisper_decoder_batch_equals_one_by_one(work, trained) -> None:
    """One batch of all the test cuts, then batches of one cut (each test cut is longer than half
    the batch limit): the same Whisper-decoder recognitions, and the same n-best lists (the
    scores to float rounding: padding must not leak into an utterance's encoder output)."""
    from lhotse import load_manifest

    durations = sorted(c.duration for c in load_manifest(work["test"]))
    assert durations[0] + durations[1] > durations[-1] + 0.01
    methods = ("whisper-greedy", "whisper-beam-search")
    exp = work["root"] / "batches"  # the trained model, with decoding results of its own
    exp.mkdir()
    for ckpt in trained.glob("epoch-*.pt"):
        shutil.copy(ckpt, exp)

    def decode(max_duration: float) -> tuple[list[str], list[dict[str, Any]]]:
        dsr_ok(*decode_args(work, exp, *methods, max_duration=max_duration, beam_size=3))
        nbest = (exp / "decode/whisper-beam-search/tiny_test/nbest.jsonl").read_text().splitlines()
        return [recogs(exp, m) for m in methods], [json.loads(line) for line in nbest]

    (texts, nbest), (one_texts, one_nbest) = decode(100.0), decode(durations[-1] + 0.01)
    assert one_texts == texts
    assert any("hyp=[]" not in line for text in texts for line in text.splitlines() if "hyp=" in line)
    assert [[h["tokens"] for h in r["hyps"]] for r in one_nbest] == [[h["tokens"] for h in r["hyps"]] for r in nbest]
    for one, batched in zip(one_nbest, nbest):
        assert [h["am_score"] for h in one["hyps"]] == pytest.approx(
            [h["am_score"] for h in batched["hyps"]], rel=1e-5, abs=1e-5
        )


# ---------------------------------------------------------------- 6b. dsr transcribe


TRANSCRIBE_METHODS = ("ctc-greedy", "transducer-attention-rescoring", "whisper-greedy")


@pytest.fixture(scope="module")
def audio_decoded(work, trained) -> list[Path]:
    """The test WAVs, decoded by ``dsr decode`` as cuts without features (split ``audio_test``,
    one cut per batch, attention scale 100: the Whisper head's choice decides)."""
    from lhotse import CutSet, MonoCut, load_manifest

    manifests = work["root"] / "manifests"
    recordings = load_manifest(manifests / "tiny_recordings_test.jsonl.gz")
    audio_cuts = work["root"] / "audio" / "audio_cuts_test.jsonl.gz"
    audio_cuts.parent.mkdir()
    CutSet.from_cuts(
        MonoCut(
            id=s.id, start=0.0, duration=s.duration, channel=0, recording=recordings[s.recording_id], supervisions=[s]
        )
        for s in load_manifest(manifests / "tiny_supervisions_test.jsonl.gz")
    ).to_file(audio_cuts)
    dsr_ok(*decode_args(work, trained, *TRANSCRIBE_METHODS, cuts=audio_cuts, max_duration=0.1, attention_scale=100))
    return sorted((work["root"] / "wav").glob("test*.wav"))


def transcribe_args(work: dict[str, Any], exp: Path, method: str, wavs: list[Path]) -> list[Any]:
    return [
        "transcribe",
        "--exp-dir",
        exp,
        "--lang-dir",
        work["lang"],
        "--device",
        "cpu",
        "-m",
        method,
        "--attention-scale",
        100,
        *wavs,
    ]


def test_transcribe_reads_audio_as_the_model_was_trained(work, trained, audio_decoded) -> None:
    """``dsr transcribe`` gives what ``dsr decode`` gives on the same audio: Whisper's log-mel
    (the checkpoint's front end, not Kaldi FBANK), and the Whisper head's own methods."""
    wavs = audio_decoded
    for method in TRANSCRIBE_METHODS:
        out = dsr_ok(*transcribe_args(work, trained, method, wavs))
        lines = [line.split("\t", 1) for line in out.splitlines() if line.startswith(str(wavs[0].parent))]
        assert [Path(f).stem for f, _ in lines] == [w.stem for w in wavs], out
        hyps = "".join(f"{Path(f).stem}:\thyp={normalize_for_scoring(text).split()}\n" for f, text in lines)
        assert hyps == "".join(
            line + "\n" for line in recogs(trained, method, "audio_test").splitlines() if "hyp=" in line
        ), method


def test_transcribe_rescores_with_whisper_tokens(work, trained, audio_decoded, monkeypatch) -> None:
    """The Whisper head rescores the transducer's n-best list in its own tokens: Whisper's
    tokenization of each hypothesis's text (sentence case), not the BPE ids."""
    from dsr.models.whisper.dsr_modules import WhisperDecoderHead
    from dsr.models.whisper.pretrained import whisper_text
    from dsr.models.whisper.tokenizer import WhisperTokenizer

    scored: list[list[int]] = []
    real_score = WhisperDecoderHead.score

    def spy(self, encoder_out, encoder_lens, hyps):
        scored.extend(h for hs in hyps for h in hs)
        return real_score(self, encoder_out, encoder_lens, hyps)

    monkeypatch.setattr(WhisperDecoderHead, "score", spy)
    dsr_ok(*transcribe_args(work, trained, "transducer-attention-rescoring", audio_decoded))
    whisper = WhisperTokenizer(load(trained / "epoch-2.pt")["whisper_tokenizer"], multilingual=False)
    nbest = (trained / "decode/transducer-attention-rescoring/audio_test/nbest.jsonl").read_text().splitlines()
    texts = sorted(whisper_text(h["text"]) for line in nbest for h in json.loads(line)["hyps"])
    assert len(texts) > len(audio_decoded) and any(texts)
    assert sorted(whisper.decode(tokens).strip() for tokens in scored) == texts  # Whisper: " " + text


# ---------------------------------------------------------------- 7. without the Whisper decoder


@pytest.fixture(scope="module")
def no_decoder(work) -> Path:
    """``--no-whisper-decoder`` for FREEZE_STEPS updates, all of them with the encoder frozen."""
    exp = work["root"] / "no_decoder"
    dsr_ok(*train_args(work, exp, whisper_decoder=False, max_steps=FREEZE_STEPS))
    return exp


def test_no_whisper_decoder_trains_without_the_attention_head(work, no_decoder, capsys) -> None:
    ckpt = load(no_decoder / "epoch-1.pt")
    assert ckpt["model_config"]["whisper_decoder"] is False
    assert not [k for k in ckpt["model"] if k.startswith("attention_decoder.")]
    assert "whisper_tokenizer" not in ckpt and "whisper_search" not in ckpt
    steps = step_log(no_decoder)
    assert len(steps) == FREEZE_STEPS and all(set(p) == {"simple_loss", "pruned_loss", "ctc_loss"} for p in steps)
    # The pretrained group is the encoder alone.
    names = model_parameter_names(ckpt)
    new, old = ckpt["optimizer"]["param_groups"]
    assert len(old["params"]) == len([n for n in names if n.startswith("encoder.")]) > 0
    assert len(new["params"]) == len([n for n in names if n.startswith(NEW_HEADS)])
    line = dsr_user_error(capsys, *decode_args(work, no_decoder, "ctc-greedy", "whisper-greedy"))
    assert "--method: whisper-greedy needs Whisper's decoder head" in line


def test_freeze_for_all_steps_keeps_the_encoder_bit_identical(work, no_decoder) -> None:
    """``--freeze-encoder-steps N --max-steps N``: the pretrained encoder, bit for bit, and trained heads."""
    ckpt = load(no_decoder / "epoch-1.pt")
    assert ckpt["global_step"] == FREEZE_STEPS == ckpt["train_config"]["freeze_encoder_steps"]
    for name, value in pretrained_in_model(work["whisper_sd"], decoder=False).items():
        assert torch.equal(ckpt["model"][name], value), name
    initial = initial_weights(ckpt)
    for prefix in NEW_HEADS:
        assert changed(initial, ckpt["model"], prefix), prefix


# ---------------------------------------------------------------- 8. resuming


def test_rerun_with_more_steps_resumes_exactly(work, trained) -> None:
    """A re-run with a larger --max-steps/--num-epochs continues from the newest checkpoint (here a
    mid-epoch one), does not load the pretrained weights again, and repeats the first run's updates."""
    exp = work["root"] / "resumed"
    exp.mkdir()
    shutil.copy(trained / "checkpoint-4.pt", exp)
    dsr_ok(*train_args(work, exp, max_steps=MAX_STEPS + 2, num_epochs=3))
    log = sorted((exp / "log").glob("log-train-*.txt"))[-1].read_text()
    assert f"resuming from {exp}/checkpoint-4.pt" in log
    assert "pretrained Whisper tensors" not in log
    assert len(step_log(exp)) == MAX_STEPS + 2 - 4
    again, first = load(exp / f"checkpoint-{MAX_STEPS}.pt"), load(trained / f"checkpoint-{MAX_STEPS}.pt")
    assert again["global_step"] == first["global_step"] == MAX_STEPS
    for name, value in first["model"].items():
        assert torch.equal(again["model"][name], value), name
    newest = max(exp.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    assert load(newest)["global_step"] == MAX_STEPS + 2


# ---------------------------------------------------------------- Whisper's decoder alone, 30 s window
def test_decoder_alone_on_the_30s_window(work, capsys) -> None:
    """``--whisper-pad-30s --no-use-transducer --ctc-loss-scale 0 --freeze encoder``: only Whisper's
    decoder trains, on the zero-padded window zero-shot Whisper reads; the encoder stays bit-identical
    and the checkpoint decodes with the Whisper methods (padded again)."""
    exp = work["root"] / "pad30"
    dsr_ok(
        *train_args(
            work, exp, whisper_pad_30s=True, use_transducer=False, ctc_loss_scale=0, freeze="encoder", max_steps=2
        )
    )
    ckpt = load(exp / "epoch-1.pt")
    assert ckpt["model_config"]["whisper_pad_30s"] is True and ckpt["model_config"]["use_ctc"] is False
    assert not [k for k in ckpt["model"] if k.startswith(("joiner.", "predictor.", "ctc_output."))]
    assert all(set(p) == {"attention_loss"} for p in step_log(exp))
    pretrained = pretrained_in_model(work["whisper_sd"])
    assert not changed(pretrained, ckpt["model"], "encoder.")
    assert changed(pretrained, ckpt["model"], "attention_decoder.")
    dsr_ok(*decode_args(work, exp, "whisper-greedy"))
    assert "hyp=" in recogs(exp, "whisper-greedy")
    line = dsr_user_error(capsys, *train_args(work, work["root"] / "pad30-bad", whisper_pad_30s=True, max_steps=1))
    assert "--whisper-pad-30s trains Whisper's decoder alone" in line
