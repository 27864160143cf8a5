"""Training a DeepSeek-family LM from scratch and fine-tuning one (LoRA and full)."""

import json

import pytest

pytest.importorskip("transformers", reason="LM training needs the optional 'lm' packages (transformers, peft, ...)")
pytest.importorskip("peft", reason="LoRA fine-tuning needs peft (the 'lm' extra)")

import torch  # noqa: E402
import typer  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from dsr.cli import lm as lm_cli  # noqa: E402
from dsr.errors import DsrUserError  # noqa: E402
from dsr.lm.finetune import finetune  # noqa: E402
from dsr.lm.scorer import LlmScorer  # noqa: E402
from dsr.lm.text_training import mean_score, read_texts  # noqa: E402
from dsr.lm.train_scratch import LmSize, build_config, train_bpe_tokenizer, train_lm  # noqa: E402

TINY = LmSize(hidden_size=32, num_layers=2, num_heads=2, num_experts=4, max_positions=64)
ROOMS = ("KITCHEN", "BEDROOM", "HALL", "GARAGE")
TRAIN = (
    [f"{v} THE {r} LIGHTS" for v in ("TURN ON", "TURN OFF", "DIM") for r in ROOMS]
    + [f"SET A TIMER FOR {n} MINUTES" for n in ("TWO", "THREE", "FOUR", "SIX", "EIGHT", "NINE")]
    + [f"WHAT IS THE WEATHER IN {c}" for c in ("PARIS", "LONDON", "BERLIN", "MADRID", "ROME", "OSLO")]
)
HELD_OUT = ["TURN ON THE HALL LAMP", "SET A TIMER FOR FIVE MINUTES", "WHAT IS THE WEATHER IN LISBON"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    (d / "train.txt").write_text("\n".join(TRAIN) + "\n\n")
    return d / "train.txt"


@pytest.mark.parametrize("config", ["deepseek_v3", "qwen2"])
def test_train_from_scratch_improves_in_domain_score(tmp_path, corpus, config):
    init = train_lm(corpus, tmp_path / "init", config=config, size=TINY, vocab_size=300, epochs=0)
    info = train_lm(corpus, tmp_path / "lm", config=config, size=TINY, vocab_size=300, epochs=15, lr=1e-2, batch_size=8)
    assert info["sentences"] == len(TRAIN) and info["initial_score"] == pytest.approx(init["initial_score"])
    assert len(info["epoch_losses"]) == 15 and info["epoch_losses"][-1] < info["epoch_losses"][0]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "lm", local_files_only=True)
    assert tok.decode(tok("Turn on the hall", add_special_tokens=False)["input_ids"]) == "Turn on the hall"
    before, after = LlmScorer.from_path(tmp_path / "init"), LlmScorer.from_path(tmp_path / "lm")
    assert after.model.config.model_type == config
    assert mean_score(after, TRAIN, 8) == pytest.approx(info["final_score"], abs=1e-3)
    # unseen sentences of the same domain: the trained model must be much better than its initialisation
    assert mean_score(after, HELD_OUT, 8) > mean_score(before, HELD_OUT, 8) + 10.0


def test_deepseek_config_is_mla_and_moe():
    tok = train_bpe_tokenizer(TRAIN, 300)
    cfg = build_config("deepseek_v3", len(tok), TINY, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert cfg.model_type == "deepseek_v3" and cfg.n_routed_experts == 4 and cfg.first_k_dense_replace == 1
    assert cfg.kv_lora_rank < cfg.hidden_size and cfg.qk_rope_head_dim % 2 == 0
    dense = build_config("deepseek_v3", 300, LmSize(32, 2, 2, 0, 64), 1, 2, 0)
    assert dense.first_k_dense_replace == 2
    with pytest.raises(ValueError, match="heads"):
        LmSize(hidden_size=30, num_heads=4).check()
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(TRAIN, 100)
    with pytest.raises(ValueError, match="config"):
        build_config("gpt2", 300, TINY, 1, 2, 0)


@pytest.fixture(scope="module")
def base_lm(tmp_path_factory, corpus):
    """A tiny qwen2 model trained on the commands only: the pretrained model to adapt."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("base")
    (d / "commands.txt").write_text("\n".join(TRAIN[:12]))
    train_lm(
        d / "commands.txt",
        d / "model",
        config="qwen2",
        size=TINY,
        tokenizer="bpe",
        vocab_size=300,
        epochs=10,
        lr=1e-2,
        batch_size=6,
    )
    return d / "model"


@pytest.mark.parametrize("lora", [True, False])
def test_finetune_adapts_and_saves_a_plain_model(tmp_path, base_lm, lora):
    texts = tmp_path / "weather.txt"
    texts.write_text("\n".join(TRAIN[12:]))
    info = finetune(base_lm, texts, tmp_path / "ft", lora=lora, epochs=8, lr=1e-2 if lora else 3e-3, batch_size=4)
    assert info["method"] == ("lora" if lora else "full") and info["final_score"] > info["initial_score"] + 1.0
    # LoRA is merged: a plain HF directory, no adapter files, loaded without peft
    assert not (tmp_path / "ft" / "adapter_config.json").exists()
    loaded = LlmScorer.from_path(tmp_path / "ft")
    assert mean_score(loaded, read_texts(texts), 4) == pytest.approx(info["final_score"], abs=1e-3)
    assert json.loads((tmp_path / "ft" / "dsr_lm.json").read_text())["text_transform"] == "sentence"


def test_training_input_errors(tmp_path):
    with pytest.raises(DsrUserError, match="no such text file"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DsrUserError, match="no non-empty lines"):
        read_texts(tmp_path / "empty.txt")
    (tmp_path / "t.txt").write_text("A B\n")
    with pytest.raises(ValueError, match="epochs"):
        train_lm(tmp_path / "t.txt", tmp_path / "m", size=TINY, vocab_size=300, epochs=-1)


def test_cli_lm_train_and_finetune(tmp_path, corpus):
    app = typer.Typer()
    app.add_typer(lm_cli.app, name="lm")
    args = [
        "lm",
        "train",
        "--texts",
        str(corpus),
        "--out-dir",
        str(tmp_path / "m"),
        "--config",
        "qwen2",
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
        "--num-heads",
        "2",
        "--vocab-size",
        "300",
        "--epochs",
        "1",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / ".done.lm-train").is_file() and (tmp_path / "m" / "model.safetensors").is_file()
    res = CliRunner().invoke(
        app,
        [
            "lm",
            "finetune",
            "--llm",
            str(tmp_path / "m"),
            "--texts",
            str(corpus),
            "--out-dir",
            str(tmp_path / "ft"),
            "--epochs",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert LlmScorer.from_path(tmp_path / "ft").model.config.model_type == "qwen2"
    res = CliRunner().invoke(app, args[:-2] + ["--hidden-size", "30", "--force"])
    assert isinstance(res.exception, DsrUserError) and "--hidden-size" in str(res.exception)


def test_read_texts_from_a_supervisions_manifest(tmp_path):
    from lhotse import RecordingSet, SupervisionSegment, SupervisionSet

    # Two takes of one prompt, as in ARCTIC: the LM sees the sentence once, normalised like hypotheses.
    sups = SupervisionSet.from_segments(
        [
            SupervisionSegment(
                id="arctic_a0001_1",
                recording_id="arctic_a0001_1",
                start=0,
                duration=1,
                text="Author of the danger trail, Philip Steels, etc.",
            ),
            SupervisionSegment(
                id="arctic_a0001_2",
                recording_id="arctic_a0001_2",
                start=0,
                duration=1,
                text="Author of the danger trail, Philip Steels, etc.",
            ),
            SupervisionSegment(
                id="arctic_a0002_1",
                recording_id="arctic_a0002_1",
                start=0,
                duration=1,
                text="Not at this particular case, Tom.",
            ),
            SupervisionSegment(id="arctic_a0003_1", recording_id="arctic_a0003_1", start=0, duration=1, text=" , "),
        ]
    )
    sups.to_file(tmp_path / "x_supervisions_train.jsonl.gz")
    assert read_texts(tmp_path / "x_supervisions_train.jsonl.gz") == [
        "AUTHOR OF THE DANGER TRAIL PHILIP STEELS ETC",
        "NOT AT THIS PARTICULAR CASE TOM",
    ]
    RecordingSet.from_recordings([]).to_file(tmp_path / "x_recordings_train.jsonl.gz")
    with pytest.raises(DsrUserError, match="not a supervisions manifest"):
        read_texts(tmp_path / "x_recordings_train.jsonl.gz")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(DsrUserError, match="not a lhotse supervisions manifest"):
        read_texts(tmp_path / "bad.jsonl")
