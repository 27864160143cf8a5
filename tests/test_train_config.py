from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from dsr.errors import DsrUserError
from dsr.training.config import resolve_config, save_config


def test_yaml_then_flags_win(tmp_path):
    conf = tmp_path / "train.yaml"
    conf.write_text("num-epochs: 3\nbase_lr: 0.01\nspec-augment: false\n")
    cfg = resolve_config(conf, {"num_epochs": 5, "base_lr": None})
    assert cfg.num_epochs == 5 and cfg.base_lr == 0.01 and cfg.spec_augment is False
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["num-epochs"] == 5 and saved["base-lr"] == 0.01
    # The saved file is itself a valid --config and reproduces the same options.
    assert resolve_config(tmp_path / "config.yaml", {}) == cfg


@pytest.mark.parametrize(
    "text,match",
    [
        ("num-epochz: 3\n", "unknown key 'num-epochz'"),
        ("num-epochs: [1\n", "not valid YAML"),
        ("num-epochs: many\n", "num_epochs"),
        ("dtype: float8\n", "dtype must be"),
    ],
)
def test_bad_config_files(tmp_path, text, match):
    conf = tmp_path / "bad.yaml"
    conf.write_text(text)
    with pytest.raises(DsrUserError, match=match):
        resolve_config(conf, {})


def test_missing_config_file(tmp_path):
    with pytest.raises(DsrUserError, match="nope.yaml"):
        resolve_config(tmp_path / "nope.yaml", {})


def test_ctc_encoder_warmup_schedule_and_validation():
    from dsr.training.config import TrainConfig
    from dsr.training.trainer import rnnt_encoder_grad_scale

    cfg = TrainConfig(ctc_encoder_warmup_steps=100)
    assert [rnnt_encoder_grad_scale(cfg, s) for s in (0, 99, 100, 150, 200, 5000)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]
    assert rnnt_encoder_grad_scale(TrainConfig(), 0) == 1.0
    with pytest.raises(DsrUserError, match="ctc_loss_scale"):
        TrainConfig(ctc_encoder_warmup_steps=100, ctc_loss_scale=0.0).validate()
    with pytest.raises(DsrUserError, match="adam_beta2"):
        TrainConfig(adam_beta2=1.0).validate()


@pytest.mark.parametrize(
    "kwargs,flag",
    [
        ({"edge_trim": -0.1}, "edge_trim"),
        ({"edge_trim_keep": 0.0}, "edge_trim_keep"),
        ({"edge_trim_keep": 1.5}, "edge_trim_keep"),
    ],
)
def test_edge_trim_options_are_checked(kwargs, flag):
    from dsr.training.config import TrainConfig

    with pytest.raises(DsrUserError, match=flag):
        TrainConfig.from_dict(kwargs).validate()


# What model_config_from built for each recipe's config before ModelOptions was nested in TrainConfig
# (main at 8cbfac1, vocabulary 500): the fields that differ from ModelConfig's defaults.
RECIPE_MODELS = {
    "arctic/conf/finetune.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384},
    "arctic/conf/train.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384},
    "arctic/conf/whisper.yaml": {"encoder_dim": 192, "ffn_dim": 768},
    "arctic/conf/whisper_decoder.yaml": {"encoder_dim": 192, "ffn_dim": 768, "use_transducer": False},
    "arctic/conf/whisper_decoder_unpadded.yaml": {"encoder_dim": 192, "ffn_dim": 768, "use_transducer": False},
    "arctic/conf/whisper_tts.yaml": {"encoder_dim": 192, "ffn_dim": 768},
    "fsdd/conf/finetune.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384},
    "fsdd/conf/train.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384, "decoder_dim": 96,
                             "joiner_dim": 96},
    "fsdd/conf/whisper.yaml": {"encoder_dim": 192, "ffn_dim": 768, "decoder_dim": 128, "joiner_dim": 128},
    "librispeech/conf/train.yaml": {"encoder_dim": 256, "num_encoder_layers": 12, "ffn_dim": 1024,
                                    "conv_kernel_size": 31, "decoder_dim": 512, "joiner_dim": 512},
    "synth/conf/train.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384},
    "synth/conf/train_hybrid.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384,
                                     "attention_decoder_layers": 2, "attention_decoder_dim": 96,
                                     "attention_decoder_ffn_dim": 384},
    "synth/conf/train_streaming.yaml": {"encoder_dim": 96, "num_encoder_layers": 4, "ffn_dim": 384, "causal": True,
                                        "left_context_chunks": 4, "train_chunk_sizes": [8, 16, 32],
                                        "train_left_context_chunks": [2, 4], "train_full_context_prob": 0.5},
}  # fmt: skip
EGS = Path(__file__).resolve().parent.parent / "egs"


class _Vocabulary:
    """What model_config_from reads of a tokenizer."""

    vocab_size, blank_id, sos_eos_id = 500, 0, 1

    def id_to_piece(self, i: int) -> str:
        return "<sos/eos>"


def test_every_recipe_config_loads_and_builds_the_model_it_built_before():
    from dsr.models.config import ModelConfig
    from dsr.training.trainer import model_config_from

    # The speech-LLM configs build a SpeechLLM, not a hybrid model (test below).
    found = sorted(str(p.relative_to(EGS)) for p in EGS.glob("*/conf/*.yaml") if "speech_llm" not in p.name)
    assert found == sorted(RECIPE_MODELS), "a recipe config was added or removed: update RECIPE_MODELS"
    defaults = ModelConfig().to_dict()
    for name, expected in RECIPE_MODELS.items():
        # The Whisper recipes name the checkpoint on the command line (run.sh --pretrained).
        cfg = resolve_config(EGS / name, {"pretrained": "whisper-tiny.en"} if "/whisper" in name else {})
        model = model_config_from(cfg, _Vocabulary()).to_dict()
        assert {k: v for k, v in model.items() if v != defaults[k]} == {**expected, "vocab_size": 500}, name


def test_speech_llm_recipe_configs_load_as_their_stage():
    for stage in (1, 2):
        cfg = resolve_config(
            EGS / f"arctic/conf/speech_llm_stage{stage}.yaml",
            {"pretrained": "whisper-tiny.en", "speech_llm": "default"},
        )
        assert cfg.speech_llm_stage == stage and cfg.speech_llm == "default"
        assert cfg.projector_stack == 4 and (cfg.lora_rank >= 1 if stage == 2 else True)


def test_model_options_are_flags_and_keys_of_their_own(tmp_path):
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.training.config import ModelOptions, TrainConfig

    flat = [f.name for f in TrainConfig.flat_fields()]
    model_names = [f.name for f in fields(ModelOptions)]
    assert "model" not in flat and set(model_names) <= set(flat)
    assert list(TrainConfig().to_dict()) == flat  # config.yaml and checkpoints keep the flat keys
    # One default for each option, in ModelOptions; a YAML key or a flag reaches it in cfg.model.
    assert TrainConfig().model == ModelOptions() and ModelOptions().encoder_dim == 192
    conf = tmp_path / "train.yaml"
    conf.write_text("encoder-dim: 64\nnum_heads: 2\n")
    cfg = resolve_config(conf, {"ffn_dim": 128})
    assert (cfg.model.encoder_dim, cfg.model.num_heads, cfg.model.ffn_dim) == (64, 2, 128)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(TypeError, match="encoder_dimm"):
        TrainConfig.from_dict({"encoder_dimm": 3})
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output
    assert "--encoder-dim" in help_text and "--attention-decoder-ffn-dim" in help_text
    assert "--model " not in help_text


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"encoder_dim": 0}, "encoder_dim"),
        ({"num_heads": -1}, "num_heads"),
        ({"encoder_dim": 96, "num_heads": 5}, "num_heads"),
        ({"conv_kernel_size": 4}, "conv_kernel_size"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_model_sizes_are_checked_in_the_options_own_terms(kwargs, name):
    """The library names the field (and raises a ValueError); dsr train names the flag, in one line."""
    from typer.testing import CliRunner

    from dsr.cli.main import app
    from dsr.errors import OptionError
    from dsr.training.config import TrainConfig

    with pytest.raises(OptionError, match=name) as e:
        TrainConfig.from_dict(kwargs).validate()
    assert isinstance(e.value, ValueError)
    flag = "--" + name.replace("_", "-")
    assert flag in e.value.as_flags() and "--" not in str(e.value)
    args = [x for k, v in kwargs.items() for x in ("--" + k.replace("_", "-"), str(v))]
    result = CliRunner().invoke(app, ["train", *args])
    # dsr's top-level handler prints this error's message as the one line (see the next test).
    assert type(result.exception) is DsrUserError and flag in str(result.exception), result.exception


def test_dsr_train_names_the_flag_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "dsr.cli.main", "train", "--num-heads", "5", "--exp-dir", str(tmp_path / "exp")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --encoder-dim (192) must split over --num-heads (5) into an even head dimension (rotary positions "
        "rotate pairs of dimensions)"
    ]


def test_option_error_names_fields_or_flags():
    from dsr.errors import OptionError

    e = OptionError("{not:use_transducer} needs {ctc_loss_scale} > 0, got {'a': 1}")
    assert str(e) == "use_transducer=False needs ctc_loss_scale > 0, got {'a': 1}"
    assert e.as_flags() == "--no-use-transducer needs --ctc-loss-scale > 0, got {'a': 1}"
