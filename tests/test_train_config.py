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
    [("num-epochz: 3\n", "unknown key 'num-epochz'"), ("num-epochs: [1\n", "not valid YAML"),
     ("num-epochs: many\n", "num_epochs"), ("dtype: float8\n", "--dtype")],
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
    with pytest.raises(DsrUserError, match="--ctc-loss-scale"):
        TrainConfig(ctc_encoder_warmup_steps=100, ctc_loss_scale=0.0).validate()
    with pytest.raises(DsrUserError, match="--adam-beta2"):
        TrainConfig(adam_beta2=1.0).validate()


@pytest.mark.parametrize("kwargs,flag", [({"edge_trim": -0.1}, "--edge-trim"), ({"edge_trim_keep": 0.0}, "--edge-trim-keep"),
                                         ({"edge_trim_keep": 1.5}, "--edge-trim-keep")])
def test_edge_trim_options_are_checked(kwargs, flag):
    from dsr.training.config import TrainConfig

    with pytest.raises(DsrUserError, match=flag):
        TrainConfig.from_dict(kwargs).validate()
